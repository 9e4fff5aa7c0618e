"""``sales_list[day]``: the CRM's sales list of business days (spec 01 §1, §2.4, §3, §4).

One CRM sales search per day, sequentially, under the global sales-search cap of 1. Each day's
rows are cached, its fiches registered as partitions of ``fiches`` (chunked adds), a day marker is
written (zero-sale days included), and any progressive fetch job waiting for that day is advanced.
"""

import datetime as dt
from typing import Any

from dagster import (
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert

from auditflow_dagster.assets.runtime import run_async
from auditflow_dagster.db import fiches as fiche_db
from auditflow_dagster.db.clock import now_utc
from auditflow_dagster.db.locks import global_slot
from auditflow_dagster.db.models import FicheSalesDay
from auditflow_dagster.partitions import (
    FICHES_PARTITIONS_NAME,
    MAX_KEYS_PER_ADD,
    sales_days,
)
from auditflow_dagster.resources.crm import CrmResource
from auditflow_dagster.resources.database import DatabaseResource
from auditflow_dagster.settings import get_settings


@asset(
    partitions_def=sales_days,
    group_name="fiches",
    kinds={"python", "postgres"},
    description="The CRM's sales list for one business day, cached in fiche_cache; registers each fiche as a `fiches` partition.",
)
def sales_list(context: AssetExecutionContext, crm: CrmResource, db: DatabaseResource) -> MaterializeResult:
    day = dt.date.fromisoformat(context.partition_key)
    settings = get_settings()

    async def main() -> dict[str, Any]:
        async with global_slot("crm_sales_search", settings.fiche_sales_search_concurrency):
            async with crm.client() as client:
                return await client.sales_with_calls(day, day, include_recordings=settings.fiche_sales_include_recordings)

    payload = run_async(main)
    items = payload.get("fiches") or []
    if not items:
        context.log.warning("CRM returned an empty sales list for %s (a stale token also gives an empty list)", day)
    with db.session() as s:
        fiche_ids = fiche_db.upsert_sales_list(s, items, sales_date=day.isoformat(), ttl_hours=settings.cache_expiration_hours)
        stmt = pg_insert(FicheSalesDay).values(
            sales_date=day.isoformat(), crm_count=len(items), cached_count=len(fiche_ids), fetched_at=now_utc()
        )
        s.execute(
            stmt.on_conflict_do_update(
                index_elements=["sales_date"],
                set_={"crm_count": stmt.excluded.crm_count, "cached_count": stmt.excluded.cached_count,
                      "fetched_at": stmt.excluded.fetched_at, "last_error": None},
            )
        )
    existing = set(context.instance.get_dynamic_partitions(FICHES_PARTITIONS_NAME))
    new_keys = [f for f in fiche_ids if f not in existing]
    for i in range(0, len(new_keys), MAX_KEYS_PER_ADD):
        context.instance.add_dynamic_partitions(FICHES_PARTITIONS_NAME, new_keys[i : i + MAX_KEYS_PER_ADD])
    recordings = sum(len(it.get("recordings") or []) for it in items)
    return MaterializeResult(
        metadata={
            "fiches": len(fiche_ids),
            "new_partitions": len(new_keys),
            "recordings_listed": recordings,
            "fiche_ids": MetadataValue.json(fiche_ids[:500]),
        }
    )


