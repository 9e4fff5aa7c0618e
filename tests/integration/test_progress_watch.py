"""The progressive-fetch watchdog against a real Dagster instance (Postgres storage) and real jobs."""

from __future__ import annotations

import time

from dagster import AssetKey, DagsterRunStatus
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.test_utils import create_run_for_test
from sqlalchemy import select

from auditflow_dagster.db import progressive
from auditflow_dagster.db.models import Event, ProgressiveFetchJob
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.definitions import defs
from auditflow_dagster.sensors.progress import progressive_fetch_watchdog, watch_jobs

DAYS = ["2026-04-06", "2026-04-07", "2026-04-08", "2026-04-09"]


def _job() -> str:
    with session_scope() as s:
        job = progressive.create_job(s, start=DAYS[0], end=DAYS[-1], days=DAYS, cached=[], remaining=list(DAYS),
                                     refresh=False, webhook_url=None, webhook_secret_sealed=None)
        return job.id


def _backfill(instance, job_id: str) -> str:
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=f"bf{job_id[-6:]}", asset_graph=defs.resolve_asset_graph(), partition_names=DAYS,
        asset_selection=[AssetKey("sales_list")], backfill_timestamp=time.time(),
        tags={"auditflow/trigger": "progressive_fetch", "auditflow/progressive_job": job_id},
        dynamic_partitions_store=instance, all_partitions=False, title=None, description=None, run_config=None)
    instance.add_backfill(backfill)
    with session_scope() as s:
        progressive.mark_dispatched(s, job_id, backfill.backfill_id)
    return backfill.backfill_id


def _run(instance, backfill_id: str, start: str, end: str, status: DagsterRunStatus) -> None:
    create_run_for_test(instance, job_name="__ASSET_JOB", status=status, tags={
        "dagster/backfill": backfill_id, "dagster/asset_partition_range_start": start,
        "dagster/asset_partition_range_end": end})


def _state(job_id: str) -> ProgressiveFetchJob:
    with session_scope() as s:
        job = s.get(ProgressiveFetchJob, job_id)
        s.expunge(job)
        return job


def test_failed_run_fails_its_days_then_finished_backfill_finalizes(db, dagster_instance):
    instance = dagster_instance
    job_id = _job()
    backfill_id = _backfill(instance, job_id)
    _run(instance, backfill_id, DAYS[0], DAYS[1], DagsterRunStatus.FAILURE)
    _run(instance, backfill_id, DAYS[2], DAYS[2], DagsterRunStatus.SUCCESS)
    with session_scope() as s:  # that run delivered its day itself
        progressive.apply_day_outcome(s, job_id, DAYS[2], True)

    assert watch_jobs(instance) == {"jobs": 1, "days_failed": 2}
    job = _state(job_id)
    assert job.status == "processing"
    assert job.dates_failed == DAYS[:2] and job.dates_already_fetched == [DAYS[2]] and job.dates_remaining == [DAYS[3]]
    assert watch_jobs(instance) == {"jobs": 1, "days_failed": 0}  # idempotent while the backfill goes on

    # the backfill ends without a run for the last day (e.g. cancelled): the job finalizes as failed
    instance.update_backfill(instance.get_backfill(backfill_id).with_status(BulkActionStatus.CANCELED))
    result = progressive_fetch_watchdog(_sensor_context(instance))
    assert "days_failed=1" in result.skip_message
    job = _state(job_id)
    assert job.status == "failed" and job.progress == 100 and job.dates_remaining == []
    assert job.dates_failed == [DAYS[0], DAYS[1], DAYS[3]]
    with session_scope() as s:
        names = list(s.scalars(select(Event.name).where(Event.channels.any(f"job-{job_id}")).order_by(Event.id)))
    assert names[0] == "fiches.progressive_fetch.created" and names[-1] == "fiches.progressive_fetch.failed"
    assert names.count("fiches.progressive_fetch.failed") == 1
    assert watch_jobs(instance) == {"jobs": 0, "days_failed": 0}


def test_running_backfill_with_no_failed_run_is_left_alone(db, dagster_instance):
    job_id = _job()
    backfill_id = _backfill(dagster_instance, job_id)
    _run(dagster_instance, backfill_id, DAYS[0], DAYS[-1], DagsterRunStatus.STARTED)
    assert watch_jobs(dagster_instance) == {"jobs": 1, "days_failed": 0}
    assert _state(job_id).dates_remaining == DAYS


def _sensor_context(instance):
    from dagster import build_sensor_context

    return build_sensor_context(instance=instance)
