"""Progressive date-range fetch routes (spec 01 §4.2, §4.6; spec 06 §4.2).

``by-date-range`` answers at once from the cache; missing days become a job whose days are fetched
by a Dagster backfill of ``sales_list`` (visible in the UI). Progress arrives per day from the runs,
as events on ``job-<jobId>`` and, when asked, as signed webhooks.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.auth import filter_items
from api.common import authorize, dagster, db_call, query_date, query_single
from api.dagster_client import DagsterUnavailable
from api.errors import validation_error
from auditflow_dagster.db import progressive
from auditflow_dagster.db.clock import now_utc
from auditflow_dagster.db.models import ProgressiveFetchJob
from auditflow_dagster.settings import get_settings

STALE_DISPATCH = dt.timedelta(minutes=10)
JOB_STATUSES = ("pending", "processing", "complete", "failed")


def _check_webhook_url(url: str) -> None:
    from auditflow_dagster.core.ssrf import UnsafeUrl, check_url

    settings = get_settings()
    try:
        check_url(url, allowed_origins=settings.allowed_webhook_origins, production=settings.is_production)
    except UnsafeUrl as exc:
        raise validation_error(str(exc)) from None


async def _dispatch(request: Request, job_id: str, days: list[str]) -> None:
    """Launch the day backfill; a failed dispatch is logged and re-tried on the next request."""
    try:
        backfill_id = await dagster(request).launch_asset_backfill(
            ["sales_list"], days,
            tags={"auditflow/trigger": "progressive_fetch", "auditflow/progressive_job": job_id},
            title=f"progressive fetch {job_id}",
        )
    except DagsterUnavailable:
        return
    await db_call(lambda s: progressive.mark_dispatched(s, job_id, backfill_id))


async def by_date_range(request: Request) -> JSONResponse:
    await authorize(request, "fiches.read")
    settings = get_settings()
    start_raw, end_raw = query_single(request, "startDate"), query_single(request, "endDate")
    if start_raw is None or end_raw is None:
        raise validation_error("Query parameters 'startDate' and 'endDate' are required (YYYY-MM-DD)")
    refresh = query_single(request, "refresh") == "true"
    if refresh:
        await authorize(request, "fiches.write")  # spec 06 §4.2: a refresh needs write permission
    start, end = query_date(start_raw, "startDate"), query_date(end_raw, "endDate")
    if start > end:
        raise validation_error("startDate must be on or before endDate")
    span = (end - start).days + 1
    if span > settings.progressive_fetch_max_range_days:
        raise validation_error(
            f"Date range too long: {span} days (max {settings.progressive_fetch_max_range_days}, "
            "PROGRESSIVE_FETCH_MAX_RANGE_DAYS)"
        )
    today = progressive.business_today()
    end = min(end, today)
    webhook_url = query_single(request, "webhookUrl")
    webhook_secret = request.headers.get("x-webhook-secret") or query_single(request, "webhookSecret")
    base: dict[str, Any] = {"success": True, "startDate": start.isoformat(), "endDate": end.isoformat()}
    if start > today:
        return JSONResponse({**base, "endDate": end_raw, "total": 0, "fiches": [], "meta": {
            "complete": True, "partial": False, "backgroundJobId": None, "totalDaysRequested": 0, "daysFetched": 0,
            "daysRemaining": 0, "daysCached": 0, "cacheCoverage": {"datesWithData": [], "datesMissing": []}}})
    if webhook_url:
        _check_webhook_url(webhook_url)
    sealed = None
    if webhook_url and webhook_secret:
        from auditflow_dagster.db.secret_box import seal

        sealed = seal(webhook_secret)
    days = progressive.day_list(start, end)
    s_key, e_key = start.isoformat(), end.isoformat()

    def plan(s) -> dict[str, Any]:
        progressive._range_lock(s, s_key, e_key)  # racing requests never create two jobs
        reuse = None if refresh else progressive.find_reusable_job(s, s_key, e_key)
        if reuse is not None:
            if webhook_url and not reuse.webhook_url:
                reuse.webhook_url = webhook_url
                reuse.webhook_secret_encrypted = sealed
                reuse.webhook_events = ["progress", "complete", "failed"]
            stale = reuse.last_dispatched_at is None or (
                now_utc() - reuse.last_dispatched_at > STALE_DISPATCH and now_utc() - reuse.updated_at > STALE_DISPATCH)
            return {"job": reuse, "reused": True, "redispatch": list(reuse.dates_remaining) if stale else [],
                    "items": progressive.range_items(s, days)}
        covered = progressive.days_with_data(s, days)
        cached = [d for d in days if d in covered]
        if refresh:  # re-read every day, except days the CRM answered for moments ago
            fresh = progressive.recently_fetched(
                s, days, dt.timedelta(milliseconds=settings.range_refresh_cooldown_ms))
            remaining = [d for d in days if d not in fresh]
        else:
            remaining = [d for d in days if d not in covered]
        job = None
        if remaining:
            job = progressive.create_job(s, start=s_key, end=e_key, days=days, cached=cached, remaining=remaining,
                                         refresh=refresh, webhook_url=webhook_url, webhook_secret_sealed=sealed)
        return {"job": job, "reused": False, "redispatch": remaining, "cached": cached, "remaining": remaining,
                "items": progressive.range_items(s, days)}

    result = await db_call(plan)
    job: ProgressiveFetchJob | None = result["job"]
    if job is not None and result["redispatch"]:
        await _dispatch(request, job.id, result["redispatch"])
    items = await filter_items(request, result["items"])  # the caller's scope only
    if result["reused"]:
        status = progressive.derived_status(job)
        complete = status == "complete"
        meta = {"complete": complete, "partial": not complete, "backgroundJobId": job.id,
                "totalDaysRequested": job.total_days, "daysFetched": job.completed_days,
                "daysRemaining": len(job.dates_remaining), "daysCached": len(job.dates_already_fetched),
                "cacheCoverage": {"datesWithData": list(job.dates_already_fetched),
                                  "datesMissing": list(job.dates_remaining) + list(job.dates_failed)}}
    else:
        remaining = result["remaining"]
        meta = {"complete": not remaining, "partial": bool(remaining),
                "backgroundJobId": job.id if job else None, "totalDaysRequested": len(days),
                "daysFetched": len(days) - len(remaining), "daysRemaining": len(remaining),
                "daysCached": len(result["cached"]),
                "cacheCoverage": {"datesWithData": result["cached"], "datesMissing": remaining}}
    return JSONResponse({**base, "total": len(items), "fiches": items, "meta": meta})


async def polling(request: Request) -> JSONResponse:
    await authorize(request, "fiches.read")
    job_id = query_single(request, "jobId")
    if not job_id:
        raise validation_error("Query parameter 'jobId' is required")

    def read(s):
        job = s.get(ProgressiveFetchJob, job_id)
        return progressive.polling_view(s, job) if job else None

    body = await db_call(read)
    if body is None:
        return JSONResponse({"success": False, "error": "Notification not found", "jobId": job_id}, status_code=404)
    data = body.get("data") or {}
    if isinstance(data.get("partialData"), list):  # fiches of the caller's scope only
        data["partialData"] = await filter_items(request, data["partialData"])
        data["totalFiches"] = data["currentFichesCount"] = len(data["partialData"])
    return JSONResponse(body)


async def list_jobs(request: Request) -> JSONResponse:
    await authorize(request, "fiches.read")
    status = query_single(request, "status")
    if status is not None and status not in JOB_STATUSES:
        raise validation_error(f"Invalid status (one of {', '.join(JOB_STATUSES)})")
    limit_raw = query_single(request, "limit") or "20"
    if not limit_raw.isdigit() or not 1 <= int(limit_raw) <= 10_000:
        raise validation_error("Invalid limit")
    limit = min(int(limit_raw), 200)
    jobs = await db_call(lambda s: progressive.list_jobs(s, status, limit))
    return JSONResponse({"success": True, "jobs": jobs, "total": len(jobs)})


async def get_job(request: Request) -> JSONResponse:
    await authorize(request, "fiches.read")
    job_id = request.path_params["job_id"]

    def read(s):
        job = s.get(ProgressiveFetchJob, job_id)
        return progressive.job_detail(s, job) if job else None

    job = await db_call(read)
    if job is None:
        return JSONResponse({"success": False, "error": "Job not found"}, status_code=404)
    return JSONResponse({"success": True, "job": job})


routes = [
    Route("/api/fiches/status/by-date-range", by_date_range),
    Route("/api/fiches/webhooks/fiches", polling),
    Route("/api/fiches/jobs", list_jobs),
    Route("/api/fiches/jobs/{job_id}", get_job),
]

