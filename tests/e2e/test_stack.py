"""End to end with real processes: synthetic CRM (HTTP), Dagster webserver + daemon, the API.

POST an audit → follow its run's SSE stream to the terminal event → resume the stream from the
middle with Last-Event-ID (no loss, no duplicates) → GET the audit and check its score against the
synthetic ground truth.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from decimal import Decimal

import httpx
import pytest

from auditflow_dagster.sample import generator

pytestmark = pytest.mark.e2e

DAY = dt.date(2026, 3, 16)


class WebhookReceiver:
    """A partner's webhook endpoint: verifies both signatures, records every attempt, and fails
    the very first request once (503) so the retry path is exercised."""

    SECRET = "e2e-partner-secret"

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.failed_once = False

    def app(self):
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        from auditflow_dagster.core.signing import sign_v1, sign_v2

        async def hook(request):
            body = await request.body()
            h = request.headers
            ts = h.get("x-webhook-timestamp", "")
            self.received.append({
                "delivery": h.get("x-webhook-delivery-id"), "attempt": int(h.get("x-webhook-attempt", "0")),
                "event": h.get("x-webhook-event"), "json": json.loads(body),
                "v1_ok": h.get("x-webhook-signature") == sign_v1(self.SECRET, body),
                "v2_ok": h.get("x-webhook-signature-v2") == sign_v2(self.SECRET, ts, body),
            })
            if not self.failed_once:
                self.failed_once = True
                return JSONResponse({"error": "try later"}, status_code=503)
            return JSONResponse({"ok": True})

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


@pytest.fixture(scope="module")
def receiver():
    from tests.fakes.server import serve_app

    r = WebhookReceiver()
    with serve_app(r.app()) as url:
        r.url = f"{url}/hook"
        r.origin = url
        yield r


@pytest.fixture(scope="module")
def stack(databases, tmp_path_factory, receiver):
    from tests.e2e.running import running_stack

    # the local partner endpoint (loopback) is an allowed webhook origin
    with running_stack(tmp_path_factory.mktemp("stack_logs"), {
            "AUDITFLOW_CRM": "http", "FICHE_API_BASE_URL": None, "WEBHOOK_ALLOWED_ORIGINS": receiver.origin}) as s:
        yield s


def read_sse(url: str, *, last_event_id: str | None = None, timeout: float = 240.0) -> list[dict]:
    """Collect frames until the server closes the stream (after the run's terminal event)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    frames: list[dict] = []
    current: dict = {}
    deadline = time.monotonic() + timeout
    with httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(timeout, read=60.0)) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if time.monotonic() > deadline:
                raise TimeoutError("SSE stream did not end")
            if line == "":
                if "data" in current:
                    current["received_at"] = time.monotonic()
                    frames.append(current)
                current = {}
            elif line.startswith(":") or line.startswith("retry:"):
                continue
            else:
                key, _, value = line.partition(": ")
                current[key] = json.loads(value) if key == "data" else value
    return frames


def test_post_audit_stream_to_terminal_and_check_score(stack):
    fiche_id = next(f["id"] for f in generator.fiches_for_day(DAY) if generator.expected_audit(f["id"])["auditable"])
    body = {"fiche_id": fiche_id, "audit_config_id": 1, "user_id": "e2e"}
    t0 = time.monotonic()
    resp = httpx.post(f"{stack.api_url}/api/audits/run", json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    queued = resp.json()
    assert queued["success"] and queued["audit_config_id"] == 1 and queued["fiche_id"] == fiche_id
    assert queued["audit_id"].startswith(f"audit-{fiche_id}-1-") and queued["event_id"] == queued["run_id"]

    url = f"{stack.api_url}/api/runs/{queued['run_id']}/events"
    frames = read_sse(url)
    kinds = [f["event"] for f in frames]
    assert kinds[-1] == "RUN_SUCCESS", kinds
    assert "RUN_START" in kinds and "STEP_START" in kinds
    materialized = {(f["data"].get("asset_key"), f["data"].get("partition")) for f in frames if f["event"] == "ASSET_MATERIALIZATION"}
    assert ("audits", fiche_id) in materialized and ("transcripts", fiche_id) in materialized
    ids = [f["id"] for f in frames]
    assert len(set(ids)) == len(ids)
    first_step = next(f for f in frames if f["event"] == "STEP_START")
    print(f"\nPOST → first STEP_START over SSE: {first_step['received_at'] - t0:.2f}s; "
          f"→ terminal: {frames[-1]['received_at'] - t0:.2f}s")

    # Resume from the middle: exactly the remaining events, none twice, none lost.
    k = len(frames) // 2
    resumed = read_sse(url, last_event_id=frames[k]["id"])
    assert [f["id"] for f in resumed] == ids[k + 1:]
    assert [f["event"] for f in resumed] == kinds[k + 1:]

    # The audit itself, read through the API, against the synthetic ground truth.
    day = httpx.get(f"{stack.api_url}/api/fiches/status/by-date", params={"date": DAY.isoformat()}, timeout=30).json()
    item = next(i for i in day["data"]["fiches"] if i["ficheId"] == fiche_id)
    audit_id = item["audit"]["latestAudit"]["id"]
    detail = httpx.get(f"{stack.api_url}/api/audits/{audit_id}", timeout=30).json()["data"]
    expected = generator.expected_audit(fiche_id)["compliance"]
    assert detail["trackingId"] == queued["audit_id"]
    assert detail["status"] == "completed" and detail["triggerSource"] == "api" and detail["triggerUserId"] == "e2e"
    assert Decimal(detail["scorePercentage"]) == expected.score_percentage
    assert detail["niveau"] == expected.niveau
    assert detail["dagsterRunId"] == queued["run_id"]


def test_unknown_run_is_404_and_ready(stack):
    r = httpx.get(f"{stack.api_url}/api/runs/00000000-0000-0000-0000-000000000000/events", timeout=30)
    assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"
    ready = httpx.get(f"{stack.api_url}/health/ready", timeout=30).json()
    assert ready["checks"] == {"database": True, "dagster": True}


def test_fiche_read_fills_the_cache_through_dagster(stack):
    """An uncached fiche is fetched by a `fetch_fiche` run (the API never calls the CRM itself)."""
    fiche_id = generator.fiches_for_day(DAY)[5]["id"]
    r = httpx.get(f"{stack.api_url}/api/fiches/{fiche_id}", timeout=90)
    assert r.status_code == 200, r.text
    body = r.json()
    expected = generator.fiche_details_payload(fiche_id)
    assert body["information"]["fiche_id"] == fiche_id
    assert body["prospect"]["nom"] == expected["prospect"]["nom"]
    assert "mail_devis" not in body
    unknown = generator.fiche_id_for(DAY, 399)  # beyond the CRM's 40 fiches of the day → upstream 404
    r = httpx.get(f"{stack.api_url}/api/fiches/{unknown}", timeout=90)
    assert r.status_code == 404 and r.json()["success"] is False
    assert httpx.get(f"{stack.api_url}/api/fiches/12ab", timeout=30).status_code == 404


RANGE_START = dt.date(2026, 1, 5)
RANGE_DAYS = [RANGE_START + dt.timedelta(days=i) for i in range(31)]
MISSING = {RANGE_DAYS[i] for i in (0, 1, 2, 7, 11, 12, 19, 23, 27, 29, 30)}  # 11 missing, 20 cached


def _cache_days(days) -> None:
    """Days the cache already holds, written the way a sales_list run writes them."""
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    from auditflow_dagster.db import fiches as fiche_db
    from auditflow_dagster.db.clock import now_utc
    from auditflow_dagster.db.models import FicheSalesDay
    from auditflow_dagster.db.session import session_scope

    for day in days:
        items = generator.sales_list_payload(day, day, True)["fiches"]
        with session_scope() as s:
            ids = fiche_db.upsert_sales_list(s, items, sales_date=day.isoformat(), ttl_hours=240)
            s.execute(pg_insert(FicheSalesDay).values(sales_date=day.isoformat(), crm_count=len(items),
                                                      cached_count=len(ids), fetched_at=now_utc(), last_error=None))


def read_until(url: str, stop_event: str, timeout: float = 120.0) -> list[dict]:
    frames: list[dict] = []
    cur: dict = {}
    deadline = time.monotonic() + timeout
    with httpx.stream("GET", url, timeout=httpx.Timeout(timeout, read=30.0)) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if time.monotonic() > deadline:
                raise TimeoutError([f["event"] for f in frames])
            if line == "":
                if "data" in cur:
                    frames.append(cur)
                    if cur["event"] == stop_event:
                        return frames
                cur = {}
            elif not line.startswith(":") and not line.startswith("retry:"):
                k, _, v = line.partition(": ")
                cur[k] = json.loads(v) if k == "data" else v
    return frames


def test_progressive_range_job_completes_with_events_and_signed_webhooks(stack, receiver):
    cached = [d for d in RANGE_DAYS if d not in MISSING]
    assert len(cached) == 20
    _cache_days(cached)
    per_day = {d.isoformat(): len(generator.sales_list_payload(d, d, False)["fiches"]) for d in RANGE_DAYS}

    t0 = time.monotonic()
    r = httpx.get(f"{stack.api_url}/api/fiches/status/by-date-range",
                  params={"startDate": RANGE_DAYS[0].isoformat(), "endDate": RANGE_DAYS[-1].isoformat(),
                          "webhookUrl": receiver.url},
                  headers={"X-Webhook-Secret": WebhookReceiver.SECRET}, timeout=30)
    answered = time.monotonic() - t0
    assert r.status_code == 200, r.text
    body = r.json()
    meta = body["meta"]
    job_id = meta["backgroundJobId"]
    assert job_id and meta["partial"] is True and meta["complete"] is False
    assert meta["daysCached"] == 20 and meta["daysRemaining"] == 11
    assert sorted(meta["cacheCoverage"]["datesMissing"]) == sorted(d.isoformat() for d in MISSING)
    assert body["total"] == sum(per_day[d.isoformat()] for d in cached)  # cached days answered at once
    print(f"\nby-date-range (20 of 31 days cached) answered in {answered * 1000:.0f} ms")

    frames = read_until(f"{stack.api_url}/api/realtime/jobs/{job_id}?last_event_id=0",
                        "fiches.progressive_fetch.complete", timeout=180)
    names = [f["event"] for f in frames]
    assert names[0] == "fiches.progressive_fetch.created" and names[-1] == "fiches.progressive_fetch.complete"
    assert names.count("fiches.progressive_fetch.progress") == 11  # one per fetched day
    final = frames[-1]["data"]
    assert final["jobId"] == job_id and final["completedDays"] == 31 and final["progress"] == 100
    progress = [f["data"]["progress"] for f in frames if f["event"].endswith(".progress")]
    assert progress == sorted(progress)

    job = httpx.get(f"{stack.api_url}/api/fiches/jobs/{job_id}", timeout=30).json()["job"]
    assert job["status"] == "complete" and sorted(job["datesAlreadyFetched"]) == [d.isoformat() for d in RANGE_DAYS]
    assert job["datesFailed"] == [] and job["datesRemaining"] == []

    # webhooks: the complete event arrives signed, after one forced 503 retried with attempt 2
    deadline = time.monotonic() + 60
    while not any(x["event"] == "complete" for x in receiver.received[1:]):  # [0] got the forced 503
        assert time.monotonic() < deadline, receiver.received
        time.sleep(0.5)
    got = receiver.received
    assert all(x["v1_ok"] and x["v2_ok"] for x in got)
    first = got[0]
    retried = [x for x in got if x["delivery"] == first["delivery"]]
    assert [x["attempt"] for x in retried][:2] == [1, 2]  # the attempt header really counts
    assert retried[0]["json"] == retried[1]["json"] | {"timestamp": retried[0]["json"]["timestamp"]}
    complete = next(x for x in got if x["event"] == "complete")
    assert complete["json"]["jobId"] == job_id and complete["json"]["data"]["completedDays"] == 31
    deliveries = httpx.get(f"{stack.api_url}/api/fiches/jobs/{job_id}", timeout=30).json()["job"]["webhookDeliveries"]
    assert deliveries and all(d["status"] == "sent" for d in deliveries)

    # the range is now fully cached: answered at once, no job
    r = httpx.get(f"{stack.api_url}/api/fiches/status/by-date-range",
                  params={"startDate": RANGE_DAYS[0].isoformat(), "endDate": RANGE_DAYS[-1].isoformat()}, timeout=30)
    again = r.json()
    assert again["meta"]["complete"] is True and again["meta"]["backgroundJobId"] is None
    assert again["total"] == sum(per_day.values())
