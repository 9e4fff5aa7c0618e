"""``/health`` (liveness, legacy shape) and ``/health/ready`` (DB + Dagster, 200/503)."""

from __future__ import annotations

import os
import socket

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.common import dagster, db_call
from auditflow_dagster.db.clock import iso, now_utc

INSTANCE = f"{socket.gethostname()}-{os.getpid()}"


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "timestamp": iso(now_utc()), "service": "ai-audit-system", "version": "2.3.0",
                         "instance": INSTANCE})


async def ready(request: Request) -> JSONResponse:
    try:
        await db_call(lambda s: s.execute(text("SELECT 1")).scalar())
        db_ok = True
    except Exception:  # noqa: BLE001 - readiness reports, never raises
        db_ok = False
    dagster_ok = await dagster(request).ping()
    ok = db_ok and dagster_ok
    return JSONResponse(
        {"status": "ok" if ok else "degraded", "timestamp": iso(now_utc()), "instance": INSTANCE,
         "checks": {"database": db_ok, "dagster": dagster_ok}},
        status_code=200 if ok else 503,
    )


routes = [Route("/health", health), Route("/health/ready", ready)]
