"""Sensor ``compliance_reports_trigger``: the compliance reports follow the audits (issue 10 §1).

A QA lead opening the Dagster UI in the morning finds yesterday's ``daily_compliance_report``
already materialized, and the week's roll-up with it, without anyone launching them.

Each tick reads the audits changed within ``AUDITFLOW_REPORT_LOOKBACK_DAYS`` (indexed on
``audits.updated_at``) grouped by sales day, and asks :func:`core.reports.days_due` which days
need their report rebuilt: an audit changed after the stored report read its rows, nothing of the
day is still pending or running, and the last change is ``AUDITFLOW_REPORT_SETTLE_SECONDS`` old
(a backfill finishing fiche after fiche gives one report, not one per fiche). Then weeks whose
roll-up is older than one of their daily reports get ``weekly_compliance_report`` — the next tick
after the daily run wrote its row, so the roll-up always includes it.

No cursor: the due state is read from the report tables, so a manual materialization in the UI
counts, and a lost tick is made up by the next. Run keys carry the change they cover
(``daily-compliance-report:<day>:<µs>``), so a day is never requested twice for the same state.
"""

import datetime as dt

from dagster import (
    AssetKey,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from auditflow_dagster.core import reports as core
from auditflow_dagster.db import reports as store
from auditflow_dagster.db.clock import now_utc
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.settings import get_settings

DAILY = AssetKey("daily_compliance_report")
WEEKLY = AssetKey("weekly_compliance_report")
FIRST_DAY = "2020-01-01"  # sales_days' start: older days have no partition


def _micros(at: dt.datetime) -> int:
    return int(at.replace(tzinfo=dt.UTC).timestamp() * 1_000_000)


def report_requests(now: dt.datetime) -> tuple[list[RunRequest], list[str]]:
    """The run requests due at ``now`` and one log line per request."""
    settings = get_settings()
    since = now - dt.timedelta(days=settings.report_lookback_days)
    last_partition = (now + dt.timedelta(days=2)).date().isoformat()
    with session_scope() as s:
        activity = [a for a in store.audit_activity(s, since) if FIRST_DAY <= a.day <= last_partition]
        generated = store.daily_generated(s, [a.day for a in activity])
        recent_daily = store.daily_generated(s, since=since)
        weekly = store.weekly_generated(s, sorted({core.week_partition_key(d) for d in recent_daily}))
    requests, lines = [], []
    for day, change in core.days_due(activity, generated, now=now,
                                     settle=dt.timedelta(seconds=settings.report_settle_seconds)):
        requests.append(RunRequest(run_key=f"daily-compliance-report:{day}:{_micros(change)}", partition_key=day,
                                   asset_selection=[DAILY], tags={"auditflow/trigger": "report-sensor"}))
        lines.append(f"daily_compliance_report[{day}]: audits changed up to {change.isoformat()}")
    for monday, newest in core.weeks_due(recent_daily, weekly):
        requests.append(RunRequest(run_key=f"weekly-compliance-report:{monday}:{_micros(newest)}",
                                   partition_key=monday, asset_selection=[WEEKLY],
                                   tags={"auditflow/trigger": "report-sensor"}))
        lines.append(f"weekly_compliance_report[{monday}]: daily report of {newest.isoformat()} not rolled up")
    return requests, lines


@sensor(
    name="compliance_reports_trigger",
    asset_selection=[DAILY, WEEKLY],
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description=("Materializes daily_compliance_report for each sales day whose audits changed and settled, "
                 "then the week's roll-up."),
)
def compliance_reports_trigger(context: SensorEvaluationContext) -> SensorResult | SkipReason:
    from auditflow_dagster.db.embedded import ensure_database_env

    ensure_database_env()
    requests, lines = report_requests(now_utc())
    if not requests:
        return SkipReason("no report due")
    for line in lines:
        context.log.info(line)
    return SensorResult(run_requests=requests)
