"""Schedule mathematics (spec 05 §1.2, §1.4, §2.1–§2.2, §2.6): validation, derived cron,
occurrences in IANA zones across DST, due detection and run keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditflow_dagster.core.schedules import (
    REQUIRED_FIELDS_MESSAGES,
    ScheduleConfigError,
    ScheduleTiming,
    derive_cron,
    due_occurrence,
    effective_window_minutes,
    epoch_ms,
    is_occurrence_instant,
    next_occurrence,
    occurrences_between,
    parse_cron,
    resolve_zone,
    run_key,
    tick_period_minutes,
    tick_should_scan,
    timing_of,
    validate_timing,
    wall_time_instant,
)

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
MINUTE = timedelta(minutes=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def paris(*args: int, fold: int = 0) -> datetime:
    """A Paris wall time as a UTC instant."""
    return datetime(*args, tzinfo=PARIS, fold=fold).astimezone(UTC)


def daily(tod: str, tz: str = "Europe/Paris") -> ScheduleTiming:
    return ScheduleTiming("DAILY", tz, time_of_day=tod)


def simulate(schedule: ScheduleTiming, start: datetime, end: datetime, *, tick: timedelta = MINUTE,
             window: int = 20, jitter: timedelta = timedelta(seconds=7)) -> list[datetime]:
    """Time travel: tick the scheduler from ``start`` to ``end``; each launch sets last_run_at = due_at (§2.5 CAS)."""
    launched: list[datetime] = []
    keys: set[str] = set()
    last_run_at: datetime | None = None
    now = start + jitter
    while now < end:
        due = due_occurrence(schedule, now, last_run_at, window_minutes=window)
        if due is not None:
            assert due.due_at <= now
            key = due.run_key(42)
            assert key not in keys, f"duplicate run key {key}"
            keys.add(key)
            launched.append(due.due_at)
            last_run_at = due.due_at
        now += tick
    return launched


def local_walls(instants: list[datetime], zone: ZoneInfo) -> list[tuple[int, ...]]:
    return [tuple(i.astimezone(zone).timetuple())[:5] for i in instants]


# --------------------------------------------------------------------------------------------
# Validation (§1.4) and derived cron (§1.2)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"scheduleType": "DAILY"}, "DAILY schedule requires timeOfDay"),
        ({"scheduleType": "WEEKLY", "timeOfDay": "09:00"}, "WEEKLY schedule requires timeOfDay and dayOfWeek"),
        ({"scheduleType": "WEEKLY", "dayOfWeek": 0}, "WEEKLY schedule requires timeOfDay and dayOfWeek"),
        ({"scheduleType": "MONTHLY", "timeOfDay": "09:00"}, "MONTHLY schedule requires timeOfDay and dayOfMonth"),
        ({"scheduleType": "CRON"}, "CRON schedule requires cronExpression"),
        ({"scheduleType": "CRON", "cronExpression": "  "}, "CRON schedule requires cronExpression"),
    ],
)
def test_type_rules_use_the_spec_messages(fields: dict, message: str) -> None:
    assert validate_timing(fields) == [message]


@pytest.mark.parametrize(
    "fields",
    [
        {"scheduleType": "MANUAL"},
        {"scheduleType": "DAILY", "timeOfDay": "00:00"},
        {"scheduleType": "WEEKLY", "timeOfDay": "23:59", "dayOfWeek": 0, "timezone": "America/New_York"},
        {"scheduleType": "MONTHLY", "timeOfDay": "07:00", "dayOfMonth": 31, "timezone": "Asia/Kolkata"},
        {"scheduleType": "CRON", "cronExpression": "*/15 * * * *"},
        # non-CRON types ignore (and do not validate) a client-supplied cron
        {"scheduleType": "DAILY", "timeOfDay": "09:05", "cronExpression": "garbage"},
        {"schedule_type": "WEEKLY", "time_of_day": "09:05", "day_of_week": 6},
    ],
)
def test_valid_timings(fields: dict) -> None:
    assert validate_timing(fields) == []


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"scheduleType": "DAILY", "timeOfDay": "9:05"}, "timeOfDay must be HH:MM"),
        ({"scheduleType": "DAILY", "timeOfDay": "24:00"}, "timeOfDay must be HH:MM"),
        ({"scheduleType": "DAILY", "timeOfDay": "12:60"}, "timeOfDay must be HH:MM"),
        ({"scheduleType": "DAILY", "timeOfDay": "١٢:٠٠"}, "timeOfDay must be HH:MM"),  # non-ASCII digits
        ({"scheduleType": "WEEKLY", "timeOfDay": "09:00", "dayOfWeek": 7}, "dayOfWeek must be"),
        ({"scheduleType": "WEEKLY", "timeOfDay": "09:00", "dayOfWeek": True}, "dayOfWeek must be"),
        ({"scheduleType": "MONTHLY", "timeOfDay": "09:00", "dayOfMonth": 0}, "dayOfMonth must be"),
        ({"scheduleType": "MONTHLY", "timeOfDay": "09:00", "dayOfMonth": 32}, "dayOfMonth must be"),
        ({"scheduleType": "DAILY", "timeOfDay": "09:00", "timezone": "Mars/Olympus"}, "timezone must be"),
        ({"scheduleType": "DAILY", "timeOfDay": "09:00", "timezone": ""}, "timezone must be"),
        ({"scheduleType": "DAILY", "timeOfDay": "09:00", "timezone": "../etc/passwd"}, "timezone must be"),
        ({"scheduleType": "HOURLY"}, "scheduleType must be one of"),
        ({"scheduleType": "CRON", "cronExpression": "0 9 * * MON"}, "cronExpression is invalid"),
        ({"scheduleType": "CRON", "cronExpression": "0 24 * * *"}, "cronExpression is invalid"),
    ],
)
def test_invalid_timings(fields: dict, fragment: str) -> None:
    errors = validate_timing(fields)
    assert any(fragment in e for e in errors), errors


@pytest.mark.parametrize(
    ("timing", "cron"),
    [
        (ScheduleTiming("MANUAL"), None),
        (ScheduleTiming("DAILY", time_of_day="09:05"), "5 9 * * *"),
        (ScheduleTiming("WEEKLY", time_of_day="00:00", day_of_week=0), "0 0 * * 0"),
        (ScheduleTiming("MONTHLY", time_of_day="23:59", day_of_month=31), "59 23 31 * *"),
        (ScheduleTiming("CRON", cron_expression="  */5   1-3 * * 1,3 "), "*/5 1-3 * * 1,3"),
        # the stored cron of non-CRON types is informational only: always re-derived
        (ScheduleTiming("DAILY", time_of_day="07:00", cron_expression="0 3 * * *"), "0 7 * * *"),
    ],
)
def test_derived_cron(timing: ScheduleTiming, cron: str | None) -> None:
    assert derive_cron(timing) == cron


def test_derive_cron_refuses_incomplete_rows() -> None:
    with pytest.raises(ScheduleConfigError, match=REQUIRED_FIELDS_MESSAGES["WEEKLY"]):
        derive_cron(ScheduleTiming("WEEKLY", time_of_day="09:00"))
    with pytest.raises(ScheduleConfigError):
        occurrences_between(ScheduleTiming("CRON", cron_expression="0 9 * *"), utc(2026, 1, 1), utc(2026, 1, 2))


def test_timing_of_accepts_rows_and_dicts() -> None:
    class Row:
        schedule_type = "DAILY"
        timezone = None
        time_of_day = "09:00"
        day_of_week = None
        day_of_month = None
        cron_expression = None

    assert timing_of(Row()) == ScheduleTiming("DAILY", "UTC", "09:00")
    assert timing_of({"scheduleType": "CRON", "cronExpression": "* * * * *"}).cron_expression == "* * * * *"


def test_unknown_zone_of_existing_row_falls_back_to_utc(caplog: pytest.LogCaptureFixture) -> None:
    assert resolve_zone("Nowhere/Land") == ZoneInfo("UTC")
    assert "Nowhere/Land" in caplog.text
    occ = occurrences_between(daily("09:00", "Nowhere/Land"), utc(2026, 1, 1), utc(2026, 1, 2))
    assert occ == [utc(2026, 1, 1, 9)]


# --------------------------------------------------------------------------------------------
# Cron dialect (§2.2)
# --------------------------------------------------------------------------------------------


def test_cron_tokens() -> None:
    c = parse_cron("*/20 1-3,22 5/10 2-12/5 7")
    assert c.minutes == {0, 20, 40}
    assert c.hours == {1, 2, 3, 22}
    assert c.days_of_month == {5, 15, 25}
    assert c.months == {2, 7, 12}
    assert c.days_of_week == {0}  # 7 = Sunday
    assert parse_cron("0 0 * * 1-7").dow_restricted is False
    assert parse_cron("0 0 */1 * *").dom_restricted is False


@pytest.mark.parametrize(
    "expr",
    ["", "* * * *", "0 * * * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * 32 * *", "* * * 13 *",
     "* * * * 8", "* * * JAN *", "* * * * MON", "* * ? * *", "* * L * *", "* * 15W * *", "* * * * 5#2",
     "5-1 * * * *", "*/0 * * * *", "1,,2 * * * *", "-1 * * * *", "a * * * *", "1-2-3 * * * *"],
)
def test_cron_rejections(expr: str) -> None:
    with pytest.raises(ScheduleConfigError):
        parse_cron(expr)


def test_dom_dow_or_rule() -> None:
    # both restricted ⇒ OR: the 13th of any month, or any Friday
    c = parse_cron("0 0 13 * 5")
    assert c.day_matches(datetime(2026, 1, 13).date())  # Tuesday the 13th
    assert c.day_matches(datetime(2026, 1, 16).date())  # Friday
    assert not c.day_matches(datetime(2026, 1, 14).date())
    # only one restricted ⇒ that one
    assert not parse_cron("0 0 13 * *").day_matches(datetime(2026, 1, 16).date())
    assert not parse_cron("0 0 * * 5").day_matches(datetime(2026, 1, 13).date())
    # */2 is restricted (semantic reading) ⇒ OR with the DOW
    c = parse_cron("0 0 */2 * 1")
    assert c.day_matches(datetime(2026, 1, 3).date()) and c.day_matches(datetime(2026, 1, 5).date())  # odd day / Monday
    assert not c.day_matches(datetime(2026, 1, 4).date())


# --------------------------------------------------------------------------------------------
# Europe/Paris across both 2026 DST changes (§2.6)
# --------------------------------------------------------------------------------------------

SPRING = (utc(2026, 3, 27), utc(2026, 4, 1))  # 29 March 02:00 → 03:00
AUTUMN = (utc(2026, 10, 23), utc(2026, 10, 28))  # 25 October 03:00 → 02:00


def test_wall_time_instant_gap_and_fold() -> None:
    assert wall_time_instant(datetime(2026, 3, 29, 2, 30), PARIS) is None
    assert wall_time_instant(datetime(2026, 3, 29, 3, 0), PARIS) == utc(2026, 3, 29, 1)
    assert wall_time_instant(datetime(2026, 10, 25, 2, 30), PARIS) == utc(2026, 10, 25, 0, 30)  # first pass


def test_daily_0230_paris_spring_forward_is_skipped() -> None:
    expected = [paris(2026, 3, 27, 2, 30), paris(2026, 3, 28, 2, 30), paris(2026, 3, 30, 2, 30), paris(2026, 3, 31, 2, 30)]
    assert occurrences_between(daily("02:30"), *SPRING) == expected
    assert simulate(daily("02:30"), *SPRING) == expected


def test_daily_0230_paris_fall_back_runs_once_at_first_instant() -> None:
    occ = occurrences_between(daily("02:30"), *AUTUMN)
    assert [o for o in occ if o.astimezone(PARIS).day == 25] == [utc(2026, 10, 25, 0, 30)]
    assert len(occ) == 5
    assert simulate(daily("02:30"), *AUTUMN) == occ
    # the second pass (02:30 CET = 01:30 UTC) fires nothing, even with no run recorded
    assert due_occurrence(daily("02:30"), utc(2026, 10, 25, 1, 30), None) is None
    assert due_occurrence(daily("02:30"), utc(2026, 10, 25, 1, 30), utc(2026, 10, 25, 0, 30)) is None


@pytest.mark.parametrize("window", [(SPRING), (AUTUMN)])
def test_daily_0700_paris_keeps_wall_time(window: tuple[datetime, datetime]) -> None:
    occ = simulate(daily("07:00"), *window)
    assert len(occ) == 5
    assert all(o.astimezone(PARIS).timetuple()[3:5] == (7, 0) for o in occ)
    assert occurrences_between(daily("07:00"), *window) == occ


def test_daily_0700_paris_utc_instants_shift() -> None:
    assert occurrences_between(daily("07:00"), utc(2026, 3, 28), utc(2026, 3, 30)) == [
        utc(2026, 3, 28, 6), utc(2026, 3, 29, 5)]
    assert occurrences_between(daily("07:00"), utc(2026, 10, 24), utc(2026, 10, 26)) == [
        utc(2026, 10, 24, 5), utc(2026, 10, 25, 6)]


def test_weekly_sunday_paris_across_both_changes() -> None:
    sunday_0230 = ScheduleTiming("WEEKLY", "Europe/Paris", "02:30", day_of_week=0)
    assert simulate(sunday_0230, utc(2026, 3, 20), utc(2026, 4, 7)) == [
        paris(2026, 3, 22, 2, 30), paris(2026, 4, 5, 2, 30)]  # 29 March skipped (gap)
    assert simulate(sunday_0230, utc(2026, 10, 17), utc(2026, 11, 3)) == [
        paris(2026, 10, 18, 2, 30), utc(2026, 10, 25, 0, 30), paris(2026, 11, 1, 2, 30)]
    # the CRON spelling with 7 = Sunday is the same schedule
    cron_7 = ScheduleTiming("CRON", "Europe/Paris", cron_expression="30 2 * * 7")
    assert occurrences_between(cron_7, utc(2026, 10, 1), utc(2026, 11, 3)) == occurrences_between(
        sunday_0230, utc(2026, 10, 1), utc(2026, 11, 3))
    sunday_0700 = ScheduleTiming("WEEKLY", "Europe/Paris", "07:00", day_of_week=0)
    assert simulate(sunday_0700, utc(2026, 3, 20), utc(2026, 4, 7)) == [
        utc(2026, 3, 22, 6), utc(2026, 3, 29, 5), utc(2026, 4, 5, 5)]


def test_monthly_31st_skips_short_months() -> None:
    monthly = ScheduleTiming("MONTHLY", "Europe/Paris", "07:00", day_of_month=31)
    occ = occurrences_between(monthly, utc(2026, 1, 1), utc(2027, 1, 1))
    assert [o.astimezone(PARIS).month for o in occ] == [1, 3, 5, 7, 8, 10, 12]
    assert all(o.astimezone(PARIS).day == 31 for o in occ)
    # 31 March is after the spring change, 31 October after the autumn change
    assert paris(2026, 3, 31, 7) in occ and paris(2026, 10, 31, 7) in occ


def test_monthly_on_dst_days_paris() -> None:
    on_29 = ScheduleTiming("MONTHLY", "Europe/Paris", "02:30", day_of_month=29)
    occ = simulate(on_29, utc(2026, 1, 1), utc(2026, 5, 1), tick=timedelta(minutes=5))
    assert [o.astimezone(PARIS).month for o in occ] == [1, 4]  # no Feb 29 in 2026; 29 March 02:30 does not exist
    on_25 = ScheduleTiming("MONTHLY", "Europe/Paris", "02:30", day_of_month=25)
    assert occurrences_between(on_25, utc(2026, 10, 1), utc(2026, 11, 1)) == [utc(2026, 10, 25, 0, 30)]


def test_cron_every_15_minutes_spring_forward() -> None:
    every15 = ScheduleTiming("CRON", "Europe/Paris", cron_expression="*/15 * * * *")
    start, end = utc(2026, 3, 28, 22), utc(2026, 3, 29, 4)
    occ = simulate(every15, start, end)
    # every UTC quarter-hour maps to an existing local quarter-hour: nothing lost, nothing doubled
    assert occ == [start + timedelta(minutes=15 * i) for i in range(24)]
    walls = local_walls(occ, PARIS)
    assert len(set(walls)) == len(walls)
    assert not any(w[2] == 29 and w[3] == 2 for w in walls)  # 02:xx does not exist that day
    assert occurrences_between(every15, start, end) == occ


def test_cron_every_15_minutes_fall_back() -> None:
    every15 = ScheduleTiming("CRON", "Europe/Paris", cron_expression="*/15 * * * *")
    start, end = utc(2026, 10, 24, 22), utc(2026, 10, 25, 4)
    occ = simulate(every15, start, end)
    all_quarters = [start + timedelta(minutes=15 * i) for i in range(24)]
    second_pass = [utc(2026, 10, 25, 1, m) for m in (0, 15, 30, 45)]  # 02:00–02:45 CET
    assert occ == [q for q in all_quarters if q not in second_pass]
    walls = local_walls(occ, PARIS)
    assert len(set(walls)) == len(walls)  # each wall time once
    # every local quarter-hour 00:00–04:45 of 25 October is present exactly once
    assert walls == [(2026, 10, 25, h, m) for h in range(5) for m in (0, 15, 30, 45)]
    assert occurrences_between(every15, start, end) == occ


# --------------------------------------------------------------------------------------------
# Other zones
# --------------------------------------------------------------------------------------------


def test_new_york_dst() -> None:
    # 8 March 2026 02:00 → 03:00; 1 November 2026 02:00 → 01:00
    assert simulate(daily("02:30", "America/New_York"), utc(2026, 3, 7), utc(2026, 3, 10)) == [
        utc(2026, 3, 7, 7, 30), utc(2026, 3, 9, 6, 30)]
    assert simulate(daily("01:30", "America/New_York"), utc(2026, 10, 31), utc(2026, 11, 3)) == [
        utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]


def test_kolkata_half_hour_offset_no_dst() -> None:
    occ = occurrences_between(daily("09:05", "Asia/Kolkata"), utc(2026, 1, 1), utc(2027, 1, 1))
    assert len(occ) == 365
    assert all((o.hour, o.minute) == (3, 35) for o in occ)
    weekly = ScheduleTiming("WEEKLY", "Asia/Kolkata", "02:00", day_of_week=1)  # Monday 02:00 IST = Sunday 20:30 UTC
    assert occurrences_between(weekly, utc(2026, 3, 1), utc(2026, 3, 8)) == [utc(2026, 3, 1, 20, 30)]


def test_utc_zone() -> None:
    assert occurrences_between(daily("00:00", "UTC"), utc(2026, 3, 28), utc(2026, 3, 31)) == [
        utc(2026, 3, 28), utc(2026, 3, 29), utc(2026, 3, 30)]
    assert len(simulate(daily("02:30", "UTC"), *SPRING)) == 5


# --------------------------------------------------------------------------------------------
# Due detection, windows, run keys (§2.1, §2.5, §2.6)
# --------------------------------------------------------------------------------------------


def test_same_minute_evaluated_twice_gives_one_occurrence_and_key() -> None:
    s = daily("07:00")
    a = due_occurrence(s, utc(2026, 6, 1, 5, 3, 1), None)
    b = due_occurrence(s, utc(2026, 6, 1, 5, 3, 59, 999999), None)
    assert a is not None and a == b
    assert a.run_key(7) == b.run_key(7) == f"automation-schedule-7-{epoch_ms(utc(2026, 6, 1, 5))}"
    assert a.due_at_ms == 1780290000000
    assert a.local == datetime(2026, 6, 1, 7, tzinfo=PARIS)
    # once the job recorded last_run_at = due_at, it is no longer due
    assert due_occurrence(s, utc(2026, 6, 1, 5, 3, 30), a.due_at) is None


def test_window_bounds() -> None:
    s = daily("07:00", "UTC")
    assert due_occurrence(s, utc(2026, 6, 1, 6, 59, 59), None) is None  # not yet
    assert due_occurrence(s, utc(2026, 6, 1, 7, 20, 59), None) is not None  # W = 20: candidate 07:00 included
    assert due_occurrence(s, utc(2026, 6, 1, 7, 21), None) is None  # too late, no backfill
    assert due_occurrence(s, utc(2026, 6, 1, 7, 21), None, window_minutes=61) is not None
    assert due_occurrence(s, utc(2026, 6, 1, 7, 5), None, window_minutes=1) is not None  # W ≥ 5
    assert due_occurrence(s, utc(2026, 6, 1, 7, 6), None, window_minutes=1) is None


def test_latest_occurrence_only_and_last_run_rules() -> None:
    s = ScheduleTiming("CRON", "UTC", cron_expression="*/5 * * * *")
    due = due_occurrence(s, utc(2026, 6, 1, 7, 17), utc(2026, 6, 1, 6, 0))
    assert due is not None and due.due_at == utc(2026, 6, 1, 7, 15)  # most recent, not the missed ones
    assert due_occurrence(s, utc(2026, 6, 1, 7, 17), utc(2026, 6, 1, 7, 16)) is None  # a manual run ended after dueAt
    assert due_occurrence(s, utc(2026, 6, 1, 7, 17), datetime(2026, 6, 1, 7, 15)) is None  # naive = UTC (DB)
    assert due_occurrence(s, utc(2026, 6, 1, 7, 17), None, last_due_at=utc(2026, 6, 1, 7, 15)) is None
    assert due_occurrence(ScheduleTiming("MANUAL"), utc(2026, 6, 1, 7, 17), None) is None


def test_effective_window() -> None:
    assert effective_window_minutes() == 20
    assert effective_window_minutes("abc") == 20
    assert effective_window_minutes(2) == 5
    assert effective_window_minutes("30") == 30
    assert effective_window_minutes(20, tick_period_minutes=60) == 61


def test_hourly_tick_with_effective_window_loses_nothing() -> None:
    s = ScheduleTiming("CRON", "Europe/Paris", cron_expression="30 */2 * * *")
    w = effective_window_minutes(20, tick_period_minutes=60)
    start, end = utc(2026, 10, 24), utc(2026, 10, 26)
    launched = simulate(s, start, end, tick=timedelta(hours=1), window=w, jitter=timedelta(0))
    last_tick = end - timedelta(hours=1)
    assert launched == occurrences_between(s, start - w * MINUTE, last_tick + MINUTE)
    walls = local_walls(launched, PARIS)
    assert len(set(walls)) == len(walls) == 23  # 24th 02:30 … 25th 22:30 local, each once
    assert all(w[3] % 2 == 0 and w[4] == 30 for w in walls)


def test_run_key_and_epoch_ms() -> None:
    assert run_key(12, utc(2026, 3, 29, 1)) == "automation-schedule-12-1774746000000"
    assert epoch_ms(datetime(1970, 1, 1, 0, 0, 0, 1999)) == 1


def test_next_occurrence() -> None:
    assert next_occurrence(daily("02:30"), utc(2026, 3, 28, 1, 30)) == utc(2026, 3, 30, 0, 30)
    leap = ScheduleTiming("CRON", "UTC", cron_expression="0 0 29 2 *")
    assert next_occurrence(leap, utc(2026, 1, 1)) == utc(2028, 2, 29)
    assert next_occurrence(ScheduleTiming("CRON", "UTC", cron_expression="0 0 30 2 *"), utc(2026, 1, 1)) is None
    assert next_occurrence(ScheduleTiming("MANUAL"), utc(2026, 1, 1)) is None


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

ZONES = ["Europe/Paris", "America/New_York", "Asia/Kolkata", "UTC", "Australia/Lord_Howe", "America/Sao_Paulo",
         "Pacific/Chatham", "Europe/London"]


def _field(lo: int, hi: int) -> st.SearchStrategy[str]:
    value = st.integers(lo, hi)
    rng = st.tuples(value, value).map(sorted).map(lambda ab: f"{ab[0]}-{ab[1]}")
    single = st.one_of(st.just("*"), value.map(str), rng,
                       st.tuples(rng, st.integers(1, 7)).map(lambda t: f"{t[0]}/{t[1]}"),
                       st.integers(1, 20).map(lambda n: f"*/{n}"))
    return st.lists(single, min_size=1, max_size=3).map(",".join)


CRONS = st.tuples(_field(0, 59), _field(0, 23), _field(1, 31), _field(1, 12), _field(0, 7)).map(" ".join)
DAILYISH = st.one_of(
    st.builds(lambda h, m: ScheduleTiming("DAILY", time_of_day=f"{h:02d}:{m:02d}"), st.integers(0, 23),
              st.integers(0, 59)),
    st.builds(lambda h, m, d: ScheduleTiming("WEEKLY", time_of_day=f"{h:02d}:{m:02d}", day_of_week=d),
              st.integers(0, 23), st.integers(0, 59), st.integers(0, 6)),
    st.builds(lambda h, m, d: ScheduleTiming("MONTHLY", time_of_day=f"{h:02d}:{m:02d}", day_of_month=d),
              st.integers(0, 23), st.integers(0, 59), st.integers(1, 31)),
    CRONS.map(lambda c: ScheduleTiming("CRON", cron_expression=c)),
)
SCHEDULES = st.builds(lambda s, z: ScheduleTiming(s.schedule_type, z, s.time_of_day, s.day_of_week, s.day_of_month,
                                                  s.cron_expression), DAILYISH, st.sampled_from(ZONES))
INSTANTS = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2035, 12, 31)).map(
    lambda d: d.replace(tzinfo=UTC))
# bias towards DST transitions
DST_INSTANTS = st.sampled_from([utc(2026, 3, 29, 0), utc(2026, 10, 25, 0), utc(2026, 3, 8, 6), utc(2026, 11, 1, 5),
                                utc(2026, 4, 5, 15), utc(2026, 10, 4, 15), utc(2026, 3, 28, 13)]).flatmap(
    lambda base: st.integers(-180, 180).map(lambda m: base + timedelta(minutes=m)))
ANY_INSTANT = st.one_of(INSTANTS, DST_INSTANTS)


def brute_force(schedule: ScheduleTiming, start: datetime, end: datetime) -> list[datetime]:
    """The §2.1 minute-scan definition, minute by minute in UTC, plus the §2.6 fold rule."""
    cron = parse_cron(derive_cron(schedule))
    zone = ZoneInfo(schedule.timezone)
    t = start.replace(second=0, microsecond=0)
    if t < start:
        t += MINUTE
    out = []
    while t < end:
        if is_occurrence_instant(cron, zone, t):
            out.append(t)
        t += MINUTE
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SCHEDULES, ANY_INSTANT, st.integers(0, 36 * 60))
def test_occurrences_match_minute_scan_and_increase(schedule: ScheduleTiming, start: datetime, span: int) -> None:
    end = start + timedelta(minutes=span)
    occ = occurrences_between(schedule, start, end)
    assert occ == brute_force(schedule, start, end)
    assert all(a < b for a, b in zip(occ, occ[1:], strict=False))
    assert all(start <= o < end for o in occ)
    keys = [run_key(1, o) for o in occ]
    assert len(set(keys)) == len(keys)
    walls = local_walls(occ, ZoneInfo(schedule.timezone))
    assert len(set(walls)) == len(walls)  # a wall time never runs twice (fall-back)


@settings(max_examples=150, deadline=None)
@given(SCHEDULES, ANY_INSTANT, st.one_of(st.none(), ANY_INSTANT), st.integers(0, 120))
def test_due_occurrence_properties(schedule: ScheduleTiming, now: datetime, last_run_at: datetime | None,
                                   window: int) -> None:
    due = due_occurrence(schedule, now, last_run_at, window_minutes=window)
    again = due_occurrence(schedule, now.replace(second=59, microsecond=999999), last_run_at, window_minutes=window)
    assert due == again  # deterministic per minute
    w = max(5, window)
    candidates = occurrences_between(schedule, now.replace(second=0, microsecond=0) - w * MINUTE,
                                     now.replace(second=0, microsecond=0) + MINUTE)
    if due is None:
        assert not candidates or (last_run_at is not None and last_run_at >= candidates[-1])
        return
    assert due.due_at == candidates[-1]
    assert due.due_at <= now
    assert now - due.due_at < (w + 1) * MINUTE
    assert last_run_at is None or last_run_at < due.due_at
    assert due.due_at_ms == epoch_ms(due.due_at)
    # once recorded, never due again for the same or later minutes of the window
    assert due_occurrence(schedule, now, due.due_at, window_minutes=window) is None
    later = due_occurrence(schedule, now + MINUTE, due.due_at, window_minutes=window)
    assert later is None or later.due_at > due.due_at
    assert due_occurrence(schedule, now, None, window_minutes=window, last_due_at=due.due_at) is None


@settings(max_examples=40, deadline=None)
@given(SCHEDULES, DST_INSTANTS, st.sampled_from([1, 2, 5]))
def test_simulated_ticks_launch_each_occurrence_once(schedule: ScheduleTiming, start: datetime, tick: int) -> None:
    end = start + timedelta(hours=4)
    launched = simulate(schedule, start, end, tick=timedelta(minutes=tick), window=20, jitter=timedelta(0))
    assert all(a < b for a, b in zip(launched, launched[1:], strict=False))
    expected = occurrences_between(schedule, start - 20 * MINUTE, end)
    assert set(launched) <= set(expected)
    # an occurrence is lost only if a later one superseded it inside the same window (no backfill)
    for occ in expected:
        if start <= occ < end - (tick + 1) * MINUTE and occ not in launched:
            assert any(occ < other <= occ + (tick + 1) * MINUTE for other in expected)


# --------------------------------------------------------------------------------------------
# Sensor cadence (§2.5, §2.6)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "minutes"),
    [("*/1 * * * *", 1), ("0 * * * *", 60), ("*/7 * * * *", 7), ("0 6 * * *", 1440),
     ("30 1,23 * * 1-5", 2 * 1440 + 120), ("0 0 29 2 *", 1461 * 1440)],
)
def test_tick_period(cron: str, minutes: int) -> None:
    assert tick_period_minutes(cron) == minutes


def test_tick_period_feeds_the_window() -> None:
    assert effective_window_minutes(20, tick_period_minutes("0 * * * *")) == 61
    assert effective_window_minutes(20, tick_period_minutes("*/1 * * * *")) == 20
    with pytest.raises(ScheduleConfigError):
        tick_period_minutes("0 0 31 2 *")


def test_tick_should_scan() -> None:
    hourly = "0 * * * *"
    assert tick_should_scan(hourly, None, utc(2026, 6, 1, 7, 13))
    assert not tick_should_scan(hourly, utc(2026, 6, 1, 7, 0), utc(2026, 6, 1, 7, 59, 59))
    assert tick_should_scan(hourly, utc(2026, 6, 1, 7, 0), utc(2026, 6, 1, 8, 0, 30))
    assert tick_should_scan(hourly, utc(2026, 6, 1, 7, 0), utc(2026, 6, 1, 8, 2))  # late wake-up still scans
    assert not tick_should_scan(hourly, utc(2026, 6, 1, 8, 0), utc(2026, 6, 1, 8, 0, 45))  # same minute twice
    assert tick_should_scan("*/1 * * * *", utc(2026, 6, 1, 8, 0), utc(2026, 6, 1, 8, 1))


@settings(max_examples=60, deadline=None)
@given(CRONS, INSTANTS, st.integers(0, 600))
def test_tick_should_scan_matches_minute_scan(cron: str, cursor: datetime, elapsed: int) -> None:
    cursor = cursor.replace(second=0, microsecond=0)
    now = cursor + timedelta(minutes=elapsed, seconds=30)
    spec = parse_cron(cron)
    expected = any(spec.matches(cursor + timedelta(minutes=i)) for i in range(1, elapsed + 1))
    assert tick_should_scan(cron, cursor, now) == expected
