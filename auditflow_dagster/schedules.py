"""Schedules of the code location: the morning sales day and the cache revalidation (spec 01 §3)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    define_asset_job,
    in_process_executor,
    schedule,
)

from auditflow_dagster.assets.sales import sales_list
from auditflow_dagster.partitions import sales_days

BUSINESS_TZ = ZoneInfo("Europe/Paris")
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
#: Runs with these triggers only refresh the cache; the day sensor does not audit their days.
#: runs whose ``sales_list`` materializations must not start the day's audit backfill: cache
#: refreshes, and automation runs (which launch their own backfill of the fiches they selected)
CACHE_ONLY_TRIGGERS = frozenset({"progressive_fetch", "revalidation", "automation"})

sales_day_job = define_asset_job(
    "sales_day",
    selection=[sales_list],
    partitions_def=sales_days,
    executor_def=in_process_executor,
    description="Cache one day's CRM sales list and register its fiches.",
)


def business_day(moment: dt.datetime, offset_days: int = 0) -> str:
    """The Paris calendar day of ``moment`` shifted by ``offset_days`` (a tick at 00:30 Paris on
    1 March is still "yesterday = 28/29 February", whatever the UTC date)."""
    return (moment.astimezone(BUSINESS_TZ).date() + dt.timedelta(days=offset_days)).isoformat()


@schedule(
    job=sales_day_job,
    cron_schedule="0 6 * * *",
    execution_timezone="Europe/Paris",
    name="sales_day_schedule",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Every morning, yesterday's sales list (the day sensor then audits its fiches).",
)
def daily_sales_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    """Targets the previous business day of the tick, so a late or replayed tick is still exact."""
    day = business_day(context.scheduled_execution_time, -1)
    return RunRequest(run_key=f"sales-day-{day}", partition_key=day, tags={"auditflow/trigger": "schedule"})


@schedule(
    job=sales_day_job,
    cron_schedule="*/30 7-21 * * *",
    execution_timezone="Europe/Paris",
    name="sales_revalidation_schedule",
    default_status=DefaultScheduleStatus.RUNNING,
    description=(
        "Every 30 minutes in business hours, re-reads yesterday's and today's CRM sales lists so the "
        "cache sees late sales and edits (spec 01 §3). Cache only: these runs are not audited."
    ),
)
def revalidation_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    """One run over the two days (the asset's multi-run policy allows a range), one search per day
    under the global ``crm_sales_search`` cap; the run key makes each tick launch at most once."""
    tick = context.scheduled_execution_time
    start, end = business_day(tick, -1), business_day(tick, 0)
    return RunRequest(
        run_key=f"revalidate-{tick.astimezone(dt.UTC):%Y%m%dT%H%M}",
        tags={RANGE_START_TAG: start, RANGE_END_TAG: end, "auditflow/trigger": "revalidation"},
    )
