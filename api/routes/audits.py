"""Audit run routes (spec 03 §7, spec 06 §4.5); the reads live in :mod:`api.routes.audit_reads`.

``POST /api/audits/run`` validates, checks the config exists (404 up front, a legacy fix),
registers the fiche partition and launches the ``audit_fiche`` job through Dagster GraphQL with
the tracking id in its config and tags. The reply carries the tracking id (the realtime channel)
and the Dagster run id (``event_id``, and the key of ``/api/runs/{run_id}/events``).
``POST /api/audits/run-latest`` launches the same way with the newest active config (404 if none).
"""

from __future__ import annotations

import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.common import DIGITS, authorize, dagster, db_call, json_body
from api.dagster_client import DagsterUnavailable
from api.errors import ApiError, not_found, validation_error
from auditflow_dagster.db.clock import iso, now_utc
from auditflow_dagster.db.config_admin import latest_active_config
from auditflow_dagster.db.models import AuditConfig

MISSING = {
    "success": False,
    "error": "Missing required parameters",
    "message": "Both audit_config_id (or audit_id) and fiche_id are required",
}
MISSING_FICHE = {
    "success": False,
    "error": "Missing required parameters",
    "message": "fiche_id is required",
}
_POSITIVE_INT = re.compile(r"^\s*\d+\s*$")


def _config_id(body: dict[str, Any]) -> int | None:
    raw = body.get("audit_config_id", body.get("audit_id"))
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw if raw > 0 else None
    if isinstance(raw, str) and _POSITIVE_INT.match(raw) and int(raw) > 0:
        return int(raw)
    return None


def _fiche_id(body: dict[str, Any]) -> str | None:
    raw = body.get("fiche_id")
    if isinstance(raw, bool) or raw is None:
        return None
    value = str(raw).strip()
    return value if DIGITS.match(value) else None


def _use_rlm(body: dict[str, Any]) -> bool:
    for key in ("use_rlm", "useRlm"):
        if key in body:
            return body[key] if isinstance(body[key], bool) else False
    return False


def _optional_digits(body: dict[str, Any], key: str) -> int | None:
    raw = body.get(key)
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0:
        return raw
    if isinstance(raw, str) and DIGITS.match(raw):
        return int(raw)
    raise validation_error(f"Invalid {key}: digit string expected")


def _user_id(body: dict[str, Any]) -> str | None:
    user_id = body.get("user_id")
    if user_id is None:
        return None
    if isinstance(user_id, bool) or not isinstance(user_id, (str, int)):
        raise validation_error("Invalid user_id")
    return str(user_id)


async def _queue(
    request: Request,
    body: dict[str, Any],
    *,
    fiche_id: str,
    config_id: int,
    user_id: str | None,
    trigger_source: str = "api",
    schedule_id: int | None = None,
    run_ref: int | None = None,
) -> dict[str, Any]:
    """Launch ``audit_fiche`` for one (fiche, existing config); the queue reply of spec 03 §7."""
    use_rlm = _use_rlm(body)
    tracking_id = f"audit-{fiche_id}-{config_id}-{int(time.time() * 1000)}"
    audit_config: dict[str, Any] = {
        "audit_config_ids": [config_id],
        "audit_tracking_ids": {fiche_id: tracking_id},
        "use_rlm": use_rlm,
        "trigger_source": trigger_source,
        "trigger_user_id": user_id,
        "skip_if_audited": False,
    }
    if schedule_id is not None:
        audit_config["automation_schedule_id"] = schedule_id
    if run_ref is not None:
        audit_config["automation_run_id"] = run_ref
    client = dagster(request)
    try:
        await client.add_fiche_partition(fiche_id)
        run_id = await client.launch_job(
            "audit_fiche",
            run_config={"ops": {
                "fiche_details": {"config": {"force_refresh": True, "audit_tracking_ids": {fiche_id: tracking_id}}},
                "audit_step_results": {"config": audit_config},
            }},
            tags={"dagster/partition": fiche_id, "auditflow/tracking_id": tracking_id,
                  "auditflow/trigger": trigger_source, "auditflow/audit_config_id": str(config_id)},
        )
    except DagsterUnavailable as exc:
        raise ApiError(503, f"Pipeline unavailable: {exc}", "SERVICE_UNAVAILABLE") from None
    return {
        "success": True,
        "message": "Audit queued for processing",
        "event_id": run_id,
        "run_id": run_id,
        "audit_id": tracking_id,
        "fiche_id": fiche_id,
        "audit_config_id": config_id,
        "metadata": {"timestamp": iso(now_utc()), "status": "queued"},
    }


async def _launch(request: Request, *, alias: bool) -> JSONResponse:
    await authorize(request, "audits.run")
    body = await json_body(request)
    fiche_id, config_id = _fiche_id(body), _config_id(body)
    if fiche_id is None or config_id is None:
        return JSONResponse(MISSING, status_code=400)
    await authorize(request, "audits.run", [fiche_id], missing=not_found(f"Fiche {fiche_id} not found"))
    user_id = _user_id(body)
    trigger_source = "api"
    schedule_id = run_ref = None
    if alias:
        schedule_id = _optional_digits(body, "automation_schedule_id")
        run_ref = _optional_digits(body, "automation_run_id")
        ts = body.get("trigger_source", "api")
        if not isinstance(ts, str) or not ts.strip() or len(ts) > 50:
            raise validation_error("Invalid trigger_source (1..50 characters)")
        trigger_source = ts.strip()
    exists = await db_call(lambda s: s.get(AuditConfig, config_id) is not None)
    if not exists:
        raise not_found(f"Audit config {config_id} not found")
    return JSONResponse(await _queue(request, body, fiche_id=fiche_id, config_id=config_id, user_id=user_id,
                                     trigger_source=trigger_source, schedule_id=schedule_id, run_ref=run_ref))


async def run_audit(request: Request) -> JSONResponse:
    return await _launch(request, alias=False)


async def run_audit_alias(request: Request) -> JSONResponse:
    return await _launch(request, alias=True)


async def run_latest(request: Request) -> JSONResponse:
    """``POST /api/audits/run-latest``: the newest active config (spec 03 §1.2), else 404."""
    await authorize(request, "audits.run")
    body = await json_body(request)
    fiche_id = _fiche_id(body)
    if fiche_id is None:
        return JSONResponse(MISSING_FICHE, status_code=400)
    await authorize(request, "audits.run", [fiche_id], missing=not_found(f"Fiche {fiche_id} not found"))
    user_id = _user_id(body)

    def newest(s) -> tuple[int, str] | None:
        row = latest_active_config(s)
        return None if row is None else (row.id, row.name)

    latest = await db_call(newest)
    if latest is None:
        raise not_found("No active audit configuration found")
    config_id, config_name = latest
    reply = await _queue(request, body, fiche_id=fiche_id, config_id=config_id, user_id=user_id)
    return JSONResponse({**reply, "audit_config_name": config_name})


routes = [
    Route("/api/audits/run", run_audit, methods=["POST"]),
    Route("/api/audits/run-latest", run_latest, methods=["POST"]),
    Route("/api/audits", run_audit_alias, methods=["POST"]),
]
