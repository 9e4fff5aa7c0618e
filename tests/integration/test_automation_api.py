"""``/api/automation`` (spec 05 §1, §3.9, §6): schedule CRUD with validation, PATCH semantics,
masking, SSRF rejection, run/detail/logs reads (run rows inserted directly)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from api.app import create_app
from auditflow_dagster.db.automation import MASK
from auditflow_dagster.db.configs import ensure_bundled_config
from auditflow_dagster.db.models import (
    AutomationLog,
    AutomationRun,
    AutomationRunFicheResult,
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


@pytest.mark.parametrize("over", [
    {"name": ""}, {"name": "   "}, {"name": "x" * 256}, {"name": 5}, {"name": None},
    {"scheduleType": "HOURLY"}, {"scheduleType": None},
    {"timeOfDay": "24:00"}, {"timeOfDay": "9:05"}, {"timeOfDay": 905},
    {"timeOfDay": None},  # DAILY requires it
    {"scheduleType": "WEEKLY"}, {"scheduleType": "WEEKLY", "dayOfWeek": 7}, {"scheduleType": "WEEKLY", "dayOfWeek": "1"},
    {"scheduleType": "MONTHLY"}, {"scheduleType": "MONTHLY", "dayOfMonth": 0}, {"scheduleType": "MONTHLY", "dayOfMonth": 32},
    {"scheduleType": "CRON"}, {"scheduleType": "CRON", "cronExpression": ""},
    {"scheduleType": "CRON", "cronExpression": "60 * * * *"}, {"scheduleType": "CRON", "cronExpression": "* * * *"},
    {"scheduleType": "CRON", "cronExpression": "0 0 * * MON"}, {"scheduleType": "CRON", "cronExpression": "*/0 * * * *"},
    {"scheduleType": "CRON", "cronExpression": "0 0 ? * *"}, {"scheduleType": "CRON", "cronExpression": "0 0 0 * *"},
    {"timezone": "Mars/Olympus"}, {"timezone": ""}, {"timezone": None}, {"timezone": 3},
    {"ficheSelection": None}, {"ficheSelection": "x"}, {"ficheSelection": {}},
    {"ficheSelection": {"mode": "weird", "dateRange": "yesterday"}},
    {"ficheSelection": {"mode": "date_range"}}, {"ficheSelection": {"mode": "filter"}},
    {"ficheSelection": {"mode": "date_range", "dateRange": "last_year"}},
    {"ficheSelection": {"mode": "date_range", "dateRange": "custom"}},
    {"ficheSelection": {"mode": "date_range", "dateRange": "custom", "customStartDate": "2026-01-01"}},
    {"ficheSelection": {"mode": "date_range", "dateRange": "custom", "customStartDate": "31/02/2026"}},
    {"ficheSelection": {"mode": "date_range", "dateRange": "custom", "customStartDate": "10/02/2026",
                        "customEndDate": "09/02/2026"}},
    {"ficheSelection": {"mode": "manual"}}, {"ficheSelection": {"mode": "manual", "ficheIds": [" ", ","]}},
    {"ficheSelection": {"mode": "manual", "ficheIds": "1,2"}},
    {"ficheSelection": {"mode": "manual", "ficheIds": [{"id": 1}]}},
    {"ficheSelection": {"mode": "date_range", "dateRange": "yesterday", "groupes": "G1"}},
    {"ficheSelection": {"mode": "date_range", "dateRange": "yesterday", "onlyWithRecordings": "yes"}},
    {"ficheSelection": {"mode": "date_range", "dateRange": "yesterday", "onlyUnaudited": 1}},
    {"ficheSelection": {"mode": "date_range", "dateRange": "yesterday", "useRlm": None}},
    {"ficheSelection": {"mode": "date_range", "dateRange": "yesterday", "maxFiches": 0}},
    {"ficheSelection": {"mode": "date_range", "dateRange": "yesterday", "maxFiches": None}},
    {"ficheSelection": {"mode": "date_range", "dateRange": "yesterday", "maxFiches": 2.5}},
    {"ficheSelection": {"mode": "date_range", "dateRange": "yesterday", "maxRecordingsPerFiche": -1}},
    {"ficheSelection": {"mode": "date_range", "dateRange": "yesterday", "maxRecordingsPerFiche": "3"}},
    {"runTranscription": "true"}, {"skipIfTranscribed": None}, {"transcriptionPriority": "urgent"},
    {"runAudits": 1}, {"useAutomaticAudits": "no"},
    {"useAutomaticAudits": False}, {"useAutomaticAudits": False, "specificAuditConfigs": ["", "x"]},
    {"specificAuditConfigs": [1.5]}, {"specificAuditConfigs": [True]}, {"specificAuditConfigs": ["999"]},
    {"continueOnError": "x"}, {"retryFailed": 0}, {"maxRetries": 6}, {"maxRetries": -1}, {"maxRetries": None},
    {"notifyOnComplete": None}, {"notifyOnError": "true"},
    {"notifyEmails": ["not-an-email"]}, {"webhookUrl": 12}, {"webhookUrl": "not a url"},
    {"webhookUrl": "ftp://example.com/x"}, {"webhookUrl": "https://user:pw@example.com/x"},
    {"webhookUrl": "http://10.0.0.5/hook"}, {"webhookUrl": "http://169.254.169.254/latest"},
    {"webhookUrl": "http://[fe80::1]/x"}, {"webhookUrl": "http://192.168.1.1/x"},
    {"externalApiKey": 5}, {"description": 3}, {"createdBy": []}, {"isActive": "true"},
])
def test_create_validation_errors(client, over):
    _invalid(client.post(f"{BASE}/schedules", json=_body(**over)))
    assert client.get(f"{BASE}/schedules", params={"include_inactive": "true"}).json()["count"] == 0


def test_create_type_rule_messages_and_body_errors(client):
    msgs = {
        "DAILY": "DAILY schedule requires timeOfDay", "WEEKLY": "WEEKLY schedule requires timeOfDay and dayOfWeek",
        "MONTHLY": "MONTHLY schedule requires timeOfDay and dayOfMonth", "CRON": "CRON schedule requires cronExpression",
    }
    for stype, msg in msgs.items():
        details = _invalid(client.post(f"{BASE}/schedules", json=_body(scheduleType=stype, timeOfDay=None)))
        assert msg in [d["msg"] for d in details]
    r = client.post(f"{BASE}/schedules", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "INVALID_JSON"
    r = client.post(f"{BASE}/schedules", json=[1])
    assert r.status_code == 400 and r.json()["code"] == "VALIDATION_ERROR"
    # several issues are all reported
    details = _invalid(client.post(f"{BASE}/schedules", json=_body(name="", maxRetries=9, transcriptionPriority="x")))
    assert {d["loc"][0] for d in details} >= {"name", "maxRetries", "transcriptionPriority"}


def test_create_lenient_inputs(client):
    s = _create(client, webhookUrl="", notifyEmails="x", specificAuditConfigs="1", description=None,
                name="n\x00ame", ficheSelection={"mode": "date_range", "dateRange": "yesterday", "groupes": None})
    assert s["webhookUrl"] is None and s["notifyEmails"] == [] and s["specificAuditConfigs"] == []
    assert s["name"] == "name" and s["description"] is None
    # dev (non-production) allows loopback/local names, like spec 05 §5.3
    assert _create(client, webhookUrl="http://localhost:8080/hook")["webhookUrl"] == "http://localhost:8080/hook"
    assert _create(client, scheduleType="CRON", cronExpression="0-59/5 0 1,15 1-12 7")["cronExpression"]


def test_ssrf_in_production(client, monkeypatch):
    from auditflow_dagster.settings import get_settings

    monkeypatch.setenv("NODE_ENV", "production")
    get_settings.cache_clear()
    try:
        assert get_settings().is_production
        details = _invalid(client.post(f"{BASE}/schedules", json=_body(webhookUrl="http://localhost/x")))
        assert details[0]["loc"] == ["webhookUrl"]
    finally:
        monkeypatch.delenv("NODE_ENV")
        get_settings.cache_clear()


def test_patch_effective_semantics(client, db):
    with session_scope() as s:
        cfg = ensure_bundled_config(s)
    s0 = _create(client, scheduleType="WEEKLY", dayOfWeek=3, description="keep me",
                 ficheSelection={"mode": "date_range", "dateRange": "yesterday", "onlyUnaudited": True, "maxFiches": 5},
                 specificAuditConfigs=[cfg], webhookUrl="https://hooks.example.com/a", notifyEmails=["a@b.co"],
                 externalApiKey="key-1")
    url = f"{BASE}/schedules/{s0['id']}"

    def patch(body, status=200):
        r = client.patch(url, json=body)
        assert r.status_code == status, r.text
        return r.json()

    # untouched fields stay; cron re-derived from the effective timing fields
    d = patch({"timeOfDay": "18:30"})["data"]
    assert d["cronExpression"] == "30 18 * * 3" and d["description"] == "keep me" and d["dayOfWeek"] == 3
    assert d["specificAuditConfigs"] == [str(cfg)] and d["externalApiKey"] == MASK
    # effective type rules: dayOfWeek cleared on a WEEKLY schedule is invalid
    details = _invalid(client.patch(url, json={"dayOfWeek": None}), "Invalid automation schedule update data")
    assert "WEEKLY schedule requires timeOfDay and dayOfWeek" in [x["msg"] for x in details]
    # ... but valid together with a type change; nulls clear
    d = patch({"scheduleType": "DAILY", "dayOfWeek": None, "description": None})["data"]
    assert d["scheduleType"] == "DAILY" and d["dayOfWeek"] is None and d["description"] is None
    assert d["cronExpression"] == "30 18 * * *"
    # MANUAL ⇒ NULL cron; CRON keeps its expression
    assert patch({"scheduleType": "MANUAL"})["data"]["cronExpression"] is None
    _invalid(client.patch(url, json={"scheduleType": "CRON"}), "Invalid automation schedule update data")
    assert patch({"scheduleType": "CRON", "cronExpression": "0 6 * * 1"})["data"]["cronExpression"] == "0 6 * * 1"
    assert patch({"name": "renamed"})["data"]["cronExpression"] == "0 6 * * 1"
    # ficheSelection is replaced whole (no deep merge)
    sel = patch({"ficheSelection": {"mode": "manual", "ficheIds": ["7"]}})["data"]["ficheSelection"]
    assert sel == {"mode": "manual", "ficheIds": ["7"], "onlyWithRecordings": False, "onlyUnaudited": False,
                   "useRlm": False}
    # [] / "" / null clear
    d = patch({"specificAuditConfigs": [], "webhookUrl": "", "notifyEmails": []})["data"]
    assert d["specificAuditConfigs"] == [] and d["webhookUrl"] is None and d["notifyEmails"] == []
    d = patch({"webhookUrl": "https://hooks.example.com/b"})["data"]
    assert patch({"webhookUrl": None})["data"]["webhookUrl"] is None
    # the whole effective schedule is re-validated: clearing configs while automatic audits are off
    patch({"specificAuditConfigs": [cfg], "useAutomaticAudits": False})
    _invalid(client.patch(url, json={"specificAuditConfigs": []}), "Invalid automation schedule update data")
    # invalid zone, "" zone, null zone
    for tz in ("", None, "Nowhere/City"):
        _invalid(client.patch(url, json={"timezone": tz}), "Invalid automation schedule update data")
    _invalid(client.patch(url, json={"webhookUrl": "http://10.1.2.3/x"}), "Invalid automation schedule update data")
    _invalid(client.patch(url, json={"name": None}), "Invalid automation schedule update data")
    _invalid(client.patch(url, json={"ficheSelection": {"mode": "manual", "ficheIds": []}}),
             "Invalid automation schedule update data")
    # a rejected patch changed nothing
    assert client.get(url).json()["data"]["ficheSelection"]["ficheIds"] == ["7"]
    # api key: mask echoed back = unchanged; new value sealed; null clears
    assert patch({"externalApiKey": MASK})["data"]["hasExternalApiKey"] is True
    with session_scope() as s:
        assert unseal(s.get(AutomationSchedule, int(s0["id"])).external_api_key) == "key-1"
    patch({"externalApiKey": "key-2"})
    with session_scope() as s:
        assert unseal(s.get(AutomationSchedule, int(s0["id"])).external_api_key) == "key-2"
    d = patch({"externalApiKey": None})["data"]
    assert d["externalApiKey"] is None and d["hasExternalApiKey"] is False
    # missing / bad ids
    r = client.patch(f"{BASE}/schedules/999", json={"name": "x"})
    assert r.status_code == 404 and r.json()["error"] == "Automation schedule with ID '999' not found"
    assert client.patch(f"{BASE}/schedules/x1", json={}).status_code == 400


def _run(schedule_id: int, **over) -> int:
    with session_scope() as s:
        run = AutomationRun(schedule_id=schedule_id, config_snapshot={"schedule": {"name": "n"}}, **over)
        s.add(run)
        s.flush()
        return run.id


def test_runs_detail_logs_and_delete(client):
    sid = int(_create(client)["id"])
    other = int(_create(client, name="other")["id"])
    t0 = dt.datetime(2026, 3, 1, 8, 0)
    r1 = _run(sid, status="completed", started_at=t0, completed_at=t0 + dt.timedelta(seconds=3), duration_ms=3000,
              total_fiches=2, successful_fiches=1, failed_fiches=1, transcriptions_run=2, audits_run=1,
              result_summary={})
    r2 = _run(sid, status="weird", started_at=t0 + dt.timedelta(hours=1), result_summary={"message": "No fiches found",
                                                                                           "ficheIds": []})
    r3 = _run(other, status="running", started_at=t0 + dt.timedelta(hours=2))
    with session_scope() as s:
        s.add_all([
            AutomationRunFicheResult(run_id=r1, fiche_id="b2", status="failed"),
            AutomationRunFicheResult(run_id=r1, fiche_id="a1", status="successful"),
            AutomationRunFicheResult(run_id=r1, fiche_id="c3", status="ignored", ignore_reason="Too many recordings",
                                     recordings_count=60),
            AutomationRunFicheResult(run_id=r1, fiche_id="d4", status="ignored"),
            AutomationLog(run_id=r1, level="info", message="first", meta={"k": 1}, timestamp=t0),
            AutomationLog(run_id=r1, level="error", message="second", timestamp=t0 + dt.timedelta(seconds=1)),
        ])

    page = client.get(f"{BASE}/runs").json()
    assert page["success"] and page["count"] == 3 and page["limit"] == 20 and page["offset"] == 0
    assert [r["id"] for r in page["data"]] == [str(r3), str(r2), str(r1)]
    assert page["data"][1]["status"] == "failed"  # unknown status mapped
    assert set(page["data"][0]) == {"id", "scheduleId", "status", "startedAt", "completedAt", "durationMs",
                                    "totalFiches", "successfulFiches", "failedFiches", "transcriptionsRun",
                                    "auditsRun", "errorMessage", "errorDetails", "configSnapshot", "resultSummary"}
    assert page["data"][2]["resultSummary"] == {}  # lists return the stored value
    p = client.get(f"{BASE}/runs", params={"limit": "1", "offset": "1"}).json()
    assert [r["id"] for r in p["data"]] == [str(r2)] and p["count"] == 1 and p["limit"] == 1 and p["offset"] == 1
    p = client.get(f"{BASE}/runs", params={"limit": "-4", "offset": "-2"}).json()
    assert p["limit"] == 0 and p["offset"] == 0 and p["data"] == []
    p = client.get(f"{BASE}/runs", params={"limit": "abc", "offset": "x"}).json()
    assert p["limit"] == 20 and p["offset"] == 0 and p["count"] == 3
    assert client.get(f"{BASE}/runs", params={"limit": "5000"}).json()["limit"] == 200
    p = client.get(f"{BASE}/schedules/{sid}/runs").json()
    assert [r["id"] for r in p["data"]] == [str(r2), str(r1)] and p["data"][0]["scheduleId"] == str(sid)
    assert client.get(f"{BASE}/schedules/999/runs").json()["data"] == []

    detail = client.get(f"{BASE}/schedules/{sid}").json()["data"]
    assert [r["id"] for r in detail["runs"]] == [str(r2), str(r1)]
    assert set(detail["runs"][0]) == {"id", "status", "startedAt", "completedAt", "durationMs", "totalFiches",
                                      "successfulFiches", "failedFiches"}

    run = client.get(f"{BASE}/runs/{r1}").json()["data"]
    assert run["durationMs"] == 3000 and run["completedAt"] == "2026-03-01T08:00:03.000Z"
    assert run["resultSummary"] == {
        "successful": ["a1"], "failed": [{"ficheId": "b2", "error": "Unknown error"}],
        "ignored": [{"ficheId": "c3", "reason": "Too many recordings", "recordingsCount": 60},
                    {"ficheId": "d4", "reason": "Ignored"}],
        "transcriptions": 2, "audits": 1}
    assert [(x["message"], x["level"]) for x in run["logs"]] == [("first", "info"), ("second", "error")]
    assert run["logs"][0]["metadata"] == {"k": 1} and "runId" not in run["logs"][0]
    assert client.get(f"{BASE}/runs/{r2}").json()["data"]["resultSummary"] == {"message": "No fiches found",
                                                                                "ficheIds": []}
    assert client.get(f"{BASE}/runs/{r3}").json()["data"]["resultSummary"] is None
    missing = client.get(f"{BASE}/runs/999")
    assert missing.status_code == 404 and missing.json()["error"] == "Run not found"
    assert client.get(f"{BASE}/runs/zz").status_code == 400

    logs = client.get(f"{BASE}/runs/{r1}/logs").json()
    assert logs["count"] == 2 and logs["data"][0] == {"id": logs["data"][0]["id"], "runId": str(r1), "level": "info",
                                                      "message": "first", "timestamp": "2026-03-01T08:00:00.000Z",
                                                      "metadata": {"k": 1}}
    assert [x["message"] for x in client.get(f"{BASE}/runs/{r1}/logs", params={"level": "error"}).json()["data"]] == [
        "second"]
    assert client.get(f"{BASE}/runs/999/logs").json() == {"success": True, "data": [], "count": 0}

    # delete: 409 while a run is running, force overrides; cascades
    busy = client.delete(f"{BASE}/schedules/{other}")
    assert busy.status_code == 409 and busy.json()["code"] == "CONFLICT"
    assert client.delete(f"{BASE}/schedules/{other}", params={"force": "true"}).json() == {
        "success": True, "message": "Schedule deleted successfully"}
    assert client.delete(f"{BASE}/schedules/{sid}").status_code == 200
    with session_scope() as s:
        assert s.scalars(select(AutomationRun)).all() == []
        assert s.scalars(select(AutomationLog)).all() == []
        assert s.scalars(select(AutomationRunFicheResult)).all() == []
    gone = client.delete(f"{BASE}/schedules/{sid}")
    assert gone.status_code == 404 and gone.json()["error"] == "Schedule not found"
    assert client.delete(f"{BASE}/schedules/abc").status_code == 400


# --------------------------------------------------------------------------------------------- #
# Trigger and diagnostic (spec 05 §6.2)
# --------------------------------------------------------------------------------------------- #


@pytest.fixture()
def launching(db):
    """An API whose Dagster is a fake GraphQL server recording launches."""
    from tests.fakes.server import serve_app
    from tests.integration.test_transcription_api import FakeDagster

    fake = FakeDagster()
    with serve_app(fake.app) as url:
        with TestClient(create_app(dagster_url=f"{url}/graphql"), raise_server_exceptions=False) as c:
            yield c, fake


def test_trigger_creates_the_run_launches_the_job_and_refuses_overlaps(launching):
    client, fake = launching
    sid = _create(client, ficheSelection={"mode": "date_range", "dateRange": "yesterday", "groupes": ["R1"]})["id"]
    override = {"mode": "manual", "ficheIds": ["A1, A2", "A1"], "maxFiches": None, "useRlm": True}
    r = client.post(f"{BASE}/trigger", json={"scheduleId": sid, "overrideFicheSelection": override})
    assert r.status_code == 200, r.text
    body = r.json()
    run_id = body["run_id"]
    assert body["message"] == "Automation triggered successfully" and body["schedule_id"] == sid
    assert body["sse_url"] == f"/api/realtime/jobs/automation-run-{run_id}"
    launch = fake.launches[-1]
    assert launch["job"] == "automation_run_job" and body["event_ids"] == [launch["run_id"]]
    assert launch["run_config"] == {"ops": {"automation_run": {"config": {
        "schedule_id": int(sid), "run_id": int(run_id), "trigger": "manual"}}}}
    assert launch["tags"]["automation/run_id"] == run_id and launch["tags"]["automation/trigger"] == "manual"
    run = client.get(f"{BASE}/runs/{run_id}").json()["data"]
    assert run["status"] == "running" and run["configSnapshot"]["trigger"] == "manual"
    assert run["configSnapshot"]["overrides"] == {"mode": "manual", "ficheIds": ["A1, A2", "A1"],
                                                  "onlyWithRecordings": False, "onlyUnaudited": False,
                                                  "useRlm": True}
    assert run["configSnapshot"]["dagster_run_id"] == launch["run_id"]
    assert client.get(f"{BASE}/schedules/{sid}").json()["data"]["lastRunStatus"] == "running"

    # a second trigger while it runs: 409, unless forced
    again = client.post(f"{BASE}/trigger", json={"scheduleId": sid})
    assert again.status_code == 409 and again.json()["code"] == "CONFLICT"
    assert client.post(f"{BASE}/trigger?force=true", json={"scheduleId": int(sid)}).status_code == 200
    assert len(fake.launches) == 2


def test_trigger_errors_leave_nothing_behind(launching):
    client, fake = launching
    assert client.post(f"{BASE}/trigger", json={"scheduleId": "999"}).status_code == 404
    _invalid(client.post(f"{BASE}/trigger", json={"scheduleId": "x1"}), "Invalid trigger automation data")
    _invalid(client.post(f"{BASE}/trigger", json={}), "Invalid trigger automation data")
    sid = _create(client)["id"]
    details = _invalid(client.post(f"{BASE}/trigger", json={
        "scheduleId": sid, "overrideFicheSelection": {"mode": "manual", "ficheIds": []}}),
        "Invalid trigger automation data")
    assert details[0]["loc"][0] == "overrideFicheSelection"
    client.patch(f"{BASE}/schedules/{sid}", json={"isActive": False})
    inactive = client.post(f"{BASE}/trigger", json={"scheduleId": sid})
    assert inactive.status_code == 409 and inactive.json()["error"] == "Schedule is not active"
    client.patch(f"{BASE}/schedules/{sid}", json={"isActive": True})
    fake.fail_launch = True
    down = client.post(f"{BASE}/trigger", json={"scheduleId": sid})
    assert down.status_code == 503 and down.json()["code"] == "SERVICE_UNAVAILABLE"
    assert fake.launches == []
    # nothing half-written: no run row, the schedule is free again
    assert client.get(f"{BASE}/runs").json()["data"] == []
    assert client.get(f"{BASE}/schedules/{sid}").json()["data"]["lastRunStatus"] is None


def test_next_run_at_and_diagnostic(launching):
    client, _ = launching
    s = _create(client, timezone="Europe/Paris", timeOfDay="07:00")
    nxt = dt.datetime.fromisoformat(s["nextRunAt"].replace("Z", "+00:00"))
    local = nxt.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute) == (7, 0) and nxt > dt.datetime.now(dt.UTC)
    assert _create(client, scheduleType="MANUAL")["nextRunAt"] is None
    d = client.get(f"{BASE}/diagnostic").json()
    assert d["success"] and d["data"]["job"] == "automation_run_job" and d["data"]["dagster_reachable"] is True
    assert d["data"]["endpoints"]["trigger"] == "POST /api/automation/trigger"
    assert d["data"]["scheduler"]["window_minutes"] >= 20


def test_diagnostic_says_when_dagster_is_down(client):
    assert client.get(f"{BASE}/diagnostic").json()["data"]["dagster_reachable"] is False
