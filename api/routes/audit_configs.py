"""Audit configuration routes ``/api/audit-configs`` (spec 03 §1.3/§1.4, spec 06 §4.4).

Legacy camelCase shapes, ids as strings. Required deviations from legacy (**→ Py**): step
positions are 1-based; ``null`` in a config update clears the field; moving a step onto a taken
position is a 409; a reorder writes 1..n in one transaction; deleting a config that audits use is a
409 (the FK is ON DELETE RESTRICT); a non-numeric id is a 400. Validation errors are
``{success:false, error:"Validation error: <first issue>", code:"VALIDATION_ERROR", details:[{loc,msg}]}``.

Not in the legacy API, added for the exchange format of :mod:`auditflow_dagster.core.audit_config`:
``POST /import`` takes a legacy config file unchanged, ``GET /{id}/export`` gives one back (raw).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.common import DIGITS, authorize, db_call, json_body, path_int, query_single
from api.errors import ApiError, not_found, validation_error
from auditflow_dagster.core.audit_config import (
    AuditConfigSpec,
    AuditStepSpec,
    config_from_legacy_json,
    config_to_legacy_json,
)
from auditflow_dagster.db import config_admin as store
from auditflow_dagster.db.audits import strip_nul
from auditflow_dagster.db.configs import import_config, load_config

T = TypeVar("T")
CONFIG_NOT_FOUND = "Audit configuration not found"
STEP_NOT_FOUND = "Audit step not found"

#: Updatable config keys → (column, type, nullable).
CONFIG_UPDATE = {
    "name": ("name", str, False),
    "description": ("description", str, True),
    "systemPrompt": ("system_prompt", str, True),
    "isActive": ("is_active", bool, False),
    "runAutomatically": ("run_automatically", bool, False),
}
#: Keys of our own replies that an imported file may carry back; never kept as informational keys.
_REPLY_KEYS = {"id", "createdAt", "updatedAt", "createdBy", "stepsCount", "stats"}


# --------------------------------------------------------------------------------------------- #
# Input helpers
# --------------------------------------------------------------------------------------------- #


def _invalid(details: list[dict[str, Any]]) -> ApiError:
    first = details[0]
    where = ".".join(str(p) for p in first["loc"])
    return validation_error(f"Validation error: {where + ': ' if where else ''}{first['msg']}", details=details)


def _from_pydantic(exc: ValidationError) -> ApiError:
    details = []
    for e in exc.errors(include_url=False):
        msg = e["msg"].removeprefix("Value error, ")
        details.append({"loc": list(e["loc"]), "msg": msg})
    return _invalid(details)


def _step_input(raw: Any) -> Any:
    """Only the step keys of the legacy format (unknown keys are dropped, as legacy did)."""
    return {k: v for k, v in raw.items() if k in store.STEP_KEYS} if isinstance(raw, dict) else raw


def _name_not_blank(spec: AuditConfigSpec) -> None:
    if not spec.name.strip():
        raise _invalid([{"loc": ["name"], "msg": "must not be blank"}])


def _flag(request: Request, name: str) -> bool:
    return query_single(request, name) == "true"


def _id_list(raw: Any) -> list[int]:
    if not isinstance(raw, list):
        raise _invalid([{"loc": ["stepIds"], "msg": "must be an array of step ids"}])
    out = []
    for i, v in enumerate(raw):
        if isinstance(v, int) and not isinstance(v, bool) and 0 < v < 2**63:
            out.append(v)
        elif isinstance(v, str) and DIGITS.match(v) and 0 < int(v) < 2**63:
            out.append(int(v))
        else:
            raise _invalid([{"loc": ["stepIds", i], "msg": "must be a step id (positive integer or digit string)"}])
    return out


async def _db(fn: Callable[[Any], T], missing: str = CONFIG_NOT_FOUND) -> T:
    try:
        return await db_call(fn)
    except store.ConfigNotFound:
        raise not_found(missing) from None
    except store.ConfigConflict as exc:
        raise ApiError(409, str(exc), "CONFLICT") from None
    except store.ConfigInvalid as exc:
        raise validation_error(str(exc)) from None
    except ValidationError as exc:
        raise _from_pydantic(exc) from None
    except IntegrityError:  # a concurrent writer won a race the locks did not cover
        raise ApiError(409, "Conflicting concurrent change, retry", "CONFLICT") from None


# --------------------------------------------------------------------------------------------- #
# Configs
# --------------------------------------------------------------------------------------------- #


async def list_configs(request: Request) -> JSONResponse:
    await authorize(request, "audit-configs.read")
    inactive, steps, stats = (_flag(request, n) for n in ("include_inactive", "include_steps", "include_stats"))
    data = await _db(lambda s: store.list_configs(s, include_inactive=inactive, include_steps=steps,
                                                   include_stats=stats))
    return JSONResponse({"success": True, "data": data, "count": len(data)})


async def get_config(request: Request) -> JSONResponse:
    await authorize(request, "audit-configs.read")
    config_id = path_int(request, "id", "audit config id")
    stats = _flag(request, "include_stats")
    data = await _db(lambda s: store.config_detail(s, config_id, include_stats=stats))
    return JSONResponse({"success": True, "data": data})


async def create_config(request: Request) -> JSONResponse:
    await authorize(request, "audit-configs.write")
    body = strip_nul(await json_body(request))
    created_by = body.get("createdBy")
    if created_by is not None and not isinstance(created_by, str):
        raise _invalid([{"loc": ["createdBy"], "msg": "must be a string"}])
    payload = {k: body[k] for k in ("name", "description", "systemPrompt", "isActive", "runAutomatically") if k in body}
    if "steps" in body:
        steps = body["steps"]
        payload["steps"] = [_step_input(st) for st in steps] if isinstance(steps, list) else steps
    try:
        spec = AuditConfigSpec.model_validate(payload, strict=True)
    except ValidationError as exc:
        raise _from_pydantic(exc) from None
    _name_not_blank(spec)
    def write(s) -> dict[str, Any]:
        row = import_config(s, spec, created_by=created_by)
        return {"id": str(row.id), "name": row.name}

    return JSONResponse({"success": True, "data": await _db(write)}, status_code=201)


async def update_config(request: Request) -> JSONResponse:
    await authorize(request, "audit-configs.write")
    config_id = path_int(request, "id", "audit config id")
    body = strip_nul(await json_body(request))
    changes: dict[str, Any] = {}
    for key, (column, kind, nullable) in CONFIG_UPDATE.items():
        if key not in body:
            continue
        value = body[key]
        if value is None and nullable:
            changes[column] = None
        elif not isinstance(value, kind):
            expected = "a boolean" if kind is bool else "a string"
            raise _invalid([{"loc": [key], "msg": f"must be {expected}" + (" or null" if nullable else "")}])
        elif key == "name" and not value.strip():
            raise _invalid([{"loc": [key], "msg": "must not be blank"}])
        else:
            changes[column] = value
    data = await _db(lambda s: store.update_config(s, config_id, changes))
    return JSONResponse({"success": True, "data": data})


async def delete_config(request: Request) -> JSONResponse:
    await authorize(request, "audit-configs.write")
    config_id = path_int(request, "id", "audit config id")
    await _db(lambda s: store.delete_config(s, config_id))
    return JSONResponse({"success": True, "message": "Audit configuration deleted"})


async def import_legacy(request: Request) -> JSONResponse:
    await authorize(request, "audit-configs.write")
    body = strip_nul(await json_body(request))
    created_by = body.get("createdBy") if isinstance(body.get("createdBy"), str) else None
    try:
        spec = config_from_legacy_json({k: v for k, v in body.items() if k not in _REPLY_KEYS})
    except ValidationError as exc:
        raise _from_pydantic(exc) from None
    _name_not_blank(spec)

    def write(s) -> dict[str, Any]:
        row = import_config(s, spec, created_by=created_by)
        return {"id": str(row.id), "name": row.name, "stepsCount": len(spec.steps)}

    return JSONResponse({"success": True, "data": await _db(write)}, status_code=201)


async def export_legacy(request: Request) -> JSONResponse:
    await authorize(request, "audit-configs.read")
    config_id = path_int(request, "id", "audit config id")
    loaded = await _db(lambda s: load_config(s, config_id))
    if loaded is None:
        raise not_found(CONFIG_NOT_FOUND)
    return JSONResponse(
        config_to_legacy_json(loaded[1]),
        headers={"Content-Disposition": f'attachment; filename="audit-config-{config_id}.json"'},
    )


async def validate(request: Request) -> JSONResponse:
    await authorize(request, "audit-configs.read")
    config_id = path_int(request, "config_id", "audit config id")
    errors = await _db(lambda s: store.validate_config(s, config_id))
    return JSONResponse({"success": True, "data": {"valid": not errors, "errors": errors}})


async def stats(request: Request) -> JSONResponse:
    await authorize(request, "audit-configs.read")
    config_id = path_int(request, "config_id", "audit config id")
    data = await _db(lambda s: store.stats_of(s, config_id))
    return JSONResponse({"success": True, "data": data})


# --------------------------------------------------------------------------------------------- #
# Steps
# --------------------------------------------------------------------------------------------- #


async def add_step(request: Request) -> JSONResponse:
    await authorize(request, "audit-configs.write")
    config_id = path_int(request, "config_id", "audit config id")
    body = strip_nul(await json_body(request))
    try:
        spec = AuditStepSpec.model_validate(_step_input(body), strict=True)
    except ValidationError as exc:
        raise _from_pydantic(exc) from None
    step = await _db(lambda s: store.step_json(store.add_step(s, config_id, spec)))
    return JSONResponse({"success": True, "data": step}, status_code=201)


async def update_step(request: Request) -> JSONResponse:
    await authorize(request, "audit-configs.write")
    step_id = path_int(request, "step_id", "step id")
    changes = _step_input(strip_nul(await json_body(request)))
    data = await _db(lambda s: store.update_step(s, step_id, changes), STEP_NOT_FOUND)
    return JSONResponse({"success": True, "data": data})


async def delete_step(request: Request) -> JSONResponse:
    await authorize(request, "audit-configs.write")
    step_id = path_int(request, "step_id", "step id")
    await _db(lambda s: store.delete_step(s, step_id), STEP_NOT_FOUND)
    return JSONResponse({"success": True, "message": "Audit step deleted"})


async def reorder_steps(request: Request) -> JSONResponse:
    await authorize(request, "audit-configs.write")
    config_id = path_int(request, "config_id", "audit config id")
    body = await json_body(request)
    step_ids = _id_list(body.get("stepIds"))
    await _db(lambda s: store.reorder_steps(s, config_id, step_ids))
    return JSONResponse({"success": True, "message": "Steps reordered",
                         "data": [{"id": str(sid), "position": i} for i, sid in enumerate(step_ids, 1)]})


routes = [
    Route("/api/audit-configs", list_configs, methods=["GET"]),
    Route("/api/audit-configs", create_config, methods=["POST"]),
    Route("/api/audit-configs/import", import_legacy, methods=["POST"]),
    Route("/api/audit-configs/steps/{step_id}", update_step, methods=["PUT"]),
    Route("/api/audit-configs/steps/{step_id}", delete_step, methods=["DELETE"]),
    Route("/api/audit-configs/{config_id}/steps/reorder", reorder_steps, methods=["PUT"]),
    Route("/api/audit-configs/{config_id}/steps", add_step, methods=["POST"]),
    Route("/api/audit-configs/{config_id}/validate", validate, methods=["GET"]),
    Route("/api/audit-configs/{config_id}/stats", stats, methods=["GET"]),
    Route("/api/audit-configs/{id}/export", export_legacy, methods=["GET"]),
    Route("/api/audit-configs/{id}", get_config, methods=["GET"]),
    Route("/api/audit-configs/{id}", update_config, methods=["PUT"]),
    Route("/api/audit-configs/{id}", delete_config, methods=["DELETE"]),
]
