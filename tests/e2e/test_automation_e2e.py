"""Automation end to end with real processes: synthetic CRM (HTTP), Dagster webserver + daemon
(the ``automation_scheduler`` sensor, the run job, the fiche backfill, the progress sensor), the
API, a real SMTP server (aiosmtpd) and a partner webhook endpoint verifying signatures.

A DAILY schedule due a minute ago (Europe/Paris) with groupes + onlyUnaudited + onlyWithRecordings
+ maxRecordingsPerFiche + two audit configs + useRlm fires once through the scheduler; per-fiche
results add up to the selection; the mail and one signed webhook arrive; the run's SSE channel
shows started → selection → progress → completed; a second run audits nothing already audited.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import zoneinfo
from email import message_from_bytes

import httpx
import pytest
from sqlalchemy import func, select

from auditflow_dagster.sample import generator

pytestmark = pytest.mark.e2e

SECRET = "automation-e2e-secret"
PARIS = zoneinfo.ZoneInfo("Europe/Paris")


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[dict] = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler hook
        msg = message_from_bytes(envelope.content)
        self.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                              "subject": msg["Subject"], "body": msg.get_payload(decode=True).decode()})
        return "250 OK"


class Partner:
    def __init__(self) -> None:
        self.calls: list[dict] = []

    def app(self):
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        from auditflow_dagster.core.signing import sign_v1, sign_v2

        async def hook(request):
            body = await request.body()
            h = request.headers
            self.calls.append({"json": json.loads(body), "event": h.get("x-webhook-event"),
                               "v1_ok": h.get("x-webhook-signature") == sign_v1(SECRET, body),
                               "v2_ok": h.get("x-webhook-signature-v2") == sign_v2(
                                   SECRET, h.get("x-webhook-timestamp", ""), body)})
            return JSONResponse({"ok": True})

        return Starlette(routes=[Route("/automation", hook, methods=["POST"])])


@pytest.fixture(scope="module")
def mailbox():
    from aiosmtpd.controller import Controller

    from auditflow_dagster.stack import free_port

    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    box.port = controller.port
    yield box
    controller.stop()


@pytest.fixture(scope="module")
def partner():
    from tests.fakes.server import serve_app

    p = Partner()
    with serve_app(p.app()) as url:
        p.url, p.origin = f"{url}/automation", url
        yield p


@pytest.fixture(scope="module")
def stack(databases, tmp_path_factory, mailbox, partner):
    from tests.e2e.running import running_stack

    env = {"AUDITFLOW_CRM": "http", "FICHE_API_BASE_URL": None, "WEBHOOK_ALLOWED_ORIGINS": partner.origin,
           "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(mailbox.port), "SMTP_FROM": "auditflow@brokerage.test",
           "AUTOMATION_WEBHOOK_SECRET": SECRET}
    with running_stack(tmp_path_factory.mktemp("automation_stack_logs"), env) as s:
        yield s


def wait_for(fn, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(1.0)
    raise TimeoutError(what)


def sse_until(url: str, last_event_id: int, terminal: str, timeout: float = 120.0) -> list[dict]:
    frames: list[dict] = []
    current: dict = {}
    with httpx.stream("GET", url, headers={"Last-Event-ID": str(last_event_id)},
                      timeout=httpx.Timeout(timeout, read=timeout)) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line == "":
                if "data" in current:
                    frames.append(current)
                    if current.get("event") == terminal:
                        return frames
                current = {}
            elif not line.startswith((":", "retry:")):
                key, _, value = line.partition(": ")
                current[key] = json.loads(value) if key == "data" else value
    return frames


def test_daily_schedule_fires_once_audits_notifies_and_streams(stack, mailbox, partner):
    from auditflow_dagster.db.configs import import_config
    from auditflow_dagster.db.models import Audit, Event
    from auditflow_dagster.db.session import session_scope

    api = f"{stack.api_url}/api/automation"
    yesterday = (dt.datetime.now(PARIS) - dt.timedelta(days=1)).date()
    day_ids = [f["id"] for f in generator.fiches_for_day(yesterday)]
    groupes = {f: generator.fiche_details_payload(f)["information"]["groupe"] for f in day_ids}
    wanted = sorted(set(groupes.values()))[:2]
    with session_scope() as s:
        spec = generator.load_checklist()
        short = import_config(s, spec.model_copy(update={"name": "Short checklist", "steps": spec.steps[:3],
                                                         "run_automatically": False})).id
        first_event = s.scalar(select(func.max(Event.id))) or 0

    due_local = (dt.datetime.now(PARIS) - dt.timedelta(minutes=1)).replace(second=0, microsecond=0)
    body = {"name": "R1+R3 weekday audit", "scheduleType": "DAILY", "timezone": "Europe/Paris",
            "timeOfDay": due_local.strftime("%H:%M"),
            "ficheSelection": {"mode": "date_range", "dateRange": "yesterday", "groupes": wanted,
                               "onlyWithRecordings": True, "onlyUnaudited": True, "maxRecordingsPerFiche": 2,
                               "useRlm": True},
            "useAutomaticAudits": True, "specificAuditConfigs": [str(short)],
            "notifyOnComplete": True, "notifyOnError": True, "webhookUrl": partner.url,
            "notifyEmails": ["qa.manager@brokerage.test"]}
    created = httpx.post(f"{api}/schedules", json=body, timeout=30)
    assert created.status_code == 201, created.text
    sid = created.json()["data"]["id"]

    # the scheduler sensor (60 s interval) finds the occurrence in its window and runs it once
    run = wait_for(lambda: next(iter(httpx.get(f"{api}/schedules/{sid}/runs", timeout=30).json()["data"]), None),
                   240, "no automation run started")
    run_id = run["id"]
    frames = sse_until(f"{stack.api_url}/api/realtime/jobs/automation-run-{run_id}", first_event,
                       "automation.run.completed", timeout=420)
    names = [f["event"] for f in frames]
    assert names[0] == "automation.run.started" and names[1] == "automation.run.selection", names
    assert "automation.run.progress" in names and names[-1] == "automation.run.completed"
    assert names.count("automation.run.started") == 1
    selection = frames[1]["data"]
    assert selection["groupes"] == wanted and selection["useRlm"] is True and selection["total_fiches"] == len(day_ids)

    detail = httpx.get(f"{api}/runs/{run_id}", timeout=30).json()["data"]
    summary = detail["resultSummary"]
    ok, ko, ignored = summary["successful"], summary["failed"], summary["ignored"]
    assert len(ok) + len(ko) + len(ignored) == len(day_ids)  # every selected fiche accounted for once
    assert detail["totalFiches"] == len(ok) + len(ko) and detail["successfulFiches"] == len(ok) and ok
    reasons = {i["ficheId"]: i["reason"] for i in ignored}
    for f in day_ids:
        if groupes[f] not in wanted:
            assert reasons[f] == f"Groupe not selected ({groupes[f]})"
    assert detail["status"] == ("completed" if not ko else "partial")
    assert detail["auditsRun"] >= 2 * len(ok)
    with session_scope() as s:
        per_config = s.execute(select(Audit.audit_config_id, func.count()).where(
            Audit.automation_run_id == int(run_id), Audit.status == "completed", Audit.use_rlm.is_(True))
            .group_by(Audit.audit_config_id)).all()
    assert len(per_config) == 2 and all(n >= len(ok) for _, n in per_config)

    # exactly one run for the occurrence, even though the sensor kept ticking
    time.sleep(70)
    assert len(httpx.get(f"{api}/schedules/{sid}/runs", timeout=30).json()["data"]) == 1

    # notifications: one mail with the spec's subject and the failure list; one signed webhook
    mail = wait_for(lambda: mailbox.messages, 60, "no mail")
    assert len(mail) == 1 and mail[0]["to"] == ["qa.manager@brokerage.test"]
    assert mail[0]["subject"] == f"Automation R1+R3 weekday audit - {detail['status'].upper()}"
    for failure in ko:
        assert f"- {failure['ficheId']}: {failure['error']}" in mail[0]["body"]
    calls = wait_for(lambda: partner.calls, 60, "no webhook")
    assert len(calls) == 1 and calls[0]["v1_ok"] and calls[0]["v2_ok"]
    assert calls[0]["event"] == "automation.completed"
    assert calls[0]["json"]["run_id"] == run_id and calls[0]["json"]["ignored_fiches"] == len(ignored)

    # Dagster: the job run plus a handful of backfill runs, not one per fiche
    runs = httpx.post(f"{stack.dagster_url}/graphql", json={"query": """
        query { runsOrError(filter: {tags: [{key: "automation/run_id", value: "%s"}]}) {
          ... on Runs { results { runId status } } } }""" % run_id}, timeout=30).json()
    fiche_runs = runs["data"]["runsOrError"]["results"]
    assert 1 <= len(fiche_runs) <= 4, fiche_runs
    print(f"\nautomation run {run_id}: {len(day_ids)} fiches, {len(fiche_runs)} backfill run(s) + 1 job run; "
          f"successful={len(ok)} failed={len(ko)} ignored={len(ignored)}")

    # a second run (manual trigger, same selection): onlyUnaudited leaves nothing already audited
    second = httpx.post(f"{api}/trigger", json={"scheduleId": sid}, timeout=30).json()
    assert second["success"] and second["sse_url"].endswith(f"automation-run-{second['run_id']}")
    done = wait_for(lambda: (lambda d: d if d["status"] != "running" else None)(
        httpx.get(f"{api}/runs/{second['run_id']}", timeout=30).json()["data"]), 300, "second run did not finish")
    again = done["resultSummary"]
    touched = set(again.get("successful", [])) | {f["ficheId"] for f in again.get("failed", [])}
    assert not touched & set(ok)
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Audit).where(
            Audit.automation_run_id == int(second["run_id"]), Audit.status == "completed")) <= 2 * len(touched)
