"""Audit configuration routes (spec 03 §1.3/§1.4, spec 06 §4.4) and ``POST /api/audits/run-latest``
(spec 03 §7), over HTTP against the real PostgreSQL; launches go to the fake Dagster GraphQL of
``test_transcription_api``."""

from __future__ import annotations

import copy
import datetime as dt
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select, text
from starlette.testclient import TestClient

from api.app import create_app
from auditflow_dagster.db.clock import iso, now_utc
from auditflow_dagster.db.configs import automatic_config_ids
from auditflow_dagster.db.models import Audit, AuditConfig, AuditStep, FicheCache
from auditflow_dagster.db.session import session_scope
from tests.conftest import SHARED_FIXTURES
from tests.fakes.server import serve_app
from tests.integration.test_transcription_api import FakeDagster

BASE = "/api/audit-configs"


@pytest.fixture()
def fake_dagster():
    fake = FakeDagster()
    with serve_app(fake.app) as url:
        fake.url = f"{url}/graphql"
        yield fake


@pytest.fixture()
def client(db, fake_dagster):
    with TestClient(create_app(dagster_url=fake_dagster.url), raise_server_exceptions=False) as c:
        yield c


def _step(position: int, **kw: Any) -> dict[str, Any]:
    return {"name": f"Step {position}", "prompt": f"Check {position}", "controlPoints": [f"point {position}"],
            "severityLevel": "HIGH", "position": position, **kw}


def _create(client: TestClient, **kw: Any) -> str:
    body = {"name": "Checklist", "steps": [_step(1), _step(2)], **kw}
    r = client.post(BASE, json=body)
    assert r.status_code == 201, r.json()
    return r.json()["data"]["id"]


def _error(r, status: int = 400, code: str | None = "VALIDATION_ERROR") -> dict[str, Any]:
    body = r.json()
    assert r.status_code == status, body
    assert body["success"] is False and isinstance(body["error"], str)
    assert body.get("code") == code
    return body


def _positions(config_id: str) -> dict[str, int]:
    with session_scope() as s:
        rows = s.execute(select(AuditStep.id, AuditStep.position).where(AuditStep.audit_config_id == int(config_id)))
        return {str(i): p for i, p in rows}


def _steps(client: TestClient, config_id: str) -> list[dict[str, Any]]:
    return client.get(f"{BASE}/{config_id}").json()["data"]["steps"]


def _fixture(name: str) -> dict[str, Any]:
    return json.loads((SHARED_FIXTURES / name).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------- #
# Create, read, list
# --------------------------------------------------------------------------------------------- #


def test_create_then_read_detail_in_legacy_shape(client):
    r = client.post(BASE, json={"name": "Santé", "description": "d", "systemPrompt": "sp", "createdBy": "u1",
                                "steps": [_step(2, weight=8, isCritical=True, keywords=["ORIAS"]), _step(1)],
                                "unknownKey": "dropped"})
    assert r.status_code == 201
    data = r.json()["data"]
    assert r.json()["success"] is True and data["name"] == "Santé" and isinstance(data["id"], str)
    detail = client.get(f"{BASE}/{data['id']}").json()
    assert detail["success"] is True
    cfg = detail["data"]
    assert {k: cfg[k] for k in ("id", "name", "description", "systemPrompt", "isActive", "runAutomatically",
                                "createdBy", "stepsCount")} == {
        "id": data["id"], "name": "Santé", "description": "d", "systemPrompt": "sp", "isActive": True,
        "runAutomatically": False, "createdBy": "u1", "stepsCount": 2}
    assert cfg["createdAt"].endswith("Z") and cfg["updatedAt"].endswith("Z") and "stats" not in cfg
    first, second = cfg["steps"]
    assert [first["position"], second["position"]] == [1, 2]
    assert first == {**first, "name": "Step 1", "prompt": "Check 1", "controlPoints": ["point 1"], "keywords": [],
                     "severityLevel": "HIGH", "isCritical": False, "weight": 5, "chronologicalImportant": False,
                     "verifyProductInfo": False, "description": None, "auditConfigId": data["id"]}
    assert isinstance(first["id"], str) and first["id"].isdigit()
    assert (second["weight"], second["isCritical"], second["keywords"]) == (8, True, ["ORIAS"])
    stats = client.get(f"{BASE}/{data['id']}?include_stats=true").json()["data"]["stats"]
    assert stats == {"totalAudits": 0, "completedAudits": 0, "failedAudits": 0, "averageScore": None,
                     "averageDurationMs": None, "lastUsedAt": None, "complianceRate": None}
    assert _error(client.get(f"{BASE}/987654"), 404, "NOT_FOUND")["error"] == "Audit configuration not found"


def test_create_without_steps_and_nul_bytes_stripped(client):
    r = client.post(BASE, json={"name": "Empty\x00 one"})
    assert r.status_code == 201 and r.json()["data"]["name"] == "Empty one"
    assert client.get(f"{BASE}/{r.json()['data']['id']}").json()["data"]["steps"] == []


def test_list_newest_first_filters_steps_and_count(client):
    older = _create(client, name="older")
    inactive = _create(client, name="inactive", isActive=False)
    newer = _create(client, name="newer", steps=[_step(1)])
    r = client.get(BASE).json()
    assert r["success"] is True and r["count"] == 2
    assert [c["id"] for c in r["data"]] == [newer, older]
    assert [c["stepsCount"] for c in r["data"]] == [1, 2]
    assert all("steps" not in c and "stats" not in c for c in r["data"])
    everything = client.get(f"{BASE}?include_inactive=true&include_steps=true&include_stats=true").json()
    assert [c["id"] for c in everything["data"]] == [newer, inactive, older] and everything["count"] == 3
    by_id = {c["id"]: c for c in everything["data"]}
    assert [s["position"] for s in by_id[older]["steps"]] == [1, 2]
    assert by_id[inactive]["isActive"] is False and by_id[inactive]["stats"]["totalAudits"] == 0
    _error(client.get(f"{BASE}?include_steps=true&include_steps=false"))


BAD_CREATES = [
    ({}, ["name"]),
    ({"name": ""}, ["name"]),
    ({"name": "   "}, ["name"]),
    ({"name": 3}, ["name"]),
    ({"name": "x", "isActive": "yes"}, ["isActive"]),
    ({"name": "x", "runAutomatically": 1}, ["runAutomatically"]),
    ({"name": "x", "createdBy": 7}, ["createdBy"]),
    ({"name": "x", "steps": "nope"}, ["steps"]),
    ({"name": "x", "steps": ["nope"]}, ["steps", 0]),
    ({"name": "x", "steps": [{k: v for k, v in _step(1).items() if k != "prompt"}]}, ["steps", 0, "prompt"]),
    ({"name": "x", "steps": [_step(1, prompt=" ")]}, ["steps", 0, "prompt"]),
    ({"name": "x", "steps": [_step(1, name="")]}, ["steps", 0, "name"]),
    ({"name": "x", "steps": [_step(1, controlPoints=[])]}, ["steps", 0, "controlPoints"]),
    ({"name": "x", "steps": [_step(1, controlPoints=["ok", " "])]}, ["steps", 0, "controlPoints"]),
    ({"name": "x", "steps": [_step(1, severityLevel="low")]}, ["steps", 0, "severityLevel"]),
    ({"name": "x", "steps": [{k: v for k, v in _step(1).items() if k != "severityLevel"}]},
     ["steps", 0, "severityLevel"]),
    ({"name": "x", "steps": [_step(0)]}, ["steps", 0, "position"]),
    ({"name": "x", "steps": [{**_step(1), "position": "1"}]}, ["steps", 0, "position"]),
    ({"name": "x", "steps": [{**_step(1), "position": 1.5}]}, ["steps", 0, "position"]),
    ({"name": "x", "steps": [_step(1, weight=0)]}, ["steps", 0, "weight"]),
    ({"name": "x", "steps": [_step(1, weight=11)]}, ["steps", 0, "weight"]),
    ({"name": "x", "steps": [_step(1, weight=5.5)]}, ["steps", 0, "weight"]),
    ({"name": "x", "steps": [_step(1, isCritical="true")]}, ["steps", 0, "isCritical"]),
    ({"name": "x", "steps": [_step(1, keywords="a,b")]}, ["steps", 0, "keywords"]),
    ({"name": "x", "steps": [_step(1), _step(2), _step(1)]}, []),
]


@pytest.mark.parametrize("body, loc", BAD_CREATES)
def test_create_validation_errors_write_nothing(client, body, loc):
    err = _error(client.post(BASE, json=body))
    assert err["error"].startswith("Validation error: ")
    assert err["details"] and err["details"][0]["loc"] == loc and err["details"][0]["msg"]
    if not loc:
        assert "positions must be unique" in err["error"]
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(AuditConfig)) == 0
        assert s.scalar(select(func.count()).select_from(AuditStep)) == 0


def test_bad_bodies(client):
    r = client.post(BASE, content=b"{nope", headers={"content-type": "application/json"})
    assert _error(r, code="INVALID_JSON")["error"] == "Invalid JSON body"
    _error(client.post(BASE, json=["a"]))
    cid = _create(client)
    _error(client.put(f"{BASE}/{cid}", content=b"[", headers={"content-type": "application/json"}),
           code="INVALID_JSON")


# --------------------------------------------------------------------------------------------- #
# Update, delete
# --------------------------------------------------------------------------------------------- #


def test_update_subset_null_clears_and_automatic_flag(client):
    cid = _create(client, description="desc", systemPrompt="sys")
    r = client.put(f"{BASE}/{cid}", json={"name": "Renamed", "runAutomatically": True, "steps": "ignored"})
    assert r.status_code == 200 and r.json() == {"success": True,
                                                 "data": {"id": cid, "name": "Renamed", "stepsCount": 2}}
    cfg = client.get(f"{BASE}/{cid}").json()["data"]
    assert (cfg["name"], cfg["description"], cfg["systemPrompt"], cfg["runAutomatically"]) == (
        "Renamed", "desc", "sys", True)
    with session_scope() as s:
        assert automatic_config_ids(s) == [int(cid)]
    r = client.put(f"{BASE}/{cid}", json={"description": None, "systemPrompt": None, "isActive": False})
    assert r.status_code == 200
    cfg = client.get(f"{BASE}/{cid}").json()["data"]
    assert (cfg["description"], cfg["systemPrompt"], cfg["isActive"], cfg["name"]) == (None, None, False, "Renamed")
    with session_scope() as s:
        assert automatic_config_ids(s) == []
    assert client.put(f"{BASE}/{cid}", json={}).status_code == 200
    for bad, loc in (({"name": None}, "name"), ({"name": " "}, "name"), ({"isActive": None}, "isActive"),
                     ({"runAutomatically": "true"}, "runAutomatically"), ({"description": 4}, "description")):
        err = _error(client.put(f"{BASE}/{cid}", json=bad))
        assert err["details"][0]["loc"] == [loc] and err["error"].startswith(f"Validation error: {loc}: ")
    assert client.get(f"{BASE}/{cid}").json()["data"]["name"] == "Renamed"
    _error(client.put(f"{BASE}/424242", json={"name": "x"}), 404, "NOT_FOUND")


def _insert_audits(config_id: str, rows: list[dict[str, Any]]) -> None:
    with session_scope() as s:
        fiche = FicheCache(fiche_id=f"9{config_id}0001", expires_at=now_utc() + dt.timedelta(days=1))
        s.add(fiche)
        s.flush()
        for i, kw in enumerate(rows):
            s.add(Audit(fiche_cache_id=fiche.id, audit_config_id=int(config_id),
                        tracking_id=f"audit-{fiche.fiche_id}-{config_id}-{i}", **kw))


def test_delete_cascades_steps_and_is_409_while_audits_reference_it(client):
    cid = _create(client)
    used = _create(client, name="used")
    _insert_audits(used, [{"status": "completed"}])
    err = _error(client.delete(f"{BASE}/{used}"), 409, "CONFLICT")
    assert "used by 1 audit" in err["error"]
    assert client.get(f"{BASE}/{used}").json()["data"]["stepsCount"] == 2
    r = client.delete(f"{BASE}/{cid}")
    assert r.status_code == 200 and r.json() == {"success": True, "message": "Audit configuration deleted"}
    assert _positions(cid) == {}
    _error(client.get(f"{BASE}/{cid}"), 404, "NOT_FOUND")
    _error(client.delete(f"{BASE}/{cid}"), 404, "NOT_FOUND")


def test_schema_has_restrict_fk_and_unique_positions(db):
    with session_scope() as s:
        deltype = s.scalar(text(
            "SELECT confdeltype FROM pg_constraint WHERE contype = 'f' AND conrelid = 'audits'::regclass "
            "AND confrelid = 'audit_configs'::regclass"))
        assert deltype == "r"  # ON DELETE RESTRICT
        step_fk = s.scalar(text(
            "SELECT confdeltype FROM pg_constraint WHERE contype = 'f' AND conrelid = 'audit_steps'::regclass "
            "AND confrelid = 'audit_configs'::regclass"))
        assert step_fk == "c"  # ON DELETE CASCADE
        unique_cols = s.scalars(text(
            "SELECT (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM unnest(c.conkey) k "
            "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k) "
            "FROM pg_constraint c WHERE c.contype = 'u' AND c.conrelid = 'audit_steps'::regclass")).all()
        assert ["audit_config_id", "position"] in unique_cols


# --------------------------------------------------------------------------------------------- #
# Steps
# --------------------------------------------------------------------------------------------- #


def test_add_update_delete_step(client):
    cid = _create(client)
    r = client.post(f"{BASE}/{cid}/steps", json=_step(5, description="new", weight=3))
    assert r.status_code == 201
    step = r.json()["data"]
    assert step["name"] == "Step 5" and isinstance(step["id"], str) and step["position"] == 5 and step["weight"] == 3
    err = _error(client.post(f"{BASE}/{cid}/steps", json=_step(2)))
    assert "use position 6" in err["error"]
    _error(client.post(f"{BASE}/{cid}/steps", json=_step(0)))
    _error(client.post(f"{BASE}/{cid}/steps", json=_step(3, controlPoints=[])))
    _error(client.post(f"{BASE}/424242/steps", json=_step(1)), 404, "NOT_FOUND")

    r = client.put(f"{BASE}/steps/{step['id']}", json={"name": "Renamed", "description": None, "keywords": ["k"],
                                                       "isCritical": True})
    assert r.status_code == 200
    updated = r.json()["data"]
    assert (updated["name"], updated["description"], updated["keywords"], updated["isCritical"], updated["weight"],
            updated["position"]) == ("Renamed", None, ["k"], True, 3, 5)
    assert client.put(f"{BASE}/steps/{step['id']}", json={"position": 5}).status_code == 200
    err = _error(client.put(f"{BASE}/steps/{step['id']}", json={"position": 1}), 409, "CONFLICT")
    assert "already used" in err["error"]
    r = client.put(f"{BASE}/steps/{step['id']}", json={"position": 3})
    assert r.status_code == 200 and r.json()["data"]["position"] == 3
    for bad, loc in (({"weight": 0}, "weight"), ({"name": None}, "name"), ({"controlPoints": []}, "controlPoints"),
                     ({"severityLevel": "URGENT"}, "severityLevel"), ({"position": 0}, "position")):
        assert _error(client.put(f"{BASE}/steps/{step['id']}", json=bad))["details"][0]["loc"] == [loc]
    assert [s["position"] for s in _steps(client, cid)] == [1, 2, 3]
    _error(client.put(f"{BASE}/steps/424242", json={"name": "x"}), 404, "NOT_FOUND")

    r = client.delete(f"{BASE}/steps/{step['id']}")
    assert r.status_code == 200 and r.json() == {"success": True, "message": "Audit step deleted"}
    assert [s["position"] for s in _steps(client, cid)] == [1, 2]
    assert _error(client.delete(f"{BASE}/steps/{step['id']}"), 404, "NOT_FOUND")["error"] == "Audit step not found"


def test_reorder_renumbers_1_to_n_in_one_transaction(client):
    cid = _create(client, steps=[_step(1), _step(2), _step(4)])
    ids = [s["id"] for s in _steps(client, cid)]
    r = client.put(f"{BASE}/{cid}/steps/reorder", json={"stepIds": list(reversed(ids))})
    assert r.status_code == 200 and r.json()["success"] is True and r.json()["message"] == "Steps reordered"
    assert [s["id"] for s in _steps(client, cid)] == list(reversed(ids))
    assert _positions(cid) == {ids[2]: 1, ids[1]: 2, ids[0]: 3}
    # integer ids are accepted too
    assert client.put(f"{BASE}/{cid}/steps/reorder", json={"stepIds": [int(i) for i in ids]}).status_code == 200
    assert _positions(cid) == {ids[0]: 1, ids[1]: 2, ids[2]: 3}


def test_reorder_rejects_anything_but_an_exact_permutation(client):
    cid = _create(client, steps=[_step(1), _step(2), _step(3)])
    other = _create(client, name="other", steps=[_step(1)])
    ids = [s["id"] for s in _steps(client, cid)]
    before = _positions(cid)
    foreign = _steps(client, other)[0]["id"]
    for body in ({"stepIds": ids[:2]}, {"stepIds": [*ids, foreign]}, {"stepIds": [ids[0], ids[0], ids[1]]},
                 {"stepIds": [ids[0], ids[1], foreign]}, {"stepIds": "1,2,3"}, {}, {"stepIds": [ids[0], ids[1], "x"]},
                 {"stepIds": [ids[0], ids[1], True]}, {"stepIds": [ids[0], ids[1], -1]}):
        _error(client.put(f"{BASE}/{cid}/steps/reorder", json=body))
        assert _positions(cid) == before, body
    _error(client.put(f"{BASE}/424242/steps/reorder", json={"stepIds": []}), 404, "NOT_FOUND")


def test_a_reorder_failing_midway_leaves_positions_unchanged(client):
    cid = _create(client, steps=[_step(1), _step(2), _step(3)])
    ids = [s["id"] for s in _steps(client, cid)]
    before = _positions(cid)
    # The database refuses to give the first step its final position 3, after the other steps got theirs
    # (row order) or at least after every position was moved out of the way.
    with session_scope() as s:
        s.execute(text(
            "CREATE FUNCTION test_refuse_reorder() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.id = {int(ids[0])} AND NEW.position = 3 THEN "
            "RAISE EXCEPTION 'refused by test'; END IF; RETURN NEW; END $$"))
        s.execute(text("CREATE TRIGGER test_refuse_reorder BEFORE UPDATE ON audit_steps FOR EACH ROW "
                       "EXECUTE FUNCTION test_refuse_reorder()"))
    try:
        r = client.put(f"{BASE}/{cid}/steps/reorder", json={"stepIds": [ids[1], ids[2], ids[0]]})
        assert _error(r, 500, None)["error"] == "Internal server error"
        assert _positions(cid) == before
    finally:
        with session_scope() as s:
            s.execute(text("DROP TRIGGER IF EXISTS test_refuse_reorder ON audit_steps"))
            s.execute(text("DROP FUNCTION IF EXISTS test_refuse_reorder()"))
    assert client.put(f"{BASE}/{cid}/steps/reorder", json={"stepIds": [ids[1], ids[2], ids[0]]}).status_code == 200
    assert _positions(cid) == {ids[1]: 1, ids[2]: 2, ids[0]: 3}


def test_concurrent_adds_at_one_position_give_one_step_and_400s(client):
    cid = _create(client)
    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(lambda _: client.post(f"{BASE}/{cid}/steps", json=_step(3)).status_code, range(8)))
    assert codes == [201] + [400] * 7
    assert sorted(_positions(cid).values()) == [1, 2, 3]


# --------------------------------------------------------------------------------------------- #
# Validate, stats
# --------------------------------------------------------------------------------------------- #


def test_validate(client):
    cid = _create(client)
    r = client.get(f"{BASE}/{cid}/validate")
    assert r.status_code == 200 and r.json() == {"success": True, "data": {"valid": True, "errors": []}}
    gap = _create(client, name="gap", steps=[_step(1), _step(3)], isActive=False)
    errors = client.get(f"{BASE}/{gap}/validate").json()["data"]["errors"]
    assert errors == ["Audit configuration is inactive",
                      "Step positions must be contiguous from 1 to 2 (found 1, 3)"]
    empty = _create(client, name="empty", steps=[])
    assert client.get(f"{BASE}/{empty}/validate").json()["data"] == {
        "valid": False, "errors": ["Audit configuration has no steps"]}
    assert client.get(f"{BASE}/424242/validate").json()["data"] == {
        "valid": False, "errors": ["Audit configuration not found"]}


def test_stats_numbers(client):
    cid = _create(client)
    idle = _create(client, name="idle")
    t0 = dt.datetime(2026, 3, 1, 9, 0, 0)
    _insert_audits(cid, [
        {"status": "completed", "score_percentage": 80, "is_compliant": True, "duration_ms": 1000, "created_at": t0},
        {"status": "completed", "score_percentage": 65.5, "is_compliant": False, "duration_ms": 2001,
         "created_at": t0 + dt.timedelta(hours=1)},
        {"status": "completed", "score_percentage": 90, "is_compliant": True, "duration_ms": 3000,
         "created_at": t0 + dt.timedelta(hours=2)},
        {"status": "failed", "created_at": t0 + dt.timedelta(hours=3)},
        {"status": "running", "created_at": t0 + dt.timedelta(hours=4, milliseconds=250)},
        {"status": "completed", "score_percentage": 0, "is_compliant": False, "duration_ms": 9,
         "deleted_at": t0, "created_at": t0 + dt.timedelta(days=9)},  # soft-deleted: left out
    ])
    expected = {"totalAudits": 5, "completedAudits": 3, "failedAudits": 1, "averageScore": 78.5,
                "averageDurationMs": 2000, "lastUsedAt": iso(t0 + dt.timedelta(hours=4, milliseconds=250)),
                "complianceRate": 66.67}
    r = client.get(f"{BASE}/{cid}/stats")
    assert r.status_code == 200 and r.json() == {"success": True, "data": expected}
    assert expected["lastUsedAt"] == "2026-03-01T13:00:00.250Z"
    assert client.get(f"{BASE}/{cid}?include_stats=true").json()["data"]["stats"] == expected
    listed = {c["id"]: c["stats"] for c in client.get(f"{BASE}?include_stats=true").json()["data"]}
    assert listed[cid] == expected and listed[idle]["totalAudits"] == 0 and listed[idle]["averageScore"] is None
    _error(client.get(f"{BASE}/424242/stats"), 404, "NOT_FOUND")


# --------------------------------------------------------------------------------------------- #
# Legacy JSON import / export
# --------------------------------------------------------------------------------------------- #


@pytest.mark.skipif(not SHARED_FIXTURES.is_dir(), reason="../shared/fixtures not beside the checkout")
@pytest.mark.parametrize("fname, n_steps", [("audit_config_18_points.json", 18),
                                            ("audit_config_with_verification_example.json", 4)])
def test_fixture_files_import_unchanged_and_round_trip(client, fname, n_steps):
    data = _fixture(fname)
    original = copy.deepcopy(data)
    r = client.post(f"{BASE}/import", json=data)
    assert r.status_code == 201, r.json()
    created = r.json()["data"]
    assert created["name"] == data["name"] and created["stepsCount"] == n_steps
    detail = client.get(f"{BASE}/{created['id']}").json()["data"]
    assert [s["position"] for s in detail["steps"]] == sorted(s["position"] for s in data["auditSteps"])
    assert detail["systemPrompt"] == data["systemPrompt"]

    r = client.get(f"{BASE}/{created['id']}/export")
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    exported = r.json()
    for key, value in original.items():
        if key != "auditSteps":
            assert exported[key] == value, key
    src_steps = sorted(original["auditSteps"], key=lambda s: s["position"])
    for got, src in zip(exported["auditSteps"], src_steps, strict=True):
        # step-level notes (verificationNote) are informational and not stored (spec 03 §1.2)
        assert got == {k: v for k, v in src.items() if k != "verificationNote"}

    again = client.post(f"{BASE}/import", json=exported)
    assert again.status_code == 201
    assert client.get(f"{BASE}/{again.json()['data']['id']}/export").json() == exported


def test_import_export_errors_and_reply_keys(client):
    err = _error(client.post(f"{BASE}/import", json={"description": "no name", "auditSteps": []}))
    assert err["details"][0]["loc"] == ["name"]
    err = _error(client.post(f"{BASE}/import", json={"name": "x", "auditSteps": [_step(1, weight=12)]}))
    assert err["details"][0]["loc"] == ["steps", 0, "weight"]
    _error(client.get(f"{BASE}/424242/export"), 404, "NOT_FOUND")
    # a detail reply imported back: its ids and timestamps are not kept as informational keys
    cid = _create(client, description="d")
    detail = client.get(f"{BASE}/{cid}").json()["data"]
    r = client.post(f"{BASE}/import", json={**detail, "version": "2.0"})
    assert r.status_code == 201
    exported = client.get(f"{BASE}/{r.json()['data']['id']}/export").json()
    assert set(exported) == {"version", "name", "description", "systemPrompt", "isActive", "runAutomatically",
                             "auditSteps"}
    assert [s["name"] for s in exported["auditSteps"]] == ["Step 1", "Step 2"]


# --------------------------------------------------------------------------------------------- #
# Ids
# --------------------------------------------------------------------------------------------- #


@pytest.mark.parametrize("method, path", [
    ("GET", "/abc"), ("PUT", "/abc"), ("DELETE", "/abc"), ("GET", "/0"), ("GET", "/1.5"),
    ("GET", "/99999999999999999999"), ("POST", "/abc/steps"), ("PUT", "/steps/abc"), ("DELETE", "/steps/-1"),
    ("PUT", "/abc/steps/reorder"), ("GET", "/abc/validate"), ("GET", "/abc/stats"), ("GET", "/abc/export"),
])
def test_non_numeric_ids_are_400(client, method, path):
    r = client.request(method, BASE + path, json={})
    assert _error(r)["error"].startswith("Invalid ")


# --------------------------------------------------------------------------------------------- #
# Runs: /api/audits/run-latest, use_rlm on /api/audits/run
# --------------------------------------------------------------------------------------------- #


def _launched(fake: FakeDagster) -> dict[str, Any]:
    return fake.launches[-1]["run_config"]["ops"]["audit_step_results"]["config"]


def test_run_latest(client, fake_dagster):
    err = _error(client.post("/api/audits/run-latest", json={"fiche_id": "900000001"}), 404, "NOT_FOUND")
    assert err["error"] == "No active audit configuration found"
    _create(client, name="old active")
    newest_active = _create(client, name="newest active")
    _create(client, name="newer but inactive", isActive=False)
    assert fake_dagster.launches == []
    for body in ({}, {"fiche_id": ""}, {"fiche_id": "12a"}, {"fiche_id": None}, {"user_id": "u"}):
        r = client.post("/api/audits/run-latest", json=body)
        assert r.status_code == 400 and r.json() == {"success": False, "error": "Missing required parameters",
                                                     "message": "fiche_id is required"}
    _error(client.post("/api/audits/run-latest", json={"fiche_id": "1", "user_id": {"a": 1}}))
    assert fake_dagster.launches == []

    r = client.post("/api/audits/run-latest", json={"fiche_id": 900000001, "user_id": "u7", "useRlm": True})
    assert r.status_code == 200, r.json()
    body = r.json()
    [launch] = fake_dagster.launches
    assert body["success"] is True and body["message"] == "Audit queued for processing"
    assert body["audit_config_id"] == int(newest_active) and body["audit_config_name"] == "newest active"
    assert body["fiche_id"] == "900000001" and body["event_id"] == launch["run_id"]
    assert body["audit_id"].startswith(f"audit-900000001-{newest_active}-")
    assert body["metadata"]["status"] == "queued"
    assert launch["job"] == "audit_fiche" and launch["tags"]["dagster/partition"] == "900000001"
    assert launch["tags"]["auditflow/tracking_id"] == body["audit_id"]
    assert _launched(fake_dagster) == {
        "audit_config_ids": [int(newest_active)], "audit_tracking_ids": {"900000001": body["audit_id"]},
        "use_rlm": True, "trigger_source": "api", "trigger_user_id": "u7", "skip_if_audited": False}

    fake_dagster.fail_launch = True
    _error(client.post("/api/audits/run-latest", json={"fiche_id": "900000001"}), 503, "SERVICE_UNAVAILABLE")


@pytest.mark.parametrize("flags, expected", [
    ({}, False), ({"use_rlm": True}, True), ({"useRlm": True}, True), ({"use_rlm": False, "useRlm": True}, False),
    ({"use_rlm": "true"}, False), ({"useRlm": 1}, False), ({"use_rlm": None, "useRlm": True}, False),
])
@pytest.mark.parametrize("path", ["/api/audits/run", "/api/audits", "/api/audits/run-latest"])
def test_use_rlm_reaches_the_run_config(client, fake_dagster, path, flags, expected):
    cid = _create(client)
    r = client.post(path, json={"fiche_id": "900000002", "audit_config_id": cid, **flags})
    assert r.status_code == 200, r.json()
    assert _launched(fake_dagster)["use_rlm"] is expected


def test_unknown_config_is_404_before_any_launch(client, fake_dagster):
    cid = _create(client)
    for path in ("/api/audits/run", "/api/audits"):
        r = client.post(path, json={"fiche_id": "900000003", "audit_config_id": int(cid) + 100})
        assert _error(r, 404, "NOT_FOUND")["error"] == f"Audit config {int(cid) + 100} not found"
    assert fake_dagster.launches == [] and fake_dagster.partitions == []
    # inactive configs stay runnable by id
    client.put(f"{BASE}/{cid}", json={"isActive": False})
    assert client.post("/api/audits/run", json={"fiche_id": "900000003", "audit_config_id": cid}).status_code == 200
