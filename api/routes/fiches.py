"""Fiche routes (spec 06 §4.2): the day status list and the CRM-shaped details.

The API never calls the CRM itself: a details read that the cache cannot answer launches the
``fiche_details`` materialization through Dagster and waits for it (bounded), then serves the cache.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.auth import filter_items
from api.common import DIGITS, authorize, dagster, db_call, query_date, query_single
from api.dagster_client import TERMINAL_STATUSES, DagsterUnavailable
from api.errors import ApiError, not_found, validation_error
from auditflow_dagster.db import fiches as fiche_db

DETAILS_WAIT_SECONDS = 60.0


async def status_by_date(request: Request) -> JSONResponse:
    await authorize(request, "fiches.read")
    day = query_single(request, "date")
    if day is None:
        raise validation_error("Query parameter 'date' is required (YYYY-MM-DD)")
    query_date(day, "date")
    items = await filter_items(request, await db_call(lambda s: fiche_db.status_by_date(s, day)))
    return JSONResponse({"success": True, "data": {"date": day, "total": len(items), "fiches": items}})


def _cached(fiche_id: str, include_mail_devis: bool):
    return lambda s: fiche_db.cached_details(s, fiche_id, include_mail_devis=include_mail_devis)


async def fiche_detail(request: Request) -> JSONResponse:
    """CRM-shaped details (spec 01 §2.6, spec 06 §4.2). Served from the cache when it is fresh;
    otherwise (no row, list-only row, expired row or not-found marker, mail devis asked for but not
    stored, ``refresh=true``) a ``fetch_fiche`` run refetches it. A not-found marker within its TTL
    is a 404, never a hollow 200; a list-only row is never served as details."""
    await authorize(request, "fiches.read")
    fiche_id = request.path_params["fiche_id"]
    if not DIGITS.match(fiche_id):
        raise not_found(f"Route with ID '{request.url.path}' not found")
    refresh = request.query_params.get("refresh") == "true"
    if refresh:
        await authorize(request, "fiches.write")  # spec 06 §4.2: refresh=true also needs write
    # out of scope (or uncached, for a non-ALL key) answers like an unknown fiche
    await authorize(request, "fiches.read", [fiche_id], missing=not_found(f"Fiche {fiche_id} not found"))
    include_mail_devis = request.query_params.get("include_mail_devis") == "true"
    state, data = await db_call(_cached(fiche_id, include_mail_devis))
    if state == "not_found" and not refresh:
        raise not_found(f"Fiche {fiche_id} not found")
    if state == "fresh" and not refresh:
        return JSONResponse(data)
    # data (when not None) is the stale fallback: details that are expired or lack the mail devis.
    try:
        client = dagster(request)
        await client.add_fiche_partition(fiche_id)
        run_id = await client.launch_job(
            "fetch_fiche",
            run_config={"ops": {"fiche_details": {"config": {
                "force_refresh": True, "bypass_cooldown": True, "include_mail_devis": include_mail_devis}}}},
            tags={"dagster/partition": fiche_id, "auditflow/trigger": "api_fiche_read"},
        )
        deadline = asyncio.get_running_loop().time() + DETAILS_WAIT_SECONDS
        status = None
        while asyncio.get_running_loop().time() < deadline:
            status = await client.run_status(run_id)
            if status in TERMINAL_STATUSES:
                break
            await asyncio.sleep(0.5)
    except DagsterUnavailable as exc:
        if data is not None:
            return JSONResponse(data)  # stale cache beats no answer
        raise ApiError(502, f"Fiche details unavailable: {exc}", "EXTERNAL_API_ERROR") from None
    state, fresh = await db_call(_cached(fiche_id, include_mail_devis))
    if fresh is not None:
        return JSONResponse(fresh)  # fetched, or the cache kept after a failed/404 refetch
    if data is not None:
        return JSONResponse(data)
    if state == "not_found" or status == "SUCCESS":
        raise not_found(f"Fiche {fiche_id} not found")
    raise ApiError(502, "Fiche details could not be fetched from the CRM", "EXTERNAL_API_ERROR")


routes = [
    Route("/api/fiches/status/by-date", status_by_date),
    Route("/api/fiches/{fiche_id}", fiche_detail),
]
