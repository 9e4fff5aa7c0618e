"""``/api/automation`` (spec 05 §1, §3.9, §6): schedule CRUD with validation, PATCH semantics,
masking, SSRF rejection, run/detail/logs reads (run rows inserted directly)."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from api.app import create_app
from auditflow_dagster.db.automation import MASK
from auditflow_dagster.db.configs import ensure_bundled_config
from auditflow_dagster.db.models import (
    AutomationSchedule,
)
from auditflow_dagster.db.secret_box import unseal
from auditflow_dagster.db.session import session_scope

BASE = "/api/automation"


@pytest.fixture()
def client(db):
    with TestClient(create_app(dagster_url="http://127.0.0.1:9/graphql"), raise_server_exceptions=False) as c:
        yield c


def _body(**over):
    body = {"name": "Nightly", "scheduleType": "DAILY", "timeOfDay": "09:05",
            "ficheSelection": {"mode": "date_range", "dateRange": "yesterday"}}
    body.update(over)
    return body


def _create(client, **over) -> dict:
    r = client.post(f"{BASE}/schedules", json=_body(**over))
    assert r.status_code == 201, r.json()
    return r.json()["data"]


def _invalid(r, error="Invalid automation schedule data"):
    assert r.status_code == 400, r.text
    j = r.json()
    assert j["success"] is False and j["code"] == "VALIDATION_ERROR" and j["error"] == error
    assert j["details"] and all({"loc", "msg"} <= set(d) for d in j["details"])
    return j["details"]


def test_create_defaults_and_shape(client):
    s = _create(client)
    assert s["id"] == "1" and s["name"] == "Nightly" and s["scheduleType"] == "DAILY"
    assert s["cronExpression"] == "5 9 * * *" and s["timezone"] == "UTC"
    assert s["ficheSelection"] == {"mode": "date_range", "dateRange": "yesterday", "onlyWithRecordings": False,
                                   "onlyUnaudited": False, "useRlm": False}
    assert s["isActive"] is True and s["runTranscription"] and s["skipIfTranscribed"]
    assert s["transcriptionPriority"] == "normal" and s["runAudits"] and s["useAutomaticAudits"]
    assert s["specificAuditConfigs"] == [] and s["notifyEmails"] == [] and s["webhookUrl"] is None
    assert s["continueOnError"] is True and s["retryFailed"] is False and s["maxRetries"] == 0
    assert s["notifyOnComplete"] and s["notifyOnError"]
    assert s["externalApiKey"] is None and s["hasExternalApiKey"] is False
    assert s["lastRunAt"] is None and s["totalRuns"] == 0 and s["createdAt"].endswith("Z")


def test_create_every_option_and_derived_crons(client, db):
    with session_scope() as s:
        cfg = ensure_bundled_config(s)
    full = _create(
        client, scheduleType="WEEKLY", timeOfDay="23:59", dayOfWeek=0, timezone="Europe/Paris",
        cronExpression="* * * * *", description="d", createdBy="me", isActive=False,
        ficheSelection={"mode": "date_range", "dateRange": "custom", "customStartDate": "01/02/2026",
                        "customEndDate": "28/02/2026", "groupes": [" G1 ", "", "G2"], "onlyWithRecordings": True,
                        "onlyUnaudited": True, "useRlm": True, "maxFiches": 10, "maxRecordingsPerFiche": 3},
        runTranscription=False, skipIfTranscribed=False, transcriptionPriority="high", runAudits=True,
        useAutomaticAudits=False, specificAuditConfigs=[cfg, str(cfg), " ", "abc"], continueOnError=False,
        retryFailed=True, maxRetries=5, notifyOnComplete=False, notifyOnError=False,
        webhookUrl="https://hooks.example.com/x", notifyEmails=["a@b.co", " ", 3, " c@d.fr "],
        externalApiKey="sk-secret-123",
    )
    assert full["cronExpression"] == "59 23 * * 0"  # client cron ignored for non-CRON types
    assert full["timezone"] == "Europe/Paris" and full["isActive"] is False
    assert full["ficheSelection"] == {
        "mode": "date_range", "dateRange": "custom", "customStartDate": "01/02/2026", "customEndDate": "28/02/2026",
        "groupes": ["G1", "G2"], "maxFiches": 10, "maxRecordingsPerFiche": 3, "onlyWithRecordings": True,
        "onlyUnaudited": True, "useRlm": True}
    assert full["specificAuditConfigs"] == [str(cfg)] and full["notifyEmails"] == ["a@b.co", "c@d.fr"]
    assert full["transcriptionPriority"] == "high" and full["maxRetries"] == 5 and full["retryFailed"] is True
    assert full["webhookUrl"] == "https://hooks.example.com/x"
    assert full["externalApiKey"] == MASK and full["hasExternalApiKey"] is True
    with session_scope() as s:
        stored = s.scalar(select(AutomationSchedule.external_api_key).where(AutomationSchedule.id == int(full["id"])))
    assert stored != "sk-secret-123" and "sk-secret" not in stored and unseal(stored) == "sk-secret-123"

    assert _create(client, scheduleType="MONTHLY", timeOfDay="00:00", dayOfMonth=31)["cronExpression"] == "0 0 31 * *"
    assert _create(client, scheduleType="MANUAL", timeOfDay=None)["cronExpression"] is None
    cron = _create(client, scheduleType="CRON", cronExpression="*/15 8-18 * * 1-5", timeOfDay=None)
    assert cron["cronExpression"] == "*/15 8-18 * * 1-5"
    manual = _create(client, ficheSelection={"mode": "manual", "ficheIds": ["1, 2", "3"]})
    assert manual["ficheSelection"]["ficheIds"] == ["1, 2", "3"]
    assert _create(client, ficheSelection={"mode": "filter", "dateRange": "last_week"})["ficheSelection"]["mode"] == "filter"


def test_list_and_get(client):
    a = _create(client, name="A")
    b = _create(client, name="B", isActive=False)
    r = client.get(f"{BASE}/schedules").json()
    assert r["success"] and r["count"] == 1 and [s["id"] for s in r["data"]] == [a["id"]]
    r = client.get(f"{BASE}/schedules", params={"include_inactive": "true"}).json()
    assert r["count"] == 2 and [s["id"] for s in r["data"]] == [b["id"], a["id"]]  # created_at desc
    one = client.get(f"{BASE}/schedules/{a['id']}").json()
    assert one["success"] and one["data"]["name"] == "A" and one["data"]["runs"] == []
    missing = client.get(f"{BASE}/schedules/999")
    assert missing.status_code == 404 and missing.json() == {"success": False, "error": "Schedule not found",
                                                             "code": "NOT_FOUND"}
    bad = client.get(f"{BASE}/schedules/abc")
    assert bad.status_code == 400 and bad.json()["error"] == "Invalid id" and bad.json()["code"] == "VALIDATION_ERROR"
