"""API key administration (issue 8): ``/api/admin/api-keys``.

``POST`` (``admin.write``) creates a key and answers 201 with the token — the only time it is ever
shown; ``GET`` (``admin.read``) lists keys without hashes or tokens; ``DELETE /{id}``
(``admin.write``) revokes one (idempotent). A key can only mint keys within its own rights: the
permissions it holds (``*`` only from ``*``) and a scope no wider than its own.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.auth import Principal, forbidden
from api.common import authorize, db_call, json_body, path_int, query_single
from api.errors import ApiError, not_found, validation_error
from auditflow_dagster.db import api_keys

INVALID = "Invalid API key input"


def _invalid(msg: str) -> ApiError:
    return validation_error(INVALID, details=[{"loc": ["body"], "msg": msg}])


def _expires_at(raw: Any) -> dt.datetime | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw.strip():
        raise _invalid("expires_at must be an ISO-8601 date-time or null")
    try:
        value = dt.datetime.fromisoformat(raw.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise _invalid("expires_at must be an ISO-8601 date-time or null") from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _within(caller: Principal, permissions: list[str], scope: str, groupes: list[str], crm_user_id: str | None) -> bool:
    """The new key grants nothing the calling principal does not hold."""
    if "*" not in caller.permissions and any(p == "*" or p not in caller.permissions for p in permissions):
        return False
    if caller.scope == "ALL":
        return True
    if caller.scope == "GROUP":
        return scope == "GROUP" and set(groupes) <= set(caller.groupes)
    return scope == "SELF" and crm_user_id == caller.crm_user_id


async def create_key(request: Request) -> JSONResponse:
    caller = await authorize(request, "admin.write")
    body = await json_body(request)
    try:
        name, perms, scope, groupes, crm_user_id = api_keys.validate_definition(
            name=body.get("name"), permissions=body.get("permissions") or [], scope=body.get("scope", "SELF"),
            groupes=body.get("groupes"), crm_user_id=body.get("crm_user_id"))
    except api_keys.InvalidKeyDefinition as exc:
        raise _invalid(str(exc)) from None
    expires_at = _expires_at(body.get("expires_at"))
    if not _within(caller, perms, scope, groupes, crm_user_id):
        raise forbidden("Cannot grant more than the calling key holds")

    def create(s) -> tuple[dict[str, Any], str]:
        return api_keys.create_key(s, name=name, permissions=perms, scope=scope, groupes=groupes,
                                   crm_user_id=crm_user_id, created_by=caller.label, expires_at=expires_at)

    try:
        view, token = await db_call(create)
    except api_keys.InvalidKeyDefinition as exc:
        raise _invalid(str(exc)) from None
    return JSONResponse({"success": True, "data": {**view, "token": token},
                         "message": "Store this token now: it is shown only once"}, status_code=201)


async def list_keys(request: Request) -> JSONResponse:
    await authorize(request, "admin.read")
    include_revoked = query_single(request, "include_revoked") != "false"
    data = await db_call(lambda s: api_keys.list_keys(s, include_revoked=include_revoked))
    return JSONResponse({"success": True, "data": data, "count": len(data)})


async def revoke_key(request: Request) -> JSONResponse:
    await authorize(request, "admin.write")
    key_id = path_int(request, "id", "id")
    data = await db_call(lambda s: api_keys.revoke_key(s, key_id))
    if data is None:
        raise not_found("API key not found")
    return JSONResponse({"success": True, "data": data})


routes = [
    Route("/api/admin/api-keys", create_key, methods=["POST"]),
    Route("/api/admin/api-keys", list_keys, methods=["GET"]),
    Route("/api/admin/api-keys/{id}", revoke_key, methods=["DELETE"]),
]
