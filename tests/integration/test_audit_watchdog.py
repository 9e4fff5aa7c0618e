"""The audit watchdog finalizes audits left ``running`` by a dead run — stored steps kept, missing
steps as fallbacks — and never touches an audit whose run is still live."""

from __future__ import annotations

import datetime as dt

from dagster import DagsterRunStatus, materialize
from dagster._core.test_utils import create_run_for_test
from sqlalchemy import delete, select, update

from auditflow_dagster.assets.audits import audit_step_results
from auditflow_dagster.assets.fiches import fiche_details
from auditflow_dagster.assets.transcripts import transcripts
from auditflow_dagster.db.configs import ensure_bundled_config
from auditflow_dagster.db.models import Audit, AuditStepResult, Event, FicheCache
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.sample import generator
from auditflow_dagster.sensors.audit_watchdog import sweep
from tests.integration.test_assets import DAY, _resources


def _analysed_but_not_finalized(instance) -> int:
    """A run that stored every step and then died before the finalizer (``audits`` never ran)."""
    fiche_id = next(f["id"] for f in generator.fiches_for_day(dt.date.fromisoformat(DAY))
                    if generator.expected_audit(f["id"])["auditable"])
    with session_scope() as s:
        ensure_bundled_config(s)
    instance.add_dynamic_partitions("fiches", [fiche_id])
    assert materialize([fiche_details, transcripts, audit_step_results], partition_key=fiche_id, instance=instance,
                       resources=_resources()).success
    with session_scope() as s:
        audit = s.scalar(select(Audit).join(FicheCache, FicheCache.id == Audit.fiche_cache_id)
                         .where(FicheCache.fiche_id == fiche_id))
        assert audit.status == "running"
        s.execute(update(Audit).where(Audit.id == audit.id).values(started_at=audit.started_at - dt.timedelta(hours=2)))
        return audit.id


def _events(audit_id: int) -> list[str]:
    with session_scope() as s:
        return list(s.scalars(select(Event.name).where(Event.channels.any(f"audit-{audit_id}")).order_by(Event.id)))


def test_dead_run_audit_is_finalized_with_fallbacks_for_missing_steps(db, dagster_instance):
    audit_id = _analysed_but_not_finalized(dagster_instance)
    with session_scope() as s:  # the run died after 8 of 10 steps
        s.execute(delete(AuditStepResult).where(AuditStepResult.audit_id == audit_id,
                                                AuditStepResult.step_position.in_([3, 7])))
    assert sweep(dagster_instance, threshold_minutes=30) == {"stale": 1, "finalized": 1, "failed": 0, "live": 0}
    with session_scope() as s:
        audit = s.get(Audit, audit_id)
        rows = {r.step_position: r for r in s.scalars(select(AuditStepResult).where(AuditStepResult.audit_id == audit_id))}
        assert audit.status == "completed" and len(rows) == 10
        assert rows[3].score == 0 and rows[3].conforme == "NON_CONFORME" and rows[3].traite is False
        assert audit.result_data["metadata"]["replaced_steps"] == {"3": "missing", "7": "missing"}
    assert _events(audit_id)[-2:] == ["audit.compliance_calculated", "audit.completed"]
    assert sweep(dagster_instance, threshold_minutes=30)["stale"] == 0  # done once


def test_live_run_is_left_alone_and_no_step_at_all_fails_the_audit(db, dagster_instance):
    audit_id = _analysed_but_not_finalized(dagster_instance)
    live = create_run_for_test(dagster_instance, job_name="audit_fiche", status=DagsterRunStatus.STARTED)
    with session_scope() as s:
        s.execute(update(Audit).where(Audit.id == audit_id).values(dagster_run_id=live.run_id))
        s.execute(delete(AuditStepResult).where(AuditStepResult.audit_id == audit_id))
    assert sweep(dagster_instance, threshold_minutes=30)["live"] == 1
    with session_scope() as s:
        assert s.get(Audit, audit_id).status == "running"
    dagster_instance.report_run_failed(dagster_instance.get_run_by_id(live.run_id))  # the run dies
    assert sweep(dagster_instance, threshold_minutes=30)["failed"] == 1
    with session_scope() as s:
        audit = s.get(Audit, audit_id)
        assert audit.status == "failed" and audit.error_message == "all steps failed"
    assert _events(audit_id)[-1] == "audit.failed"
