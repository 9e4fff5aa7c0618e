"""Sensor: a progressive fetch job never stays ``processing`` after its runs are gone.

Each tick looks at the processing jobs that were dispatched (their ``dagster_run_id`` is the
``sales_list`` backfill id), reads that backfill and its runs from the instance, and marks failed
the days no run will deliver any more (:func:`core.progress_watch.days_to_fail`). Marking goes
through :func:`db.progressive.apply_day_outcome` — the same row-locked updater the runs use — so
the job finalizes exactly once, with its ``fiches.progressive_fetch.failed`` event and webhook.
"""

from __future__ import annotations

from dagster import (
    DefaultSensorStatus,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)
from sqlalchemy import select

from auditflow_dagster.core.progress_watch import days_to_fail
from auditflow_dagster.db import progressive
from auditflow_dagster.db.models import ProgressiveFetchJob
from auditflow_dagster.db.session import session_scope

#: Backfill statuses after which the backfill launches nothing more.
BACKFILL_DONE = {"COMPLETED", "FAILED", "CANCELED", "COMPLETED_SUCCESS", "COMPLETED_FAILED"}


def dispatched_jobs(limit: int = 200) -> list[tuple[str, str, list[str]]]:
    with session_scope() as s:
        rows = s.execute(
            select(ProgressiveFetchJob.id, ProgressiveFetchJob.dagster_run_id, ProgressiveFetchJob.dates_remaining)
            .where(ProgressiveFetchJob.status == "processing", ProgressiveFetchJob.dagster_run_id.is_not(None))
            .order_by(ProgressiveFetchJob.created_at)
            .limit(limit)
        ).all()
    return [(job_id, backfill_id, list(remaining)) for job_id, backfill_id, remaining in rows if remaining]


def watch_jobs(instance) -> dict[str, int]:
    """One pass over the dispatched jobs; returns ``{jobs, days_failed}``."""
    counts = {"jobs": 0, "days_failed": 0}
    for job_id, backfill_id, remaining in dispatched_jobs():
        counts["jobs"] += 1
        backfill = instance.get_backfill(backfill_id)
        finished = backfill is None or backfill.status.value in BACKFILL_DONE
        runs = [(r.dagster_run.status.value, r.dagster_run.tags)
                for r in instance.get_run_records(RunsFilter(tags={"dagster/backfill": backfill_id}))]
        lost = days_to_fail(remaining, runs, backfill_finished=finished)
        if not lost:
            continue
        reason = ("the sales-list run for this day failed or was cancelled" if not finished
                  else "the fetch backfill ended without fetching this day")
        with session_scope() as s:
            for day in lost:
                if progressive.apply_day_outcome(s, job_id, day, False, reason):
                    counts["days_failed"] += 1
    return counts


@sensor(
    minimum_interval_seconds=10,
    default_status=DefaultSensorStatus.RUNNING,
    description="Fails the days of progressive fetch jobs whose runs failed or were cancelled, so no job stays processing forever.",
)
def progressive_fetch_watchdog(context: SensorEvaluationContext) -> SkipReason:
    from auditflow_dagster.db.embedded import ensure_database_env

    ensure_database_env()
    counts = watch_jobs(context.instance)
    if counts["days_failed"]:
        context.log.warning(f"progressive fetch: {counts['days_failed']} day(s) marked failed")
    return SkipReason(f"progressive fetch watchdog: jobs={counts['jobs']}, days_failed={counts['days_failed']}")
