"""API keys (issue 8): created by the CLI and the admin endpoint, shown once, stored only as a
SHA-256, listed without secrets, revocable (idempotently), expiring; ``last_used_at`` written at
most once a minute; legacy machine tokens; ``AUDITFLOW_AUTH=off``. Real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re

import pytest
from sqlalchemy import text, update
from starlette.testclient import TestClient

from api.app import create_app
from api.auth import presented_token
from auditflow_dagster import cli
from auditflow_dagster.db import api_keys
from auditflow_dagster.db.clock import now_utc
from auditflow_dagster.db.models import ApiKey
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.settings import get_settings

MACHINE = "legacy-machine-token-0123456789abcdef"
TOKEN = re.compile(r"afk_[0-9a-f]{8}_[A-Za-z0-9_-]{43}")
UNAUTHORIZED = {"success": False, "error": "Authentication required", "code": "AUTHENTICATION_ERROR"}


@pytest.fixture()
def auth_on(db, monkeypatch):
    monkeypatch.setenv("AUDITFLOW_AUTH", "on")
    monkeypatch.setenv("API_AUTH_TOKENS", f"old-token-abc, {MACHINE}")
    monkeypatch.delenv("API_AUTH_TOKEN", raising=False)
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture()
def client(auth_on):
    with TestClient(create_app(dagster_url="http://127.0.0.1:9/graphql"), raise_server_exceptions=False) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def row_text(key_id: int) -> str:
    """Every column of the key's row, as text."""
    with session_scope() as s:
        return s.execute(text("SELECT row_to_json(k)::text FROM api_keys k WHERE id = :id"), {"id": key_id}).scalar()


def test_cli_create_list_revoke(auth_on, capsys):
    assert cli.main(["api-key", "create", "--name", "ops", "-p", "audits.read,fiches.read", "-p", "realtime.read",
                     "--scope", "GROUP", "-g", "Team A", "-g", "Team B"]) == 0
    out = capsys.readouterr().out
    tokens = TOKEN.findall(out)
    assert len(tokens) == 1  # printed once
    token = tokens[0]
    with session_scope() as s:
        row = s.query(ApiKey).one()
        assert row.key_hash == hashlib.sha256(token.encode()).hexdigest()
        assert token.startswith(row.key_prefix + "_") and len(row.key_prefix) == len("afk_") + 8
        assert row.permissions == ["audits.read", "fiches.read", "realtime.read"]
        assert (row.scope, row.groupes, row.created_by) == ("GROUP", ["Team A", "Team B"], "cli")
        key_id = row.id
    stored = row_text(key_id)
    assert token not in stored and token.split("_", 2)[2] not in stored  # only the hash and the prefix

    assert cli.main(["api-key", "list"]) == 0
    listed = capsys.readouterr().out
    assert "ops" in listed and "active" in listed and token not in listed and row.key_hash not in listed
    assert cli.main(["api-key", "list", "--json"]) == 0
    assert token not in capsys.readouterr().out

    assert cli.main(["api-key", "revoke", str(key_id)]) == 0
    with session_scope() as s:
        first = s.get(ApiKey, key_id).revoked_at
    assert first is not None
    assert cli.main(["api-key", "revoke", str(key_id)]) == 0  # idempotent: the first time stays
    with session_scope() as s:
        assert s.get(ApiKey, key_id).revoked_at == first
        assert api_keys.verify_key(s, token) is None
    assert cli.main(["api-key", "revoke", "999"]) == 1
    capsys.readouterr()
    assert cli.main(["api-key", "list"]) == 0
    assert "revoked" in capsys.readouterr().out
    assert cli.main(["api-key", "list", "--active"]) == 0
    assert "no API keys" in capsys.readouterr().out


def test_cli_rejects_bad_definitions_and_has_help(auth_on, capsys):
    assert cli.main(["api-key", "create", "--name", "x", "-p", "audits.delete", "--scope", "ALL"]) == 2
    assert "unknown permission" in capsys.readouterr().err
    assert cli.main(["api-key", "create", "--name", "x", "-p", "audits.read", "--scope", "GROUP"]) == 2
    assert cli.main(["api-key", "create", "--name", "x", "-p", "audits.read", "--scope", "SELF"]) == 2
    with session_scope() as s:
        assert s.query(ApiKey).count() == 0
    for argv in (["api-key", "--help"], ["api-key", "create", "--help"], ["api-key", "revoke", "--help"]):
        assert cli.main(argv) == 0
    assert "audits.rerun" in capsys.readouterr().out


def test_admin_endpoints_show_the_token_once_and_never_the_hash(client):
    r = client.post("/api/admin/api-keys", headers=bearer(MACHINE), json={
        "name": "frontend team A", "permissions": ["audits.read", "admin.read"], "scope": "GROUP",
        "groupes": ["A"], "expires_at": "2099-01-01T00:00:00Z"})
    assert r.status_code == 201, r.text
    data = r.json()["data"]
    token = data["token"]
    assert TOKEN.fullmatch(token) and token.startswith(data["keyPrefix"] + "_")
    assert data["createdBy"] == "machine" and data["expiresAt"] == "2099-01-01T00:00:00.000Z"
    assert "keyHash" not in data and "key_hash" not in data
    digest = hashlib.sha256(token.encode()).hexdigest()
    stored = row_text(int(data["id"]))
    assert token not in stored and digest in stored

    # the key works; the listing (by the new key itself: it holds admin.read) has no secret
    listing = client.get("/api/admin/api-keys", headers=bearer(token))
    assert listing.status_code == 200 and listing.json()["count"] == 1
    assert token not in listing.text and digest not in listing.text and "token" not in listing.json()["data"][0]
    # its scope and permissions apply: no admin.write
    assert client.delete(f"/api/admin/api-keys/{data['id']}", headers=bearer(token)).status_code == 403

    revoked = client.delete(f"/api/admin/api-keys/{data['id']}", headers={"X-API-Key": MACHINE})
    assert revoked.status_code == 200 and revoked.json()["data"]["status"] == "revoked"
    again = client.delete(f"/api/admin/api-keys/{data['id']}", headers={"X-API-Key": MACHINE})
    assert again.json()["data"]["revokedAt"] == revoked.json()["data"]["revokedAt"]  # idempotent
    assert client.delete("/api/admin/api-keys/4242", headers=bearer(MACHINE)).status_code == 404
    r = client.get("/api/admin/api-keys", headers=bearer(token))
    assert r.status_code == 401 and r.json() == UNAUTHORIZED


def test_admin_create_validates_and_never_escalates(client):
    def create(caller: str, body: dict) -> int:
        return client.post("/api/admin/api-keys", headers=bearer(caller), json=body).status_code

    assert create(MACHINE, {"name": "x", "permissions": ["audits.delete"], "scope": "ALL"}) == 400
    assert create(MACHINE, {"name": "x", "permissions": ["audits.read"], "scope": "GROUP"}) == 400
    assert create(MACHINE, {"name": "", "permissions": ["audits.read"], "scope": "ALL"}) == 400
    assert create(MACHINE, {"name": "a\x00b", "permissions": ["audits.read"], "scope": "ALL"}) == 400
    assert create(MACHINE, {"name": "x", "permissions": ["audits.read"], "scope": "GROUP", "groupes": ["\x00"]}) == 400
    assert create(MACHINE, {"name": "x", "permissions": ["audits.read"], "scope": "SELF", "crm_user_id": "1\x00"}) == 400
    assert create(MACHINE, {"name": "x", "permissions": "audits.read", "scope": "ALL"}) == 400
    assert create(MACHINE, {"name": "x", "permissions": ["audits.read"], "scope": "ALL",
                            "expires_at": "2001-01-01T00:00:00Z"}) == 400
    assert create(MACHINE, {"name": "x", "permissions": ["audits.read"], "scope": "ALL",
                            "expires_at": "tomorrow"}) == 400
    with session_scope() as s:
        _, admin = api_keys.create_key(s, name="team admin", permissions=["admin.write", "audits.read"],
                                       scope="GROUP", groupes=["A"])
    assert create(admin, {"name": "y", "permissions": ["*"], "scope": "GROUP", "groupes": ["A"]}) == 403
    assert create(admin, {"name": "y", "permissions": ["audits.write"], "scope": "GROUP", "groupes": ["A"]}) == 403
    assert create(admin, {"name": "y", "permissions": ["audits.read"], "scope": "ALL"}) == 403
    assert create(admin, {"name": "y", "permissions": ["audits.read"], "scope": "GROUP", "groupes": ["B"]}) == 403
    assert create(admin, {"name": "y", "permissions": ["audits.read"], "scope": "GROUP", "groupes": ["A"]}) == 201


def test_revoked_and_expired_keys_are_401(client):
    with session_scope() as s:
        _, live = api_keys.create_key(s, name="live", permissions=["audits.read"], scope="ALL")
        revoked_view, revoked = api_keys.create_key(s, name="revoked", permissions=["audits.read"], scope="ALL")
        expired_view, expired = api_keys.create_key(s, name="expired", permissions=["audits.read"], scope="ALL",
                                                    expires_at=now_utc() + dt.timedelta(days=1))
    assert client.get("/api/audits", headers=bearer(expired)).status_code == 200
    with session_scope() as s:
        api_keys.revoke_key(s, int(revoked_view["id"]))
        s.execute(update(ApiKey).where(ApiKey.id == int(expired_view["id"]))
                  .values(expires_at=now_utc() - dt.timedelta(seconds=1)))
    assert client.get("/api/audits", headers=bearer(live)).status_code == 200
    for token in (revoked, expired, live[:-1] + ("A" if live[-1] != "A" else "B")):
        for headers in (bearer(token), {"X-API-Key": token}):
            r = client.get("/api/audits", headers=headers)
            assert r.status_code == 401 and r.json() == UNAUTHORIZED
            assert r.headers["www-authenticate"].startswith("Bearer")
    listed = {k["name"]: k["status"] for k in client.get("/api/admin/api-keys", headers=bearer(MACHINE)).json()["data"]}
    assert listed == {"live": "active", "revoked": "revoked", "expired": "expired"}


def test_last_used_at_is_written_at_most_once_a_minute(client):
    with session_scope() as s:
        view, token = api_keys.create_key(s, name="k", permissions=["audits.read"], scope="ALL")
    key_id = int(view["id"])

    def last_used() -> dt.datetime | None:
        with session_scope() as s:
            return s.get(ApiKey, key_id).last_used_at

    assert last_used() is None
    assert client.get("/api/audits", headers=bearer(token)).status_code == 200
    first = last_used()
    assert first is not None and now_utc() - first < dt.timedelta(seconds=30)
    for _ in range(3):
        assert client.get("/api/audits", headers=bearer(token)).status_code == 200
    assert last_used() == first  # no write per request
    with session_scope() as s:
        s.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=first - dt.timedelta(minutes=2)))
    assert client.get("/api/audits", headers=bearer(token)).status_code == 200
    assert last_used() > first - dt.timedelta(minutes=2) and now_utc() - last_used() < dt.timedelta(seconds=30)
    listed = client.get("/api/admin/api-keys", headers=bearer(MACHINE)).json()["data"][0]
    assert listed["lastUsedAt"] is not None


def test_machine_tokens_have_every_permission(client, monkeypatch):
    for headers in (bearer(MACHINE), {"X-API-Key": MACHINE}, bearer("old-token-abc")):
        assert client.get("/api/audits", headers=headers).status_code == 200
        assert client.get("/api/admin/api-keys", headers=headers).status_code == 200
    assert client.get("/api/audits", headers=bearer(MACHINE + "x")).status_code == 401
    assert client.get("/api/audits", headers={"Authorization": f"Basic {MACHINE}"}).status_code == 401
    monkeypatch.setenv("API_AUTH_TOKEN", "single-legacy-token")
    get_settings.cache_clear()
    assert client.get("/api/audits", headers=bearer("single-legacy-token")).status_code == 200
    assert client.get("/api/audits", headers=bearer(MACHINE)).status_code == 200  # both variables are read


def test_no_secret_reaches_the_logs(client, caplog):
    with session_scope() as s:
        _, token = api_keys.create_key(s, name="k", permissions=["audits.read"], scope="ALL")
    bogus = "afk_0123abcd_" + "x" * 43
    with caplog.at_level(logging.DEBUG):
        client.get("/api/audits", headers=bearer(token))
        client.get("/api/audit-configs", headers=bearer(token))  # 403
        client.get("/api/audits", headers=bearer(bogus))  # 401
        client.get(f"/api/realtime/audits/1?access_token={bogus}")  # 401
        created = client.post("/api/admin/api-keys", headers=bearer(MACHINE),
                              json={"name": "n", "permissions": ["audits.read"], "scope": "ALL"}).json()
    text_logged = caplog.text
    for secret in (token, bogus, MACHINE, created["data"]["token"]):
        assert secret not in text_logged


def test_access_token_is_taken_only_on_sse_gets_and_removed_from_the_query():
    def scope(method: str, path: str, query: bytes) -> dict:
        return {"type": "http", "method": method, "path": path, "query_string": query, "headers": []}

    sse = scope("GET", "/api/realtime/stream", b"channels=global&access_token=abc&last_event_id=5")
    assert presented_token(sse) == "abc" and sse["query_string"] == b"channels=global&last_event_id=5"
    relay = scope("GET", "/api/runs/r-1/events", b"access_token=abc")
    assert presented_token(relay) == "abc" and relay["query_string"] == b""
    assert presented_token(scope("GET", "/api/audits", b"access_token=abc")) is None
    assert presented_token(scope("POST", "/api/realtime/stream", b"access_token=abc")) is None
    header_wins = scope("GET", "/api/realtime/global", b"access_token=abc")
    header_wins["headers"] = [(b"authorization", b"Bearer fromheader")]
    assert presented_token(header_wins) == "fromheader"


def test_auth_off_lets_everything_through_and_says_so(db, monkeypatch, caplog):
    monkeypatch.setenv("AUDITFLOW_AUTH", "off")
    get_settings.cache_clear()
    with caplog.at_level(logging.WARNING, logger="auditflow.api.auth"):
        app = create_app(dagster_url="http://127.0.0.1:9/graphql")
    assert "AUDITFLOW_AUTH=off" in caplog.text and "DISABLED" in caplog.text
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.get("/api/audits").status_code == 200
        assert c.get("/api/admin/api-keys").status_code == 200
        created = c.post("/api/admin/api-keys", json={"name": "n", "permissions": ["*"], "scope": "ALL"})
        assert created.status_code == 201 and created.json()["data"]["createdBy"] == "auth_off"
    monkeypatch.setenv("AUDITFLOW_AUTH", "on")
    get_settings.cache_clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="auditflow.api.auth"):
        app = create_app(dagster_url="http://127.0.0.1:9/graphql")
    assert "AUDITFLOW_AUTH" not in caplog.text
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.get("/api/audits").status_code == 401
        assert c.get("/health").status_code == 200
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.mark.parametrize("raw,enabled", [("off", False), ("OFF", False), ("0", False), ("false", False),
                                         ("on", True), ("", True), ("bogus", True)])
def test_auth_setting_fails_closed(monkeypatch, raw, enabled):
    monkeypatch.setenv("AUDITFLOW_AUTH", raw)
    get_settings.cache_clear()
    try:
        assert get_settings().auth_enabled is enabled
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
