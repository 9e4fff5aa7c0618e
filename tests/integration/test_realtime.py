"""Realtime SSE over a real socket: events written to the outbox reach subscribers of their
channels, once, in order; Last-Event-ID resumes; a gap sends realtime.reset; bad channels are 400."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import httpx
import pytest
from sqlalchemy import update

from auditflow_dagster.db.clock import now_utc
from auditflow_dagster.db.events import emit_best_effort, prune_events
from auditflow_dagster.db.models import Event
from auditflow_dagster.db.session import session_scope
from tests.fakes.server import serve_app


@pytest.fixture()
def api_url(db):
    from api.app import create_app

    with serve_app(create_app("http://127.0.0.1:9/graphql")) as url:
        yield url


def collect(url: str, n: int, *, headers: dict | None = None, started: threading.Event | None = None,
            timeout: float = 20.0) -> list[dict]:
    """Read SSE frames until ``n`` data frames arrived (pings and retry hints are skipped)."""
    frames: list[dict] = []
    cur: dict = {}
    deadline = time.monotonic() + timeout
    with httpx.stream("GET", url, headers=headers or {}, timeout=httpx.Timeout(timeout)) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("retry:") and started is not None:
                started.set()
            if time.monotonic() > deadline:
                raise TimeoutError(frames)
            if line == "":
                if "data" in cur:
                    frames.append(cur)
                    if len(frames) >= n:
                        return frames
                cur = {}
            elif not line.startswith(":") and not line.startswith("retry:"):
                k, _, v = line.partition(": ")
                cur[k] = json.loads(v) if k == "data" else v
    return frames


def background(fn, *args, **kwargs):
    out: dict = {}
    started = threading.Event()

    def run():
        try:
            out["frames"] = fn(*args, started=started, **kwargs)
        except Exception as exc:  # noqa: BLE001
            out["error"] = exc
            started.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert started.wait(15)
    time.sleep(0.3)  # the stream has subscribed once its first bytes are out
    return t, out


def test_live_events_reach_their_channels_once_and_resume(api_url):
    url = f"{api_url}/api/realtime/stream?channels=private-job-j1,fiche-42"
    t, out = background(collect, url, 3)
    emit_best_effort("fiches.progressive_fetch.progress", {"jobId": "j1", "progress": 10})
    emit_best_effort("transcription.started", {"fiche_id": "77"})  # another channel: not sent
    emit_best_effort("x.both", {"jobId": "j1"}, channels=["job-j1", "fiche-42"])  # two channels: sent once
    emit_best_effort("transcription.completed", {"fiche_id": "42"})
    t.join(20)
    assert "error" not in out, out
    frames = out["frames"]
    assert [f["event"] for f in frames] == ["fiches.progressive_fetch.progress", "x.both", "transcription.completed"]
    ids = [int(f["id"]) for f in frames]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert frames[0]["data"] == {"jobId": "j1", "progress": 10}

    # resume after the first frame: exactly the two later ones, on a brand-new connection
    again = collect(url, 2, headers={"Last-Event-ID": frames[0]["id"]})
    assert [f["id"] for f in again] == [f["id"] for f in frames[1:]]

    # the job shortcut sees only its channel
    only_job = collect(f"{api_url}/api/realtime/jobs/j1?last_event_id=0", 2)
    assert [f["event"] for f in only_job] == ["fiches.progressive_fetch.progress", "x.both"]


def test_gap_sends_reset_then_what_is_left(api_url):
    first = emit_best_effort("notification", {"message": "old"})
    emit_best_effort("notification", {"message": "old 2"})
    third = emit_best_effort("notification", {"message": "kept"})
    with session_scope() as s:  # retention pruned the oldest rows (prune_events: by age, oldest first)
        s.execute(update(Event).where(Event.id < third).values(created_at=now_utc() - dt.timedelta(hours=200)))
        assert prune_events(s, older_than_hours=168) == 2
        assert prune_events(s, older_than_hours=168) == 0 and prune_events(s, older_than_hours=0) == 0
    frames = collect(f"{api_url}/api/realtime/global", 2, headers={"Last-Event-ID": str(first)})
    assert frames[0]["event"] == "realtime.reset" and frames[0]["data"] == {"reason": "gap"} and "id" not in frames[0]
    assert frames[1]["data"] == {"message": "kept"} and frames[1]["id"] == str(third)


@pytest.mark.parametrize("query", ["channels=", "channels=user-1", "channels=audit-%20x", "channels=job-a,,secret-1",
                                   "channels=global&last_event_id=abc"])
def test_bad_requests_are_400_not_streams(api_url, query):
    r = httpx.get(f"{api_url}/api/realtime/stream?{query}", timeout=10)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["success"] is False and body["code"] == "VALIDATION_ERROR"


def _open_insert(channel: str, name: str):
    """Insert an event in a transaction left open (a slow writer); returns (connection, id)."""
    import psycopg

    from auditflow_dagster.db.session import app_url

    conn = psycopg.connect(app_url().replace("postgresql+psycopg://", "postgresql://"))
    row_id = conn.execute("INSERT INTO events (name, channels, payload) VALUES (%s, %s, '{}'::jsonb) RETURNING id",
                          (name, [channel])).fetchone()[0]
    return conn, row_id


def test_a_late_commit_is_delivered_in_id_order_not_skipped(api_url):
    url = f"{api_url}/api/realtime/jobs/late"
    t, out = background(collect, url, 2)
    slow, slow_id = _open_insert("job-late", "slow.commit")
    fast_id = emit_best_effort("fast.commit", {"jobId": "late"})
    assert fast_id > slow_id
    time.sleep(0.8)
    assert "frames" not in out  # the later row waits behind the uncommitted lower id
    slow.commit()
    slow.close()
    t.join(20)
    assert "error" not in out, out
    assert [(f["id"], f["event"]) for f in out["frames"]] == [(str(slow_id), "slow.commit"), (str(fast_id), "fast.commit")]
    # a client resuming from the first id gets exactly the second
    assert [f["id"] for f in collect(url, 1, headers={"Last-Event-ID": str(slow_id)})] == [str(fast_id)]


@pytest.fixture()
def short_gap_api_url(db, monkeypatch):
    from api.app import create_app
    from auditflow_dagster.settings import get_settings

    monkeypatch.setenv("AUDITFLOW_SSE_GAP_TIMEOUT_SECONDS", "1")
    get_settings.cache_clear()
    try:
        with serve_app(create_app("http://127.0.0.1:9/graphql")) as url:
            yield url
    finally:
        get_settings.cache_clear()


def test_a_rolled_back_id_only_delays_later_events(short_gap_api_url):
    url = f"{short_gap_api_url}/api/realtime/jobs/rb"
    t, out = background(collect, url, 1)
    aborted, _ = _open_insert("job-rb", "never.committed")
    t0 = time.monotonic()
    kept = emit_best_effort("kept", {"jobId": "rb"})
    aborted.rollback()
    aborted.close()
    t.join(20)
    assert "error" not in out, out
    assert [(f["id"], f["event"]) for f in out["frames"]] == [(str(kept), "kept")]
    assert time.monotonic() - t0 >= 0.9  # held back for the gap timeout, then released


def test_an_open_stream_ends_when_its_key_is_revoked(db, monkeypatch):
    """Spec 06 §2.4: the stream closes when the credential stops being valid (re-checked every
    ``AUDITFLOW_SSE_AUTH_RECHECK_SECONDS``), with a last ``realtime.auth_expired`` frame."""
    from api.app import create_app
    from auditflow_dagster.db import api_keys
    from auditflow_dagster.settings import get_settings

    monkeypatch.setenv("AUDITFLOW_AUTH", "on")
    monkeypatch.setenv("AUDITFLOW_SSE_AUTH_RECHECK_SECONDS", "0.2")
    monkeypatch.setenv("AUDITFLOW_SSE_HEARTBEAT_SECONDS", "0.2")
    get_settings.cache_clear()
    try:
        with session_scope() as s:
            view, token = api_keys.create_key(s, name="sse", permissions=["realtime.read"], scope="ALL")
        with serve_app(create_app("http://127.0.0.1:9/graphql")) as url:
            _, out = background(collect, f"{url}/api/realtime/global", 2,
                             headers={"Authorization": f"Bearer {token}"}, timeout=15)
            emit_best_effort("notification", {"message": "before revoke"})
            time.sleep(0.5)
            with session_scope() as s:
                api_keys.revoke_key(s, int(view["id"]))
            deadline = time.monotonic() + 10
            while "frames" not in out and "error" not in out and time.monotonic() < deadline:
                time.sleep(0.1)
            assert "error" not in out, out.get("error")
            frames = out["frames"]
            assert frames[0]["data"] == {"message": "before revoke"}
            assert frames[1]["event"] == "realtime.auth_expired"
            # and the revoked key cannot open a new one
            assert httpx.get(f"{url}/api/realtime/global", headers={"Authorization": f"Bearer {token}"},
                             timeout=5).status_code == 401
    finally:
        get_settings.cache_clear()
