"""The partition lifecycle sensor against a real Dagster instance and app database (Postgres).

Fiches of every age and audit state are registered as ``fiches`` partitions; runs of every status
are created and some are aged by moving their timestamps in the Dagster run table. One sensor tick
must retire exactly the old, quiet, final fiches that nothing in flight targets and prune exactly
the old finished runs outside live backfills; the next tick does nothing; app rows are all kept.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import psycopg
import pytest
from dagster import AssetKey, DagsterRunStatus, build_sensor_context
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.test_utils import create_run_for_test
from sqlalchemy import func, select, update

from auditflow_dagster.db.models import Audit, AuditConfig, FicheCache
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.definitions import defs
from auditflow_dagster.partitions import FICHES_PARTITIONS_NAME
from auditflow_dagster.sensors.lifecycle import (
    partition_lifecycle,
    prune_runs,
    retire_fiche_partitions,
)
from auditflow_dagster.settings import get_settings

PARIS = ZoneInfo("Europe/Paris")
NOW_UTC = dt.datetime.now(dt.UTC).replace(tzinfo=None)
TODAY = dt.datetime.now(PARIS).date()


def days_ago(n: int) -> str:
    return (TODAY - dt.timedelta(days=n)).isoformat()


def ts_ago(n: int) -> dt.datetime:
    return NOW_UTC - dt.timedelta(days=n)


@pytest.fixture()
def retention(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AUDITFLOW_FICHE_PARTITION_RETENTION_DAYS", "60")
    monkeypatch.setenv("AUDITFLOW_RUN_RETENTION_DAYS", "30")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _config() -> int:
    with session_scope() as s:
        cfg = AuditConfig(name="lifecycle test")
        s.add(cfg)
        s.flush()
        return cfg.id


def _fiche(fiche_id: str, *, sold: int, fetched: int, audits: list[tuple[str, int]] = (), config_id: int = 0,
           deleted: bool = False) -> None:
    """A cached fiche sold ``sold`` days ago, fetched ``fetched`` days ago, with audits given as
    ``(status, age in days)``."""
    with session_scope() as s:
        row = FicheCache(fiche_id=fiche_id, sales_date=days_ago(sold), fetched_at=ts_ago(fetched),
                         last_revalidated_at=ts_ago(fetched), expires_at=ts_ago(fetched - 10))
        s.add(row)
        s.flush()
        for i, (status, age) in enumerate(audits):
            s.add(Audit(fiche_cache_id=row.id, audit_config_id=config_id, tracking_id=f"audit-{fiche_id}-{i}",
                        status=status, created_at=ts_ago(age), updated_at=ts_ago(age),
                        completed_at=ts_ago(age) if status in ("completed", "failed") else None,
                        deleted_at=ts_ago(age) if deleted else None))


def _age_runs(run_ids: list[str], days: int) -> None:
    """Move runs' create/update timestamps into the past (the run table stores naive UTC)."""
    url = os.environ["AUDITFLOW_DAGSTER_STORAGE_URL"].replace("postgresql+psycopg2://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE runs SET create_timestamp = %s, update_timestamp = %s WHERE run_id = ANY(%s)",
                     (ts_ago(days), ts_ago(days), run_ids))


def _app_counts() -> tuple[int, int]:
    with session_scope() as s:
        return s.scalar(select(func.count()).select_from(FicheCache)), s.scalar(select(func.count()).select_from(Audit))


def _run(instance, status: DagsterRunStatus, **tags: str) -> str:
    return create_run_for_test(instance, job_name="__ASSET_JOB", status=status, tags=tags).run_id


def _asset_backfill(instance, keys: list[str]) -> PartitionBackfill:
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=f"lifecycle{int(time.time() * 1000) % 10**8}", asset_graph=defs.resolve_asset_graph(),
        partition_names=keys, asset_selection=[AssetKey("fiche_details")], backfill_timestamp=time.time(),
        tags={}, dynamic_partitions_store=instance, all_partitions=False, title=None, description=None,
        run_config=None)
    instance.add_backfill(backfill)
    return backfill


def _tick(instance) -> str:
    ctx = build_sensor_context(instance=instance, repository_def=defs.get_repository_def())
    data = partition_lifecycle.evaluate_tick(ctx)
    assert data.run_requests == []
    return data.skip_message or ""


def test_one_tick_retires_old_final_fiches_and_prunes_old_runs(db, dagster_instance, retention):
    instance = dagster_instance
    cfg = _config()
    _fiche("1001", sold=90, fetched=90, audits=[("completed", 89)], config_id=cfg)   # retired
    _fiche("1002", sold=90, fetched=90)                                              # retired: no audit
    _fiche("1003", sold=90, fetched=90, audits=[("failed", 89), ("completed", 88)], config_id=cfg)  # retired
    _fiche("1004", sold=90, fetched=90, audits=[("completed", 89), ("running", 1)], config_id=cfg)  # open audit
    _fiche("1005", sold=90, fetched=90, audits=[("pending", 70)], config_id=cfg, deleted=True)      # open (deleted) audit
    _fiche("1006", sold=10, fetched=10, audits=[("completed", 9)], config_id=cfg)    # recent sale
    _fiche("1007", sold=90, fetched=5)                                               # refetched recently
    _fiche("1008", sold=90, fetched=90, audits=[("completed", 89)], config_id=cfg)   # a run is queued for it
    _fiche("1009", sold=90, fetched=90)                                              # inside a running range
    _fiche("1010", sold=90, fetched=90)                                              # inside a running range
    _fiche("1011", sold=90, fetched=90)                                              # retired
    _fiche("1012", sold=90, fetched=90)                                              # an in-progress backfill targets it
    _fiche("1013", sold=61, fetched=62, audits=[("completed", 62)], config_id=cfg)   # retired: just past the window
    _fiche("1014", sold=60, fetched=61, audits=[("completed", 61)], config_id=cfg)   # sold on the cutoff day: kept
    _fiche("2001", sold=90, fetched=90)                                              # not a partition: untouched
    keys = [f"{1000 + i}" for i in range(1, 15)] + ["9999"]                          # 9999: no fiche row
    instance.add_dynamic_partitions(FICHES_PARTITIONS_NAME, keys)
    apps_before = _app_counts()

    # runs: in flight (protect partitions), finished old (pruned), finished recent, old of a live backfill
    # (a QUEUED run needs a remote job origin; NOT_STARTED is the same "not finished" case here)
    queued = _run(instance, DagsterRunStatus.NOT_STARTED, **{"dagster/partition": "1008"})
    started = _run(instance, DagsterRunStatus.STARTED, **{"dagster/asset_partition_range_start": "1009",
                                                          "dagster/asset_partition_range_end": "1010"})
    backfill = _asset_backfill(instance, ["1012"])
    old_done = [_run(instance, s) for s in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)]
    old_in_backfill = _run(instance, DagsterRunStatus.SUCCESS, **{"dagster/backfill": backfill.backfill_id})
    old_unfinished = _run(instance, DagsterRunStatus.STARTED)
    recent_done = _run(instance, DagsterRunStatus.SUCCESS)
    boundary = _run(instance, DagsterRunStatus.SUCCESS)
    _age_runs([*old_done, old_in_backfill, old_unfinished], 40)
    _age_runs([boundary], 29)
    for run_id in old_done:  # their event logs go with them
        instance.report_engine_event("lifecycle test event", instance.get_run_by_id(run_id))
    assert instance.all_logs(old_done[0])

    message = _tick(instance)

    remaining = set(instance.get_dynamic_partitions(FICHES_PARTITIONS_NAME))
    assert set(keys) - remaining == {"1001", "1002", "1003", "1011", "1013"}
    assert list(instance.get_dynamic_partitions(FICHES_PARTITIONS_NAME)) == [
        k for k in keys if k in remaining], "the survivors keep their order"
    assert not instance.has_dynamic_partition(FICHES_PARTITIONS_NAME, "2001")
    left = {r.dagster_run.run_id for r in instance.get_run_records()}
    assert left == {queued, started, old_in_backfill, old_unfinished, recent_done, boundary}
    for run_id in old_done:
        assert instance.get_run_by_id(run_id) is None
        assert not instance.all_logs(run_id)
    assert "retired=5/5 eligible" in message and "protected=4" in message and "unknown=1" in message
    assert "runs pruned=3" in message
    assert _app_counts() == apps_before, "app data is never deleted"

    # idempotent: the next tick finds nothing more to do
    again = _tick(instance)
    assert "retired=0/0 eligible" in again and "runs pruned=0" in again
    assert set(instance.get_dynamic_partitions(FICHES_PARTITIONS_NAME)) == remaining

    # once the run, the range run and the backfill are done, their fiches go too
    for run_id in (queued, started):
        instance.report_run_failed(instance.get_run_by_id(run_id))
    instance.update_backfill(backfill.with_status(BulkActionStatus.COMPLETED_SUCCESS))
    _tick(instance)
    assert set(instance.get_dynamic_partitions(FICHES_PARTITIONS_NAME)) == {"1004", "1005", "1006", "1007", "1014", "9999"}


def test_a_re_registered_fiche_stays_for_a_new_window(db, dagster_instance, retention):
    """Retired, then audited again on demand: the partition is back and the recent activity keeps it."""
    instance = dagster_instance
    cfg = _config()
    _fiche("3001", sold=120, fetched=120, audits=[("completed", 119)], config_id=cfg)
    instance.add_dynamic_partitions(FICHES_PARTITIONS_NAME, ["3001"])
    _tick(instance)
    assert not instance.has_dynamic_partition(FICHES_PARTITIONS_NAME, "3001")

    # the API registers the partition before launching; the run creates a new audit
    instance.add_dynamic_partitions(FICHES_PARTITIONS_NAME, ["3001"])
    with session_scope() as s:
        fiche_row = s.scalar(select(FicheCache).where(FicheCache.fiche_id == "3001"))
        s.add(Audit(fiche_cache_id=fiche_row.id, audit_config_id=cfg, tracking_id="audit-3001-new", status="running"))
    _tick(instance)
    assert instance.has_dynamic_partition(FICHES_PARTITIONS_NAME, "3001")
    with session_scope() as s:
        s.execute(update(Audit).where(Audit.tracking_id == "audit-3001-new").values(status="completed"))
    _tick(instance)
    assert instance.has_dynamic_partition(FICHES_PARTITIONS_NAME, "3001"), "recently active: kept a whole window"
    # ... until the window has passed
    counts = retire_fiche_partitions(instance, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=61), retention_days=60)
    assert counts["retired"] == 1
    assert not instance.has_dynamic_partition(FICHES_PARTITIONS_NAME, "3001")


def test_work_per_tick_is_bounded(db, dagster_instance, retention):
    instance = dagster_instance
    for i in range(5):
        _fiche(f"400{i}", sold=90, fetched=90)
    instance.add_dynamic_partitions(FICHES_PARTITIONS_NAME, [f"400{i}" for i in range(5)])
    runs = [_run(instance, DagsterRunStatus.SUCCESS) for _ in range(5)]
    _age_runs(runs, 40)
    now = dt.datetime.now(dt.UTC)

    first = retire_fiche_partitions(instance, now=now, retention_days=60, limit=2)
    assert first["retired"] == 2 and first["eligible"] == 5
    assert list(instance.get_dynamic_partitions(FICHES_PARTITIONS_NAME)) == ["4002", "4003", "4004"], "oldest first"
    pruned = prune_runs(instance, now=now, retention_days=30, limit=2)
    assert pruned == {"pruned": 2, "kept_for_backfill": 0, "more": 1}
    assert instance.get_run_by_id(runs[0]) is None and instance.get_run_by_id(runs[2]) is not None, "oldest first"

    # a clock past the budget stops the pass before deleting anything
    ticks = iter([0.0, 100.0, 100.0, 100.0])
    stopped = retire_fiche_partitions(instance, now=now, retention_days=60, time_budget_seconds=10, clock=lambda: next(ticks))
    assert stopped["retired"] == 0 and len(instance.get_dynamic_partitions(FICHES_PARTITIONS_NAME)) == 3

    assert retire_fiche_partitions(instance, now=now, retention_days=60)["retired"] == 3
    assert prune_runs(instance, now=now, retention_days=30)["pruned"] == 3
    assert instance.get_dynamic_partitions(FICHES_PARTITIONS_NAME) == []


def test_zero_retention_disables(db, dagster_instance, monkeypatch):
    instance = dagster_instance
    _fiche("5001", sold=400, fetched=400)
    instance.add_dynamic_partitions(FICHES_PARTITIONS_NAME, ["5001"])
    old = _run(instance, DagsterRunStatus.SUCCESS)
    _age_runs([old], 400)
    monkeypatch.setenv("AUDITFLOW_FICHE_PARTITION_RETENTION_DAYS", "0")
    monkeypatch.setenv("AUDITFLOW_RUN_RETENTION_DAYS", "0")
    get_settings.cache_clear()
    try:
        message = _tick(instance)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert "partition retention disabled" in message and "run retention disabled" in message
    assert instance.has_dynamic_partition(FICHES_PARTITIONS_NAME, "5001")
    assert instance.get_run_by_id(old) is not None
