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


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    level = logging.WARNING if exc.status < 500 else logging.ERROR
    log.log(level, "%s %s -> %s %s", request.method, request.url.path, exc.status, exc.error)
    return exc.response()


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return ApiError(404, f"Route with ID '{request.url.path}' not found", "NOT_FOUND").response()
    if exc.status_code == 405:
        return ApiError(405, "Method not allowed", "METHOD_NOT_ALLOWED").response()
    return ApiError(exc.status_code, str(exc.detail)).response()


async def unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return ApiError(500, "Internal server error").response()
