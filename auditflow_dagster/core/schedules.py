"""Pure schedule mathematics for automation (spec 05 §1.2, §1.4, §2.1–§2.2, §2.5–§2.6).

Everything here is stdlib (``datetime`` + ``zoneinfo``) and side-effect free apart from a log
warning, so the scheduler sensor, the API (validation, ``nextRunAt``) and the tests share one
definition of "when does this schedule fire".

Model
-----
A schedule is a 5-field cron (§2.2) evaluated on **wall-clock time in the schedule's IANA zone**
(§1.2): non-CRON types are turned into a derived cron (``M H * * *``, ``M H * * D``,
``M H DOM * *``), CRON schedules use their own expression. An *occurrence* is a zone-local wall
time (date, hour, minute) matching the cron, mapped to one UTC instant:

* **Spring-forward (non-existent wall time)**: the occurrence is *skipped*. Spec §2.6 documents
  "a spring-forward gap never matches (run skipped)" and only proposes a fix for the fall-back
  duplicate, so we keep the skip: a DAILY at 02:30 Europe/Paris does not run on 2026-03-29.
* **Fall-back (ambiguous wall time)**: the occurrence runs **once**, at the *first* instant
  (PEP 495 ``fold=0``). This is the §2.6 "optional fix" done statelessly: the second pass through
  the repeated hour is simply not an occurrence, so no ``last_due_at`` bookkeeping is needed for
  it (``due_occurrence`` still honours ``last_due_at`` when given, as a belt-and-braces guard).

Due detection (§2.1 step 3–4) looks at the minutes ``[floor(now) - W, floor(now)]`` (W+1
candidates), takes the most recent occurrence among them and declares it due unless
``last_run_at`` (or ``last_due_at``) is already at/after it. Only the latest occurrence is
returned: there is no backfill of older misses (§2.6 "downtime longer than W loses it").

Naive datetimes are read as UTC: the DB stores UTC ``timestamp(3)`` without zone (spec 05 §0).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

logger = logging.getLogger(__name__)

SCHEDULE_TYPES: tuple[str, ...] = ("MANUAL", "DAILY", "WEEKLY", "MONTHLY", "CRON")
DEFAULT_WINDOW_MINUTES = 20
MIN_WINDOW_MINUTES = 5
RUN_KEY_PREFIX = "automation-schedule"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MINUTE = timedelta(minutes=1)
# ``\d`` would accept non-ASCII digits; the spec's regex is about ASCII "HH:MM".
_TIME_OF_DAY_RE = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
_INT_RE = re.compile(r"[0-9]+")

# Exact messages of spec 05 §1.4 (400 VALIDATION_ERROR type rules).
REQUIRED_FIELDS_MESSAGES: dict[str, str] = {
    "DAILY": "DAILY schedule requires timeOfDay",
    "WEEKLY": "WEEKLY schedule requires timeOfDay and dayOfWeek",
    "MONTHLY": "MONTHLY schedule requires timeOfDay and dayOfMonth",
    "CRON": "CRON schedule requires cronExpression",
}


class ScheduleConfigError(ValueError):
    """A stored/submitted schedule cannot be evaluated (missing field, bad cron, ...).

    The scheduler catches it to "skip with a warning" (§2.1 step 2.2 / 2.3); the API turns the
    equivalent :func:`validate_timing` messages into 400s before anything is stored.
    """


# --------------------------------------------------------------------------------------------
# Schedule timing fields
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleTiming:
    """Just the fields that decide *when* a schedule fires (spec 05 §1.1 column names).

    Kept separate from the ORM row so this module stays importable without SQLAlchemy and so
    the API can evaluate an *effective* PATCH config (§1.5) that is not stored yet.
    """

    schedule_type: str
    timezone: str = "UTC"
    time_of_day: str | None = None
    day_of_week: int | None = None
    day_of_month: int | None = None
    cron_expression: str | None = None


_FIELD_ALIASES: dict[str, tuple[str, str]] = {
    "schedule_type": ("schedule_type", "scheduleType"),
    "timezone": ("timezone", "timezone"),
    "time_of_day": ("time_of_day", "timeOfDay"),
    "day_of_week": ("day_of_week", "dayOfWeek"),
    "day_of_month": ("day_of_month", "dayOfMonth"),
    "cron_expression": ("cron_expression", "cronExpression"),
}


def timing_of(source: Any) -> ScheduleTiming:
    """Build a :class:`ScheduleTiming` from a ScheduleTiming, an ORM row or a (snake/camel) dict.

    One adapter instead of one per caller: the sensor holds ORM rows, the API holds camelCase
    JSON and the tests hold dataclasses.
    """
    if isinstance(source, ScheduleTiming):
        return source
    values: dict[str, Any] = {}
    for field, (snake, camel) in _FIELD_ALIASES.items():
        if isinstance(source, Mapping):
            value = source.get(snake, source.get(camel))
        else:
            value = getattr(source, snake, None)
        values[field] = value
    if values["timezone"] is None:
        values["timezone"] = "UTC"  # column default (§1.1)
    if values["schedule_type"] is None:
        raise ScheduleConfigError("scheduleType is required")
    return ScheduleTiming(**values)


# --------------------------------------------------------------------------------------------
# Time zones
# --------------------------------------------------------------------------------------------


def zone_problem(name: Any) -> str | None:
    """Why ``name`` is not a usable IANA zone, or None. Rewrite rejects unknown zones on write (§1.2)."""
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        return f"timezone must be a valid IANA time zone, got {name!r}"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return f"timezone must be a valid IANA time zone, got {name!r}"
    return None


def resolve_zone(name: str | None) -> ZoneInfo:
    """The zone of an *existing* row: unknown names fall back to UTC with a warning (§1.2).

    Rows written before validation existed must keep running rather than crash the sensor.
    """
    if name is None:
        return ZoneInfo("UTC")
    if zone_problem(name) is not None:
        logger.warning("automation schedule has unknown timezone %r; evaluating it in UTC", name)
        return ZoneInfo("UTC")
    return ZoneInfo(name)


# --------------------------------------------------------------------------------------------
# Cron dialect (§2.2)
# --------------------------------------------------------------------------------------------

# (name, min, max) per field; DOW accepts 7 as an alias of Sunday (0).
_CRON_FIELDS: tuple[tuple[str, int, int], ...] = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
)


@dataclass(frozen=True)
class CronSpec:
    """A parsed 5-field cron: the set of allowed values per field.

    ``dom_restricted`` / ``dow_restricted`` drive the DOM/DOW rule of §2.2: both unrestricted ⇒
    any day; exactly one restricted ⇒ that one decides; both restricted ⇒ OR (classic Vixie
    cron). "Restricted" is decided on the *value set* (it does not cover the field's whole
    range), not on the spelling, so ``*``, ``*/1``, ``1-31`` and ``0-7`` are all unrestricted
    while ``*/2`` is restricted (Vixie would treat any field starting with ``*`` as
    unrestricted; the spec words it as "restricted", which we read semantically).
    """

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]  # 0 = Sunday … 6 (7 folded into 0)
    dom_restricted: bool
    dow_restricted: bool

    def day_matches(self, day: date) -> bool:
        """Whether a calendar day (zone-local) is selected by month + the DOM/DOW OR-rule."""
        if day.month not in self.months:
            return False
        dom_ok = day.day in self.days_of_month
        dow_ok = (day.isoweekday() % 7) in self.days_of_week  # isoweekday: Mon=1 … Sun=7
        if self.dom_restricted and self.dow_restricted:
            return dom_ok or dow_ok
        if self.dom_restricted:
            return dom_ok
        if self.dow_restricted:
            return dow_ok
        return True

    def matches(self, local: datetime) -> bool:
        """Whether a zone-local wall time matches (seconds are ignored, like the legacy matcher)."""
        return local.minute in self.minutes and local.hour in self.hours and self.day_matches(local.date())

    def times_of_day(self) -> list[time]:
        """All matching (hour, minute) pairs of a matching day, in order."""
        return [time(h, m) for h in sorted(self.hours) for m in sorted(self.minutes)]


def _parse_int(text: str, field: str) -> int:
    if not _INT_RE.fullmatch(text):
        raise ScheduleConfigError(f"invalid {field} value {text!r} (only plain numbers are supported)")
    return int(text)


def _parse_cron_field(text: str, field: str, lo: int, hi: int) -> set[int]:
    """One field: comma list of ``*``, ``*/n``, ``a``, ``a-b``, ``a-b/n``, ``a/n`` (= a..max step n).

    Out-of-range values are rejected (the rewrite's rule; legacy silently dropped them, which
    could leave a field matching nothing).
    """
    if text == "":
        raise ScheduleConfigError(f"empty {field} field")
    values: set[int] = set()
    for item in text.split(","):
        if item == "":
            raise ScheduleConfigError(f"empty list item in {field} field {text!r}")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            step = _parse_int(step_text, field)
            if step < 1:
                raise ScheduleConfigError(f"{field} step must be >= 1 in {item!r}")
        if base == "*":
            start, end = lo, hi
        elif "-" in base:
            a_text, _, b_text = base.partition("-")
            start, end = _parse_int(a_text, field), _parse_int(b_text, field)
            if start > end:
                raise ScheduleConfigError(f"{field} range {base!r} is reversed")
        else:
            start = _parse_int(base, field)
            end = hi if slash else start  # "a/n" means a..max step n
        for bound in (start, end):
            if not lo <= bound <= hi:
                raise ScheduleConfigError(f"{field} value {bound} out of range {lo}-{hi}")
        values.update(range(start, end + 1, step))
    return values


def parse_cron(expression: str) -> CronSpec:
    """Parse the §2.2 dialect: exactly 5 whitespace-separated fields, numbers only.

    Names (``MON``), ``?``, ``L``, ``W``, ``#`` and 6-field (seconds) crons are rejected so that
    what we accept is exactly what the scheduler evaluates.
    """
    if not isinstance(expression, str):
        raise ScheduleConfigError("cron expression must be a string")
    parts = expression.split()
    if len(parts) != 5:
        raise ScheduleConfigError(f"cron expression must have 5 fields, got {len(parts)}: {expression!r}")
    sets = [_parse_cron_field(p, name, lo, hi) for p, (name, lo, hi) in zip(parts, _CRON_FIELDS, strict=True)]
    minutes, hours, doms, months, dows = sets
    dows = {d % 7 for d in dows}
    return CronSpec(
        expression=" ".join(parts),
        minutes=frozenset(minutes),
        hours=frozenset(hours),
        days_of_month=frozenset(doms),
        months=frozenset(months),
        days_of_week=frozenset(dows),
        dom_restricted=len(doms) < 31,
        dow_restricted=len(dows) < 7,
    )


def cron_problem(expression: Any) -> str | None:
    """Why a CRON schedule's expression is unusable, or None."""
    try:
        parse_cron(expression)
    except ScheduleConfigError as exc:
        return f"cronExpression is invalid: {exc}"
    return None


# --------------------------------------------------------------------------------------------
# Validation and derived cron (§1.2, §1.4, §1.5)
# --------------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def validate_timing(timing: Any) -> list[str]:
    """All problems of a schedule's timing fields, as 400-ready messages (empty ⇒ valid).

    Field formats (§1.4) are checked whenever a field is present, even if the type ignores it
    ("unrequired fields are stored but ignored" — but still stored, so they must be sane). The
    type rule messages are the spec's exact strings. For non-CRON types a client-supplied cron is
    ignored (the derived one is stored), so it is not validated. Pass the *effective* config for
    a PATCH (§1.5).
    """
    t = timing_of(timing)
    errors: list[str] = []
    if t.schedule_type not in SCHEDULE_TYPES:
        errors.append(f"scheduleType must be one of {', '.join(SCHEDULE_TYPES)}")
    problem = zone_problem(t.timezone)
    if problem:
        errors.append(problem)
    if t.time_of_day is not None and not (isinstance(t.time_of_day, str) and _TIME_OF_DAY_RE.fullmatch(t.time_of_day)):
        errors.append("timeOfDay must be HH:MM (24 h)")
    if t.day_of_week is not None and not (_is_int(t.day_of_week) and 0 <= t.day_of_week <= 6):
        errors.append("dayOfWeek must be an integer 0-6 (0 = Sunday)")
    if t.day_of_month is not None and not (_is_int(t.day_of_month) and 1 <= t.day_of_month <= 31):
        errors.append("dayOfMonth must be an integer 1-31")

    kind = t.schedule_type
    if kind == "DAILY" and t.time_of_day is None:
        errors.append(REQUIRED_FIELDS_MESSAGES["DAILY"])
    elif kind == "WEEKLY" and (t.time_of_day is None or t.day_of_week is None):
        errors.append(REQUIRED_FIELDS_MESSAGES["WEEKLY"])
    elif kind == "MONTHLY" and (t.time_of_day is None or t.day_of_month is None):
        errors.append(REQUIRED_FIELDS_MESSAGES["MONTHLY"])
    elif kind == "CRON":
        if _is_blank(t.cron_expression):
            errors.append(REQUIRED_FIELDS_MESSAGES["CRON"])
        else:
            problem = cron_problem(t.cron_expression)
            if problem:
                errors.append(problem)
    return errors


def _hour_minute(time_of_day: Any) -> tuple[int, int]:
    if not (isinstance(time_of_day, str) and _TIME_OF_DAY_RE.fullmatch(time_of_day)):
        raise ScheduleConfigError(f"timeOfDay must be HH:MM (24 h), got {time_of_day!r}")
    hh, mm = time_of_day.split(":")
    return int(hh), int(mm)


def derive_cron(timing: Any) -> str | None:
    """The cron the scheduler evaluates: derived for DAILY/WEEKLY/MONTHLY, as given for CRON.

    MANUAL ⇒ None (never auto-run). ``M``/``H`` are plain integers (``09:05`` → ``5 9 * * *``).
    The scheduler always re-derives for non-CRON types (§1.2), so a stale stored
    ``cron_expression`` can never make a DAILY fire at the wrong time. Raises
    :class:`ScheduleConfigError` when a required field is missing or malformed.
    """
    t = timing_of(timing)
    kind = t.schedule_type
    if kind == "MANUAL":
        return None
    if kind == "CRON":
        if _is_blank(t.cron_expression):
            raise ScheduleConfigError(REQUIRED_FIELDS_MESSAGES["CRON"])
        return parse_cron(t.cron_expression).expression
    if kind not in SCHEDULE_TYPES:
        raise ScheduleConfigError(f"unknown scheduleType {kind!r}")
    if t.time_of_day is None:
        raise ScheduleConfigError(REQUIRED_FIELDS_MESSAGES[kind])
    hour, minute = _hour_minute(t.time_of_day)
    if kind == "DAILY":
        return f"{minute} {hour} * * *"
    if kind == "WEEKLY":
        if t.day_of_week is None:
            raise ScheduleConfigError(REQUIRED_FIELDS_MESSAGES["WEEKLY"])
        if not (_is_int(t.day_of_week) and 0 <= t.day_of_week <= 6):
            raise ScheduleConfigError(f"dayOfWeek must be an integer 0-6, got {t.day_of_week!r}")
        return f"{minute} {hour} * * {t.day_of_week}"
    # MONTHLY: a 31st simply does not exist in short months ⇒ those months are skipped (§1.2).
    if t.day_of_month is None:
        raise ScheduleConfigError(REQUIRED_FIELDS_MESSAGES["MONTHLY"])
    if not (_is_int(t.day_of_month) and 1 <= t.day_of_month <= 31):
        raise ScheduleConfigError(f"dayOfMonth must be an integer 1-31, got {t.day_of_month!r}")
    return f"{minute} {hour} {t.day_of_month} * *"


def schedule_cron(timing: Any) -> CronSpec | None:
    """Parsed cron of a schedule (None for MANUAL); raises :class:`ScheduleConfigError` if unusable."""
    expression = derive_cron(timing)
    return None if expression is None else parse_cron(expression)


# --------------------------------------------------------------------------------------------
# Instants, occurrences, due detection (§2.1, §2.6)
# --------------------------------------------------------------------------------------------


def as_utc(value: datetime) -> datetime:
    """Aware UTC datetime; naive input is taken as UTC (the DB's ``timestamp(3)`` convention)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def floor_minute(value: datetime) -> datetime:
    """``value`` (as UTC) truncated to the minute: the scheduler's "now" candidate (§2.1)."""
    return as_utc(value).replace(second=0, microsecond=0)


def epoch_ms(value: datetime) -> int:
    """Epoch milliseconds of an instant, in integer arithmetic (no float rounding in run keys)."""
    return (as_utc(value) - _EPOCH) // timedelta(milliseconds=1)


def run_key(schedule_id: int | str, due_at: datetime) -> str:
    """``automation-schedule-{id}-{dueAtMs}`` (§2.1 / §2.5): Dagster de-duplicates sensor runs on it.

    Because ``dueAt`` is a pure function of the schedule and the minute (not of the tick time),
    two evaluations of the same minute, or two daemons, produce the same key.
    """
    return f"{RUN_KEY_PREFIX}-{schedule_id}-{epoch_ms(due_at)}"


def wall_time_instant(local: datetime, zone: ZoneInfo) -> datetime | None:
    """The UTC instant of a naive zone-local wall time per §2.6, or None if it does not exist.

    Non-existent (spring-forward gap) ⇒ None: the spec skips it. Ambiguous (fall-back) ⇒ the
    first instant (``fold=0``), so the occurrence happens once.
    """
    aware = local.replace(tzinfo=zone, fold=0)
    instant = aware.astimezone(UTC)
    round_trip = instant.astimezone(zone).replace(tzinfo=None)
    if round_trip != local.replace(tzinfo=None, fold=0):
        return None  # the wall time was skipped by the clock
    return instant


def is_occurrence_instant(cron: CronSpec, zone: ZoneInfo, instant: datetime) -> bool:
    """Whether a UTC instant is an occurrence: the minute-scan definition of §2.1 plus §2.6.

    The spec's scheduler converts each candidate minute to zone-local time and matches the cron;
    our DST rule additionally rejects the *second* pass through a repeated hour (``fold=1``).
    A gap wall time is never produced by a UTC→local conversion, hence skipped for free.
    """
    local = as_utc(instant).astimezone(zone)
    if local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset():
        return False
    return cron.matches(local)


def _iter_days(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def _occurrences(cron: CronSpec, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    if start >= end:
        return []
    # ±1 day of margin: a wall time on the neighbouring local date can map into [start, end).
    first = start.astimezone(zone).date() - timedelta(days=1)
    last = end.astimezone(zone).date() + timedelta(days=1)
    times = cron.times_of_day()
    found: set[datetime] = set()
    for day in _iter_days(first, last):
        if not cron.day_matches(day):
            continue
        for tod in times:
            instant = wall_time_instant(datetime.combine(day, tod), zone)
            if instant is not None and start <= instant < end:
                found.add(instant)
    return sorted(found)


def occurrences_between(schedule: Any, start_utc: datetime, end_utc: datetime) -> list[datetime]:
    """Occurrence instants (aware UTC) in ``[start_utc, end_utc)``, strictly increasing.

    Walks zone-local calendar days rather than every UTC minute so that a year of a DAILY costs
    365 steps. MANUAL ⇒ ``[]``. Unknown zone ⇒ UTC (with a warning, §1.2). Raises
    :class:`ScheduleConfigError` for missing fields or a bad cron.
    """
    cron = schedule_cron(schedule)
    if cron is None:
        return []
    zone = resolve_zone(timing_of(schedule).timezone)
    return _occurrences(cron, zone, as_utc(start_utc), as_utc(end_utc))


def next_occurrence(schedule: Any, after_utc: datetime, *, horizon_days: int = 366 * 9) -> datetime | None:
    """First occurrence strictly after ``after_utc`` (for a read-only ``nextRunAt``, §1.1).

    Searches month-sized chunks up to ``horizon_days`` (9 years covers a Feb-29 cron across a
    skipped leap year such as 2100); a cron that can never match (``0 0 30 2 *``) gives None.
    """
    cron = schedule_cron(schedule)
    if cron is None:
        return None
    zone = resolve_zone(timing_of(schedule).timezone)
    start = as_utc(after_utc) + timedelta(microseconds=1)
    limit = start + timedelta(days=horizon_days)
    while start < limit:
        end = min(start + timedelta(days=31), limit)
        found = _occurrences(cron, zone, start, end)
        if found:
            return found[0]
        start = end
    return None


def effective_window_minutes(configured: Any = None, tick_period_minutes: int | None = None) -> int:
    """W of §2.1 / §2.6: ``max(5, configured)``, non-numeric ⇒ 20, and at least tick period + 1.

    A window shorter than the tick period would silently lose occurrences between ticks (the
    legacy hourly-tick/20-min-window bug), so the tick period wins.
    """
    try:
        window = int(str(configured).strip()) if configured is not None else DEFAULT_WINDOW_MINUTES
    except ValueError:
        window = DEFAULT_WINDOW_MINUTES
    window = max(MIN_WINDOW_MINUTES, window)
    if tick_period_minutes is not None:
        window = max(window, int(tick_period_minutes) + 1)
    return window


@dataclass(frozen=True)
class DueOccurrence:
    """The occurrence a tick should launch: ``due_at`` (aware UTC) and its zone-local wall time."""

    due_at: datetime
    due_at_ms: int
    local: datetime

    def run_key(self, schedule_id: int | str) -> str:
        """Dagster run key for this occurrence (§2.5)."""
        return run_key(schedule_id, self.due_at)


def latest_occurrence_in_window(schedule: Any, now_utc: datetime, window_minutes: int) -> datetime | None:
    """``dueAt`` of §2.1 step 3: the most recent occurrence among minutes ``floor(now)-W … floor(now)``."""
    now_minute = floor_minute(now_utc)
    window = max(MIN_WINDOW_MINUTES, int(window_minutes))
    found = occurrences_between(schedule, now_minute - window * _ONE_MINUTE, now_minute + _ONE_MINUTE)
    return found[-1] if found else None


def due_occurrence(
    schedule: Any,
    now_utc: datetime,
    last_run_at: datetime | None,
    *,
    window_minutes: int = DEFAULT_WINDOW_MINUTES,
    last_due_at: datetime | None = None,
) -> DueOccurrence | None:
    """The occurrence to run now, or None (§2.1 step 3–4).

    Due iff an occurrence lies in the window and ``last_run_at`` is NULL or earlier than it. A
    run that *ended* after ``dueAt`` (a manual one) therefore suppresses it (§2.6). Only the
    latest occurrence in the window is considered: older misses are not backfilled. The result
    depends only on the minute of ``now``, so re-evaluating the same minute yields the same
    occurrence and run key; once the job has set ``last_run_at = due_at`` (§2.5 CAS) it is no
    longer due. ``last_due_at`` (optional §2.6 column) additionally refuses anything not later
    than the last launched occurrence. MANUAL ⇒ None; broken config ⇒ :class:`ScheduleConfigError`.
    """
    due_at = latest_occurrence_in_window(schedule, now_utc, window_minutes)
    if due_at is None:
        return None
    if last_run_at is not None and as_utc(last_run_at) >= due_at:
        return None
    if last_due_at is not None and as_utc(last_due_at) >= due_at:
        return None
    zone = resolve_zone(timing_of(schedule).timezone)
    return DueOccurrence(due_at=due_at, due_at_ms=epoch_ms(due_at), local=due_at.astimezone(zone))


# --------------------------------------------------------------------------------------------
# Sensor cadence (§2.5, §2.6): AUTOMATION_SCHEDULER_CRON evaluated in UTC
# --------------------------------------------------------------------------------------------

_UTC_ZONE = ZoneInfo("UTC")


def tick_period_minutes(tick_cron: str, *, horizon_days: int = 366 * 9) -> int:
    """Longest gap, in minutes, between two consecutive matches of the tick cron (UTC).

    Feeds :func:`effective_window_minutes` so the due window always covers the time between two
    scans (§2.6: an hourly tick with a 20-min window loses occurrences). Computed from the
    cron's day set and time-of-day set rather than by enumerating every minute, over 9 years so
    that month/leap-day restrictions are seen. Raises :class:`ScheduleConfigError` on a bad cron
    or one that never matches.
    """
    cron = parse_cron(tick_cron)
    minutes_of_day = [t.hour * 60 + t.minute for t in cron.times_of_day()]
    gap = max((b - a for a, b in zip(minutes_of_day, minutes_of_day[1:], strict=False)), default=0)
    first = date(2024, 1, 1)
    previous: date | None = None
    for day in _iter_days(first, first + timedelta(days=horizon_days)):
        if not cron.day_matches(day):
            continue
        if previous is not None:
            gap = max(gap, (day - previous).days * 1440 + minutes_of_day[0] - minutes_of_day[-1])
        previous = day
    if previous is None:
        raise ScheduleConfigError(f"tick cron {tick_cron!r} never matches")
    return gap if gap > 0 else 1440 * 366  # a single match in the horizon: effectively "rarely"


def tick_should_scan(tick_cron: str, cursor_minute: datetime | None, now_utc: datetime) -> bool:
    """Whether the sensor should evaluate schedules now (§2.5): a UTC minute in ``(cursor, now]`` matches.

    Dagster wakes the sensor every ~60 s; the cursor remembers the last evaluated minute so
    that a ``AUTOMATION_SCHEDULER_CRON`` like ``0 * * * *`` is honoured even if a wake-up lands
    a little late, and a minute is never scanned twice. No cursor (first evaluation) ⇒ scan.
    """
    now_minute = floor_minute(now_utc)
    if cursor_minute is None:
        return True
    start = floor_minute(cursor_minute) + _ONE_MINUTE
    if start > now_minute:
        return False
    return bool(_occurrences(parse_cron(tick_cron), _UTC_ZONE, start, now_minute + _ONE_MINUTE))
