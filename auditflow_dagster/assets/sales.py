"""``sales_list[day]``: the CRM's sales list of business days (spec 01 §1, §2.4, §3, §4).

One CRM sales search per day, sequentially, under the global sales-search cap of 1. Each day's
rows are cached, its fiches registered as partitions of ``fiches`` (chunked adds), a day marker is
written (zero-sale days included), and any progressive fetch job waiting for that day is advanced.
"""

import datetime as dt
from typing import Any

from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert

from auditflow_dagster.assets.runtime import markdown_table, run_async
from auditflow_dagster.db import fiches as fiche_db
from auditflow_dagster.db import progressive
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


def write_sales_day(db: DatabaseResource, instance: Any, key: str, items: list[dict[str, Any]], error: str | None,
                    known: set[str]) -> tuple[list[str], list[str]]:
    """Apply one day's sales-list answer (or failure): cache the rows, write the day marker, advance
    waiting progressive jobs, register new fiche partitions (``known`` is updated). The one writer
    for the ``sales_list`` asset and the automation run's selection. Returns ``(fiche_ids, new_keys)``."""
    settings = get_settings()
    with db.session() as s:
        fiche_ids = [] if error else fiche_db.upsert_sales_list(
            s, items, sales_date=key, ttl_hours=settings.cache_expiration_hours)
        marker = pg_insert(FicheSalesDay).values(
            sales_date=key, crm_count=len(items), cached_count=len(fiche_ids), fetched_at=now_utc(), last_error=error)
        s.execute(marker.on_conflict_do_update(
            index_elements=["sales_date"],
            set_={"crm_count": marker.excluded.crm_count, "cached_count": marker.excluded.cached_count,
                  "fetched_at": marker.excluded.fetched_at, "last_error": marker.excluded.last_error}))
        progressive.apply_day_to_all_jobs(s, key, ok=error is None, error=error)
    new_keys = [f for f in fiche_ids if f not in known]
    for i in range(0, len(new_keys), MAX_KEYS_PER_ADD):
        instance.add_dynamic_partitions(FICHES_PARTITIONS_NAME, new_keys[i : i + MAX_KEYS_PER_ADD])
    known.update(new_keys)
    return fiche_ids, new_keys


@asset(
    partitions_def=sales_days,
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=31),
    group_name="fiches",
    kinds={"python", "postgres"},
    description=(
        "The CRM's sales list of each business day, cached in fiche_cache; registers each fiche as a "
        "`fiches` partition and advances any progressive fetch job waiting for the day."
    ),
)
def sales_list(context: AssetExecutionContext, crm: CrmResource, db: DatabaseResource) -> MaterializeResult:
    settings = get_settings()
    days = [dt.date.fromisoformat(k) for k in context.partition_keys]

    async def fetch_all() -> list[tuple[dt.date, dict[str, Any] | None, str | None]]:
        out: list[tuple[dt.date, dict[str, Any] | None, str | None]] = []
        async with crm.client() as client:
            for day in days:  # sequential: one sales search at a time, system-wide (cap 1)
                try:
                    async with global_slot("crm_sales_search", settings.fiche_sales_search_concurrency):
                        payload = await client.sales_with_calls(
                            day, day, include_recordings=settings.fiche_sales_include_recordings)
                    out.append((day, payload, None))
                except Exception as exc:  # noqa: BLE001 - the message is sanitized by the client
                    out.append((day, None, str(exc)[:500] or exc.__class__.__name__))
        return out

    results = run_async(fetch_all)
    known = set(context.instance.get_dynamic_partitions(FICHES_PARTITIONS_NAME))
    rows: list[list[Any]] = []
    total_fiches = new_total = 0
    failed_days: list[str] = []
    for day, payload, error in results:
        key = day.isoformat()
        items = (payload or {}).get("fiches") or []
        if payload is not None and not items:
            context.log.warning("CRM returned an empty sales list for %s (a stale token also gives an empty list)", key)
        fiche_ids, new_keys = write_sales_day(db, context.instance, key, items, error, known)
        total_fiches += len(fiche_ids)
        new_total += len(new_keys)
        if error:
            failed_days.append(key)
            context.log.error("sales list for %s failed: %s", key, error)
        rows.append([key, len(fiche_ids), sum(len(it.get("recordings") or []) for it in items), error or "ok"])
    if failed_days and len(failed_days) == len(days):
        raise RuntimeError(f"sales list failed for every day of this run: {', '.join(failed_days)}")
    return MaterializeResult(
        metadata={
            "days": len(days),
            "fiches": total_fiches,
            "new_partitions": new_total,
            "failed_days": MetadataValue.json(failed_days),
            "per_day": MetadataValue.md(markdown_table(["day", "fiches", "recordings listed", "outcome"], rows)),
        }
    )
