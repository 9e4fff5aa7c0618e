"""After a human review changes a step, the audit detail's ``resultData`` compliance equals the
recomputed summary columns (spec 04 §1.2 Deviation: overlay on read), not the stale frozen copy."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from dagster import materialize
from sqlalchemy import select

from auditflow_dagster.db import step_edits
from auditflow_dagster.db.audits import audit_detail
from auditflow_dagster.db.configs import ensure_bundled_config
from auditflow_dagster.db.models import Audit, AuditStepResult, FicheCache
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.sample import generator
from tests.integration.test_assets import CHAIN, DAY, _resources


def test_review_changes_show_in_the_result_data_compliance(db, dagster_instance):
    fiche_id = next(f["id"] for f in generator.fiches_for_day(dt.date.fromisoformat(DAY))
                    if generator.expected_audit(f["id"])["auditable"])
    with session_scope() as s:
        ensure_bundled_config(s)
    dagster_instance.add_dynamic_partitions("fiches", [fiche_id])
    assert materialize(CHAIN, partition_key=fiche_id, instance=dagster_instance, resources=_resources()).success
    with session_scope() as s:
        audit = s.scalar(select(Audit).join(FicheCache, FicheCache.id == Audit.fiche_cache_id)
                         .where(FicheCache.fiche_id == fiche_id))
        before = audit_detail(s, audit.id)["resultData"]["audit"]["compliance"]
        row = s.scalars(select(AuditStepResult).where(AuditStepResult.audit_id == audit.id, AuditStepResult.score > 0)
                        .order_by(AuditStepResult.step_position)).first()
        step_edits.review_step(s, audit.id, row.step_position, conforme="NON_CONFORME", score=0, reviewer="qa",
                               reason="test")
    with session_scope() as s:
        detail = audit_detail(s, audit.id)
    comp = detail["resultData"]["audit"]["compliance"]
    assert Decimal(str(comp["score"])) == Decimal(detail["scorePercentage"]) < Decimal(str(before["score"]))
    assert comp["niveau"] == detail["niveau"]
    assert comp["points_critiques"] == f"{detail['criticalPassed']}/{detail['criticalTotal']}"
    assert detail["resultData"]["audit"]["results"]["compliance"] == comp
    step = next(st for st in detail["resultData"]["audit"]["results"]["steps"]
                if st["step_metadata"]["position"] == row.step_position)
    [review] = step["human_review"]  # the trail, in the legacy shape, under its step
    assert review["by"] == "qa" and review["reason"] == "test"
    assert review["override"]["conforme"] == "NON_CONFORME" and review["override"]["score"] == 0
    assert step["rerun_history"] == []
