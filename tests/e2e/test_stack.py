"""End to end with real processes: synthetic CRM (HTTP), Dagster webserver + daemon, the API.

POST an audit → follow its run's SSE stream to the terminal event → resume the stream from the
middle with Last-Event-ID (no loss, no duplicates) → GET the audit and check its score against the
synthetic ground truth.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from decimal import Decimal

import httpx
import pytest

from auditflow_dagster.sample import generator

pytestmark = pytest.mark.e2e

DAY = dt.date(2026, 3, 16)


@pytest.fixture(scope="module")
def stack(databases, tmp_path_factory):
    from auditflow_dagster.settings import get_settings
    from auditflow_dagster.stack import Stack

    saved = {k: os.environ.get(k) for k in ("AUDITFLOW_CRM", "FICHE_API_BASE_URL")}
    os.environ["AUDITFLOW_CRM"] = "http"
    os.environ.pop("FICHE_API_BASE_URL", None)
    get_settings.cache_clear()
    s = Stack(log_dir=tmp_path_factory.mktemp("stack_logs"))
    try:
        with s:
            yield s
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()


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
