"""API behaviour that needs no running Dagster: validation, envelopes, reads, OpenAPI coverage.
(The launch path against a real Dagster is covered end to end in tests/e2e.)"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from dagster import materialize
from starlette.routing import Route
from starlette.testclient import TestClient

from api.app import create_app
from auditflow_dagster.assets.audits import audit_step_results, audits
from auditflow_dagster.assets.fiches import fiche_details
from auditflow_dagster.assets.sales import sales_list
from auditflow_dagster.assets.transcripts import transcripts
from auditflow_dagster.db.configs import ensure_bundled_config
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.resources.crm import CrmResource
from auditflow_dagster.resources.database import DatabaseResource
from auditflow_dagster.resources.llm import LlmResource
from auditflow_dagster.resources.stt import SttResource
from auditflow_dagster.sample import generator

DAY = "2026-03-13"
UNREACHABLE_DAGSTER = "http://127.0.0.1:9/graphql"


@pytest.fixture()
def client(db):
    with TestClient(create_app(dagster_url=UNREACHABLE_DAGSTER), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture()
def config_id(db) -> int:
    with session_scope() as s:
        return ensure_bundled_config(s)


def test_health_and_headers(client):
    r = client.get("/health", headers={"X-Request-Id": "req-123"})
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["service"] == "ai-audit-system"
    assert r.headers["x-request-id"] == "req-123" and r.headers["x-backend-instance"]
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"database": True, "dagster": False}


@pytest.mark.parametrize(
    "body",
    [{}, {"fiche_id": "123"}, {"audit_config_id": 1}, {"fiche_id": "12a", "audit_config_id": 1},
     {"fiche_id": "1", "audit_config_id": 0}, {"fiche_id": "1", "audit_config_id": "x"},
     {"fiche_id": True, "audit_config_id": 1}, {"fiche_id": "1", "audit_config_id": -3}],
)
def test_run_audit_missing_parameters(client, body):
    r = client.post("/api/audits/run", json=body)
    assert r.status_code == 400
    assert r.json() == {"success": False, "error": "Missing required parameters",
                        "message": "Both audit_config_id (or audit_id) and fiche_id are required"}


def test_run_audit_bad_json_unknown_config_and_dagster_down(client, config_id):
    r = client.post("/api/audits/run", content=b"{not json", headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["code"]) == (400, "INVALID_JSON")
    r = client.post("/api/audits/run", json={"fiche_id": "900000001", "audit_config_id": config_id + 999})
    assert r.status_code == 404 and r.json()["success"] is False and r.json()["code"] == "NOT_FOUND"
    r = client.post("/api/audits/run", json={"fiche_id": " 900000001 ", "audit_id": str(config_id)})
    assert r.status_code == 503 and r.json()["code"] == "SERVICE_UNAVAILABLE"
    r = client.post("/api/audits", json={"fiche_id": "900000001", "audit_config_id": config_id,
                                          "automation_schedule_id": "abc"})
    assert r.status_code == 400 and r.json()["code"] == "VALIDATION_ERROR"


def test_body_too_large_is_413(client):
    r = client.post("/api/audits/run", content=b"{" + b" " * 2_000_000 + b"}", headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == "PAYLOAD_TOO_LARGE"


def test_unknown_route_and_bad_ids(client):
    r = client.get("/api/nope")
    assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"
    assert client.get("/api/audits/abc").status_code == 400
    assert client.get("/api/audits/0").status_code == 400
    r = client.get("/api/audits/424242")
    assert r.status_code == 404 and r.json() == {"success": False, "error": "Audit not found"}
    assert client.get("/api/runs/not%20a%20run/events").status_code == 400


@pytest.mark.parametrize("query", ["", "?date=2026-3-1", "?date=2026-02-31", "?date=2026-01-01&date=2026-01-02"])
def test_status_by_date_validation(client, query):
    r = client.get(f"/api/fiches/status/by-date{query}")
    assert r.status_code == 400 and r.json()["code"] == "VALIDATION_ERROR"


def test_reads_after_an_audit(client, config_id, dagster_instance):
    instance = dagster_instance
    resources = {"crm": CrmResource(mode="sample"), "stt": SttResource(mode="sample"),
                 "llm": LlmResource(mode="offline"), "db": DatabaseResource()}
    assert materialize([sales_list], partition_key=DAY, instance=instance, resources=resources).success
    fiche_id = next(f for f in instance.get_dynamic_partitions("fiches") if generator.expected_audit(f)["auditable"])
    assert materialize([fiche_details, transcripts, audit_step_results, audits], partition_key=fiche_id,
                       instance=instance, resources=resources).success
    day = client.get(f"/api/fiches/status/by-date?date={DAY}").json()
    assert day["success"] and day["data"]["total"] == len(generator.fiches_for_day(dt.date.fromisoformat(DAY)))
    item = next(i for i in day["data"]["fiches"] if i["ficheId"] == fiche_id)
    assert item["transcription"]["isComplete"] is True
    assert item["audit"]["completed"] == 1
    audit_id = item["audit"]["latestAudit"]["id"]
    detail = client.get(f"/api/audits/{audit_id}").json()["data"]
    expected = generator.expected_audit(fiche_id)
    assert detail["status"] == "completed" and detail["niveau"] == expected["compliance"].niveau
    assert [s["stepPosition"] for s in detail["stepResults"]] == [s["position"] for s in expected["steps"]]
    assert [s["score"] for s in detail["stepResults"]] == [s["score"] for s in expected["steps"]]
    steps_view = detail["resultData"]["audit"]["results"]["steps"]
    assert [s["step_metadata"]["position"] for s in steps_view] == [s["position"] for s in expected["steps"]]
    fiche = client.get(f"/api/fiches/{fiche_id}").json()
    assert fiche["information"]["fiche_id"] == fiche_id and fiche["success"] is True
    assert all(r["transcription"] is not None for r in fiche["recordings"])


def test_openapi_lists_every_route(client):
    doc = client.get("/api/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    app = client.app
    for route in app.routes:
        if isinstance(route, Route) and route.path != "/api-docs.json":
            assert route.path in doc["paths"], route.path
            for method in route.methods - {"HEAD"}:
                assert method.lower() in doc["paths"][route.path], (route.path, method)
    json.dumps(doc)
