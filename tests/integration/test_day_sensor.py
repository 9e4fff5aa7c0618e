"""The day sensor turns each new ``sales_list`` materialization into one backfill of its fiches."""

from __future__ import annotations

import datetime as dt

from dagster import build_sensor_context, materialize

from auditflow_dagster.assets.sales import sales_list
from auditflow_dagster.definitions import defs
from auditflow_dagster.resources.crm import CrmResource
from auditflow_dagster.resources.database import DatabaseResource
from auditflow_dagster.sample import generator
from auditflow_dagster.sensors.day_pipeline import (
    FICHE_CHAIN,
    sales_day_fiches_backfill,
)

DAY = "2026-03-12"


def test_sensor_requests_one_backfill_per_new_day(db, dagster_instance):
    instance = dagster_instance
    assert materialize([sales_list], partition_key=DAY, instance=instance,
                       resources={"crm": CrmResource(mode="sample"), "db": DatabaseResource()}).success
    repo = defs.get_repository_def()
    ctx = build_sensor_context(instance=instance, repository_def=repo)
    # evaluate_tick applies Dagster's own validation of backfill requests (not just our function)
    data = sales_day_fiches_backfill.evaluate_tick(ctx)
    assert len(data.run_requests) == 1
    subset = data.run_requests[0].asset_graph_subset
    assert subset is not None
    expected = {f["id"] for f in generator.fiches_for_day(dt.date.fromisoformat(DAY))}
    for name in FICHE_CHAIN:
        keys = set(subset.get_partitions_subset(next(k for k in subset.asset_keys if k.path == [name])).get_partition_keys())
        assert keys == expected
    assert data.run_requests[0].tags["auditflow/sales_day"] == DAY
    # the cursor moved past the materialization: the next tick requests nothing
    ctx2 = build_sensor_context(instance=instance, repository_def=repo, cursor=data.cursor)
    assert sales_day_fiches_backfill.evaluate_tick(ctx2).run_requests == []


def test_cache_only_runs_are_not_audited(db, dagster_instance):
    """Revalidation and progressive-fetch runs refresh the cache; auditing a day twice would bill twice."""
    instance = dagster_instance
    resources = {"crm": CrmResource(mode="sample"), "db": DatabaseResource()}
    for trigger in ("revalidation", "progressive_fetch"):
        assert materialize([sales_list], partition_key=DAY, instance=instance, resources=resources,
                           tags={"auditflow/trigger": trigger}).success
    ctx = build_sensor_context(instance=instance, repository_def=defs.get_repository_def())
    data = sales_day_fiches_backfill.evaluate_tick(ctx)
    assert data.run_requests == [] and data.cursor  # seen, skipped, and the cursor moved on
