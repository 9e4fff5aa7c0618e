"""Sensor: keep Dagster fast as the years pass (DESIGN §3.11).

Every hour (by default) the ``partition_lifecycle`` sensor

1. **retires fiche partitions** — deletes from the ``fiches`` dynamic partitions the keys whose fiche
   is older than ``AUDITFLOW_FICHE_PARTITION_RETENTION_DAYS`` (sales day *and* last activity, see
   :mod:`auditflow_dagster.core.lifecycle`), whose audits are all final (or that have none), and that
   no queued/running run or in-progress backfill targets;
2. **prunes Dagster runs** — deletes finished runs (success, failure, cancelled) created and last
   updated more than ``AUDITFLOW_RUN_RETENTION_DAYS`` ago, with their event logs
   (``DagsterInstance.delete_run``), except runs of a backfill still in progress;
3. **prunes realtime events** older than ``AUDITFLOW_EVENT_RETENTION_HOURS`` (a client resuming from
   a pruned id gets ``realtime.reset`` and refetches).

Both are bounded per tick (count and time) and idempotent: each tick recomputes from the current
state, so no cursor is needed and an interrupted tick is simply continued by the next one. It
launches nothing; its ``SkipReason`` carries the counts. Application rows (``fiche_cache``,
``audits`` …) are never deleted, so a retired fiche is re-registered on demand: the API adds the
partition before every launch and ``sales_list`` re-adds the keys of a day it (re)fetches.

A window of 0 or less disables that half of the sensor.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)
from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus

from auditflow_dagster.core.lifecycle import (
    partitions_to_retire,
    retention_cutoff,
    run_cutoff,
    run_partition_keys,
)
from auditflow_dagster.db.lifecycle import fiche_activity
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.partitions import FICHES_PARTITIONS_NAME
from auditflow_dagster.settings import get_settings

log = logging.getLogger(__name__)

#: Most partitions retired in one tick (each delete is one statement; a few ms each).
MAX_PARTITIONS_PER_TICK = 2_000
#: Most runs deleted in one tick (each delete removes the run and its event log).
MAX_RUNS_PER_TICK = 500
#: Each half stops deleting after this long (the sensor evaluation timeout is 60 s by default).
TIME_BUDGET_SECONDS = 20.0

FINISHED_RUN_STATUSES = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]
UNFINISHED_RUN_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.MANAGED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]
ACTIVE_BACKFILL_STATUSES = [BulkActionStatus.REQUESTED, BulkActionStatus.CANCELING, BulkActionStatus.FAILING]
BACKFILL_TAG = "dagster/backfill"


class UnreadableBackfill(Exception):
    """An in-progress backfill whose targets cannot be read: nothing is retired this tick."""


def _backfill_keys(backfill: Any, asset_graph: Any) -> set[str]:
    """Every partition key an in-progress backfill targets (any asset; non-fiche keys are harmless)."""
    if not backfill.is_asset_backfill:
        return set(backfill.partition_names or ())
    try:
        data = backfill.asset_backfill_data
        if data is None:
            if asset_graph is None:
                raise UnreadableBackfill(backfill.backfill_id)
            data = backfill.get_asset_backfill_data(asset_graph)
        return {apk.partition_key for apk in data.target_subset.iterate_asset_partitions() if apk.partition_key}
    except UnreadableBackfill:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to read it means "cannot tell what it targets"
        raise UnreadableBackfill(backfill.backfill_id) from exc


def active_backfills(instance: DagsterInstance) -> list[Any]:
    return list(instance.get_backfills(filters=BulkActionsFilter(statuses=ACTIVE_BACKFILL_STATUSES)))


def protected_keys(
    instance: DagsterInstance, ordered_keys: Sequence[str], *, backfills: Sequence[Any], asset_graph: Any = None
) -> set[str]:
    """Keys that must not be retired now: targeted by an unfinished run (single partition or a
    key range) or by an in-progress backfill (whose later runs do not exist yet)."""
    keys: set[str] = set()
    for record in instance.get_run_records(RunsFilter(statuses=UNFINISHED_RUN_STATUSES)):
        keys |= run_partition_keys(record.dagster_run.tags, ordered_keys)
    for backfill in backfills:
        keys |= _backfill_keys(backfill, asset_graph)
    return keys


def fiche_partitions_to_retire(
    instance: DagsterInstance,
    *,
    now: dt.datetime,
    retention_days: int,
    timezone: str = "Europe/Paris",
    asset_graph: Any = None,
    backfills: Sequence[Any] | None = None,
) -> tuple[list[str], dict[str, int]]:
    """The fiche partitions to retire now, oldest first, and the counts
    ``{partitions, eligible, retired (0), protected, unknown, blocked}`` (``unknown``: keys without a
    fiche row, kept; ``blocked``: 1 when an unreadable in-progress backfill stops retirement). Reads only."""
    counts = {"partitions": 0, "eligible": 0, "retired": 0, "protected": 0, "unknown": 0, "blocked": 0}
    if retention_days < 1:
        return [], counts
    existing = list(instance.get_dynamic_partitions(FICHES_PARTITIONS_NAME))
    counts["partitions"] = len(existing)
    if not existing:
        return [], counts
    with session_scope() as s:
        fiches = fiche_activity(s, existing)
    counts["unknown"] = len(set(existing) - {f.fiche_id for f in fiches})
    cutoff = retention_cutoff(now, retention_days, timezone)
    old = partitions_to_retire(existing, fiches, cutoff)
    if not old:
        return [], counts
    # read what is in flight *after* the app rows, right before deleting: keeps the window in which
    # a new launch could slip between the check and the delete as short as possible
    try:
        backfills = active_backfills(instance) if backfills is None else backfills
        protected = protected_keys(instance, existing, backfills=backfills, asset_graph=asset_graph)
    except UnreadableBackfill as exc:
        log.warning("partition lifecycle: in-progress backfill %s cannot be read; retiring nothing", exc)
        counts["blocked"] = 1
        return [], counts
    counts["protected"] = sum(1 for k in old if k in protected)
    keys = [k for k in old if k not in protected]
    counts["eligible"] = len(keys)
    return keys, counts


def retire_fiche_partitions(
    instance: DagsterInstance,
    *,
    now: dt.datetime,
    retention_days: int,
    timezone: str = "Europe/Paris",
    limit: int | None = MAX_PARTITIONS_PER_TICK,
    asset_graph: Any = None,
    backfills: Sequence[Any] | None = None,
    time_budget_seconds: float = TIME_BUDGET_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    on_retired: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Retire up to ``limit`` (None: every) old fiche partitions (:func:`fiche_partitions_to_retire`);
    return its counts with ``retired`` filled in. ``on_retired(key)`` is called after each delete."""
    if retention_days < 1:
        return fiche_partitions_to_retire(instance, now=now, retention_days=retention_days)[1]
    started = clock()
    keys, counts = fiche_partitions_to_retire(instance, now=now, retention_days=retention_days, timezone=timezone,
                                              asset_graph=asset_graph, backfills=backfills)
    # Dagster 1.13 has no bulk delete: one statement per key, hence the per-tick bounds
    for key in keys[:limit]:
        if clock() - started > time_budget_seconds:
            break
        instance.delete_dynamic_partition(FICHES_PARTITIONS_NAME, key)
        counts["retired"] += 1
        if on_retired is not None:
            on_retired(key)
    return counts


def runs_to_prune(
    instance: DagsterInstance,
    *,
    now: dt.datetime,
    retention_days: int,
    limit: int | None = None,
    backfills: Sequence[Any] | None = None,
) -> tuple[list[str], dict[str, int]]:
    """The ids of up to ``limit`` (None: every) finished runs older than the window, oldest first,
    and the counts ``{pruned (0), kept_for_backfill, more}`` (``more``: 1 when more runs than
    ``limit`` qualify). Runs of a backfill still in progress are kept. Reads only."""
    counts = {"pruned": 0, "kept_for_backfill": 0, "more": 0}
    if retention_days < 1:
        return [], counts
    cutoff = run_cutoff(now, retention_days)
    active = {b.backfill_id for b in (active_backfills(instance) if backfills is None else backfills)}
    runs_filter = RunsFilter(statuses=FINISHED_RUN_STATUSES, created_before=cutoff, updated_before=cutoff)
    run_ids: list[str] = []
    cursor: str | None = None
    page_size = min(limit, 100) if limit else 100
    while True:  # pages, oldest first
        page = instance.get_run_records(runs_filter, limit=page_size, ascending=True, cursor=cursor)
        if not page:
            return run_ids, counts
        for record in page:
            run = record.dagster_run
            if run.tags.get(BACKFILL_TAG) in active:
                counts["kept_for_backfill"] += 1
                continue
            if limit is not None and len(run_ids) >= limit:
                counts["more"] = 1
                return run_ids, counts
            run_ids.append(run.run_id)
        cursor = page[-1].dagster_run.run_id


def prune_runs(
    instance: DagsterInstance,
    *,
    now: dt.datetime,
    retention_days: int,
    limit: int | None = MAX_RUNS_PER_TICK,
    backfills: Sequence[Any] | None = None,
    time_budget_seconds: float = TIME_BUDGET_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    on_pruned: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Delete up to ``limit`` (None: every) finished runs (and their event logs) older than the
    window, oldest first (:func:`runs_to_prune`); return ``{pruned, kept_for_backfill, more}``
    (``more``: 1 when the pass hit its bound). ``on_pruned(run_id)`` is called after each delete."""
    if retention_days < 1:
        return runs_to_prune(instance, now=now, retention_days=retention_days)[1]
    started = clock()
    run_ids, counts = runs_to_prune(instance, now=now, retention_days=retention_days, limit=limit, backfills=backfills)
    for run_id in run_ids:
        if clock() - started > time_budget_seconds:
            counts["more"] = 1
            break
        instance.delete_run(run_id)
        counts["pruned"] += 1
        if on_pruned is not None:
            on_pruned(run_id)
    return counts


@sensor(
    name="partition_lifecycle",
    minimum_interval_seconds=3600,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Retires fiche partitions older than the retention window whose audits are final, and prunes "
        "finished Dagster runs older than the run retention (app data is kept; fiches are re-registered on demand)."
    ),
)
def partition_lifecycle(context: SensorEvaluationContext) -> SkipReason:
    from auditflow_dagster.db.embedded import ensure_database_env

    ensure_database_env()
    settings = get_settings()
    now = dt.datetime.now(dt.UTC)
    asset_graph = context.repository_def.asset_graph if context.repository_def is not None else None
    parts = retire_fiche_partitions(
        context.instance,
        now=now,
        retention_days=settings.fiche_partition_retention_days,
        timezone=settings.business_timezone,
        asset_graph=asset_graph,
    )
    runs = prune_runs(context.instance, now=now, retention_days=settings.run_retention_days)
    from auditflow_dagster.db.events import prune_events
    from auditflow_dagster.db.session import session_scope

    with session_scope() as s:
        events_pruned = prune_events(s, older_than_hours=settings.event_retention_hours)
    if parts["retired"] or runs["pruned"] or parts["blocked"]:
        context.log.info(f"partition lifecycle: partitions {parts}, runs {runs}")
    msg = (
        f"partition lifecycle: partitions={parts['partitions']}, retired={parts['retired']}/{parts['eligible']} eligible"
        f", protected={parts['protected']}, unknown={parts['unknown']}"
    )
    if parts["blocked"]:
        msg += " (blocked: an in-progress backfill cannot be read)"
    msg += f"; runs pruned={runs['pruned']}" + (" (more next tick)" if runs["more"] else "")
    msg += f"; events pruned={events_pruned}"
    if settings.fiche_partition_retention_days < 1:
        msg += "; partition retention disabled"
    if settings.run_retention_days < 1:
        msg += "; run retention disabled"
    return SkipReason(msg)
