"""Sensor ``run_endings``: a Dagster run that fails or is cancelled ends what it was doing for the
frontend too (issue 8 §1: no client waits forever).

Cursor: the last ``update_timestamp`` seen among FAILURE/CANCELED runs. For each newly ended run
that Dagster will not retry (no ``dagster/will_retry=true``) and that no live re-execution is
continuing:

- audits still ``running`` under the run's root id are finalized at once, by the function the
  ``audits`` asset and the watchdog use (stored steps kept, never re-billed; missing steps become
  fallback results; nothing analysed ⇒ ``audit.failed``) — the terminal ``audit.*`` event follows;
- fiches whose ``transcription.started`` event of this run has no ``transcription.completed`` /
  ``transcription.failed`` get ``transcription.failed`` with the run's ending as the error.

The ``audit_watchdog`` stays as the safety net for runs whose process vanished without Dagster
marking them (it waits ``AUDIT_WATCHDOG_MINUTES``).
"""

import datetime as dt

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)
from sqlalchemy import select

from auditflow_dagster.db.clock import iso, now_utc
from auditflow_dagster.db.events import emit
from auditflow_dagster.db.finalizer import finalize_running_audit
from auditflow_dagster.db.models import Audit, Event, FicheCache
from auditflow_dagster.db.session import session_scope

ENDED = [DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]
UNFINISHED = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
              DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


def _continued(instance, root: str) -> bool:
    """A re-execution of the same root is queued or running: it will finish the work."""
    return bool(instance.get_run_records(RunsFilter(tags={"dagster/root_run_id": root}, statuses=UNFINISHED),
                                         limit=1))


def _will_retry(instance, run) -> bool:
    """Dagster will relaunch this failed run (run retries). It records the failure, then tags the
    run ``dagster/will_retry`` in a second write: read in between, the tag is missing although a
    retry is coming, and finalizing now would end its audits with fallback steps that the retry
    could no longer replace. So without the tag, decide as Dagster does."""
    tag = run.tags.get("dagster/will_retry")
    if tag is not None:
        return tag == "true"
    if run.status != DagsterRunStatus.FAILURE or not instance.run_retries_enabled:
        return False
    from dagster._core.events import RunFailureReason
    from dagster._core.execution.retries import auto_reexecution_should_retry_run

    reason = run.tags.get("dagster/failure_reason")
    return auto_reexecution_should_retry_run(instance, run, RunFailureReason(reason) if reason else None)


def end_run(instance, run) -> dict[str, int]:
    """Terminal events for one ended run; idempotent (finalized audits and answered fiches are
    left alone). Returns ``{audits, transcriptions}`` counts."""
    counts = {"audits": 0, "transcriptions": 0}
    if _will_retry(instance, run):
        return counts
    root = run.root_run_id or run.run_id
    if _continued(instance, root):
        return counts
    ending = "cancelled" if run.status == DagsterRunStatus.CANCELED else "failed"
    with session_scope() as s:
        running = s.execute(select(Audit.id).where(Audit.status == "running", Audit.dagster_run_id == root)).scalars().all()
    for audit_id in running:
        with session_scope() as s:
            audit = s.get(Audit, audit_id)
            row = s.get(FicheCache, audit.fiche_cache_id)
            outcome = finalize_running_audit(s, audit, row, run.run_id)
        counts["audits"] += outcome["status"] in ("completed", "failed")
    with session_scope() as s:
        started = s.execute(select(Event.payload["fiche_id"].astext).where(
            Event.name == "transcription.started", Event.payload["run_id"].astext == run.run_id)).scalars().all()
        answered = set(s.execute(select(Event.payload["fiche_id"].astext).where(
            Event.name.in_(("transcription.completed", "transcription.failed")),
            Event.payload["run_id"].astext == run.run_id)).scalars().all())
        for fiche_id in dict.fromkeys(started):
            if fiche_id in answered:
                continue
            emit(s, "transcription.failed", {
                "fiche_id": fiche_id, "error": f"Dagster run {run.run_id} {ending} before the transcription finished",
                "failed_at": iso(now_utc()), "status": "failed", "run_id": run.run_id,
                "partial_results": None})
            counts["transcriptions"] += 1
    return counts


def sweep(instance, cursor: float | None, limit: int = 100) -> tuple[dict[str, int], float | None]:
    """One pass over runs that ended since ``cursor`` (update timestamp, seconds)."""
    after = dt.datetime.fromtimestamp(cursor, dt.UTC) if cursor else None
    records = instance.get_run_records(RunsFilter(statuses=ENDED, updated_after=after), limit=limit,
                                       order_by="update_timestamp", ascending=True)
    totals = {"runs": 0, "audits": 0, "transcriptions": 0}
    for rec in records:
        totals["runs"] += 1
        for k, v in end_run(instance, rec.dagster_run).items():
            totals[k] += v
        cursor = max(cursor or 0.0, rec.update_timestamp.timestamp())
    return totals, cursor


@sensor(
    name="run_endings",
    minimum_interval_seconds=10,
    default_status=DefaultSensorStatus.RUNNING,
    description="When a run fails or is cancelled (and will not be retried), finalizes its running audits and "
                "ends its open transcriptions, so every SSE client gets a terminal event.",
)
def run_endings(context: SensorEvaluationContext) -> SensorResult:
    from auditflow_dagster.db.embedded import ensure_database_env

    ensure_database_env()
    cursor = float(context.cursor) if context.cursor else None
    if cursor is None:  # first evaluation: only runs ending from now on (the watchdog has the past)
        cursor = now_utc().replace(tzinfo=dt.UTC).timestamp()
    totals, cursor = sweep(context.instance, cursor)
    return SensorResult(cursor=str(cursor), skip_reason=(
        f"run endings: runs={totals['runs']}, audits={totals['audits']}, transcriptions={totals['transcriptions']}"))
