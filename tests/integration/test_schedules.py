"""Schedules: the morning sales day and the cache revalidation, evaluated by Dagster itself, and a
revalidation run executed for real (cache refreshed, nothing audited)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from dagster import build_schedule_context, materialize

from auditflow_dagster.assets.sales import sales_list
from auditflow_dagster.definitions import defs
from auditflow_dagster.resources.crm import CrmResource
from auditflow_dagster.resources.database import DatabaseResource
from auditflow_dagster.schedules import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    business_day,
    revalidation_schedule,
)

PARIS = ZoneInfo("Europe/Paris")


def _request(tick: dt.datetime):
    ctx = build_schedule_context(scheduled_execution_time=tick, repository_def=defs.get_repository_def())
    [req] = revalidation_schedule.evaluate_tick(ctx).run_requests
    return req


def test_revalidation_covers_yesterday_and_today_in_paris():
    req = _request(dt.datetime(2026, 3, 1, 7, 0, tzinfo=PARIS))
    assert (req.tags[RANGE_START_TAG], req.tags[RANGE_END_TAG]) == ("2026-02-28", "2026-03-01")
    assert req.tags["auditflow/trigger"] == "revalidation"
    assert req.run_key == "revalidate-20260301T0600"
    other = _request(dt.datetime(2026, 3, 1, 7, 30, tzinfo=PARIS))
    assert other.run_key != req.run_key  # each tick launches once; a replayed tick reuses its key


def test_business_day_is_the_paris_date():
    assert business_day(dt.datetime(2026, 6, 30, 22, 30, tzinfo=dt.UTC)) == "2026-07-01"  # 00:30 Paris
    assert business_day(dt.datetime(2026, 6, 30, 22, 30, tzinfo=dt.UTC), -1) == "2026-06-30"


def test_revalidation_run_refreshes_both_days(db, dagster_instance):
    tags = _request(dt.datetime(2026, 3, 11, 9, 0, tzinfo=PARIS)).tags
    result = materialize([sales_list], instance=dagster_instance, tags=tags,
                         resources={"crm": CrmResource(mode="sample"), "db": DatabaseResource()})
    assert result.success
    mats = result.asset_materializations_for_node("sales_list")
    assert sorted(m.partition for m in mats) == ["2026-03-10", "2026-03-11"]  # one run, both days
    from sqlalchemy import select

    from auditflow_dagster.db.models import FicheSalesDay
    from auditflow_dagster.db.session import session_scope

    with session_scope() as s:
        days = set(s.scalars(select(FicheSalesDay.sales_date)))
    assert days == {"2026-03-10", "2026-03-11"}
