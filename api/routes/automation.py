"""Automation routes ``/api/automation`` (spec 05 §6, spec 06 §4.6).

Legacy camelCase shapes, ids as strings. Deviations from legacy (**→ Py**): a non-numeric id is a
400 "Invalid id"; PATCH validates the effective schedule (stored + patch, ``null`` clears);
``externalApiKey`` is masked (``hasExternalApiKey`` tells whether one is stored); deleting a
schedule with a running run is a 409 unless ``?force=true``; ``limit`` is clamped to 0–200 and
``offset`` to ≥ 0. Validation errors are ``{success:false, error:"Invalid automation schedule
data", code:"VALIDATION_ERROR", details:[{loc,msg}]}`` (update: "… update data").

``POST /trigger`` creates the run row and launches ``automation_run_job`` (spec 05 §6.2): the
caller gets the run id and the SSE URL of its channel; 404 for an unknown schedule, 409 when it
is inactive or already running (unless ``?force=true``), 503 when Dagster cannot take the run
(the row is then removed: nothing will run).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.common import (
    DIGITS,
    authorize,
    dagster,
    db_call,
    json_body,
    path_int,
    query_single,
)
from api.dagster_client import DagsterUnavailable
from api.errors import ApiError, not_found, validation_error
from auditflow_dagster.db import automation as store
from auditflow_dagster.db import automation_runs as runs_db
from auditflow_dagster.db.audits import strip_nul
from auditflow_dagster.settings import get_settings

T = TypeVar("T")
CREATE_INVALID = "Invalid automation schedule data"
UPDATE_INVALID = "Invalid automation schedule update data"
SCHEDULE_NOT_FOUND = "Schedule not found"
RUN_NOT_FOUND = "Run not found"
MAX_LIMIT = 200


async def _db(fn: Callable[[Any], T], *, invalid: str = CREATE_INVALID, missing: str = SCHEDULE_NOT_FOUND) -> T:
    try:
        return await db_call(fn)
    except store.ScheduleNotFound:
        raise not_found(missing) from None
    except store.ScheduleInvalid as exc:
        raise validation_error(invalid, details=exc.details) from None
    except store.ScheduleBusy as exc:
        raise ApiError(409, str(exc), "CONFLICT") from None


def _id(request: Request, name: str = "id") -> int:
    try:
        return path_int(request, name)
    except ApiError:
        raise validation_error("Invalid id") from None


def _page_int(request: Request, name: str, default: int) -> int:
    raw = query_single(request, name)
    if raw is None or not DIGITS.match(raw.strip().lstrip("-")):
        return default
    return int(raw.strip())


def _page(request: Request) -> tuple[int, int]:
    """``limit`` (20, clamped 0–200) and ``offset`` (0, ≥ 0); non-numeric values give the defaults."""
    limit = min(max(_page_int(request, "limit", 20), 0), MAX_LIMIT)
    offset = max(_page_int(request, "offset", 0), 0)
    return limit, offset


# --------------------------------------------------------------------------------------------- #
# Schedules
# --------------------------------------------------------------------------------------------- #


async def create_schedule(request: Request) -> JSONResponse:
    await authorize(request, "automation.write")
    body = strip_nul(await json_body(request))
    settings = get_settings()
    data = await _db(lambda s: store.create_schedule(s, body, settings=settings))
    return JSONResponse({"success": True, "data": data}, status_code=201)


async def list_schedules(request: Request) -> JSONResponse:
    await authorize(request, "automation.read")
    inactive = query_single(request, "include_inactive") == "true"
    data = await _db(lambda s: store.list_schedules(s, include_inactive=inactive))
    return JSONResponse({"success": True, "data": data, "count": len(data)})


async def get_schedule(request: Request) -> JSONResponse:
    await authorize(request, "automation.read")
    schedule_id = _id(request)
    data = await _db(lambda s: store.schedule_detail(s, schedule_id))
    return JSONResponse({"success": True, "data": data})


async def update_schedule(request: Request) -> JSONResponse:
    await authorize(request, "automation.write")
    schedule_id = _id(request)
    body = strip_nul(await json_body(request))
    settings = get_settings()
    data = await _db(lambda s: store.update_schedule(s, schedule_id, body, settings=settings),
                     invalid=UPDATE_INVALID, missing=f"Automation schedule with ID '{schedule_id}' not found")
    return JSONResponse({"success": True, "data": data})


async def delete_schedule(request: Request) -> JSONResponse:
    await authorize(request, "automation.write")
    schedule_id = _id(request)
    force = query_single(request, "force") == "true"
    await _db(lambda s: store.delete_schedule(s, schedule_id, force=force))
    return JSONResponse({"success": True, "message": "Schedule deleted successfully"})


# --------------------------------------------------------------------------------------------- #
# Runs and logs
# --------------------------------------------------------------------------------------------- #


async def schedule_runs(request: Request) -> JSONResponse:
    await authorize(request, "automation.read")
    schedule_id = _id(request)
    limit, offset = _page(request)
    data = await _db(lambda s: store.list_runs(s, schedule_id=schedule_id, limit=limit, offset=offset))
    return JSONResponse({"success": True, "data": data, "count": len(data), "limit": limit, "offset": offset})


async def list_runs(request: Request) -> JSONResponse:
    await authorize(request, "automation.read")
    limit, offset = _page(request)
    data = await _db(lambda s: store.list_runs(s, schedule_id=None, limit=limit, offset=offset))
    return JSONResponse({"success": True, "data": data, "count": len(data), "limit": limit, "offset": offset})


async def get_run(request: Request) -> JSONResponse:
    await authorize(request, "automation.read")
    run_id = _id(request)
    data = await _db(lambda s: store.run_detail(s, run_id))
    if data is None:
        raise not_found(RUN_NOT_FOUND)
    return JSONResponse({"success": True, "data": data})


async def run_logs(request: Request) -> JSONResponse:
    await authorize(request, "automation.read")
    run_id = _id(request)
    level = query_single(request, "level")
    data = await _db(lambda s: store.run_logs(s, run_id, level=level))
    return JSONResponse({"success": True, "data": data, "count": len(data)})


# --------------------------------------------------------------------------------------------- #
# Trigger and diagnostic
# --------------------------------------------------------------------------------------------- #

TRIGGER_INVALID = "Invalid trigger automation data"
AUTOMATION_JOB = "automation_run_job"


def _schedule_id(body: dict[str, Any]) -> int:
    raw = body.get("scheduleId", body.get("schedule_id"))
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 < raw < 2**63:
        return raw
    if isinstance(raw, str) and DIGITS.match(raw.strip()) and 0 < int(raw.strip()) < 2**63:
        return int(raw.strip())
    raise validation_error(TRIGGER_INVALID, details=[{"loc": ["scheduleId"], "msg": "must be a positive integer"}])


async def trigger(request: Request) -> JSONResponse:
    await authorize(request, "automation.write")
    body = strip_nul(await json_body(request))
    schedule_id = _schedule_id(body)
    override = body.get("overrideFicheSelection")
    if override is not None:
        override = await _db(lambda s: store.validate_selection(override), invalid=TRIGGER_INVALID)
    force = query_single(request, "force") == "true"
    stale_ms = get_settings().automation_stale_ms

    def create(s) -> int:
        return runs_db.create_manual_run(s, schedule_id, overrides=override, force=force, stale_ms=stale_ms).id

    try:
        run_id = await db_call(create)
    except LookupError:
        raise not_found(SCHEDULE_NOT_FOUND) from None
    except runs_db.RunRefused:
        raise ApiError(409, "Schedule is not active", "CONFLICT") from None
    except runs_db.ScheduleRunning as exc:
        raise ApiError(409, str(exc), "CONFLICT") from None
    try:
        dagster_run_id = await dagster(request).launch_job(
            AUTOMATION_JOB,
            run_config={"ops": {"automation_run": {"config": {
                "schedule_id": schedule_id, "run_id": run_id, "trigger": "manual"}}}},
            tags={"automation/run_id": str(run_id), "automation/schedule_id": str(schedule_id),
                  "automation/trigger": "manual", "auditflow/trigger": "automation"},
        )
    except DagsterUnavailable as exc:
        await db_call(lambda s: runs_db.drop_manual_run(s, run_id))
        raise ApiError(503, f"Pipeline unavailable: {exc}", "SERVICE_UNAVAILABLE") from None
    await db_call(lambda s: runs_db.attach_dagster_run(s, run_id, dagster_run_id))
    return JSONResponse({
        "success": True,
        "message": "Automation triggered successfully",
        "schedule_id": str(schedule_id),
        "run_id": str(run_id),
        "event_ids": [dagster_run_id],
        "sse_url": f"/api/realtime/jobs/{runs_db.job_id(run_id)}",
    })


async def diagnostic(request: Request) -> JSONResponse:
    """Where automation runs and how it is tuned (the legacy endpoint described Inngest)."""
    await authorize(request, "automation.read")
    from auditflow_dagster.core import schedules

    settings = get_settings()
    try:
        tick = schedules.tick_period_minutes(settings.automation_scheduler_cron)
    except schedules.ScheduleConfigError:
        tick = None
    reachable = await dagster(request).ping()
    return JSONResponse({"success": True, "data": {
        "orchestrator": "dagster",
        "dagster_reachable": reachable,
        "job": AUTOMATION_JOB,
        "sensors": {"scheduler": "automation_scheduler", "progress": "automation_runs_progress"},
        "scheduler": {
            "cron": settings.automation_scheduler_cron, "tick_period_minutes": tick,
            "window_minutes": schedules.effective_window_minutes(settings.automation_scheduler_window_minutes, tick),
            "stale_threshold_ms": settings.automation_stale_ms,
            "revalidation_cooldown_ms": settings.automation_revalidation_cooldown_ms,
        },
        "notifications": {"smtp_configured": bool(settings.smtp_host and (settings.smtp_from or settings.smtp_user)),
                          "webhooks_signed": bool(settings.automation_webhook_secret.get_secret_value())},
        "endpoints": {"trigger": "POST /api/automation/trigger",
                      "run_events": "GET /api/realtime/jobs/automation-run-{runId}"},
    }})


routes = [
    Route("/api/automation/trigger", trigger, methods=["POST"]),
    Route("/api/automation/diagnostic", diagnostic, methods=["GET"]),
    Route("/api/automation/schedules", list_schedules, methods=["GET"]),
    Route("/api/automation/schedules", create_schedule, methods=["POST"]),
    Route("/api/automation/schedules/{id}/runs", schedule_runs, methods=["GET"]),
    Route("/api/automation/schedules/{id}", get_schedule, methods=["GET"]),
    Route("/api/automation/schedules/{id}", update_schedule, methods=["PATCH"]),
    Route("/api/automation/schedules/{id}", delete_schedule, methods=["DELETE"]),
    Route("/api/automation/runs", list_runs, methods=["GET"]),
    Route("/api/automation/runs/{id}/logs", run_logs, methods=["GET"]),
    Route("/api/automation/runs/{id}", get_run, methods=["GET"]),
]
