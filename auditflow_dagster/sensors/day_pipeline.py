"""Sensor: when a sales day is materialized, backfill its fiches through the chain.

The cursor is the event-log storage id of the last ``sales_list`` materialization handled, so each
day's materialization launches exactly one backfill (DESIGN §3.4: a day is a backfill over fiche
partitions with a multi-run policy — a handful of runs, not one per fiche).
"""


from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey
from sqlalchemy import select

from auditflow_dagster.db.models import FicheCache
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.schedules import CACHE_ONLY_TRIGGERS

FICHE_CHAIN = ["fiche_details", "transcripts", "audit_step_results", "audits"]


def day_fiche_ids(day: str) -> list[str]:
    with session_scope() as s:
        return list(s.scalars(select(FicheCache.fiche_id).where(FicheCache.sales_date == day).order_by(FicheCache.id)))


@sensor(
    name="sales_day_fiches_backfill",
    asset_selection=FICHE_CHAIN,
    minimum_interval_seconds=5,
    default_status=DefaultSensorStatus.RUNNING,
    description="Backfills the fiche partitions of each newly materialized sales day through details → transcripts → audits.",
)
def sales_day_fiches_backfill(context: SensorEvaluationContext) -> SensorResult | SkipReason:
    from auditflow_dagster.db.embedded import ensure_database_env

    ensure_database_env()
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("sales_list"), after_storage_id=after), limit=20, ascending=True
    ).records
    if not records:
        return SkipReason("no new sales day materialized")
    known = set(context.instance.get_dynamic_partitions("fiches"))
    requests = []
    skipped_runs: dict[str, bool] = {}
    for rec in records:
        day = rec.partition_key
        if rec.run_id not in skipped_runs:
            run = context.instance.get_run_by_id(rec.run_id)
            # progressive fetches and revalidations only fill the cache; they do not audit
            skipped_runs[rec.run_id] = bool(run and run.tags.get("auditflow/trigger") in CACHE_ONLY_TRIGGERS)
        if skipped_runs[rec.run_id]:
            continue
        keys = [k for k in day_fiche_ids(day) if k in known] if day else []
        if not keys:
            continue
        subset = AssetGraphSubset.from_asset_partition_set(
            {AssetKeyPartitionKey(AssetKey(a), k) for a in FICHE_CHAIN for k in keys},
            context.repository_def.asset_graph,
        )
        requests.append(RunRequest.for_asset_graph_subset(subset, tags={"auditflow/sales_day": day, "auditflow/trigger": "sales_day"}))
    return SensorResult(run_requests=requests, cursor=str(records[-1].storage_id))
