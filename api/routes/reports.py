"""Compliance report routes (issue 10 §2): ``GET /api/reports/daily/{date}``.

The report is the row the ``daily_compliance_report`` asset stored for that sales day (the API
never aggregates: DESIGN §3.8); a day whose report was never materialized is a 404, an invalid or
impossible date a 400.

**Authorization.** Permission ``audits.read`` (a report is a view of audits). A report aggregates
every groupe and advisor of the day — its totals, niveau counts and most-missed control points
cannot be narrowed to some groupes after the fact — so it needs scope **ALL**: a GROUP or SELF key
gets 403 (like the ``global`` realtime channel), never a report that would disclose other groups.
The calibration report (``GET /api/reports/calibration``, issue 11 §3) follows the same rule: it
aggregates the reviews of every groupe.

Calibration is computed on read (a read of the append-only review/rerun trails, one row per reviewed
item, aggregated by the pure core; optional filters ``config_id``, ``since``, ``until`` — Europe/Paris
days, inclusive, applied to the time of the review that gave the human verdict); the
``calibration_report`` asset shows the same numbers for the whole history in the Dagster UI.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.auth import forbidden
from api.common import DIGITS, authorize, db_call, query_date, query_single
from api.errors import not_found, validation_error
from auditflow_dagster.core import calibration as calibration_core
from auditflow_dagster.db import calibration as calibration_store
from auditflow_dagster.db import reports as store
from auditflow_dagster.db.models import AuditConfig

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


async def calibration_report(request: Request) -> JSONResponse:
    principal = await authorize(request, REPORT_PERMISSION)
    if not principal.all_scope:
        raise forbidden(REPORT_SCOPE_REQUIRED)
    raw_config = query_single(request, "config_id")
    if raw_config is not None and (not DIGITS.match(raw_config) or not 0 < int(raw_config) < 2**63):
        raise validation_error("Invalid config_id")
    config_id = int(raw_config) if raw_config is not None else None
    since = query_date(v, "since") if (v := query_single(request, "since")) is not None else None
    until = query_date(v, "until") if (v := query_single(request, "until")) is not None else None
    if since is not None and until is not None and since > until:
        raise validation_error("since must not be after until")
    start, end = calibration_core.paris_day_bounds(since, until)

    def read(s) -> list[dict] | None:
        if config_id is not None and s.get(AuditConfig, config_id) is None:
            return None
        return calibration_store.reviewed_verdicts(s, config_id=config_id, since=start, until=end)

    rows = await db_call(read)
    if rows is None:
        raise not_found("Audit config not found")
    filters = {"config_id": config_id, "since": since.isoformat() if since else None,
               "until": until.isoformat() if until else None}
    return JSONResponse({"success": True, "data": calibration_core.calibration_report(rows, filters)})


routes = [
    Route("/api/reports/daily/{date}", daily_report, methods=["GET"]),
    Route("/api/reports/calibration", calibration_report, methods=["GET"]),
]
