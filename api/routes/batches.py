"""Batch audits (spec 04 §5, spec 06 §4.5): ``POST /api/audits/batch`` and
``GET /api/audits/batch/{batch_id}``.

The batch is rows (``audit_batches`` + one ``audit_batch_items`` row per fiche, each with its own
tracking id) and ONE Dagster asset backfill over the fiche partitions, whose run config carries
those tracking ids, ``trigger_source=batch``, ``use_rlm`` and the config. The sensor
``audit_batches_progress`` turns finished audits into ``batch.progress`` / ``batch.completed``.
No Redis: "coordination unavailable" (503) means Dagster could not take the backfill.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.auth import forbidden, scope_filter
from api.common import DIGITS, authorize, dagster, db_call, json_body
from api.dagster_client import DagsterUnavailable
from api.errors import ApiError, not_found, validation_error
from auditflow_dagster.db import batches as batch_db
from auditflow_dagster.db.models import AuditConfig

INVALID = "Invalid batch audit input"
MAX_FICHES = 5000
BATCH_ASSETS = ["fiche_details", "transcripts", "audit_step_results", "audits"]
_BATCH_ID = re.compile(r"^batch-\d+-\d+(-[0-9a-f]+)?$")


def _invalid(msg: str) -> ApiError:
    return validation_error(INVALID, details=[{"loc": ["body"], "msg": msg}])


def parse_batch(body: dict[str, Any]) -> tuple[list[str], int | None, str | None, bool]:
    """(fiche ids de-duplicated in order, config id or None, user id, use_rlm); any problem → 400."""
    raw = body.get("fiche_ids")
    if not isinstance(raw, list) or not raw:
        raise _invalid("fiche_ids must be a non-empty array")
    fiche_ids: list[str] = []
    for value in raw:
        if not isinstance(value, str) or not value.strip():
            raise _invalid("fiche_ids must hold non-blank strings")
        value = value.strip()
        if not DIGITS.match(value):
            raise _invalid(f"fiche id {value[:40]!r} is not numeric")
        if value not in fiche_ids:  # Deviation: duplicates no longer inflate total
            fiche_ids.append(value)
    if len(fiche_ids) > MAX_FICHES:
        raise _invalid(f"at most {MAX_FICHES} fiches per batch")
    config_id: int | None = None
    if body.get("audit_config_id") is not None:
        cfg = body["audit_config_id"]
        if isinstance(cfg, int) and not isinstance(cfg, bool) and 0 < cfg < 2**63:
            config_id = cfg
        elif isinstance(cfg, str) and DIGITS.match(cfg.strip()) and 0 < int(cfg) < 2**63:
            config_id = int(cfg)
        else:
            raise _invalid("audit_config_id must be a positive integer")
    user_id = body.get("user_id")
    if user_id is not None:
        if isinstance(user_id, bool) or not isinstance(user_id, (str, int)) or len(str(user_id)) > 200:
            raise _invalid("user_id must be a string")
        user_id = str(user_id)
    use_rlm = False
    for key in ("use_rlm", "useRlm"):
        if key in body and body[key] is not None:
            if not isinstance(body[key], bool):
                raise _invalid(f"{key} must be a boolean")
            use_rlm = body[key]
            break
    return fiche_ids, config_id, user_id, use_rlm


def batch_run_config(fiche_tracking: dict[str, str], config_id: int, use_rlm: bool, user_id: str | None) -> dict[str, Any]:
    """The run config every run of the batch's backfill gets (the shape ``POST /api/audits/run`` uses)."""
    return {"ops": {
        "fiche_details": {"config": {"force_refresh": True, "audit_tracking_ids": fiche_tracking}},
        "audit_step_results": {"config": {
            "audit_config_ids": [config_id],
            "audit_tracking_ids": fiche_tracking,
            "use_rlm": use_rlm,
            "trigger_source": "batch",
            "trigger_user_id": user_id,
            "skip_if_audited": False,
        }},
    }}


async def create_batch(request: Request) -> JSONResponse:
    await authorize(request, "audits.run")
    body = await json_body(request)
    fiche_ids, config_id, user_id, use_rlm = parse_batch(body)
    # spec 06 §4.5: the whole batch is refused (403) when any fiche is out of the caller's scope
    await authorize(request, "audits.run", fiche_ids, out_of_scope=forbidden("Forbidden"))

    def resolve(s) -> int | None:
        if config_id is not None:
            return config_id if s.get(AuditConfig, config_id) is not None else None
        cfg = batch_db.default_config(s)
        return cfg.id if cfg is not None else None

    resolved = await db_call(resolve)
    if resolved is None:
        raise not_found(f"Audit config {config_id} not found" if config_id is not None
                        else "No active audit configuration found")
    batch, tracking = await db_call(lambda s: _create(s, fiche_ids, resolved, use_rlm, user_id))
    client = dagster(request)
    try:
        for fiche_id in fiche_ids:  # re-register the partitions (idempotent) before the backfill
            await client.add_fiche_partition(fiche_id)
        backfill_id = await client.launch_asset_backfill(
            BATCH_ASSETS, fiche_ids,
            tags={"auditflow/batch_id": batch, "auditflow/trigger": "batch", "auditflow/audit_config_id": str(resolved)},
            title=batch,
            run_config=batch_run_config(tracking, resolved, use_rlm, user_id),
        )
    except DagsterUnavailable as exc:
        await db_call(lambda s: batch_db.drop_batch(s, batch))
        raise ApiError(503, f"Pipeline unavailable: {exc}", "SERVICE_UNAVAILABLE") from None
    await db_call(lambda s: batch_db.mark_launched(s, batch, backfill_id))
    return JSONResponse({
        "success": True,
        "message": f"Batch audit queued for {len(fiche_ids)} fiches",
        "fiche_ids": fiche_ids,
        "audit_config_id": resolved,
        "batch_id": batch,
        "event_ids": [backfill_id],
    })


def _create(s, fiche_ids: list[str], config_id: int, use_rlm: bool, user_id: str | None) -> tuple[str, dict[str, str]]:
    batch, tracking = batch_db.create_batch(s, fiche_ids=fiche_ids, audit_config_id=config_id, use_rlm=use_rlm,
                                            user_id=user_id)
    return batch.id, tracking


async def get_batch(request: Request) -> JSONResponse:
    await authorize(request, "audits.read")
    batch_id = request.path_params["batch_id"]
    if not _BATCH_ID.match(batch_id):
        raise validation_error("Invalid batch_id")
    status = await db_call(lambda s: batch_db.batch_status(s, batch_id))
    if status is None:
        raise not_found("Batch not found")
    fiche_ids = [item["fiche_id"] for item in status["items"]]
    allowed = await scope_filter(request, fiche_ids)
    if allowed is not None and any(f not in allowed for f in fiche_ids):
        raise not_found("Batch not found")  # a batch is visible only when all its fiches are
    return JSONResponse({"success": True, "data": status})


routes = [
    Route("/api/audits/batch", create_batch, methods=["POST"]),
    Route("/api/audits/batch/{batch_id}", get_batch, methods=["GET"]),
]
