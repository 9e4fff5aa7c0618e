"""``sales_list[day]`` and ``fiche_details[fiche]`` (spec 01).

``sales_list`` asks the CRM for one day's sales, caches the list rows and registers each fiche as
a partition of ``fiches`` (one call). ``fiche_details`` fetches the full payload of each fiche of
the run under the global CRM details cap and stores it normalized.
"""


from typing import Any

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    BackfillPolicy,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)

from auditflow_dagster.assets.runtime import (
    bounded_gather,
    in_tx,
    markdown_table,
    run_async,
)
from auditflow_dagster.assets.sales import sales_list
from auditflow_dagster.db import fiches as fiche_db
from auditflow_dagster.db.clock import now_utc
from auditflow_dagster.db.events import emit
from auditflow_dagster.db.locks import global_slot
from auditflow_dagster.partitions import (
    fiches_partitions,
)
from auditflow_dagster.resources.crm import CrmNotFound, CrmResource
from auditflow_dagster.resources.database import DatabaseResource
from auditflow_dagster.settings import get_settings


class FicheDetailsConfig(Config):
    """``force_refresh``: always refetch (audits do, spec 03 §2.1). ``audit_tracking_ids`` maps a
    fiche to the audit request that triggered this run, so the fetch is reported on its channels."""

    force_refresh: bool = False
    audit_tracking_ids: dict[str, str] = {}


@asset(
    partitions_def=fiches_partitions,
    deps=[AssetDep(sales_list, partition_mapping=AllPartitionMapping())],
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=50),
    group_name="fiches",
    kinds={"python", "postgres"},
    description="Full CRM details of each fiche, normalized into the fiche cache (with its recordings).",
)
def fiche_details(
    context: AssetExecutionContext, config: FicheDetailsConfig, crm: CrmResource, db: DatabaseResource
) -> MaterializeResult:
    settings = get_settings()
    keys = list(context.partition_keys)

    async def one(client: Any, fiche_id: str) -> tuple[str, str]:
        tracking = config.audit_tracking_ids.get(fiche_id)

        def fresh_enough(s) -> bool:
            row = fiche_db.get_row(s, fiche_id)
            return (
                row is not None
                and not config.force_refresh
                and not tracking
                and fiche_db.details_ready(s, row)
                and row.expires_at > now_utc()
            )

        if await in_tx(fresh_enough):
            return fiche_id, "cached"
        if tracking:
            await in_tx(lambda s: emit(s, "audit.fiche_fetch_started", {
                "audit_id": tracking, "fiche_id": fiche_id, "from_cache": False, "status": "fetching",
                "event_id": context.run_id}))
        try:
            async with global_slot("crm_fiche_fetch", settings.fiche_fetch_concurrency):
                payload = await client.fiche_details(fiche_id)
        except CrmNotFound:
            context.log.warning("fiche %s: not found in the CRM", fiche_id)
            return fiche_id, "not_found"
        except Exception as exc:  # noqa: BLE001 - one fiche's failure must not sink the batch
            context.log.error("fiche %s: details fetch failed: %s", fiche_id, exc)
            return fiche_id, "failed"

        def write(s) -> None:
            row = fiche_db.write_full_details(s, fiche_id, payload, ttl_hours=settings.cache_expiration_hours)
            if tracking:
                prospect = payload.get("prospect") or {}
                emit(s, "audit.fiche_fetch_completed", {
                    "audit_id": tracking, "fiche_id": fiche_id, "from_cache": False, "status": "fetched",
                    "recordings_count": row.recordings_count or 0,
                    "prospect_name": " ".join(x for x in (prospect.get("prenom"), prospect.get("nom")) if x),
                    "event_id": context.run_id})

        try:
            await in_tx(write)
        except ValueError as exc:
            context.log.error("fiche %s: %s", fiche_id, exc)
            return fiche_id, "failed"
        return fiche_id, "fetched"

    async def main() -> list[tuple[str, str]]:
        async with crm.client() as client:  # one connection pool for the whole run
            return await bounded_gather(settings.fiche_concurrency, keys, lambda f: one(client, f))

    results = run_async(main)
    counts: dict[str, int] = {}
    for _, outcome in results:
        counts[outcome] = counts.get(outcome, 0) + 1
    if counts.get("failed", 0) == len(keys) and keys:
        raise RuntimeError(f"details fetch failed for all {len(keys)} fiches of this run")
    failed = [f for f, o in results if o in ("failed", "not_found")]
    return MaterializeResult(
        metadata={
            "fiches": len(keys),
            **{k: v for k, v in sorted(counts.items())},
            "problems": MetadataValue.md(
                markdown_table(["fiche", "outcome"], [[f, o] for f, o in results if o in ("failed", "not_found")])
                if failed else "none"
            ),
        }
    )
