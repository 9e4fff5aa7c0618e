"""``sales_list[day]`` and ``fiche_details[fiche]`` (spec 01).

``sales_list`` asks the CRM for one day's sales, caches the list rows and registers each fiche as
a partition of ``fiches`` (one call). ``fiche_details`` fetches the full payload of each fiche of
the run under the global CRM details cap and stores it normalized.
"""


import datetime as dt
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

from auditflow_dagster.assets.automation_gate import AutomationGate
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
from auditflow_dagster.db.locks import advisory_lock, global_slot
from auditflow_dagster.partitions import (
    fiches_partitions,
)
from auditflow_dagster.resources.crm import CrmNotFound, CrmResource
from auditflow_dagster.resources.database import DatabaseResource
from auditflow_dagster.settings import get_settings


class FicheDetailsConfig(Config):
    """``force_refresh``: refetch even a fresh cache (audits do, spec 03 §2.1), unless the row was
    fetched less than ``FICHE_FORCE_REFRESH_COOLDOWN_MS`` ago and has not expired (spec 01 §2.6).
    ``bypass_cooldown``: the API's explicit refresh (``refresh=true``, a list-only/expired row, a
    missing mail devis) always fetches. ``include_mail_devis``: ask the CRM for the mail devis
    (API reads only; background fetches never do). ``audit_tracking_ids`` maps a fiche to the audit
    request that triggered this run, so the fetch is reported on its channels."""

    force_refresh: bool = False
    bypass_cooldown: bool = False
    include_mail_devis: bool = False
    audit_tracking_ids: dict[str, str] = {}


def fetch_decision(s, fiche_id: str, config: FicheDetailsConfig, *, cooldown_ms: int) -> tuple[str, bool]:
    """Background single-fiche fetch rules, in order (spec 01 §2.6). Returns ``(decision, keep_on_404)``
    with decision ``fetch`` / ``cached`` / ``not_found`` (unexpired marker: no CRM call)."""
    row = fiche_db.get_row(s, fiche_id)
    if row is None:
        return "fetch", False
    now = now_utc()
    unexpired = row.expires_at > now
    in_cooldown = (
        not config.bypass_cooldown
        and unexpired
        and (now - row.fetched_at) < dt.timedelta(milliseconds=cooldown_ms)
    )
    effective_force = config.force_refresh and not in_cooldown
    # 404 on a row with recordings, when the caller forced or the row had expired: keep the cache.
    keep_on_404 = (config.force_refresh or not unexpired) and (row.recordings_count or 0) > 0
    if fiche_db.is_not_found_marker(row):  # a 404 again just renews the marker
        return ("fetch" if effective_force or not unexpired else "not_found"), False
    if effective_force or not unexpired:
        return "fetch", keep_on_404
    if (
        not fiche_db.details_ready(s, row)
        or fiche_db.recordings_need_heal(s, row)
        or (config.include_mail_devis and not fiche_db.has_mail_devis(s, row))
    ):
        return "fetch", keep_on_404  # self-heal
    return "cached", keep_on_404


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
    gate = AutomationGate(context.run.tags)
    keys = gate.start_details(list(context.partition_keys))
    errors: dict[str, str] = {}

    async def one(client: Any, fiche_id: str) -> tuple[str, str]:
        # one fetch per fiche at a time, system-wide (spec 01 §2.6): a second run waits, then
        # usually finds the row fresh (or in cooldown) and answers from the cache
        async with advisory_lock(f"fiche-fetch:{fiche_id}", timeout_seconds=300) as held:
            if not held:
                context.log.error("fiche %s: another run held its fetch lock for 5 minutes", fiche_id)
                return fiche_id, "failed"
            return await fetch_one(client, fiche_id)

    async def fetch_one(client: Any, fiche_id: str) -> tuple[str, str]:
        tracking = config.audit_tracking_ids.get(fiche_id)

        def completed(s, from_cache: bool) -> None:
            if not tracking:
                return
            row = fiche_db.get_row(s, fiche_id)
            emit(s, "audit.fiche_fetch_completed", {
                "audit_id": tracking, "fiche_id": fiche_id, "from_cache": from_cache, "status": "fetched",
                "recordings_count": (row.recordings_count or 0) if row else 0,
                "prospect_name": " ".join(x for x in ((row.prospect_prenom, row.prospect_nom) if row else ()) if x),
                "event_id": context.run_id})

        decision, keep_on_404 = await in_tx(
            lambda s: fetch_decision(s, fiche_id, config, cooldown_ms=settings.fiche_force_refresh_cooldown_ms)
        )
        if decision == "not_found":
            return fiche_id, "not_found"
        if decision == "cached":
            await in_tx(completed, True)
            return fiche_id, "cached"
        if tracking:
            await in_tx(lambda s: emit(s, "audit.fiche_fetch_started", {
                "audit_id": tracking, "fiche_id": fiche_id, "from_cache": False, "status": "fetching",
                "event_id": context.run_id}))
        try:
            async with global_slot("crm_fiche_fetch", settings.fiche_fetch_concurrency):
                payload = await client.fiche_details(fiche_id, include_mail_devis=config.include_mail_devis)
        except CrmNotFound:
            if keep_on_404:
                context.log.warning("fiche %s: CRM answered 404; keeping the cached details (recordings known)", fiche_id)
                await in_tx(completed, True)
                return fiche_id, "cached"
            context.log.warning("fiche %s: not found in the CRM; not-found marker written", fiche_id)
            await in_tx(lambda s: fiche_db.write_not_found_marker(s, fiche_id, ttl_ms=settings.fiche_not_found_ttl_ms))
            return fiche_id, "not_found"
        except Exception as exc:  # noqa: BLE001 - one fiche's failure must not sink the batch
            context.log.error("fiche %s: details fetch failed: %s", fiche_id, exc)
            errors[fiche_id] = str(exc)[:500] or exc.__class__.__name__
            return fiche_id, "failed"

        def write(s) -> None:
            fiche_db.write_full_details(s, fiche_id, payload, ttl_hours=settings.cache_expiration_hours)
            completed(s, False)

        try:
            await in_tx(write)
        except ValueError as exc:
            context.log.error("fiche %s: %s", fiche_id, exc)
            errors[fiche_id] = str(exc)[:500]
            return fiche_id, "failed"
        return fiche_id, "fetched"

    async def main() -> list[tuple[str, str]]:
        async with crm.client() as client:  # one connection pool for the whole run
            return await bounded_gather(settings.fiche_concurrency, keys, lambda f: one(client, f))

    results = run_async(main)
    gate.after_details(dict(results), errors)
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
