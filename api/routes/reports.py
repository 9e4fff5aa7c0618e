"""Compliance report routes (issue 10 §2): ``GET /api/reports/daily/{date}``.

The report is the row the ``daily_compliance_report`` asset stored for that sales day (the API
never aggregates: DESIGN §3.8); a day whose report was never materialized is a 404, an invalid or
impossible date a 400.

**Authorization.** Permission ``audits.read`` (a report is a view of audits). A report aggregates
every groupe and advisor of the day — its totals, niveau counts and most-missed control points
cannot be narrowed to some groupes after the fact — so it needs scope **ALL**: a GROUP or SELF key
gets 403 (like the ``global`` realtime channel), never a report that would disclose other groups.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.auth import forbidden
from api.common import authorize, db_call, query_date
from api.errors import not_found
from auditflow_dagster.db import reports as store

REPORT_PERMISSION = "audits.read"
REPORT_SCOPE_REQUIRED = "Compliance reports need scope ALL"


async def daily_report(request: Request) -> JSONResponse:
    principal = await authorize(request, REPORT_PERMISSION)
    if not principal.all_scope:
        raise forbidden(REPORT_SCOPE_REQUIRED)
    day = query_date(request.path_params["date"], "date").isoformat()
    view = await db_call(lambda s: store.daily_view(s, day))
    if view is None:
        raise not_found(f"No compliance report for {day} (daily_compliance_report not materialized)")
    return JSONResponse({"success": True, "data": view})


routes = [
    Route("/api/reports/daily/{date}", daily_report, methods=["GET"]),
]
