"""Authorization matrix (issue 8): every route of the Starlette app, with auth on, against real
PostgreSQL.

For each route (the table :data:`CASES` must cover ``app.routes`` exactly, so a new route without
an entry fails here): no credential → 401; a key holding every permission but one the route needs
→ 403; a key holding exactly the route's permissions → neither. Then, with a GROUP key of groupe A
(permission ``*``) against groupe B's fiche or audit: item endpoints answer 404, byte for byte the
reply of an item that does not exist; list endpoints leave B out; batch launches are refused whole
(403, spec 06 §4.5); realtime channels of B are refused with 403 (see
:func:`test_sse_channel_of_another_group_is_refused`).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from api.app import create_app
from api.dagster_client import DagsterUnavailable
from auditflow_dagster.db import api_keys, batches
from auditflow_dagster.db.configs import ensure_bundled_config
from auditflow_dagster.db.events import emit_best_effort
from auditflow_dagster.db.models import (
    Audit,
    AuditStep,
    FicheCache,
    FicheCacheInformation,
    Recording,
)
from auditflow_dagster.db.session import session_scope
from tests.fakes.server import serve_app

DAY = "2026-03-10"
ALL_PERMISSIONS = [p for p in api_keys.PERMISSIONS if p != "*"]
PUBLIC = {"/health", "/health/ready", "/api/openapi.json", "/api-docs.json"}
UNAUTHORIZED = {"success": False, "error": "Authentication required", "code": "AUTHENTICATION_ERROR"}
FORBIDDEN = {"success": False, "error": "Missing permission", "code": "AUTHORIZATION_ERROR"}


# --------------------------------------------------------------------------------------------- #
# World: groupe A and groupe B, each with a cached fiche, an audit, a batch and a Dagster run
# --------------------------------------------------------------------------------------------- #


class StubDagster:
    """Just enough of :class:`api.dagster_client.DagsterClient`: known runs carry their fiche
    partition tag and end at once; every launch is "unavailable" (503, never 401/403)."""

    def __init__(self, runs: dict[str, str]) -> None:
        self.runs = runs

    async def query(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        run_id = (variables or {}).get("runId")
        if "runOrError" in query:
            if run_id in self.runs:
                return {"runOrError": {"__typename": "Run", "status": "SUCCESS",
                                       "tags": [{"key": "dagster/partition", "value": self.runs[run_id]}]}}
            return {"runOrError": {"__typename": "RunNotFoundError", "message": "not found"}}
        raise DagsterUnavailable("stub")

    async def run_status(self, run_id: str) -> str | None:
        return "SUCCESS" if run_id in self.runs else None

    async def logs_for_run(self, run_id: str, after: str | None, limit: int = 200) -> dict[str, Any]:
        return {"__typename": "EventConnection", "cursor": "1", "hasMore": False, "events": [
            {"__typename": "RunSuccessEvent", "eventType": "RUN_SUCCESS", "message": "done", "timestamp": "0",
             "level": "INFO", "stepKey": None}]}

    async def ping(self) -> bool:
        return False

    async def aclose(self) -> None:
        return None

    def __getattr__(self, name: str) -> Callable[..., Any]:
        async def unavailable(*args: Any, **kwargs: Any) -> Any:
            raise DagsterUnavailable("stub")

        return unavailable


@dataclass
class World:
    cfg: int
    step_id: int
    a: dict[str, str]  # groupe A: fiche, audit, batch, run, tracking
    b: dict[str, str]  # groupe B
    missing: dict[str, str]
    _keys: dict[Any, str] = field(default_factory=dict)

    def key(self, permissions: list[str] | tuple[str, ...], scope: str = "ALL", groupes: tuple[str, ...] = (),
            crm_user_id: str | None = None) -> str:
        ident = (tuple(sorted(permissions)), scope, groupes, crm_user_id)
        if ident not in self._keys:
            with session_scope() as s:
                _, token = api_keys.create_key(s, name=f"k{len(self._keys)}", permissions=list(permissions),
                                               scope=scope, groupes=list(groupes), crm_user_id=crm_user_id)
            self._keys[ident] = token
        return self._keys[ident]


def _fiche(s, fiche_id: str, groupe: str, user: str) -> FicheCache:
    import datetime as dt

    row = FicheCache(fiche_id=fiche_id, groupe=groupe, sales_date=DAY, prospect_nom=f"Nom{fiche_id}",
                     expires_at=dt.datetime(2100, 1, 1), details_success=True)
    s.add(row)
    s.flush()
    s.add(FicheCacheInformation(fiche_cache_id=row.id, groupe=groupe, attribution_user_id=user))
    return row


@pytest.fixture()
def world(auth_on) -> World:
    with session_scope() as s:
        cfg = ensure_bundled_config(s)
        step_id = s.query(AuditStep.id).filter(AuditStep.audit_config_id == cfg).first()[0]
        ids: dict[str, dict[str, str]] = {}
        for name, fiche_id, groupe, user in (("a", "1001", "A", "u1"), ("b", "2002", "B", "u2")):
            row = _fiche(s, fiche_id, groupe, user)
            s.add(Recording(fiche_cache_id=row.id, call_id="call-1", recording_url="https://x.invalid/1.mp3"))
            tracking = f"audit-{fiche_id}-{cfg}-1700000000000"
            audit = Audit(fiche_cache_id=row.id, audit_config_id=cfg, tracking_id=tracking, status="completed")
            s.add(audit)
            s.flush()
            batch, _ = batches.create_batch(s, fiche_ids=[fiche_id], audit_config_id=cfg, use_rlm=False, user_id=None)
            ids[name] = {"fiche": fiche_id, "audit": str(audit.id), "batch": batch.id, "run": f"run-{name}-0001",
                         "tracking": tracking}
    emit_best_effort("transcription.started", {"fiche_id": "1001", "total_recordings": 1})
    emit_best_effort("transcription.started", {"fiche_id": "2002", "total_recordings": 1})
    missing = {"fiche": "3003", "audit": "999999", "batch": "batch-1-1", "run": "run-x-0001",
               "tracking": f"audit-3003-{cfg}-1700000000000"}
    return World(cfg=cfg, step_id=step_id, a=ids["a"], b=ids["b"], missing=missing)


@pytest.fixture()
def client(world):
    with TestClient(create_app(dagster_url="http://127.0.0.1:9/graphql"), raise_server_exceptions=False) as c:
        c.app.state.dagster = StubDagster({world.a["run"]: world.a["fiche"], world.b["run"]: world.b["fiche"]})
        yield c


@pytest.fixture()
def served(world):
    """The same app on a real socket, for requests that open an endless SSE stream."""
    app = create_app(dagster_url="http://127.0.0.1:9/graphql")
    app.state.dagster = StubDagster({})
    with serve_app(app) as url:
        yield url


# --------------------------------------------------------------------------------------------- #
# The table: one sample request per route and method
# --------------------------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Case:
    method: str
    route: str  # the route's path template, as registered
    perms: tuple[str, ...]  # every permission it needs (empty: authentication only)
    url: str  # sample, formatted with the target (fiche, audit, batch, run, tracking) and cfg, step, day
    body: Any = None
    kind: str = "none"  # item | list | batch | channel | global | none (not fiche-linked)
    sse: bool = False  # opens an endless stream when allowed

    @property
    def id(self) -> str:
        return f"{self.method} {self.route}"

    def request(self, w: World, target: dict[str, str]) -> tuple[str, str, Any]:
        fmt = {**target, "cfg": w.cfg, "step": w.step_id, "day": DAY}
        body = self.body
        if body is not None:
            body = json.loads(json.dumps(body).replace("{fiche}", target["fiche"]).replace("{cfg}", str(w.cfg)))
        return self.method, self.url.format(**fmt), body


_CP = "/api/audits/{audit}/steps/1/control-points/1"
CASES = [
    # audits: reads and maintenance
    Case("GET", "/api/audits", ("audits.read",), "/api/audits", kind="list"),
    Case("GET", "/api/audits/grouped-by-fiches", ("audits.read",), "/api/audits/grouped-by-fiches", kind="list"),
    Case("GET", "/api/audits/grouped", ("audits.read",), "/api/audits/grouped?group_by=fiche", kind="list"),
    Case("GET", "/api/audits/by-fiche/{fiche_id}", ("audits.read",), "/api/audits/by-fiche/{fiche}", kind="list"),
    Case("GET", "/api/audits/{audit_id}/logs", ("audits.read",), "/api/audits/{audit}/logs", kind="item"),
    Case("GET", "/api/audits/{audit_id}", ("audits.read",), "/api/audits/{audit}", kind="item"),
    Case("PATCH", "/api/audits/{audit_id}", ("audits.write",), "/api/audits/{audit}", {"notes": "n"}, kind="item"),
    Case("DELETE", "/api/audits/{audit_id}", ("audits.write",), "/api/audits/{audit}", kind="item"),
    Case("GET", "/api/audits/control-points/statuses", (), "/api/audits/control-points/statuses"),
    # audits: runs, batches, reruns, reviews
    Case("POST", "/api/audits/run", ("audits.run",), "/api/audits/run",
         {"fiche_id": "{fiche}", "audit_config_id": "{cfg}"}, kind="item"),
    Case("POST", "/api/audits/run-latest", ("audits.run",), "/api/audits/run-latest", {"fiche_id": "{fiche}"},
         kind="item"),
    Case("POST", "/api/audits", ("audits.run",), "/api/audits", {"fiche_id": "{fiche}", "audit_config_id": "{cfg}"},
         kind="item"),
    Case("POST", "/api/audits/batch", ("audits.run",), "/api/audits/batch", {"fiche_ids": ["{fiche}"]}, kind="batch"),
    Case("GET", "/api/audits/batch/{batch_id}", ("audits.read",), "/api/audits/batch/{batch}", kind="item"),
    Case("POST", "/api/audits/{audit_id}/steps/{step_position}/rerun", ("audits.rerun",),
         "/api/audits/{audit}/steps/1/rerun", {}, kind="item"),
    Case("POST", "/api/audits/{audit_id}/steps/{step_position}/control-points/{control_point_index}/rerun",
         ("audits.rerun",), _CP + "/rerun", {}, kind="item"),
    Case("GET", "/api/audits/{audit_id}/steps/{step_position}/control-points/{control_point_index}",
         ("audits.read",), _CP, kind="item"),
    Case("PATCH", "/api/audits/{audit_id}/steps/{step_position}/control-points/{control_point_index}/review",
         ("audits.write",), _CP + "/review", {"statut": "PRESENT"}, kind="item"),
    Case("PATCH", "/api/audits/{audit_id}/steps/{step_position}/review", ("audits.write",),
         "/api/audits/{audit}/steps/1/review", {"conforme": "CONFORME"}, kind="item"),
    # chat
    Case("GET", "/api/audits/{audit_id}/chat/history", ("chat.read", "audits.read"),
         "/api/audits/{audit}/chat/history", kind="item"),
    Case("POST", "/api/audits/{audit_id}/chat", ("chat.write", "audits.read"), "/api/audits/{audit}/chat",
         {"message": "Bonjour ?"}, kind="item"),
    Case("GET", "/api/fiches/{fiche_id}/chat/history", ("chat.read", "fiches.read"),
         "/api/fiches/{fiche}/chat/history", kind="item"),
    Case("POST", "/api/fiches/{fiche_id}/chat", ("chat.write", "fiches.read"), "/api/fiches/{fiche}/chat",
         {"message": "Bonjour ?"}, kind="item"),
    # fiches and progressive fetch
    Case("GET", "/api/fiches/status/by-date", ("fiches.read",), "/api/fiches/status/by-date?date={day}",
         kind="list"),
    Case("GET", "/api/fiches/status/by-date-range", ("fiches.read",),
         "/api/fiches/status/by-date-range?startDate={day}&endDate={day}", kind="list"),
    Case("GET", "/api/fiches/webhooks/fiches", ("fiches.read",), "/api/fiches/webhooks/fiches?jobId=nojob"),
    Case("GET", "/api/fiches/jobs", ("fiches.read",), "/api/fiches/jobs"),
    Case("GET", "/api/fiches/jobs/{job_id}", ("fiches.read",), "/api/fiches/jobs/nojob"),
    Case("GET", "/api/fiches/{fiche_id}", ("fiches.read",), "/api/fiches/{fiche}", kind="item"),
    # recordings and transcriptions
    Case("GET", "/api/recordings/{fiche_id}", ("recordings.read",), "/api/recordings/{fiche}", kind="item"),
    Case("POST", "/api/transcriptions/batch", ("transcriptions.write",), "/api/transcriptions/batch",
         {"fiche_ids": ["{fiche}"]}, kind="batch"),
    Case("POST", "/api/transcriptions/{fiche_id}", ("transcriptions.write",), "/api/transcriptions/{fiche}",
         kind="item"),
    Case("GET", "/api/transcriptions/{fiche_id}/status", ("transcriptions.read",),
         "/api/transcriptions/{fiche}/status", kind="item"),
    Case("GET", "/api/transcriptions/{fiche_id}/recordings/{call_id}", ("transcriptions.read",),
         "/api/transcriptions/{fiche}/recordings/call-1", kind="item"),
    Case("GET", "/api/transcriptions/{fiche_id}/logs", ("transcriptions.read",), "/api/transcriptions/{fiche}/logs",
         kind="list"),
    Case("GET", "/api/transcriptions/{fiche_id}/timeline", ("transcriptions.read",),
         "/api/transcriptions/{fiche}/timeline", kind="item"),
    # audit configs (global data: permission only)
    Case("GET", "/api/audit-configs", ("audit-configs.read",), "/api/audit-configs"),
    Case("POST", "/api/audit-configs", ("audit-configs.write",), "/api/audit-configs", {"name": "cfg2"}),
    Case("POST", "/api/audit-configs/import", ("audit-configs.write",), "/api/audit-configs/import", {}),
    Case("PUT", "/api/audit-configs/steps/{step_id}", ("audit-configs.write",), "/api/audit-configs/steps/{step}",
         {"name": "renamed"}),
    Case("DELETE", "/api/audit-configs/steps/{step_id}", ("audit-configs.write",), "/api/audit-configs/steps/{step}"),
    Case("PUT", "/api/audit-configs/{config_id}/steps/reorder", ("audit-configs.write",),
         "/api/audit-configs/{cfg}/steps/reorder", {"stepIds": []}),
    Case("POST", "/api/audit-configs/{config_id}/steps", ("audit-configs.write",), "/api/audit-configs/{cfg}/steps",
         {"name": "s"}),
    Case("GET", "/api/audit-configs/{config_id}/validate", ("audit-configs.read",),
         "/api/audit-configs/{cfg}/validate"),
    Case("GET", "/api/audit-configs/{config_id}/stats", ("audit-configs.read",), "/api/audit-configs/{cfg}/stats"),
    Case("GET", "/api/audit-configs/{id}/export", ("audit-configs.read",), "/api/audit-configs/{cfg}/export"),
    Case("GET", "/api/audit-configs/{id}", ("audit-configs.read",), "/api/audit-configs/{cfg}"),
    Case("PUT", "/api/audit-configs/{id}", ("audit-configs.write",), "/api/audit-configs/{cfg}", {"name": "x"}),
    Case("DELETE", "/api/audit-configs/{id}", ("audit-configs.write",), "/api/audit-configs/{cfg}"),
    # automation (admin-ish: permission only)
    Case("POST", "/api/automation/trigger", ("automation.write",), "/api/automation/trigger", {"scheduleId": "77"}),
    Case("GET", "/api/automation/diagnostic", ("automation.read",), "/api/automation/diagnostic"),
    Case("GET", "/api/automation/schedules", ("automation.read",), "/api/automation/schedules"),
    Case("POST", "/api/automation/schedules", ("automation.write",), "/api/automation/schedules", {"name": "s"}),
    Case("GET", "/api/automation/schedules/{id}/runs", ("automation.read",), "/api/automation/schedules/77/runs"),
    Case("GET", "/api/automation/schedules/{id}", ("automation.read",), "/api/automation/schedules/77"),
    Case("PATCH", "/api/automation/schedules/{id}", ("automation.write",), "/api/automation/schedules/77",
         {"name": "t"}),
    Case("DELETE", "/api/automation/schedules/{id}", ("automation.write",), "/api/automation/schedules/77"),
    Case("GET", "/api/automation/runs", ("automation.read",), "/api/automation/runs"),
    Case("GET", "/api/automation/runs/{id}/logs", ("automation.read",), "/api/automation/runs/77/logs"),
    Case("GET", "/api/automation/runs/{id}", ("automation.read",), "/api/automation/runs/77"),
    # Dagster run relay and realtime SSE
    Case("GET", "/api/runs/{run_id}/events", ("audits.read",), "/api/runs/{run}/events", kind="item"),
    Case("GET", "/api/realtime/stream", ("realtime.read", "audits.read"),
         "/api/realtime/stream?channels=audit-{audit},job-x", kind="channel", sse=True),
    Case("GET", "/api/realtime/audits/{key}", ("realtime.read", "audits.read"), "/api/realtime/audits/{audit}",
         kind="channel", sse=True),
    Case("GET", "/api/realtime/fiches/{key}", ("realtime.read", "fiches.read"), "/api/realtime/fiches/{fiche}",
         kind="channel", sse=True),
    Case("GET", "/api/realtime/jobs/{key}", ("realtime.read",), "/api/realtime/jobs/batch-1-1", sse=True),
    Case("GET", "/api/realtime/global", ("realtime.read",), "/api/realtime/global", kind="global", sse=True),
    # compliance reports (aggregate every groupe: scope ALL, a GROUP/SELF key gets 403 — tests/integration/test_daily_report.py)
    Case("GET", "/api/reports/daily/{date}", ("audits.read",), "/api/reports/daily/{day}", kind="global"),
    Case("GET", "/api/reports/calibration", ("audits.read",), "/api/reports/calibration?config_id={cfg}",
         kind="global"),
    # the audit export is row level: narrowed to the caller's scope (tests/integration/test_export_api.py)
    Case("GET", "/api/reports/audits/export", ("audits.read",),
         "/api/reports/audits/export?sales_date_from={day}&sales_date_to={day}", kind="list"),
    # API keys
    Case("POST", "/api/admin/api-keys", ("admin.write",), "/api/admin/api-keys",
         {"name": "minted", "permissions": ["admin.write"], "scope": "ALL"}),
    Case("GET", "/api/admin/api-keys", ("admin.read",), "/api/admin/api-keys"),
    Case("DELETE", "/api/admin/api-keys/{id}", ("admin.write",), "/api/admin/api-keys/424242"),
]
BY_ID = {c.id: c for c in CASES}


def _send(client: TestClient, case: Case, w: World, target: dict[str, str], token: str | None,
          header: str = "bearer") -> httpx.Response:
    method, url, body = case.request(w, target)
    headers = {}
    if token is not None:
        headers = {"Authorization": f"Bearer {token}"} if header == "bearer" else {"X-API-Key": token}
    return client.request(method, url, json=body, headers=headers)


def _stream_status(base: str, case: Case, w: World, target: dict[str, str], token: str) -> int:
    """The status of an SSE request on the real socket (the stream is closed at once)."""
    _, url, _ = case.request(w, target)
    with httpx.stream("GET", base + url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as resp:
        return resp.status_code


def _same_reply(r1: httpx.Response, id1: str, r2: httpx.Response, id2: str) -> bool:
    """Equal status and body once each request's own id is masked (``Fiche 2002 not found``)."""
    def norm(r: httpx.Response, ident: str) -> str:
        return re.sub(rf"\b{re.escape(ident)}\b", "<id>", r.text)

    return r1.status_code == r2.status_code and norm(r1, id1) == norm(r2, id2)


# --------------------------------------------------------------------------------------------- #
# Tests
# --------------------------------------------------------------------------------------------- #


def test_the_table_covers_every_route_of_the_app(client):
    declared = set(BY_ID)
    registered = set()
    for route in client.app.routes:
        if not isinstance(route, Route) or route.path in PUBLIC:
            continue
        for method in (route.methods or {"GET"}) - {"HEAD"}:
            registered.add(f"{method} {route.path}")
    assert registered == declared, (sorted(registered - declared), sorted(declared - registered))


def test_public_routes_need_no_credential(client):
    assert client.get("/health").status_code == 200
    assert client.get("/api/openapi.json").status_code == 200
    assert client.get("/api-docs.json").status_code == 200
    assert client.get("/health/ready").status_code == 503  # Dagster stub: degraded, but not 401


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_route_needs_a_credential_and_its_permission(request, client, world, case):
    own = world.a
    # no credential, an unknown key, a malformed token → 401 in the envelope
    for token in (None, "afk_0123abcd_" + secrets.token_urlsafe(32), "not-a-key"):
        r = _send(client, case, world, own, token)
        assert r.status_code == 401 and r.json() == UNAUTHORIZED, (token, r.status_code, r.text)
    # a key holding everything but one needed permission → 403
    for needed in case.perms:
        key = world.key([p for p in ALL_PERMISSIONS if p != needed])
        for header in ("bearer", "x-api-key"):
            r = _send(client, case, world, own, key, header)
            assert r.status_code == 403 and r.json() == FORBIDDEN, (needed, r.status_code, r.text)
    # a key holding exactly the declared permissions → past authorization
    key = world.key(case.perms or ["realtime.read"])
    if case.sse:  # an allowed stream never ends: ask a real socket for its status only
        status = _stream_status(request.getfixturevalue("served"), case, world, own, key)
    else:
        status = _send(client, case, world, own, key).status_code
    assert status not in (401, 403), status


ITEM_CASES = [c for c in CASES if c.kind == "item"]


@pytest.mark.parametrize("case", ITEM_CASES, ids=[c.id for c in ITEM_CASES])
def test_item_of_another_group_is_404_like_a_missing_one(client, world, case):
    group_a = world.key(["*"], scope="GROUP", groupes=("A",))
    other = _send(client, case, world, world.b, group_a)
    missing = _send(client, case, world, world.missing, group_a)
    assert other.status_code == 404, other.text
    ident = "audit" if "{audit" in case.url else "run" if "{run" in case.url else "batch" if "{batch" in case.url \
        else "fiche"
    assert _same_reply(other, world.b[ident], missing, world.missing[ident]), (other.text, missing.text)
    # the same key on its own group's item is past the scope check: another reply than "missing"
    own = _send(client, case, world, world.a, group_a)
    assert own.status_code not in (401, 403), own.text
    assert not _same_reply(own, world.a[ident], missing, world.missing[ident]), own.text


def test_out_of_scope_writes_change_nothing(client, world):
    group_a = world.key(["*"], scope="GROUP", groupes=("A",))
    headers = {"Authorization": f"Bearer {group_a}"}
    assert client.patch(f"/api/audits/{world.b['audit']}", json={"notes": "x"}, headers=headers).status_code == 404
    assert client.delete(f"/api/audits/{world.b['audit']}", headers=headers).status_code == 404
    with session_scope() as s:
        audit = s.get(Audit, int(world.b["audit"]))
        assert audit.notes is None and audit.deleted_at is None
    # and the in-scope audit is writable with the same key
    r = client.patch(f"/api/audits/{world.a['audit']}", json={"notes": "ok"}, headers=headers)
    assert r.status_code == 200 and r.json()["data"]["notes"] == "ok"


def test_batches_with_a_fiche_out_of_scope_are_refused_whole(client, world):
    group_a = world.key(["*"], scope="GROUP", groupes=("A",))
    headers = {"Authorization": f"Bearer {group_a}"}
    for path in ("/api/audits/batch", "/api/transcriptions/batch"):
        for ids in ([world.b["fiche"]], [world.a["fiche"], world.b["fiche"]], [world.missing["fiche"]]):
            r = client.post(path, json={"fiche_ids": ids}, headers=headers)
            assert r.status_code == 403 and r.json() == {"success": False, "error": "Forbidden", "code": "AUTHORIZATION_ERROR"}
        r = client.post(path, json={"fiche_ids": [world.a["fiche"]]}, headers=headers)
        assert r.status_code == 503, r.text  # in scope: past authorization (the Dagster stub is down)


def _fiche_ids_in(body: Any) -> set[str]:
    text = json.dumps(body)
    return {f for f in ("1001", "2002") if f'"{f}"' in text}


def test_list_endpoints_leave_other_groups_out(client, world):
    group_a = {"Authorization": f"Bearer {world.key(['*'], scope='GROUP', groupes=('A',))}"}
    everyone = {"Authorization": f"Bearer {world.key(['*'])}"}
    lists = ["/api/audits", "/api/audits/grouped-by-fiches", "/api/audits/grouped?group_by=fiche",
             f"/api/fiches/status/by-date?date={DAY}",
             f"/api/fiches/status/by-date-range?startDate={DAY}&endDate={DAY}"]
    for url in lists:
        assert _fiche_ids_in(client.get(url, headers=everyone).json()) == {"1001", "2002"}, url
        r = client.get(url, headers=group_a)
        assert r.status_code == 200 and _fiche_ids_in(r.json()) == {"1001"}, (url, r.text)
    body = client.get("/api/audits", headers=group_a).json()
    assert body["pagination"]["total"] == 1 and [a["id"] for a in body["data"]] == [world.a["audit"]]
    grouped = client.get("/api/audits/grouped?group_by=groupe", headers=group_a).json()
    assert [g["key"] for g in grouped["data"]] == ["A"]
    # a fiche-keyed list of another group answers like a fiche without data
    for url, own_count in (("/api/audits/by-fiche/{}", 1), ("/api/transcriptions/{}/logs", 1)):
        mine = client.get(url.format(world.a["fiche"]), headers=group_a).json()
        theirs = client.get(url.format(world.b["fiche"]), headers=group_a).json()
        unknown = client.get(url.format(world.missing["fiche"]), headers=group_a).json()
        assert mine["count"] == own_count and theirs == unknown and theirs["count"] == 0, (url, theirs)
    # progressive-fetch polling: partialData of the caller's scope only
    prev = "2026-03-09"
    job = client.get(f"/api/fiches/status/by-date-range?startDate={prev}&endDate={DAY}", headers=everyone).json()
    job_id = job["meta"]["backgroundJobId"]
    assert job_id
    polled = client.get(f"/api/fiches/webhooks/fiches?jobId={job_id}", headers=group_a).json()
    assert [p["ficheId"] for p in polled["data"]["partialData"]] == ["1001"]
    assert polled["data"]["totalFiches"] == 1
    polled = client.get(f"/api/fiches/webhooks/fiches?jobId={job_id}", headers=everyone).json()
    assert sorted(p["ficheId"] for p in polled["data"]["partialData"]) == ["1001", "2002"]


def test_self_scope_sees_only_its_attribution(client, world):
    mine = {"Authorization": f"Bearer {world.key(['*'], scope='SELF', crm_user_id='u2')}"}
    body = client.get("/api/audits", headers=mine).json()
    assert [a["id"] for a in body["data"]] == [world.b["audit"]]
    assert client.get(f"/api/audits/{world.b['audit']}", headers=mine).status_code == 200
    assert client.get(f"/api/audits/{world.a['audit']}", headers=mine).json() == {"success": False,
                                                                                 "error": "Audit not found"}
    assert _fiche_ids_in(client.get(f"/api/fiches/status/by-date?date={DAY}", headers=mine).json()) == {"2002"}


def test_sse_channel_of_another_group_is_refused(client, served, world):
    """Realtime channels answer **403** ``{error:"Forbidden", code:"AUTHORIZATION_ERROR"}`` (not 404) for an
    audit or fiche outside the key's scope: spec 06 §2.3/§2.4 refuse a channel with a JSON 401/403
    before any stream opens, and ``/api/realtime/stream`` subscribes to several channels at once, so
    there is no single item to call "not found". The 403 is the same for a channel whose audit or
    fiche does not exist, so it does not reveal that another group's audit exists. The global
    channel needs scope ALL; job channels have no scope (spec 06 §2.3)."""
    group_a = world.key(["*"], scope="GROUP", groupes=("A",))
    headers = {"Authorization": f"Bearer {group_a}"}
    refused = {"success": False, "error": "Forbidden", "code": "AUTHORIZATION_ERROR"}
    for target in (world.b, world.missing):
        for url in (f"/api/realtime/audits/{target['audit']}", f"/api/realtime/audits/{target['tracking']}",
                    f"/api/realtime/fiches/{target['fiche']}",
                    f"/api/realtime/stream?channels=audit-{world.a['audit']},audit-{target['audit']}",
                    f"/api/realtime/stream?channels=private-fiche-{target['fiche']}"):
            r = client.get(url, headers=headers)
            assert r.status_code == 403 and r.json() == refused, (url, r.text)
    r = client.get("/api/realtime/global", headers=headers)
    assert r.status_code == 403 and r.json() == refused
    # the same key streams its own group's channels, job channels, and ?access_token= works for EventSource
    for url in (f"/api/realtime/audits/{world.a['audit']}", f"/api/realtime/audits/{world.a['tracking']}",
                f"/api/realtime/fiches/{world.a['fiche']}", "/api/realtime/jobs/batch-1-1",
                f"/api/realtime/stream?channels=audit-{world.a['audit']},fiche-{world.a['fiche']},job-x"):
        with httpx.stream("GET", served + url, headers=headers, timeout=10) as resp:
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream"), url
    with httpx.stream("GET", f"{served}/api/realtime/audits/{world.a['audit']}?access_token={group_a}",
                      timeout=10) as resp:
        assert resp.status_code == 200
    # ?access_token= is for GET on SSE routes only
    assert client.get(f"/api/audits?access_token={group_a}").status_code == 401


def test_run_relay_is_scoped_by_the_runs_fiche(client, world):
    group_a = {"Authorization": f"Bearer {world.key(['*'], scope='GROUP', groupes=('A',))}"}
    r = client.get(f"/api/runs/{world.a['run']}/events", headers=group_a)
    assert r.status_code == 200 and "RUN_SUCCESS" in r.text
    other = client.get(f"/api/runs/{world.b['run']}/events", headers=group_a)
    missing = client.get(f"/api/runs/{world.missing['run']}/events", headers=group_a)
    assert other.status_code == 404 and _same_reply(other, world.b["run"], missing, world.missing["run"])
    everyone = {"Authorization": f"Bearer {world.key(['audits.read'])}"}
    assert client.get(f"/api/runs/{world.b['run']}/events", headers=everyone).status_code == 200
