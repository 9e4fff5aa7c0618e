"""The asset checks on ``audits``: all pass on a real finalized audit, and each rule catches the
corruption it is about (a lost step row, a fabricated kept quote, an out-of-bounds score, a summary
that no longer matches its rows)."""

from __future__ import annotations

import datetime as dt

from dagster import materialize
from sqlalchemy import delete, select, update

from auditflow_dagster.assets.checks import (
    AUDIT_CHECKS,
    bound_problems,
    citation_problems,
    step_problems,
    summary_problems,
)
from auditflow_dagster.db.configs import ensure_bundled_config
from auditflow_dagster.db.models import (
    Audit,
    AuditStepResult,
    AuditStepResultCitation,
    FicheCache,
)
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.sample import generator
from tests.integration.test_assets import CHAIN, DAY, _resources


def _audited_fiche(dagster_instance) -> tuple[int, object]:
    fiche_id = next(f["id"] for f in generator.fiches_for_day(dt.date.fromisoformat(DAY))
                    if generator.expected_audit(f["id"])["auditable"])
    with session_scope() as s:
        ensure_bundled_config(s)
    dagster_instance.add_dynamic_partitions("fiches", [fiche_id])
    result = materialize([*CHAIN, *AUDIT_CHECKS], partition_key=fiche_id, instance=dagster_instance, resources=_resources())
    assert result.success
    with session_scope() as s:
        audit_id = s.scalar(select(Audit.id).join(FicheCache, FicheCache.id == Audit.fiche_cache_id)
                            .where(FicheCache.fiche_id == fiche_id))
    return audit_id, result


def _problems(audit_id: int) -> dict[str, list[str]]:
    with session_scope() as s:
        a = s.get(Audit, audit_id)
        return {"summary": summary_problems(s, a), "steps": step_problems(s, a),
                "citations": citation_problems(s, a, 12)[1], "bounds": bound_problems(s, a)}


def test_checks_pass_on_a_finalized_audit_and_catch_each_corruption(db, dagster_instance):
    audit_id, result = _audited_fiche(dagster_instance)
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == {"audit_summary_matches_rows", "audit_has_every_step", "audit_citations_pass_gating",
                                "audit_scores_in_bounds"}
    failing = {n: e.metadata for n, e in evaluations.items() if not e.passed}
    assert not failing, failing
    assert evaluations["audit_citations_pass_gating"].metadata["citations_checked"].value > 0
    assert _problems(audit_id) == {"summary": [], "steps": [], "citations": [], "bounds": []}
    [mat] = result.asset_materializations_for_node("audits")  # what an analyst sees in the UI
    with session_scope() as s:
        audit = s.get(Audit, audit_id)
        assert mat.metadata["score"].value == float(audit.score_percentage)
        assert mat.metadata["niveau"].value == audit.niveau
        assert mat.metadata["critical_passed"].value == f"{audit.critical_passed}/{audit.critical_total}"
        assert mat.metadata["total_tokens"].value == audit.total_tokens > 0
    assert "| # | step | score | max | verdict |" in mat.metadata["steps"].value

    with session_scope() as s:  # a fabricated quote slipped into the stored rows
        cite = s.scalars(select(AuditStepResultCitation).where(AuditStepResultCitation.audit_id == audit_id)).first()
        s.execute(update(AuditStepResultCitation).where(AuditStepResultCitation.id == cite.id)
                  .values(texte="le client a accepté toutes les garanties sans réserve"))
    assert len(_problems(audit_id)["citations"]) == 1

    with session_scope() as s:  # a step's score changed behind the finalizer's back
        row = s.scalars(select(AuditStepResult).where(AuditStepResult.audit_id == audit_id, AuditStepResult.score > 0)
                        .order_by(AuditStepResult.step_position)).first()
        s.execute(update(AuditStepResult).where(AuditStepResult.id == row.id).values(score=0))
    assert len(_problems(audit_id)["summary"]) == 1
    with session_scope() as s:  # a score above its weight
        s.execute(update(AuditStepResult).where(AuditStepResult.id == row.id).values(score=row.weight + 3))
    assert _problems(audit_id)["bounds"] == [f"audit {audit_id} step {row.step_position}: score {row.weight + 3} of {row.weight}"]

    with session_scope() as s:  # a lost step row
        s.execute(delete(AuditStepResult).where(AuditStepResult.audit_id == audit_id,
                                                AuditStepResult.step_position == row.step_position))
    assert _problems(audit_id)["steps"] == [f"audit {audit_id}: missing steps [{row.step_position}], extra []"]
