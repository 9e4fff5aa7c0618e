"""When the report trigger asks for a daily or weekly report (core.reports.days_due / weeks_due)."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from auditflow_dagster.core.reports import (
    DayActivity,
    days_due,
    week_partition_key,
    weeks_due,
)

NOW = dt.datetime(2026, 11, 28, 8, 0)
SETTLE = dt.timedelta(seconds=120)


def _a(day: str, minutes_ago: float, busy: bool = False) -> DayActivity:
    return DayActivity(day=day, last_change=NOW - dt.timedelta(minutes=minutes_ago), busy=busy)


def test_a_settled_day_without_report_is_due_with_its_last_change():
    a = _a("2026-11-27", 5)
    assert days_due([a], {}, now=NOW, settle=SETTLE) == [("2026-11-27", a.last_change)]


def test_busy_or_recent_days_wait():
    assert days_due([_a("2026-11-27", 60, busy=True)], {}, now=NOW, settle=SETTLE) == []
    assert days_due([_a("2026-11-27", 1)], {}, now=NOW, settle=SETTLE) == []  # changed a minute ago


def test_a_report_that_read_after_the_last_change_is_current():
    a = _a("2026-11-27", 30)
    assert days_due([a], {"2026-11-27": a.last_change}, now=NOW, settle=SETTLE) == []
    assert days_due([a], {"2026-11-27": a.last_change - dt.timedelta(microseconds=1)}, now=NOW,
                    settle=SETTLE) == [("2026-11-27", a.last_change)]


@given(st.lists(st.tuples(st.dates(dt.date(2024, 1, 1), dt.date(2026, 12, 31)), st.floats(0, 600),
                          st.booleans(), st.one_of(st.none(), st.floats(-600, 600))), max_size=20))
def test_days_due_is_exactly_the_stale_settled_idle_days(rows):
    activity, generated = [], {}
    for day, ago, busy, report_offset in {r[0]: r for r in rows}.values():
        a = _a(day.isoformat(), ago, busy)
        activity.append(a)
        if report_offset is not None:
            generated[a.day] = a.last_change + dt.timedelta(minutes=report_offset)
    due = days_due(activity, generated, now=NOW, settle=SETTLE)
    assert [d for d, _ in due] == sorted(d for d, _ in due)
    for a in activity:
        stale = a.day not in generated or generated[a.day] < a.last_change
        expected = stale and not a.busy and NOW - a.last_change >= SETTLE
        assert ((a.day, a.last_change) in due) == expected


def test_week_partition_is_the_monday():
    assert week_partition_key("2026-11-27") == "2026-11-23"  # a Friday
    assert week_partition_key("2026-11-23") == "2026-11-23"
    assert week_partition_key("2026-11-29") == "2026-11-23"  # Sunday closes the ISO week
    assert week_partition_key("2027-01-01") == "2026-12-28"  # ISO week 53 of 2026


def test_weeks_due_follow_the_newest_daily_report():
    t = NOW - dt.timedelta(hours=1)
    daily = {"2026-11-24": t, "2026-11-27": t + dt.timedelta(minutes=5), "2026-11-30": t}
    assert weeks_due(daily, {}) == [("2026-11-23", t + dt.timedelta(minutes=5)), ("2026-11-30", t)]
    # the roll-up read after both daily reports of its week: only the next week is due
    assert weeks_due(daily, {"2026-11-23": t + dt.timedelta(minutes=6)}) == [("2026-11-30", t)]
    # a daily report rebuilt after the roll-up makes the week due again
    assert weeks_due(daily, {"2026-11-23": t + dt.timedelta(minutes=1), "2026-11-30": t}) == [
        ("2026-11-23", t + dt.timedelta(minutes=5))]
