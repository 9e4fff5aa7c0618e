"""Resumable SSE across API replicas, end to end with real processes (issue 8, spec 06 §2.4).

One stack (synthetic CRM, Dagster webserver + daemon, API replica A) plus a second API process,
replica B, on another port and the same database. An audit is launched through A; three streams
are watched through B:

* the audit's tracking channel ``/api/realtime/audits/<tracking id>``, opened after the launch
  with ``Last-Event-ID: 0`` (replay from the table, then live);
* the fiche channel ``/api/realtime/fiches/<fiche id>``, opened *before* the launch without an id
  (a fresh live subscriber);
* both channels on one ``/api/realtime/stream?channels=…`` (an event on both comes once);
* the Dagster run relay ``/api/runs/<run id>/events``.

After a few events replica B is killed with SIGKILL mid-stream; each client reconnects to A with
``Last-Event-ID`` = the last id it received and reads to the terminal event. Each client must
end up with every event exactly once, in increasing id order: for the realtime channels exactly
the rows the ``events`` table holds for that channel, for the run relay exactly what a fresh full
read of the run's log gives. Event-to-client latency (``events.created_at`` → receipt; for the
relay, the Dagster event's timestamp → receipt) is printed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from auditflow_dagster.sample import generator

pytestmark = pytest.mark.e2e

DAY = dt.date(2025, 11, 4)  # a day no other e2e module touches: its fiche channels start empty
AUDIT_TERMINAL = {"audit.completed", "audit.failed"}
RUN_TERMINAL = {"RUN_SUCCESS", "RUN_FAILURE", "RUN_CANCELED"}


@pytest.fixture(scope="module")
def stack(databases, tmp_path_factory):
    from tests.e2e.running import running_stack

    # AUDITFLOW_AUTH=off: every child process inherits it (Stack.child_env)
    with running_stack(tmp_path_factory.mktemp("sse_replica_logs"), {
            "AUDITFLOW_CRM": "http", "FICHE_API_BASE_URL": None, "AUDITFLOW_AUTH": "off"}) as s:
        yield s


def start_replica(stack, name: str, timeout: float = 90.0):
    """A second API process on its own port, same database and Dagster, same env as replica A."""
    from auditflow_dagster.stack import free_port

    port = free_port()
    stack._spawn(name, [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--host", "127.0.0.1",
                        "--port", str(port), "--log-level", "warning"])
    child = stack.children[-1]
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if child.proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {child.log_path.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2.0).status_code == 200:
                return child, url
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{name} not ready after {timeout:.0f}s"
        time.sleep(0.3)


class SSEClient(threading.Thread):
    """Reads one SSE stream in a thread, the way a browser's EventSource does: a frame counts only
    once its blank line arrived; ``retry:`` and ``:`` comments are not events. Stops at ``stop``,
    at the server's end of stream, or when the connection breaks (``error``)."""

    def __init__(self, url: str, *, last_event_id: str | None = None,
                 stop: Callable[[dict], bool] = lambda f: False, timeout: float = 300.0) -> None:
        super().__init__(daemon=True)
        self.url, self.last_event_id, self.stop, self.timeout = url, last_event_id, stop, timeout
        self.frames: list[dict] = []
        self.ready = threading.Event()  # the server sent ``retry:``: the subscription exists
        self.ready_at: float | None = None
        self.status: int | None = None
        self.error: BaseException | None = None
        self.finished = False  # reached ``stop`` or the server's normal end of stream

    def run(self) -> None:
        headers = {"Last-Event-ID": self.last_event_id} if self.last_event_id is not None else {}
        deadline = time.monotonic() + self.timeout
        try:
            with httpx.stream("GET", self.url, headers=headers, timeout=httpx.Timeout(10.0, read=60.0)) as resp:
                self.status = resp.status_code
                if resp.status_code != 200:
                    self.error = AssertionError(f"{self.url}: {resp.status_code} {resp.read()[:500]!r}")
                    return
                assert resp.headers["content-type"].startswith("text/event-stream")
                cur: dict = {}
                for line in resp.iter_lines():
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{self.url}: no terminal event; got {[f.get('event') for f in self.frames]}")
                    if line == "":
                        if "data" in cur:
                            cur["received_at"] = time.time()
                            self.frames.append(cur)
                            if self.stop(cur):
                                self.finished = True
                                return
                        cur = {}
                    elif line.startswith(":"):
                        continue
                    else:
                        key, _, value = line.partition(":")
                        value = value[1:] if value.startswith(" ") else value
                        if key == "retry":
                            self.ready_at = time.time()
                            self.ready.set()
                        else:
                            cur[key] = json.loads(value) if key == "data" else value
                self.finished = True
        except BaseException as exc:  # noqa: BLE001 - a broken connection is what the test provokes
            self.error = exc
        finally:
            self.ready.set()


def channel_rows(channel: str) -> list[dict]:
    from sqlalchemy import select

    from auditflow_dagster.db.models import Event
    from auditflow_dagster.db.session import session_scope

    with session_scope() as s:
        rows = s.execute(select(Event.id, Event.name, Event.payload, Event.created_at)
                         .where(Event.channels.overlap([channel])).order_by(Event.id)).all()
    return [{"id": r[0], "name": r[1], "payload": r[2], "created_at": r[3]} for r in rows]


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def check_exactly_once(name: str, before: list[dict], after: list[dict], rows: list[dict]) -> list[dict]:
    """The client's frames (replica B, then replica A) against the table: each row once, in order."""
    frames = before + after
    assert all("id" in f for f in frames), f"{name}: a frame without id (reset?): {[f['event'] for f in frames if 'id' not in f]}"
    ids = [int(f["id"]) for f in frames]
    assert ids == sorted(set(ids)), f"{name}: duplicates or out of order: {ids}"
    upto = ids[-1]
    expected = [r for r in rows if r["id"] <= upto]
    assert ids == [r["id"] for r in expected], (
        f"{name}: missing {sorted({r['id'] for r in expected} - set(ids))}, extra {sorted(set(ids) - {r['id'] for r in expected})}")
    for f, r in zip(frames, expected, strict=True):
        assert f["event"] == r["name"] and f["data"] == r["payload"], (f, r)
    return expected


def latencies_ms(frames: list[dict], rows_by_id: dict[int, dict], live_from: float) -> list[float]:
    """Receipt − created_at for the events written while the client was already subscribed."""
    out = []
    for f in frames:
        created = rows_by_id[int(f["id"])]["created_at"].replace(tzinfo=dt.UTC).timestamp()
        if created >= live_from:
            out.append((f["received_at"] - created) * 1000)
    return out


def fmt(values: list[float]) -> str:
    if not values:
        return "n/a"
    q = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    return f"n={len(values)} p50={statistics.median(values):.1f} ms p95={q[94]:.1f} ms max={max(values):.1f} ms"


def test_replica_b_killed_mid_stream_resume_on_a_exactly_once(stack):
    t_start = time.monotonic()
    replica_b, b_url = start_replica(stack, "api-b")
    a_url = stack.api_url
    print(f"\nreplica A {a_url}, replica B {b_url} (pid {replica_b.proc.pid}); B ready in {time.monotonic() - t_start:.1f}s")

    fiche_id = next(f["id"] for f in generator.fiches_for_day(DAY) if generator.expected_audit(f["id"])["auditable"])
    fiche_channel = f"fiche-{fiche_id}"
    assert channel_rows(fiche_channel) == []  # nothing ever happened to this fiche

    def is_audit_terminal(f: dict) -> bool:
        return f["event"] in AUDIT_TERMINAL

    # A fresh live subscriber on B, before anything happens on its channel.
    fiche_b = SSEClient(f"{b_url}/api/realtime/fiches/{fiche_id}", stop=is_audit_terminal)
    fiche_b.start()
    assert fiche_b.ready.wait(30) and fiche_b.error is None, fiche_b.error

    t0 = time.monotonic()
    resp = httpx.post(f"{a_url}/api/audits/run", json={"fiche_id": fiche_id, "audit_config_id": 1, "user_id": "e2e-sse"},
                      timeout=30)
    assert resp.status_code == 200, resp.text
    queued = resp.json()
    tracking, run_id = queued["audit_id"], queued["run_id"]
    audit_channel = f"audit-{tracking}"

    audit_b = SSEClient(f"{b_url}/api/realtime/audits/{tracking}", last_event_id="0", stop=is_audit_terminal)
    # both channels on one stream: an event on the two of them comes once
    multi_b = SSEClient(f"{b_url}/api/realtime/stream?channels=private-{audit_channel},{fiche_channel}",
                        last_event_id="0", stop=is_audit_terminal)
    run_b = SSEClient(f"{b_url}/api/runs/{run_id}/events", stop=lambda f: f["event"] in RUN_TERMINAL)
    for c in (audit_b, multi_b, run_b):
        c.start()
    clients_b = (audit_b, fiche_b, multi_b, run_b)

    # A few events in, replica B dies with SIGKILL: its chunked streams are cut, no closing frame.
    wait_for(lambda: min(len(audit_b.frames), len(fiche_b.frames), len(multi_b.frames)) >= 3 and len(run_b.frames) >= 1
             or any(c.error or c.finished for c in clients_b), 180, "three audit events through B")
    for c in clients_b:
        assert c.error is None and not c.finished, (c.url, c.error, [f["event"] for f in c.frames])
    os.killpg(replica_b.proc.pid, signal.SIGKILL)
    t_kill, t_kill_wall = time.monotonic(), time.time()
    replica_b.proc.wait(timeout=10)
    for c in clients_b:
        c.join(timeout=15)
        assert not c.is_alive(), c.url
        assert c.error is not None and not c.finished, f"{c.url}: the stream should have broken, not ended"
        assert not any(is_audit_terminal(f) or f["event"] in RUN_TERMINAL for f in c.frames)
    print(f"killed B after {len(audit_b.frames)} audit-channel, {len(fiche_b.frames)} fiche-channel, "
          f"{len(multi_b.frames)} two-channel, {len(run_b.frames)} run-relay frames ({t_kill - t0:.2f}s after the POST); B's client saw: {type(audit_b.error).__name__}")

    # Reconnect to replica A with the last id each client received.
    audit_a = SSEClient(f"{a_url}/api/realtime/audits/{tracking}", last_event_id=audit_b.frames[-1]["id"], stop=is_audit_terminal)
    fiche_a = SSEClient(f"{a_url}/api/realtime/fiches/{fiche_id}", last_event_id=fiche_b.frames[-1]["id"], stop=is_audit_terminal)
    multi_a = SSEClient(f"{a_url}/api/realtime/stream?channels={fiche_channel},{audit_channel}",
                        last_event_id=multi_b.frames[-1]["id"], stop=is_audit_terminal)
    run_a = SSEClient(f"{a_url}/api/runs/{run_id}/events", last_event_id=run_b.frames[-1]["id"],
                      stop=lambda f: f["event"] in RUN_TERMINAL)
    clients_a = (audit_a, fiche_a, multi_a, run_a)
    for c in clients_a:
        c.start()
    for c in clients_a:
        c.join(timeout=300)
        assert not c.is_alive() and c.error is None and c.finished, (c.url, c.error)
    t_end = time.monotonic()
    print(f"resumed on A {audit_a.ready_at - t_kill_wall:.2f}s after the kill; "
          f"terminal event {t_end - t0:.2f}s after the POST")

    # -- realtime channels: every row of the channel, once, in id order, across both replicas --
    assert audit_a.frames[-1]["event"] == "audit.completed", [f["event"] for f in audit_a.frames]
    assert fiche_a.frames[-1]["event"] == "audit.completed"
    audit_rows = channel_rows(audit_channel)
    fiche_rows = channel_rows(fiche_channel)
    expected_audit = check_exactly_once("audit channel", audit_b.frames, audit_a.frames, audit_rows)
    expected_fiche = check_exactly_once("fiche channel", fiche_b.frames, fiche_a.frames, fiche_rows)
    union_rows = sorted({r["id"]: r for r in audit_rows + fiche_rows}.values(), key=lambda r: r["id"])
    expected_multi = check_exactly_once("two-channel stream", multi_b.frames, multi_a.frames, union_rows)
    assert multi_a.frames[-1]["event"] == "audit.completed"
    assert len(expected_multi) < len(expected_audit) + len(expected_fiche)  # shared events came once
    assert expected_audit[-1]["id"] == audit_rows[-1]["id"], "an audit-channel event after audit.completed"
    assert fiche_rows[0]["id"] == expected_fiche[0]["id"]  # the live subscriber missed nothing at the start
    names = [r["name"] for r in expected_audit]
    assert names[0] == "audit.fiche_fetch_started" and "audit.started" in names
    assert all(n.startswith("audit.") for n in names)
    assert {n for n in (r["name"] for r in expected_fiche)} >= set(names)
    assert all(r["payload"]["audit_id"] == tracking for r in expected_audit)

    # -- Dagster run relay: ordinals 0..n once, and exactly what a full read from scratch gives --
    run_frames = run_b.frames + run_a.frames
    run_ids = [int(f["id"]) for f in run_frames]
    assert run_ids == list(range(len(run_ids))), run_ids
    assert run_frames[-1]["event"] == "RUN_SUCCESS"
    full = SSEClient(f"{a_url}/api/runs/{run_id}/events", stop=lambda f: f["event"] in RUN_TERMINAL)
    full.run()
    assert full.error is None and full.finished
    assert [(f["id"], f["event"], f["data"]) for f in full.frames] == [(f["id"], f["event"], f["data"]) for f in run_frames]

    # -- latency: events written while a client was subscribed (replays after the gap excluded) --
    by_id = {r["id"]: r for r in audit_rows + fiche_rows}
    live = [ms for c in (audit_b, fiche_b, multi_b, audit_a, fiche_a, multi_a) for ms in latencies_ms(c.frames, by_id, c.ready_at)]
    print(f"audit channel: {len(expected_audit)} events ({len(audit_b.frames)} via B, {len(audit_a.frames)} via A); "
          f"fiche channel: {len(expected_fiche)} ({len(fiche_b.frames)} via B, {len(fiche_a.frames)} via A); "
          f"two-channel stream: {len(expected_multi)} ({len(multi_b.frames)} via B, {len(multi_a.frames)} via A); "
          f"run relay: {len(run_frames)} ({len(run_b.frames)} via B, {len(run_a.frames)} via A)")
    print(f"realtime event-to-client latency (events.created_at → receipt, live events): {fmt(live)}")
    assert live, "no event was delivered live"
    run_live = []
    for c in (run_b, run_a):
        for f in c.frames:
            ts = dt.datetime.fromisoformat(f["data"]["timestamp"].replace("Z", "+00:00")).timestamp()
            if ts >= c.ready_at:
                run_live.append((f["received_at"] - ts) * 1000)
    print(f"run relay event-to-client latency (Dagster event timestamp → receipt, live events): {fmt(run_live)}")
