"""Audit read and maintenance routes (spec 04 §4, spec 06 §4.5): the list, the grouped views,
by-fiche, detail, logs, PATCH and DELETE (soft delete).

Every route calls :func:`api.common.authorize` once; the list-like routes build one
:class:`ListParams` (the read scope will land in its ``scope_*`` fields). Registered before
``/api/audits/{audit_id}`` so ``/grouped`` and friends are not taken for an id.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.auth import authorize_audit, scope_filter, scope_list_params
from api.common import DIGITS, authorize, db_call, json_body, path_int
from api.errors import ApiError, validation_error
from auditflow_dagster.db import audit_reads
from auditflow_dagster.db.audit_reads import GROUP_BY, SORT_COLUMNS, ListParams
from auditflow_dagster.db.audits import NIVEAUX, STATUSES, audit_detail

INVALID_QUERY = "Invalid query parameters"
AUDIT_NOT_FOUND = {"success": False, "error": "Audit not found"}


def audit_missing() -> ApiError:
    """The same body, raised (an out-of-scope audit answers exactly like a missing one)."""
    return ApiError(404, "Audit not found")


_DATE_ONLY = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}$")
_INT = re.compile(r"^-?\d+$")


def _one(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise validation_error(INVALID_QUERY, details=[{"loc": ["query", name], "msg": "given more than once"}])
    return values[0] if values else None


def _bad(name: str, msg: str) -> ApiError:
    return validation_error(INVALID_QUERY, details=[{"loc": ["query", name], "msg": msg}])


def _csv(request: Request, name: str) -> list[str]:
    raw = _one(request, name)
    if raw is None:
        return []
    return [v.strip() for v in raw.split(",") if v.strip()]


def _digits_csv(request: Request, name: str) -> list[int]:
    return [int(v) for v in _csv(request, name) if DIGITS.match(v) and int(v) < 2**63]


def _bool(request: Request, name: str, default: bool | None = None) -> bool | None:
    raw = _one(request, name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() == "true"


def _text(request: Request, name: str) -> str | None:
    raw = _one(request, name)
    return raw.strip() if raw is not None and raw.strip() else None


def parse_instant(raw: str, name: str, *, end_of_day: bool = False) -> tuple[dt.datetime, bool]:
    """A date or an ISO instant → naive UTC. A date-only ``end_of_day`` bound → the next midnight,
    exclusive (spec 04 §4.1 Deviation: ``date_to`` covers its whole day). Returns (instant, exclusive)."""
    value = raw.strip()
    try:
        if _DATE_ONLY.match(value):
            y, m, d = (int(x) for x in value.split("-"))
            day = dt.datetime(y, m, d)
            return (day + dt.timedelta(days=1), True) if end_of_day else (day, False)
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise _bad(name, "invalid date") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed, False


def _instant(request: Request, name: str, *, end_of_day: bool = False) -> tuple[dt.datetime | None, bool]:
    raw = _text(request, name)
    if raw is None:
        return None, False
    return parse_instant(raw, name, end_of_day=end_of_day)


def _int(request: Request, name: str, *, minimum: int | None = None) -> int | None:
    raw = _text(request, name)
    if raw is None:
        return None
    if not _INT.match(raw) or abs(int(raw)) >= 2**31:
        raise _bad(name, "integer expected")
    value = int(raw)
    if minimum is not None and value < minimum:
        raise _bad(name, f"must be >= {minimum}")
    return value


def _decimal(request: Request, name: str) -> Decimal | None:
    raw = _text(request, name)
    if raw is None:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise _bad(name, "number expected") from None
    if not value.is_finite():
        raise _bad(name, "number expected")
    return value


def _ymd(request: Request, name: str) -> str | None:
    raw = _text(request, name)
    if raw is None:
        return None
    if not re.match(r"^\d{4}-\d{2}-\d{2}$", raw):
        raise _bad(name, "YYYY-MM-DD expected")
    return raw


def page_params(request: Request) -> tuple[int, int]:
    raw_limit, raw_offset = _text(request, "limit"), _text(request, "offset")
    if raw_limit is not None and not _INT.match(raw_limit):
        raise _bad("limit", "integer expected")
    if raw_offset is not None and (not _INT.match(raw_offset) or int(raw_offset) < 0):
        raise _bad("offset", "integer >= 0 expected")
    limit = 100 if raw_limit is None else min(500, max(1, int(raw_limit)))
    offset = 0 if raw_offset is None else min(int(raw_offset), 2**62)
    return limit, offset


def list_params(request: Request) -> ListParams:
    """The list's query string (spec 04 §4.1), validated; any parse error is a 400."""
    date_from, _ = _instant(request, "date_from")
    date_to, exclusive = _instant(request, "date_to", end_of_day=True)
    fetched_from, _ = _instant(request, "fetched_at_from")
    fetched_to, _ = _instant(request, "fetched_at_to")
    reval_from, _ = _instant(request, "last_revalidated_from")
    reval_to, _ = _instant(request, "last_revalidated_to")
    sort_by = _text(request, "sort_by") or "created_at"
    if sort_by not in SORT_COLUMNS:
        raise _bad("sort_by", f"one of {', '.join(SORT_COLUMNS)}")
    sort_order = (_text(request, "sort_order") or "desc").lower()
    if sort_order not in ("asc", "desc"):
        raise _bad("sort_order", "asc or desc")
    limit, offset = page_params(request)
    return ListParams(
        fiche_ids=_csv(request, "fiche_ids"),
        trigger_sources=_csv(request, "trigger_source"),
        groupes=_csv(request, "groupes"),
        statuses=[v for v in _csv(request, "status") if v in STATUSES],
        niveaux=[v for v in _csv(request, "niveau") if v in NIVEAUX],
        audit_config_ids=_digits_csv(request, "audit_config_ids"),
        automation_schedule_ids=_digits_csv(request, "automation_schedule_ids"),
        automation_run_ids=_digits_csv(request, "automation_run_ids"),
        is_compliant=_bool(request, "is_compliant"),
        has_recordings=_bool(request, "has_recordings"),
        date_from=date_from, date_to=date_to, date_to_exclusive=exclusive,
        groupe_query=_text(request, "groupe_query"),
        agence_query=_text(request, "agence_query"),
        prospect_query=_text(request, "prospect_query"),
        sales_dates=_csv(request, "sales_dates"),
        sales_date_from=_ymd(request, "sales_date_from"),
        sales_date_to=_ymd(request, "sales_date_to"),
        recordings_count_min=_int(request, "recordings_count_min"),
        recordings_count_max=_int(request, "recordings_count_max"),
        fetched_at_from=fetched_from, fetched_at_to=fetched_to,
        last_revalidated_from=reval_from, last_revalidated_to=reval_to,
        score_min=_decimal(request, "score_min"), score_max=_decimal(request, "score_max"),
        duration_min_ms=_int(request, "duration_min_ms"), duration_max_ms=_int(request, "duration_max_ms"),
        tokens_min=_int(request, "tokens_min"), tokens_max=_int(request, "tokens_max"),
        has_failed_steps=_bool(request, "has_failed_steps"),
        q=_text(request, "q"),
        latest_only=bool(_bool(request, "latest_only", True)),
        include_deleted=bool(_bool(request, "include_deleted", False)),
        sort_by=sort_by, sort_order=sort_order, limit=limit, offset=offset,
    )


async def list_audits(request: Request) -> JSONResponse:
    await authorize(request, "audits.read")
    params = scope_list_params(request, list_params(request))
    data, page = await db_call(lambda s: audit_reads.list_audits(s, params))
    return JSONResponse({"success": True, "data": data, "pagination": page})


async def grouped_by_fiches(request: Request) -> JSONResponse:
    await authorize(request, "audits.read")
    params = scope_list_params(request, list_params(request))
    data, page = await db_call(lambda s: audit_reads.grouped_by_fiches(s, params))
    return JSONResponse({"success": True, "data": data, "pagination": page})


async def grouped(request: Request) -> JSONResponse:
    await authorize(request, "audits.read")
    group_by = _text(request, "group_by")
    if group_by not in GROUP_BY:
        raise _bad("group_by", f"required, one of {', '.join(GROUP_BY)}")
    raw_size = _text(request, "bucket_size")
    bucket = int(raw_size) if raw_size is not None and _INT.match(raw_size) and abs(int(raw_size)) < 2**31 else 10
    bucket = min(100, max(1, bucket))  # non-numeric → 10 (spec 04 §4.3 Deviation)
    params = scope_list_params(request, list_params(request))
    data, extra = await db_call(lambda s: audit_reads.grouped(s, params, group_by, bucket))
    return JSONResponse({"success": True, "data": data, **extra})


async def by_fiche(request: Request) -> JSONResponse:
    await authorize(request, "audits.read")
    fiche_id = request.path_params["fiche_id"].strip()
    if not DIGITS.match(fiche_id):
        raise validation_error("Invalid fiche_id")
    allowed = await scope_filter(request, [fiche_id])
    if allowed is not None and fiche_id not in allowed:  # answered like a fiche without audits
        return JSONResponse({"success": True, "data": [], "count": 0})
    data = await db_call(lambda s: audit_reads.audits_by_fiche(s, fiche_id))
    return JSONResponse({"success": True, "data": data, "count": len(data)})


async def get_audit(request: Request) -> JSONResponse:
    await authorize(request, "audits.read")
    audit_id = path_int(request, "audit_id", "audit_id")
    await authorize_audit(request, "audits.read", audit_id, audit_missing())
    detail = await db_call(lambda s: audit_detail(s, audit_id))
    if detail is None:
        return JSONResponse(AUDIT_NOT_FOUND, status_code=404)
    return JSONResponse({"success": True, "data": detail})


async def audit_logs(request: Request) -> JSONResponse:
    await authorize(request, "audits.read")
    audit_id = path_int(request, "audit_id", "audit_id")
    await authorize_audit(request, "audits.read", audit_id, audit_missing())
    since, _ = _instant(request, "since")
    until, _ = _instant(request, "until")
    raw_limit, raw_offset = _text(request, "limit"), _text(request, "offset")
    if raw_limit is not None and not _INT.match(raw_limit):
        raise _bad("limit", "integer expected")
    if raw_offset is not None and (not _INT.match(raw_offset) or int(raw_offset) < 0):
        raise _bad("offset", "integer >= 0 expected")
    limit = 200 if raw_limit is None else min(1000, max(1, int(raw_limit)))
    offset = 0 if raw_offset is None else min(int(raw_offset), 2**62)
    level = _text(request, "level")
    logs = await db_call(lambda s: audit_reads.audit_logs(s, audit_id, level=level, since=since, until=until,
                                                          limit=limit, offset=offset))
    if logs is None:
        return JSONResponse(AUDIT_NOT_FOUND, status_code=404)
    return JSONResponse({"success": True, "data": logs, "count": len(logs), "limit": limit, "offset": offset})


def _nullable_str(body: dict[str, Any], key: str, max_len: int) -> str | None:
    value = body[key]
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise validation_error(f"Validation error: {key} must be a string of at most {max_len} characters or null")
    return value


def _nullable_id(body: dict[str, Any], key: str) -> int | None:
    value = body[key]
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63:
        return value
    if isinstance(value, str) and DIGITS.match(value) and 0 < int(value) < 2**63:
        return int(value)
    raise validation_error(f"Validation error: {key} must be a digit string or null")


def patch_changes(body: dict[str, Any]) -> dict[str, Any]:
    """Only the keys present are written (spec 04 §4.3 PATCH)."""
    changes: dict[str, Any] = {}
    if "notes" in body:
        changes["notes"] = _nullable_str(body, "notes", 20000)
    if "deleted" in body:
        if not isinstance(body["deleted"], bool):
            raise validation_error("Validation error: deleted must be a boolean")
        changes["deleted"] = body["deleted"]
    for key in ("automation_schedule_id", "automation_run_id"):
        if key in body:
            changes[key] = _nullable_id(body, key)
    if "trigger_source" in body:
        value = _nullable_str(body, "trigger_source", 50)
        if value is None or not value.strip():
            raise validation_error("Validation error: trigger_source must be a non-empty string")
        changes["trigger_source"] = value
    if "trigger_user_id" in body:
        changes["trigger_user_id"] = _nullable_str(body, "trigger_user_id", 200)
    return changes


async def patch_audit(request: Request) -> JSONResponse:
    await authorize(request, "audits.write")
    audit_id = path_int(request, "audit_id", "audit_id")
    changes = patch_changes(await json_body(request))
    await authorize_audit(request, "audits.write", audit_id, audit_missing())
    try:
        detail = await db_call(lambda s: audit_reads.update_audit(s, audit_id, changes))
    except audit_reads.UnknownLink as exc:
        raise validation_error(str(exc)) from None
    if detail is None:
        return JSONResponse(AUDIT_NOT_FOUND, status_code=404)
    return JSONResponse({"success": True, "data": detail})


async def delete_audit(request: Request) -> JSONResponse:
    await authorize(request, "audits.write")
    audit_id = path_int(request, "audit_id", "audit_id")
    await authorize_audit(request, "audits.write", audit_id, audit_missing())
    detail = await db_call(lambda s: audit_reads.update_audit(s, audit_id, {"deleted": True}))
    if detail is None:
        return JSONResponse(AUDIT_NOT_FOUND, status_code=404)
    return JSONResponse({"success": True, "data": detail})


routes = [
    Route("/api/audits", list_audits, methods=["GET"]),
    Route("/api/audits/grouped-by-fiches", grouped_by_fiches, methods=["GET"]),
    Route("/api/audits/grouped", grouped, methods=["GET"]),
    Route("/api/audits/by-fiche/{fiche_id}", by_fiche, methods=["GET"]),
    Route("/api/audits/{audit_id}/logs", audit_logs, methods=["GET"]),
    Route("/api/audits/{audit_id}", get_audit, methods=["GET"]),
    Route("/api/audits/{audit_id}", patch_audit, methods=["PATCH"]),
    Route("/api/audits/{audit_id}", delete_audit, methods=["DELETE"]),
]
