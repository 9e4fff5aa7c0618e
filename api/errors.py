"""The error envelope of spec 06 §5.2: ``{success:false, error, code?}``; never a raw 500 text."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

log = logging.getLogger("auditflow.api")


class ApiError(Exception):
    def __init__(self, status: int, error: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(error)
        self.status, self.error, self.code, self.extra = status, error, code, extra

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"success": False, "error": self.error}
        if self.code:
            body["code"] = self.code
        body.update(self.extra)
        return JSONResponse(body, status_code=self.status)


def validation_error(message: str, **extra: Any) -> ApiError:
    return ApiError(400, message, "VALIDATION_ERROR", **extra)


def not_found(message: str, code: str | None = "NOT_FOUND", **extra: Any) -> ApiError:
    return ApiError(404, message, code, **extra)


def log_level(status: int) -> int:
    """Spec 06 §5.2: ERROR for 5xx, INFO for 401/403/404, WARNING for the other 4xx."""
    if status >= 500:
        return logging.ERROR
    return logging.INFO if status in (401, 403, 404) else logging.WARNING


def internal_error() -> ApiError:
    """The one 500 body: a generic message and the request id to quote; never exception text, and
    no ``code`` (spec 06 §5.2: "anything else" has none)."""
    from api.logs import current_request_id

    return ApiError(500, "Internal server error", None, requestId=current_request_id())


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """(The reply is logged by ``api.app.HeadersAndLimits``, like every error reply.)"""
    assert isinstance(exc, ApiError)
    return exc.response()


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return ApiError(404, f"Route with ID '{request.url.path}' not found", "NOT_FOUND").response()
    if exc.status_code == 405:
        return ApiError(405, "Method not allowed", "METHOD_NOT_ALLOWED").response()
    code = {400: "VALIDATION_ERROR", 401: "AUTHENTICATION_ERROR", 403: "AUTHORIZATION_ERROR",
            413: "PAYLOAD_TOO_LARGE"}.get(exc.status_code, "HTTP_ERROR")
    return ApiError(exc.status_code, str(exc.detail), code).response()


async def unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return internal_error().response()
