"""The asset chain materialized in process on a real PostgreSQL, with the offline twins.

Checks the audit verdicts against the synthetic ground truth, that a day is audited in one run
(multi-partition), and that a retry never re-bills a stored step.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from dagster import materialize
from sqlalchemy import func, select

from auditflow_dagster.assets.audits import audit_step_results, audits
from auditflow_dagster.assets.checks import audit_summary_matches_rows
from auditflow_dagster.assets.fiches import fiche_details
from auditflow_dagster.assets.sales import sales_list
from auditflow_dagster.assets.transcripts import transcripts
from auditflow_dagster.db.configs import ensure_bundled_config
from auditflow_dagster.db.models import (
    Audit,
    AuditStepResult,
    Event,
    FicheCache,
    Recording,
)
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.resources.crm import CrmResource
from auditflow_dagster.resources.database import DatabaseResource
from auditflow_dagster.resources.llm import LlmResource
from auditflow_dagster.resources.stt import SttResource
from auditflow_dagster.sample import generator

DAY = "2026-03-11"
CHAIN = [fiche_details, transcripts, audit_step_results, audits]


def _resources() -> dict:
    return {
        "crm": CrmResource(mode="sample"),
        "stt": SttResource(mode="sample"),
        "llm": LlmResource(mode="offline"),
        "db": DatabaseResource(),
    }


@pytest.fixture()
def instance(dagster_instance):
    return dagster_instance


@pytest.fixture()
def day_fiches(db, instance) -> list[str]:
    with session_scope() as s:
        ensure_bundled_config(s)
    result = materialize([sales_list], partition_key=DAY, instance=instance, resources=_resources())
    assert result.success
    keys = list(instance.get_dynamic_partitions("fiches"))
    expected = [f["id"] for f in generator.sales_list_payload(dt.date.fromisoformat(DAY), dt.date.fromisoformat(DAY), False)["fiches"]]
    assert keys == expected  # registered in CRM order, one call
    return keys


def _audit_for(fiche_id: str) -> Audit:
    with session_scope() as s:
        return s.scalar(select(Audit).join(FicheCache, FicheCache.id == Audit.fiche_cache_id)
                        .where(FicheCache.fiche_id == fiche_id).order_by(Audit.id.desc()))


def test_single_fiche_audit_matches_ground_truth(day_fiches, instance):
    fiche_id = next(f for f in day_fiches if generator.expected_audit(f)["auditable"])
    result = materialize([*CHAIN, audit_summary_matches_rows], partition_key=fiche_id, instance=instance, resources=_resources())
    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["audits_checked"].value == 1
    audit = _audit_for(fiche_id)
    expected = generator.expected_audit(fiche_id)["compliance"]
    assert audit.status == "completed"
    assert Decimal(audit.score_percentage) == expected.score_percentage
    assert audit.niveau == expected.niveau
    assert (audit.critical_passed, audit.critical_total) == (expected.critical_passed, expected.critical_total)
    assert audit.result_data["audit"]["compliance"]["points_critiques"] == f"{expected.critical_passed}/{expected.critical_total}"
    gating = audit.result_data["metadata"]["evidence_gating"]
    assert gating["removed_citations"] == 0  # the offline auditor quotes the transcript exactly
    mats = result.asset_materializations_for_node("audits")
    assert mats[0].metadata["niveau"].value == expected.niveau
    with session_scope() as s:
        names = [e.name for e in s.scalars(select(Event).where(Event.channels.any(f"fiche-{fiche_id}")).order_by(Event.id))]
    assert names[0].startswith("transcription.")
    assert "audit.started" in names and names[-1] == "audit.completed"
    assert names.index("audit.started") < names.index("audit.step_completed") < names.index("audit.compliance_calculated")


def test_whole_day_in_one_run(day_fiches, instance):
    tags = {"dagster/asset_partition_range_start": day_fiches[0], "dagster/asset_partition_range_end": day_fiches[-1]}
    result = materialize(CHAIN, instance=instance, resources=_resources(), tags=tags)
    assert result.success
    with session_scope() as s:
        rows = s.execute(select(FicheCache.fiche_id, Audit.status, Audit.score_percentage)
                         .join(Audit, Audit.fiche_cache_id == FicheCache.id)).all()
        transcribed = s.scalar(select(func.count()).select_from(Recording).where(Recording.has_transcription.is_(True)))
    by_fiche = {f: (st, sc) for f, st, sc in rows}
    assert set(by_fiche) == set(day_fiches)  # every fiche accounted for, in a single run
    for f in day_fiches:
        exp = generator.expected_audit(f)
        status, score = by_fiche[f]
        if exp["auditable"]:
            assert status == "completed" and Decimal(score) == exp["compliance"].score_percentage, f
        else:
            assert status == "failed", f  # no recording: terminal failure, never stuck running
    assert transcribed == sum(len(generator.recordings_for_fiche(f)) for f in day_fiches)


class CountingAuditor(LlmResource):
    """The offline auditor, counting calls (a stand-in for the LLM bill)."""

    def client(self):
        inner = super().client()
        calls = CountingAuditor.calls

        class Wrapper:
            async def analyze_step(self, **kw):
                calls.append(kw["step"].position)
                return await inner.analyze_step(**kw)

        return Wrapper()


CountingAuditor.calls = []


def test_stored_steps_are_never_rebilled(day_fiches, instance):
    fiche_id = next(f for f in day_fiches if generator.expected_audit(f)["auditable"])
    res = {**_resources(), "llm": CountingAuditor(mode="offline")}
    CountingAuditor.calls.clear()
    first = materialize([fiche_details, transcripts, audit_step_results], partition_key=fiche_id, instance=instance, resources=res)
    assert first.success
    n_steps = len(generator.load_checklist().steps)
    assert len(CountingAuditor.calls) == n_steps
    audit = _audit_for(fiche_id)
    assert audit.status == "running"
    # Simulate a retry of the same run: same root run id, same audit, all steps already stored.
    with session_scope() as s:
        s.execute(Audit.__table__.update().where(Audit.id == audit.id).values(dagster_run_id="root-of-retry"))
    CountingAuditor.calls.clear()
    # Re-running with the same root run id must reuse the audit and its stored steps.
    import auditflow_dagster.assets.audits as mod

    original = mod.root_run_id
    mod.root_run_id = lambda context: "root-of-retry"
    try:
        again = materialize([audit_step_results, audits], partition_key=fiche_id, instance=instance, resources=res)
    finally:
        mod.root_run_id = original
    assert again.success
    assert CountingAuditor.calls == []
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Audit)) == 1
        assert s.scalar(select(func.count()).select_from(AuditStepResult)) == n_steps
    assert _audit_for(fiche_id).status == "completed"
