"""Partition lifecycle rules (DESIGN §3.11): which fiche partitions to retire, which runs are old.

Dagster's documented ceiling is 100,000 partitions per asset and its UI slows well before that; at
a few hundred fiches a day the ``fiches`` dynamic partitions would reach it in months. So fiche
partitions are *retired* (deleted from Dagster) once they are older than a retention window and
nothing is still running for them. The application rows (``fiche_cache``, ``audits`` …) are never
touched: a retired fiche is re-registered on demand (a rerun, a new audit, a sales list refetch).

These functions are pure — no Dagster, no SQL — so the rules that decide what disappears from
Dagster can be checked exhaustively (property tests) and read without knowing either.

Age is judged on two clocks, both of which must be older than the window:

* the fiche's **sales day** (a business date in the CRM's time zone), and
* its **last activity** (naive UTC, as the database stores it): the latest of its cache fetch or
  revalidation and its audits' creation/update/completion.

The second clock matters because an old fiche whose partition was re-registered recently (a new
audit, a refetch of an old sales day) keeps its partition for a whole window again instead of
disappearing on the next tick while someone is looking at it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import TypeVar
from zoneinfo import ZoneInfo

#: Dagster partition keys are added (and handled) in chunks of at most this many (DESIGN §3.11).
MAX_KEYS_PER_CALL = 10_000

#: Audit statuses after which nothing will run for the audit any more. Any other status (including
#: one this code does not know) is treated as still running: retiring too little is harmless,
#: retiring the partition under a live run makes that run fail.
FINAL_AUDIT_STATUSES = frozenset({"completed", "failed"})

DAGSTER_PARTITION_TAG = "dagster/partition"
DAGSTER_RANGE_START_TAG = "dagster/asset_partition_range_start"
DAGSTER_RANGE_END_TAG = "dagster/asset_partition_range_end"

T = TypeVar("T")


@dataclass(frozen=True)
class FicheActivity:
    """What the lifecycle needs to know about one cached fiche.

    ``sales_date`` is the stored text (``YYYY-MM-DD``, may be missing or malformed);
    ``last_activity`` is naive UTC; ``has_open_audit`` is true when any audit of the fiche is not
    in a final status.
    """

    fiche_id: str
    sales_date: str | None
    last_activity: dt.datetime | None
    has_open_audit: bool


@dataclass(frozen=True)
class Cutoff:
    """The retention boundary: sales days before ``day`` and activity before ``instant`` are old.

    ``instant`` is the start of ``day`` in the business time zone, as naive UTC, so the two
    clocks agree on where the window starts.
    """

    day: dt.date
    instant: dt.datetime


def _aware_utc(now: dt.datetime) -> dt.datetime:
    """A naive ``now`` is taken as UTC (the database's convention)."""
    return now.replace(tzinfo=dt.UTC) if now.tzinfo is None else now.astimezone(dt.UTC)


def retention_cutoff(now: dt.datetime, retention_days: int, timezone: str = "Europe/Paris") -> Cutoff:
    """The partition cutoff for ``now``: ``retention_days`` business days before today.

    A window of 0 or less is refused (it would retire everything at once); callers treat such a
    setting as "lifecycle disabled".
    """
    if retention_days < 1:
        raise ValueError("retention_days must be at least 1")
    tz = ZoneInfo(timezone)
    today = _aware_utc(now).astimezone(tz).date()
    day = today - dt.timedelta(days=retention_days)
    start = dt.datetime.combine(day, dt.time(), tzinfo=tz)
    return Cutoff(day=day, instant=start.astimezone(dt.UTC).replace(tzinfo=None))


def run_cutoff(now: dt.datetime, retention_days: int) -> dt.datetime:
    """Finished Dagster runs created (and last updated) before this aware UTC instant are pruned.

    Like :func:`retention_cutoff`, a window of 0 or less is refused.
    """
    if retention_days < 1:
        raise ValueError("retention_days must be at least 1")
    return _aware_utc(now) - dt.timedelta(days=retention_days)


def parse_sales_day(value: str | None) -> dt.date | None:
    """The stored sales date as a date, or ``None`` when missing or not ``YYYY-MM-DD``."""
    if not value or len(value) != 10:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def is_retirable(fiche: FicheActivity, cutoff: Cutoff) -> bool:
    """True when the fiche's partition may be retired: no open audit, and both clocks are old.

    A fiche with neither a usable sales day nor any activity timestamp has no evidence of age and
    is kept.
    """
    if fiche.has_open_audit:
        return False
    day = parse_sales_day(fiche.sales_date)
    if day is None and fiche.last_activity is None:
        return False
    if day is not None and day >= cutoff.day:
        return False
    if fiche.last_activity is not None and fiche.last_activity >= cutoff.instant:
        return False
    return True


def partitions_to_retire(
    existing_keys: Sequence[str],
    fiches: Iterable[FicheActivity],
    cutoff: Cutoff,
    *,
    protected: Set[str] = frozenset(),
    limit: int | None = None,
) -> list[str]:
    """The partition keys to retire, in partition order (oldest registered first), at most ``limit``.

    Only keys that currently exist are returned (retiring is about Dagster's list, not ours). A key
    is retired when its fiche row is retirable and the key is not ``protected`` (a queued or
    running Dagster run or an in-progress backfill targets it). Keys without a fiche row are kept:
    their age is unknown. If several rows name the same fiche, every one must be retirable.
    """
    verdict: dict[str, bool] = {}
    for f in fiches:
        verdict[f.fiche_id] = verdict.get(f.fiche_id, True) and is_retirable(f, cutoff)
    out: list[str] = []
    seen: set[str] = set()
    for key in existing_keys:
        if limit is not None and len(out) >= limit:
            break
        if key in seen or key in protected or not verdict.get(key, False):
            continue
        seen.add(key)
        out.append(key)
    return out


def chunked(items: Sequence[T], size: int = MAX_KEYS_PER_CALL) -> list[list[T]]:
    """Consecutive chunks of at most ``size`` items, in order, covering ``items`` exactly.

    Dagster's partition calls and our ``= ANY(:ids)`` queries are bounded this way so one call
    never carries an unbounded list.
    """
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def keys_in_range(ordered_keys: Sequence[str], start: str, end: str) -> list[str]:
    """The keys a partition-range run covers: ``start`` through ``end`` in partition order.

    Dynamic keys are ordered by insertion, so a range is a slice of the current key list. When an
    end of the range no longer exists the range cannot be resolved; the endpoints that still exist
    are returned so they at least stay protected.
    """
    index = {k: i for i, k in enumerate(ordered_keys)}
    i, j = index.get(start), index.get(end)
    if i is None or j is None:
        return [k for k in (start, end) if k in index]
    lo, hi = min(i, j), max(i, j)
    return list(ordered_keys[lo : hi + 1])


def run_partition_keys(tags: Mapping[str, str], ordered_keys: Sequence[str]) -> set[str]:
    """The partition keys a run targets, from Dagster's run tags (one partition or a range)."""
    single = tags.get(DAGSTER_PARTITION_TAG)
    if single:
        return {single}
    start, end = tags.get(DAGSTER_RANGE_START_TAG), tags.get(DAGSTER_RANGE_END_TAG)
    if start and end:
        return set(keys_in_range(ordered_keys, start, end))
    return set()
