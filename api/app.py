"""The Starlette application (DESIGN §3.8: thin — validate, write request rows, launch through
Dagster GraphQL, read). Run with ``uvicorn api.app:create_app --factory``."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import AuthMiddleware, startup_warning
from api.dagster_client import DagsterClient
from api.errors import (
    ApiError,
    api_error_handler,
    http_error_handler,
    internal_error,
    log_level,
    unexpected_error_handler,
)
from api.logs import REQUEST_ID, configure_api_logging, request_id_from
from api.openapi import DOCUMENT
from api.routes import (
    admin,
    audit_configs,
    audit_reads,
    audits,
    automation,
    batches,
    chat,
    exports,
    fiches,
    health,
    progressive,
    realtime,
    recordings,
    reports,
    reruns,
    runs,
    transcriptions,
)
from api.routes.health import INSTANCE
from auditflow_dagster.settings import get_settings

log = logging.getLogger("auditflow.api")


class HeadersAndLimits:
    """``X-Backend-Instance`` and ``X-Request-Id`` (the caller's, else a new UUID; also on every log
    line of the request) on every reply; bodies over the limit → 413, declared or streamed; an
    exception nothing else handled → the generic 500 envelope (details in the log only)."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app, self.max_body = app, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = request_id_from(headers.get(b"x-request-id"))
        token = REQUEST_ID.set(request_id)
        try:
            await self._serve(scope, receive, send, headers, request_id)
        finally:
            REQUEST_ID.reset(token)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, bytes],
                     request_id: str) -> None:
        declared = headers.get(b"content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body:
            resp = ApiError(413, "Request body too large", "PAYLOAD_TOO_LARGE").response()
            resp.headers["X-Backend-Instance"] = INSTANCE
            resp.headers["X-Request-Id"] = request_id
            await resp(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise ApiError(413, "Request body too large", "PAYLOAD_TOO_LARGE")
            return message

        started, status, logged = False, 0, False

        async def send_with_headers(message: Message) -> None:
            nonlocal started, status, logged
            if message["type"] == "http.response.body" and status >= 400 and not logged:
                logged = True  # one line per error reply, whoever wrote it (spec 06 §5.2 levels)
                log.log(log_level(status), "%s %s -> %s %s", scope.get("method"), scope.get("path"), status,
                        _error_text(message.get("body", b"")))
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
                raw = list(message.get("headers", []))
                raw.append((b"x-backend-instance", INSTANCE.encode()))
                raw.append((b"x-request-id", request_id.encode("latin-1", "replace")))
                message["headers"] = raw
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except Exception as exc:
            if started:
                raise  # a stream that already began cannot become an error reply
            if isinstance(exc, ApiError):  # e.g. the streamed 413 raised outside a route
                error = exc
            else:
                log.error("unhandled error on %s %s", scope.get("method"), scope.get("path"), exc_info=exc)
                logged, error = True, internal_error()
            await error.response()(scope, receive, send_with_headers)


def _error_text(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error", ""))[:300]
    except (ValueError, AttributeError):
        return ""


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(DOCUMENT)


def create_app(dagster_url: str | None = None) -> Starlette:
    from auditflow_dagster.db.embedded import ensure_database_env
    from auditflow_dagster.db.migrate import upgrade

    ensure_database_env()
    upgrade()
    settings = get_settings()
    configure_api_logging()  # request id on every line, secrets scrubbed (spec 06 §5.7, §5.8)
    startup_warning(settings)  # AUDITFLOW_AUTH=off is said loudly

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.dagster = DagsterClient(dagster_url or settings.dagster_graphql_url)
        app.state.event_bus = None  # created on the first SSE subscriber (api.routes.realtime)
        # Everything loaded so far (modules, settings, the ORM) lives forever: moving it out of the
        # collector's generations removes the 150–250 ms full collections a large range reply
        # used to trigger every few requests (bench/fiche_reads.py).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await app.state.dagster.aclose()
            if getattr(app.state, "chat_llm", None) is not None:
                await app.state.chat_llm.aclose()
            if app.state.event_bus is not None:
                await app.state.event_bus.aclose()

    routes = [
        *health.routes,
        *chat.routes,  # before /api/fiches/{fiche_id} and /api/audits/{audit_id}
        *progressive.routes,  # before /api/fiches/{fiche_id}
        *fiches.routes,
        *reruns.routes,  # /control-points/statuses before /api/audits/{audit_id}/…
        *batches.routes,  # /api/audits/batch… before /api/audits/{audit_id}
        *audit_reads.routes,  # /grouped, /by-fiche… before /api/audits/{audit_id}
        *audits.routes,
        *audit_configs.routes,
        *automation.routes,
        *recordings.routes,
        *transcriptions.routes,  # /batch before /{fiche_id}
        *runs.routes,
        *reports.routes,
        *exports.routes,
        *realtime.routes,
        *admin.routes,
        Route("/api/openapi.json", openapi),
        Route("/api-docs.json", openapi),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(HeadersAndLimits, max_body=settings.api_max_body_bytes),
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,  # AUDITFLOW_CORS_ORIGINS / CORS_ALLOWED_ORIGINS
                allow_credentials="*" not in settings.cors_origins,
                allow_methods=["*"],
                allow_headers=["*"],
                expose_headers=["X-Backend-Instance", "X-Request-Id"],
            ),
            Middleware(AuthMiddleware),  # innermost: 401 before routing for /api/* (api/auth.py)
        ],
        exception_handlers={ApiError: api_error_handler, HTTPException: http_error_handler, Exception: unexpected_error_handler},
    )
