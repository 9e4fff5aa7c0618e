"""Small helpers shared by the route modules: DB calls off the event loop, JSON body parsing,
strict path/query parsing, and the per-app Dagster client."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.orm import Session
from starlette.requests import Request

from api.auth import (
    authorize as authorize,  # the one place for auth (issue 8): api/auth.py
)
from api.dagster_client import DagsterClient
from api.errors import ApiError, validation_error
from auditflow_dagster.db.session import session_scope

T = TypeVar("T")
DIGITS = re.compile(r"^\d+$")
YMD = re.compile(r"^\d{4}-\d{2}-\d{2}$")


async def db_call(fn: Callable[[Session], T]) -> T:
    def _run() -> T:
        with session_scope() as s:
            return fn(s)

    return await asyncio.to_thread(_run)


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "Invalid JSON body", "INVALID_JSON") from None
    if not isinstance(body, dict):
        raise validation_error("Request body must be a JSON object")
    return body


INT32_MAX = 2**31 - 1  #: positions and indexes are INTEGER columns; ids are BIGINT


def path_int(request: Request, name: str, label: str | None = None, *, maximum: int = 2**63 - 1) -> int:
    """A positive decimal path segment no larger than its column can hold (else 400, never a
    database error)."""
    value = request.path_params[name]
    if not isinstance(value, str) or not DIGITS.match(value) or int(value) <= 0 or int(value) > maximum:
        raise validation_error(f"Invalid {label or name}")
    return int(value)


def dagster(request: Request) -> DagsterClient:
    return request.app.state.dagster


def query_single(request: Request, name: str) -> str | None:
    """A query parameter given at most once (a repeated one is a 400, not a silent pick)."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise validation_error(f"Query parameter '{name}' must be given once")
    return values[0] if values else None


def query_date(value: str, name: str) -> dt.date:
    """A strict ``YYYY-MM-DD`` calendar date; impossible dates (2026-02-30) are a 400 too."""
    if not YMD.match(value):
        raise validation_error(f"Invalid {name} format, expected YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise validation_error(f"Invalid {name}: {value} is not a calendar date") from None
