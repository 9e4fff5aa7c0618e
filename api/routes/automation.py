"""Automation routes ``/api/automation`` (spec 05 §6, spec 06 §4.6).

Legacy camelCase shapes, ids as strings. Deviations from legacy (**→ Py**): a non-numeric id is a
400 "Invalid id"; PATCH validates the effective schedule (stored + patch, ``null`` clears);
``externalApiKey`` is masked (``hasExternalApiKey`` tells whether one is stored); deleting a
schedule with a running run is a 409 unless ``?force=true``; ``limit`` is clamped to 0–200 and
``offset`` to ≥ 0. Validation errors are ``{success:false, error:"Invalid automation schedule
data", code:"VALIDATION_ERROR", details:[{loc,msg}]}`` (update: "… update data").

Not here yet: ``POST /trigger`` and ``GET /diagnostic`` (they need the automation run launcher).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.common import DIGITS, authorize, db_call, json_body, path_int, query_single
from api.errors import ApiError, not_found, validation_error
from auditflow_dagster.db import automation as store
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
    authorize(request, "automation.write")
    body = strip_nul(await json_body(request))
    settings = get_settings()
    data = await _db(lambda s: store.create_schedule(s, body, settings=settings))
    return JSONResponse({"success": True, "data": data}, status_code=201)


async def list_schedules(request: Request) -> JSONResponse:
    authorize(request, "automation.read")
    inactive = query_single(request, "include_inactive") == "true"
    data = await _db(lambda s: store.list_schedules(s, include_inactive=inactive))
    return JSONResponse({"success": True, "data": data, "count": len(data)})


async def get_schedule(request: Request) -> JSONResponse:
    schedule_id = _id(request)
    authorize(request, "automation.read")
    data = await _db(lambda s: store.schedule_detail(s, schedule_id))
    return JSONResponse({"success": True, "data": data})


async def update_schedule(request: Request) -> JSONResponse:
    schedule_id = _id(request)
    authorize(request, "automation.write")
    body = strip_nul(await json_body(request))
    settings = get_settings()
    data = await _db(lambda s: store.update_schedule(s, schedule_id, body, settings=settings),
                     invalid=UPDATE_INVALID, missing=f"Automation schedule with ID '{schedule_id}' not found")
    return JSONResponse({"success": True, "data": data})


async def delete_schedule(request: Request) -> JSONResponse:
    schedule_id = _id(request)
    authorize(request, "automation.write")
    force = query_single(request, "force") == "true"
    await _db(lambda s: store.delete_schedule(s, schedule_id, force=force))
    return JSONResponse({"success": True, "message": "Schedule deleted successfully"})


# --------------------------------------------------------------------------------------------- #
# Runs and logs
# --------------------------------------------------------------------------------------------- #


async def schedule_runs(request: Request) -> JSONResponse:
    schedule_id = _id(request)
    authorize(request, "automation.read")
    limit, offset = _page(request)
    data = await _db(lambda s: store.list_runs(s, schedule_id=schedule_id, limit=limit, offset=offset))
    return JSONResponse({"success": True, "data": data, "count": len(data), "limit": limit, "offset": offset})


async def list_runs(request: Request) -> JSONResponse:
    authorize(request, "automation.read")
    limit, offset = _page(request)
    data = await _db(lambda s: store.list_runs(s, schedule_id=None, limit=limit, offset=offset))
    return JSONResponse({"success": True, "data": data, "count": len(data), "limit": limit, "offset": offset})


async def get_run(request: Request) -> JSONResponse:
    run_id = _id(request)
    authorize(request, "automation.read")
    data = await _db(lambda s: store.run_detail(s, run_id))
    if data is None:
        raise not_found(RUN_NOT_FOUND)
    return JSONResponse({"success": True, "data": data})


async def run_logs(request: Request) -> JSONResponse:
    run_id = _id(request)
    authorize(request, "automation.read")
    level = query_single(request, "level")
    data = await _db(lambda s: store.run_logs(s, run_id, level=level))
    return JSONResponse({"success": True, "data": data, "count": len(data)})


routes = [
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
