"""Sensor ``audit_batches_progress``: batch audit progress without Redis (spec 04 §5).

Each tick advances every running batch from the ``audits`` table by tracking id
(:func:`db.batches.refresh_batch`: row-locked, idempotent, finalizes exactly once). When the batch's
backfill is over and none of its runs is still going, an item whose audit was never created
(e.g. the fiche could not be fetched) fails instead of waiting for the TTL; past the TTL
(``AUDIT_BATCH_STATE_TTL_SECONDS``, 6 h) a batch expires (Deviation: it never hangs silently).
"""

from __future__ import annotations

import datetime as dt

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from auditflow_dagster.db import batches as batch_db
from auditflow_dagster.db.clock import now_utc
from auditflow_dagster.db.session import session_scope

#: ``POST /api/audits/batch`` records its backfill right after launching it (one GraphQL call, 30 s
#: timeout, the rows dropped if it fails): a batch without one after this long lost its request
LAUNCH_GRACE = dt.timedelta(minutes=5)
BACKFILL_DONE = {"COMPLETED", "FAILED", "CANCELED", "COMPLETED_SUCCESS", "COMPLETED_FAILED"}
RUN_ACTIVE = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
              DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


def backfill_settled(instance, backfill_id: str | None) -> bool:
    """True only when Dagster knows the backfill, it is over, and none of its runs is active."""
    if not backfill_id or instance is None:
        return False
    backfill = instance.get_backfill(backfill_id)
    if backfill is None or backfill.status.value not in BACKFILL_DONE:
        return False
    return not instance.get_run_records(RunsFilter(tags={"dagster/backfill": backfill_id}, statuses=RUN_ACTIVE), limit=1)


def settle_unlaunched(instance, now: dt.datetime | None = None) -> dict[str, int]:
    """Batches whose API request died between writing the rows and recording the backfill (a
    replica killed mid-request): the backfill Dagster took carries the batch id as a tag, so it is
    recorded and the batch goes on as if the request had finished; with no such backfill nothing
    was launched, and the batch is dropped as the route drops one whose launch failed (its client
    never got the id). Only after ``LAUNCH_GRACE``: a live request records its backfill within its
    GraphQL timeout. Returns ``{adopted, dropped}``."""
    from dagster._core.execution.backfill import BulkActionsFilter

    counts = {"adopted": 0, "dropped": 0}
    with session_scope() as s:
        orphans = batch_db.unlaunched_batches(s, created_before=(now or now_utc()) - LAUNCH_GRACE)
    for batch_id in orphans:
        found = instance.get_backfills(filters=BulkActionsFilter(tags={"auditflow/batch_id": batch_id}), limit=1)
        with session_scope() as s:
            if found:
                batch_db.mark_launched(s, batch_id, found[0].backfill_id)
                counts["adopted"] += 1
            else:
                batch_db.drop_batch(s, batch_id)
                counts["dropped"] += 1
    return counts


def watch_batches(instance) -> dict[str, int]:
    """One pass over the running batches; returns ``{batches, advanced, finalized, adopted, dropped}``."""
    counts = {"batches": 0, "advanced": 0, "finalized": 0, **settle_unlaunched(instance)}
    with session_scope() as s:
        running = batch_db.running_batches(s)
    for batch_id, backfill_id in running:
        counts["batches"] += 1
        done = backfill_settled(instance, backfill_id)
        with session_scope() as s:
            result = batch_db.refresh_batch(s, batch_id, runs_done=done)
        if result:
            counts["advanced"] += result["advanced"]
            counts["finalized"] += int(result["finalized"])
    return counts


@sensor(
    minimum_interval_seconds=10,
    default_status=DefaultSensorStatus.RUNNING,
    description="Counts each batch audit's own audits (by tracking id), publishes batch.progress/batch.completed "
                "and finalizes or expires batches.",
)
def audit_batches_progress(context: SensorEvaluationContext) -> SkipReason:
    from auditflow_dagster.db.embedded import ensure_database_env

    ensure_database_env()
    counts = watch_batches(context.instance)
    return SkipReason(f"audit batches: running={counts['batches']}, advanced={counts['advanced']}, "
                      f"finalized={counts['finalized']}, unlaunched adopted={counts['adopted']}, "
                      f"dropped={counts['dropped']}")
