"""Which days of a progressive fetch job can no longer arrive (spec 01 §4.5, failure hook).

A job's days are filled by the runs of one ``sales_list`` backfill. A run that fails or is cancelled
before it records its days, or a backfill that ends without running some days, would leave the job
``processing`` forever and the frontend polling forever. These pure rules decide which remaining
days to mark failed, so the job finalizes (``failed``, with the days listed) instead.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

FINISHED_BAD = frozenset({"FAILURE", "CANCELED"})
UNFINISHED = frozenset({"QUEUED", "NOT_STARTED", "MANAGED", "STARTING", "STARTED", "CANCELING"})


def run_partition_days(tags: Mapping[str, str]) -> list[str]:
    """The day partitions a run covers, from Dagster's run tags (single partition or a range)."""
    single = tags.get("dagster/partition")
    if single:
        return [single]
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    if not start or not end:
        return []
    try:
        first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    except ValueError:
        return []
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def days_to_fail(
    remaining: Iterable[str],
    runs: Iterable[tuple[str, Mapping[str, str]]],
    *,
    backfill_finished: bool,
) -> list[str]:
    """Remaining days that no run will deliver any more, in the job's order.

    * A day covered by a failed/cancelled run and by no run still going (a retry may be on its way)
      and by no successful run (a run records its own outcome, possibly a per-day failure) is lost.
    * Once the backfill is finished and no run is still going, every remaining day is lost: nothing
      else will ever fill it (e.g. the backfill was cancelled before launching its run).
    """
    remaining = list(remaining)
    pending: set[str] = set()
    bad: set[str] = set()
    good: set[str] = set()
    for status, tags in runs:
        days = run_partition_days(tags)
        if status in UNFINISHED:
            pending.update(days)
        elif status in FINISHED_BAD:
            bad.update(days)
        else:
            good.update(days)
    if backfill_finished and not pending:
        return remaining  # a successful run records its own days, so whatever remains is lost
    return [d for d in remaining if d in bad and d not in pending and d not in good]


def audit_is_abandoned(run_statuses: Iterable[str], age_minutes: float, threshold_minutes: float) -> bool:
    """An audit still ``running`` is abandoned when it is older than the threshold and no run that
    could still write its steps (its run or a re-execution of it) is unfinished (spec 03 §2.5 a).

    A slow but live run is never finalized under its feet: its step rows would land on a finished
    audit and the stored summary would no longer match its rows.
    """
    return age_minutes >= threshold_minutes and not any(s in UNFINISHED for s in run_statuses)
