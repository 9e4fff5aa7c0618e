"""API hardening (issue 8 §4, spec 06 §5): the error envelope on every error path, 413 for
oversize bodies (declared and streamed), 400 for non-numeric database ids on every route that takes
one, a generic 500 without exception text (details and request id in the log), ``X-Request-Id``
echoed or generated, CORS origins from the settings."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator

import pytest
from starlette.requests import Request
from starlette.routing import Route
from starlette.testclient import TestClient

from api.app import create_app
from api.openapi import DOCUMENT
from auditflow_dagster.settings import get_settings

UNREACHABLE_DAGSTER = "http://127.0.0.1:9/graphql"
LIMIT = 2048


def _envelope(r, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["success"] is False and isinstance(body["error"], str) and body["error"]
    if code is not None:
        assert body.get("code") == code, body
    assert r.headers["x-request-id"] and r.headers["x-backend-instance"]
    return body


async def _boom(request: Request):
    raise RuntimeError("db row 4242 exploded at /srv/app/secret_module.py")


@pytest.fixture()
def app(db, monkeypatch):
    monkeypatch.setenv("AUDITFLOW_API_MAX_BODY_BYTES", str(LIMIT))
    monkeypatch.setenv("AUDITFLOW_CORS_ORIGINS", "https://app.example.com, http://localhost:5173/")
    get_settings.cache_clear()
    application = create_app(dagster_url=UNREACHABLE_DAGSTER)
    application.router.routes.insert(0, Route("/api/__boom", _boom, methods=["GET", "POST"]))
    yield application
    get_settings.cache_clear()


@pytest.fixture()
def client(app) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


# --------------------------------------------------------------------------------------------- #
# Envelope
# --------------------------------------------------------------------------------------------- #


def test_framework_error_paths_use_the_envelope(client):
    _envelope(client.get("/api/no-such-route"), 404, "NOT_FOUND")
    _envelope(client.put("/api/openapi.json"), 405, "METHOD_NOT_ALLOWED")
    _envelope(client.post("/api/audits/run", content=b"{nope", headers={"content-type": "application/json"}),
              400, "INVALID_JSON")
    _envelope(client.post("/api/audits/run", json=[1, 2]), 400, "VALIDATION_ERROR")
    _envelope(client.get("/api/audits?limit=abc"), 400, "VALIDATION_ERROR")
    _envelope(client.get("/api/audits/999999"), 404)
    _envelope(client.post("/api/audits/run", json={"fiche_id": "1", "audit_config_id": 1}), 404)
    assert "code" not in _envelope(client.get("/api/__boom"), 500)  # spec 06 §5.2: a bare 500 has no code


def test_unauthenticated_is_the_envelope_too(db, monkeypatch):
    monkeypatch.setenv("AUDITFLOW_AUTH", "on")
    get_settings.cache_clear()
    try:
        with TestClient(create_app(dagster_url=UNREACHABLE_DAGSTER), raise_server_exceptions=False) as c:
            # (the code is api/auth.py's; spec 06 §5.2 names it AUTHENTICATION_ERROR)
            for r in (c.get("/api/audits"),
                      c.get("/api/audits", headers={"Authorization": "Bearer afk_00000000_" + "x" * 43})):
                assert _envelope(r, 401)["code"]
    finally:
        get_settings.cache_clear()


# --------------------------------------------------------------------------------------------- #
# 413
# --------------------------------------------------------------------------------------------- #


def test_declared_oversize_body_is_413(client):
    body = _envelope(client.post("/api/audits/run", content=b"x" * (LIMIT + 1),
                                 headers={"content-type": "application/json", "x-request-id": "big-1"}),
                     413, "PAYLOAD_TOO_LARGE")
    assert body["error"] == "Request body too large"
    # at the limit the body is read normally (here: a JSON error, not 413)
    r = client.post("/api/audits/run", content=b"{" + b" " * (LIMIT - 2) + b"}",
                    headers={"content-type": "application/json"})
    assert r.status_code == 400


@pytest.mark.parametrize("path", ["/api/audits/run", "/api/audit-configs", "/api/automation/schedules",
                                  "/api/transcriptions/batch"])
def test_streamed_oversize_body_is_413(client, path):
    def chunks():  # no Content-Length: Transfer-Encoding: chunked
        for _ in range(8):
            yield b" " * (LIMIT // 4)

    r = client.post(path, content=chunks(), headers={"content-type": "application/json", "x-request-id": "chunky"})
    _envelope(r, 413, "PAYLOAD_TOO_LARGE")
    assert r.headers["x-request-id"] == "chunky"


def test_oversize_body_to_a_middleware_that_reads_it_is_413(app):
    """A 413 raised from ``receive`` outside any route (here: a raw ASGI read) is still the envelope."""
    import asyncio

    from api.app import HeadersAndLimits

    async def reader(scope, receive, send):
        while (await receive()).get("more_body"):
            pass

    sent: list[dict] = []

    async def run() -> None:
        parts = [{"type": "http.request", "body": b"x" * LIMIT, "more_body": True},
                 {"type": "http.request", "body": b"x", "more_body": False}]

        async def receive():
            return parts.pop(0)

        async def send(message):
            sent.append(message)

        await HeadersAndLimits(reader, LIMIT)({"type": "http", "method": "POST", "path": "/x", "headers": []},
                                              receive, send)

    asyncio.run(run())
    assert sent[0]["status"] == 413
    assert b'"PAYLOAD_TOO_LARGE"' in sent[1]["body"]


# --------------------------------------------------------------------------------------------- #
# Non-numeric ids
# --------------------------------------------------------------------------------------------- #

_DB_IDS = {"id", "audit_id", "config_id", "step_id", "step_position", "control_point_index"}


def _numeric_routes() -> list[tuple[str, str, str]]:
    """(method, path, the parameter made non-numeric) for every documented numeric database id."""
    out = []
    for path, ops in DOCUMENT["paths"].items():
        for method, op in ops.items():
            for p in op.get("parameters", []):
                if p.get("in") == "path" and p["name"] in _DB_IDS:
                    out.append((method.upper(), path, p["name"]))
    return out


NUMERIC_ROUTES = _numeric_routes()


def test_every_numeric_id_route_is_covered():
    assert len(NUMERIC_ROUTES) >= 30  # the list is read from the document, not typed by hand


@pytest.mark.parametrize("bad", ["abc", "12a", "-3", "0", "1.5", "99999999999999999999"])
def test_non_numeric_ids_are_400_on_every_route(client, bad):
    problems = []
    for method, path, name in NUMERIC_ROUTES:
        url = re.sub(r"{(\w+)}", lambda m, n=name: bad if m.group(1) == n else "1", path)
        r = client.request(method, url, json={} if method in ("POST", "PUT", "PATCH") else None)
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        if r.status_code != 400 or body.get("success") is not False or body.get("code") != "VALIDATION_ERROR":
            problems.append((method, url, r.status_code, r.text[:120]))
    assert problems == []


def test_non_numeric_fiche_ids_are_a_4xx_envelope(client):
    """Fiche ids are CRM ids constrained to digits: a non-digit one is 400 or, where the legacy
    route only matched digits, its 404 — never a 5xx or a non-JSON reply."""
    for path, ops in DOCUMENT["paths"].items():
        if "{fiche_id}" not in path:
            continue
        for method in ops:
            url = path.replace("{fiche_id}", "12ab").replace("{call_id}", "c1")
            r = client.request(method.upper(), url, json={"message": "hi"} if method != "get" else None)
            assert r.status_code in (400, 404), (method, url, r.status_code)
            _envelope(r, r.status_code)


# --------------------------------------------------------------------------------------------- #
# 500
# --------------------------------------------------------------------------------------------- #


def test_unexpected_exception_is_a_generic_500_with_the_request_id(client, caplog):
    caplog.set_level(logging.ERROR, logger="auditflow.api")
    r = client.get("/api/__boom", headers={"X-Request-Id": "req-boom-1"})
    body = _envelope(r, 500)
    assert body == {"success": False, "error": "Internal server error", "requestId": "req-boom-1"}
    assert r.headers["x-request-id"] == "req-boom-1"
    for leak in ("4242", "exploded", "secret_module", "Traceback", "RuntimeError"):
        assert leak not in r.text
    # the log has the details, and the request id
    record = next(rec for rec in caplog.records if rec.name == "auditflow.api" and rec.levelno == logging.ERROR)
    assert "/api/__boom" in record.getMessage()
    assert record.exc_info and "db row 4242 exploded" in str(record.exc_info[1])
    assert getattr(record, "request_id", None) == "req-boom-1"
    assert "RuntimeError: db row 4242 exploded" in caplog.text


def test_post_unexpected_exception_is_generic_too(client):
    r = client.post("/api/__boom", json={"a": 1})
    body = _envelope(r, 500)
    assert uuid.UUID(body["requestId"]) and body["requestId"] == r.headers["x-request-id"]


# --------------------------------------------------------------------------------------------- #
# X-Request-Id
# --------------------------------------------------------------------------------------------- #


def test_request_id_is_echoed_or_generated(client):
    r = client.get("/health", headers={"X-Request-Id": "abc-123_x.y:z"})
    assert r.headers["x-request-id"] == "abc-123_x.y:z"
    generated = {client.get("/health").headers["x-request-id"] for _ in range(3)}
    assert len(generated) == 3 and all(uuid.UUID(g) for g in generated)
    # on error replies too (404, 413, 400) and on a preflight
    assert client.get("/api/nope", headers={"X-Request-Id": "e1"}).headers["x-request-id"] == "e1"
    assert client.get("/api/audits/abc", headers={"X-Request-Id": "e2"}).headers["x-request-id"] == "e2"
    # a value that could forge log lines or is too long is replaced, not echoed
    for bad in ("has space", "x" * 129, "a\tb"):
        got = client.get("/health", headers={"X-Request-Id": bad}).headers["x-request-id"]
        assert got != bad and uuid.UUID(got)


def test_request_id_is_on_the_log_lines_of_the_request(client, caplog):
    caplog.set_level(logging.INFO, logger="auditflow.api")
    client.get("/api/audits/999999", headers={"X-Request-Id": "req-404"})
    rec = next(r for r in caplog.records if "/api/audits/999999" in r.getMessage())
    assert rec.request_id == "req-404"
    assert rec.levelno == logging.INFO  # spec 06 §5.2: 404 at INFO, other 4xx at WARNING
    client.get("/api/audits/abc", headers={"X-Request-Id": "req-400"})
    rec = next(r for r in caplog.records if "/api/audits/abc" in r.getMessage())
    assert rec.request_id == "req-400" and rec.levelno == logging.WARNING


# --------------------------------------------------------------------------------------------- #
# CORS
# --------------------------------------------------------------------------------------------- #


def test_cors_origins_come_from_the_settings(client):
    assert get_settings().cors_origins == ["https://app.example.com", "http://localhost:5173"]
    pre = client.options("/api/audits", headers={"Origin": "https://app.example.com",
                                                 "Access-Control-Request-Method": "POST",
                                                 "Access-Control-Request-Headers": "authorization,content-type"})
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == "https://app.example.com"
    assert pre.headers["access-control-allow-credentials"] == "true"
    assert "POST" in pre.headers["access-control-allow-methods"]
    assert "authorization" in pre.headers["access-control-allow-headers"].lower()
    # an origin not in the list gets no grant
    denied = client.options("/api/audits", headers={"Origin": "http://localhost:3000",
                                                    "Access-Control-Request-Method": "GET"})
    assert denied.status_code == 400 and "access-control-allow-origin" not in denied.headers
    # simple request: allowed origin is echoed, the instance/request-id headers are exposed
    r = client.get("/health", headers={"Origin": "http://localhost:5173"})
    assert r.headers["access-control-allow-origin"] == "http://localhost:5173"
    exposed = r.headers["access-control-expose-headers"].lower()
    assert "x-request-id" in exposed and "x-backend-instance" in exposed
    assert "access-control-allow-origin" not in client.get("/health", headers={"Origin": "https://evil.test"}).headers


def test_cors_default_is_the_local_dev_frontends(monkeypatch):
    monkeypatch.delenv("AUDITFLOW_CORS_ORIGINS", raising=False)
    monkeypatch.delenv("CORS_ALLOWED_ORIGINS", raising=False)
    get_settings.cache_clear()
    try:
        assert get_settings().cors_origins == ["http://localhost:3000", "http://localhost:3001",
                                               "http://localhost:5173", "http://localhost:5174"]
        monkeypatch.setenv("CORS_ALLOWED_ORIGINS", "https://a.example")
        get_settings.cache_clear()
        assert get_settings().cors_origins == ["https://a.example"]
    finally:
        get_settings.cache_clear()
