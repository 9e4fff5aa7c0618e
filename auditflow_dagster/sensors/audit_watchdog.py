"""Sensor: no audit stays ``running`` forever (spec 03 §2.5 (a), §8 "step job dies").

An audit whose Dagster run died (process killed, run-worker lost, cancelled) before its finalizer
ran keeps ``status=running``. Every few minutes this sensor finds audits running for longer than
``AUDIT_WATCHDOG_MINUTES`` whose run — and any re-execution of it — is finished, and finalizes them
with the same function as the ``audits`` asset: stored steps are kept (never re-billed), missing
steps become fallback results, "all steps failed" ends ``failed``. Events tell the frontend.
"""

from __future__ import annotations

import datetime as dt

from dagster import (
    DefaultSensorStatus,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)
from sqlalchemy import select

from auditflow_dagster.core.progress_watch import audit_is_abandoned
from auditflow_dagster.db.clock import now_utc
from auditflow_dagster.db.finalizer import finalize_running_audit
from auditflow_dagster.db.models import Audit, FicheCache
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.settings import get_settings


def run_statuses(instance, run_id: str | None) -> list[str]:
    """Statuses of the audit's run and of every run re-executing it (same root)."""
    if not run_id:
        return []
    records = [*instance.get_run_records(RunsFilter(run_ids=[run_id])),
               *instance.get_run_records(RunsFilter(tags={"dagster/root_run_id": run_id}))]
    return [r.dagster_run.status.value for r in records]


def sweep(instance, *, threshold_minutes: float, limit: int = 50) -> dict[str, int]:
    """One pass; returns ``{stale, finalized, failed, live}``."""
    now = now_utc()
    counts = {"stale": 0, "finalized": 0, "failed": 0, "live": 0}
    with session_scope() as s:
        candidates = s.execute(
            select(Audit.id, Audit.dagster_run_id, Audit.started_at).where(
                Audit.status == "running", Audit.started_at < now - dt.timedelta(minutes=threshold_minutes))
            .order_by(Audit.started_at).limit(limit)
        ).all()
    for audit_id, run_id, started_at in candidates:
        counts["stale"] += 1
        age = (now - started_at).total_seconds() / 60
        if not audit_is_abandoned(run_statuses(instance, run_id), age, threshold_minutes):
            counts["live"] += 1
            continue
        with session_scope() as s:
            audit = s.get(Audit, audit_id)
            row = s.get(FicheCache, audit.fiche_cache_id)
            outcome = finalize_running_audit(s, audit, row, run_id)
        if outcome["status"] == "completed":
            counts["finalized"] += 1
        elif outcome["status"] == "failed":
            counts["failed"] += 1
    return counts


@sensor(
    minimum_interval_seconds=120,
    default_status=DefaultSensorStatus.RUNNING,
    description="Finalizes audits left running by a dead run (missing steps become fallback results).",
)
def audit_watchdog(context: SensorEvaluationContext) -> SkipReason:
    from auditflow_dagster.db.embedded import ensure_database_env

    ensure_database_env()
    counts = sweep(context.instance, threshold_minutes=get_settings().audit_watchdog_minutes)
    if counts["finalized"] or counts["failed"]:
        context.log.warning(f"audit watchdog: {counts}")
    return SkipReason("audit watchdog: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
