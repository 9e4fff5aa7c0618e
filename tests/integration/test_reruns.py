"""Step / control-point reruns (the ``rerun_audit_step`` job materialized in process) and the
review/rerun trails, on a real completed audit built with the offline twins."""

from __future__ import annotations

import datetime as dt

import pytest
from dagster import materialize
from sqlalchemy import select

from auditflow_dagster.assets.audits import audit_step_results, audits
from auditflow_dagster.assets.checks import summary_problems
from auditflow_dagster.assets.fiches import fiche_details
from auditflow_dagster.assets.reruns import (
    RerunConfig,
    audit_step_reruns,
    execute_rerun,
)
from auditflow_dagster.assets.sales import sales_list
from auditflow_dagster.assets.transcripts import transcripts
from auditflow_dagster.db import step_edits
from auditflow_dagster.db.configs import ensure_bundled_config
from auditflow_dagster.db.models import (
    Audit,
    AuditStepResult,
    AuditStepResultControlPoint,
    AuditStepResultHumanReview,
    AuditStepResultRerunEvent,
    Event,
    FicheCache,
)
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.db.trails import step_trails
from auditflow_dagster.resources.crm import CrmResource
from auditflow_dagster.resources.database import DatabaseResource
from auditflow_dagster.resources.llm import LlmError, LlmResource
from auditflow_dagster.resources.stt import SttResource
from auditflow_dagster.sample import generator

DAY = "2026-03-12"


def resources(llm: LlmResource | None = None) -> dict:
    return {"crm": CrmResource(mode="sample"), "stt": SttResource(mode="sample"),
            "llm": llm or LlmResource(mode="offline"), "db": DatabaseResource()}


def build_completed_audit(instance) -> tuple[str, int]:
    """(fiche id, audit id) of a completed audit of an auditable fiche of DAY."""
    with session_scope() as s:
        ensure_bundled_config(s)
    assert materialize([sales_list], partition_key=DAY, instance=instance, resources=resources()).success
    fiche_id = next(f for f in instance.get_dynamic_partitions("fiches") if generator.expected_audit(f)["auditable"])
    assert materialize([fiche_details, transcripts, audit_step_results, audits], partition_key=fiche_id,
                       instance=instance, resources=resources()).success
    with session_scope() as s:
        audit = s.scalar(select(Audit).join(FicheCache, FicheCache.id == Audit.fiche_cache_id)
                         .where(FicheCache.fiche_id == fiche_id))
        assert audit.status == "completed"
        return fiche_id, audit.id


@pytest.fixture()
def audited(db, dagster_instance) -> tuple[object, str, int]:
    fiche_id, audit_id = build_completed_audit(dagster_instance)
    return dagster_instance, fiche_id, audit_id


def rerun_config(audit_id: int, position: int, **extra) -> dict:
    return {"ops": {"audit_step_reruns": {"config": {"audit_id": audit_id, "step_position": position, **extra}}}}


def events(name: str) -> list[Event]:
    with session_scope() as s:
        return list(s.scalars(select(Event).where(Event.name == name).order_by(Event.id)))


def summary_ok(audit_id: int) -> None:
    with session_scope() as s:
        audit = s.get(Audit, audit_id)
        assert summary_problems(s, audit) == []


class CountingLlm(LlmResource):
    def client(self):
        inner = super().client()
        outer = self

        class Counting:
            async def analyze_step(self, **kw):
                outer.__dict__.setdefault("_calls", []).append(kw["step"].position)
                return await inner.analyze_step(**kw)

            async def aclose(self):
                await inner.aclose()

        return Counting()


class FailingLlm(LlmResource):
    def client(self):
        class Failing:
            async def analyze_step(self, **kw):
                raise LlmError("provider exploded")

            async def aclose(self):
                return None

        return Failing()


def test_step_rerun_job_in_process(audited):
    instance, fiche_id, audit_id = audited
    with session_scope() as s:
        before = s.scalar(select(AuditStepResult).where(AuditStepResult.audit_id == audit_id,
                                                        AuditStepResult.step_position == 2))
        before_score = before.score
    result = materialize([audit_step_reruns], partition_key=fiche_id, instance=instance, resources=resources(),
                         run_config=rerun_config(audit_id, 2, custom_prompt="  Sois strict sur les citations  "))
    assert result.success
    [mat] = result.asset_materializations_for_node("audit_step_reruns")
    assert mat.partition == fiche_id and mat.metadata["outcome"].value == "applied"
    with session_scope() as s:
        [ev] = s.scalars(select(AuditStepResultRerunEvent).where(AuditStepResultRerunEvent.audit_id == audit_id)).all()
        assert ev.kind == "step_rerun" and ev.step_position == 2
        assert ev.rerun_id == f"rerun-{audit_id}-2-{result.run_id}" and ev.event_id == result.run_id
        assert ev.custom_prompt == "Sois strict sur les citations"
        assert ev.previous_score == before_score
        row = s.scalar(select(AuditStepResult).where(AuditStepResult.audit_id == audit_id,
                                                     AuditStepResult.step_position == 2))
        assert (ev.next_score, ev.next_conforme, ev.next_total_citations) == (row.score, row.conforme,
                                                                              row.total_citations)
        assert set(row.raw_result) <= {"step_metadata", "usage", "model"}
    summary_ok(audit_id)
    started = [e for e in events("audit.step_started") if e.payload.get("status") == "rerunning"]
    completed = [e for e in events("audit.step_completed") if e.payload.get("status") == "rerun_completed"]
    assert len(started) == 1 and len(completed) == 1
    assert started[0].payload["rerun_id"] == ev.rerun_id and f"audit-{audit_id}" in completed[0].channels
    assert set(completed[0].payload["comparison"]) >= {"scoreChanged", "conformeChanged", "citationsChanged",
                                                       "originalScore", "newScore", "originalConforme", "newConforme"}
    [done] = events("audit/step-rerun-completed")
    assert done.payload["step_position"] == 2 and done.payload["audit_id"] == str(audit_id)

    # a retry / re-execution with the same root run id never analyses (bills) again
    counting = CountingLlm(mode="offline")
    again = execute_rerun(RerunConfig(audit_id=audit_id, step_position=2), auditor=counting.client(),
                          event_id=result.run_id)
    assert again["status"] == "already_applied" and not counting.__dict__.get("_calls")
    with session_scope() as s:
        assert len(s.scalars(select(AuditStepResultRerunEvent)).all()) == 1


def test_control_point_rerun_job_in_process(audited):
    instance, fiche_id, audit_id = audited
    result = materialize([audit_step_reruns], partition_key=fiche_id, instance=instance, resources=resources(),
                         run_config=rerun_config(audit_id, 1, control_point_index=2, custom_prompt="focus"))
    assert result.success
    with session_scope() as s:
        [ev] = s.scalars(select(AuditStepResultRerunEvent)).all()
        assert ev.kind == "control_point_rerun" and ev.control_point_index == 2
        assert ev.rerun_id == f"rerun-{audit_id}-1-cp-2-{result.run_id}" and ev.custom_prompt == "focus"
        cp = s.scalar(select(AuditStepResultControlPoint).where(
            AuditStepResultControlPoint.audit_id == audit_id, AuditStepResultControlPoint.step_position == 1,
            AuditStepResultControlPoint.control_point_index == 2))
        assert ev.next_statut == cp.statut and isinstance(ev.next_citations, list)
        row = s.scalar(select(AuditStepResult).where(AuditStepResult.audit_id == audit_id,
                                                     AuditStepResult.step_position == 1))
        assert (ev.next_step_score, ev.next_step_conforme) == (row.score, row.conforme)
    summary_ok(audit_id)
    [done] = events("audit/step-control-point-rerun-completed")
    assert done.payload["control_point_index"] == 2
    [completed] = [e for e in events("audit.step_completed") if e.payload.get("status") == "rerun_completed"]
    assert completed.payload["rerun_scope"] == "control_point"
    with session_scope() as s:
        trails = step_trails(s, audit_id)
    [entry] = trails[1]["rerun_history"]
    assert entry["kind"] == "control_point_rerun" and entry["previous"]["statut"] is not None


def test_failed_rerun_publishes_step_failed_once_and_changes_nothing(audited):
    instance, fiche_id, audit_id = audited
    with session_scope() as s:
        before = s.get(Audit, audit_id).score_percentage
    result = materialize([audit_step_reruns], partition_key=fiche_id, instance=instance,
                         resources=resources(FailingLlm(mode="offline")), run_config=rerun_config(audit_id, 3),
                         raise_on_error=False)
    assert not result.success
    failed = [e for e in events("audit.step_failed") if e.payload.get("status") == "rerun_failed"]
    assert len(failed) == 1  # the first attempt is retried; only the last one reports
    assert "provider exploded" in failed[0].payload["error"] and failed[0].payload["step_position"] == 3
    assert failed[0].payload["rerun_id"] == f"rerun-{audit_id}-3-{result.run_id}"
    assert len([e for e in events("audit.step_started") if e.payload.get("status") == "rerunning"]) == 2
    with session_scope() as s:
        assert s.scalars(select(AuditStepResultRerunEvent)).all() == []
        assert s.get(Audit, audit_id).score_percentage == before


def test_rerun_of_missing_step_fails_with_event(audited):
    instance, fiche_id, audit_id = audited
    result = materialize([audit_step_reruns], partition_key=fiche_id, instance=instance, resources=resources(),
                         run_config=rerun_config(audit_id, 99), raise_on_error=False)
    assert not result.success
    [failed] = [e for e in events("audit.step_failed") if e.payload.get("status") == "rerun_failed"]
    assert "99" in failed.payload["error"]


def test_human_override_precedence_and_trails(audited):
    _, _, audit_id = audited
    with session_scope() as s:
        step_edits.review_step(s, audit_id, 2, conforme="NON_CONFORME", score=0, reviewer="qa@x", reason="wrong")
    summary_ok(audit_id)
    # a rerun keeps the override by default…
    out = execute_rerun(RerunConfig(audit_id=audit_id, step_position=2), auditor=LlmResource(mode="offline").client(),
                        event_id="run-a")
    assert out["human_override_kept"] is True
    with session_scope() as s:
        row = s.scalar(select(AuditStepResult).where(AuditStepResult.audit_id == audit_id,
                                                     AuditStepResult.step_position == 2))
        assert (row.conforme, row.score) == ("NON_CONFORME", 0)
        assert row.raw_result["human_override"]["conforme"] == "NON_CONFORME" and "rerun_proposal" in row.raw_result
    summary_ok(audit_id)
    # … and a control-point review does not erase it either
    with session_scope() as s:
        step_edits.review_control_point(s, audit_id, 2, 1, statut="PRESENT", commentaire="ok")
        row = s.scalar(select(AuditStepResult).where(AuditStepResult.audit_id == audit_id,
                                                     AuditStepResult.step_position == 2))
        assert (row.conforme, row.score) == ("NON_CONFORME", 0)
    # an explicit replace applies the rerun verdict and ends the override
    out = execute_rerun(RerunConfig(audit_id=audit_id, step_position=2, replace_human_review=True),
                        auditor=LlmResource(mode="offline").client(), event_id="run-b")
    assert out["human_override_kept"] is False
    with session_scope() as s:
        row = s.scalar(select(AuditStepResult).where(AuditStepResult.audit_id == audit_id,
                                                     AuditStepResult.step_position == 2))
        assert "human_override" not in row.raw_result
        trails = step_trails(s, audit_id)[2]
    summary_ok(audit_id)
    assert [e.get("kind", "step") for e in trails["human_review"]] == ["step", "control_point"]
    assert [e["kind"] for e in trails["rerun_history"]] == ["step_rerun", "step_rerun"]
    assert trails["human_review"][0]["by"] == "qa@x" and trails["human_review"][0]["override"]["score"] == 0
    assert trails["rerun_history"][0]["next"]["score"] == 0  # what was stored while the override held


def test_legacy_raw_trails_fallback_and_backfill(audited):
    _, _, audit_id = audited
    legacy_review = {"at": "2025-01-02T03:04:05.000Z", "by": "old@x", "reason": "legacy",
                     "previous": {"traite": True, "conforme": "PARTIEL", "score": 3, "niveau_conformite": "ACCEPTABLE"},
                     "override": {"traite": True, "conforme": "CONFORME", "score": 5, "niveau_conformite": "BON"}}
    legacy_rerun = {"at": "not a date", "kind": "step_rerun", "rerun_id": "rerun-x", "event_id": "e1",
                    "step_position": 3, "custom_prompt": None,
                    "previous": {"score": 1, "conforme": "NON_CONFORME", "total_citations": 0},
                    "next": {"score": 3, "conforme": "PARTIEL", "total_citations": 2}}
    with session_scope() as s:
        row = s.scalar(select(AuditStepResult).where(AuditStepResult.audit_id == audit_id,
                                                     AuditStepResult.step_position == 3))
        row.raw_result = {**row.raw_result, "human_review": [legacy_review], "rerun_history": [legacy_rerun]}
    with session_scope() as s:
        trails = step_trails(s, audit_id)
    assert trails[3] == {"human_review": [legacy_review], "rerun_history": [legacy_rerun]}  # raw passes through
    assert trails[1] == {"human_review": [], "rerun_history": []}
    with session_scope() as s:  # the first write copies them into the tables, then appends its own row
        step_edits.review_step(s, audit_id, 3, conforme="CONFORME")
    with session_scope() as s:
        trails = step_trails(s, audit_id)[3]
        row = s.scalar(select(AuditStepResult).where(AuditStepResult.audit_id == audit_id,
                                                     AuditStepResult.step_position == 3))
        assert "human_review" not in row.raw_result and "rerun_history" not in row.raw_result
        assert s.scalar(select(AuditStepResultHumanReview.reviewer).order_by(AuditStepResultHumanReview.id)) == "old@x"
    assert [e["by"] for e in trails["human_review"]] == ["old@x", None]
    assert trails["human_review"][0]["at"] == "2025-01-02T03:04:05.000Z"
    assert trails["rerun_history"][0]["rerun_id"] == "rerun-x" and trails["rerun_history"][0]["next"]["score"] == 3
    assert dt.datetime.fromisoformat(trails["rerun_history"][0]["at"].replace("Z", "+00:00"))
    summary_ok(audit_id)
