"""Benchmark ``sse`` (issue 9 §1): many concurrent realtime SSE clients on one API process.

    python -m bench.sse [--clients 500] [--distinct 50] [--rate 20] [--duration 30] \\
        [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

Set-up (real processes, real HTTP, real Postgres):

* a throw-away application database (``bench._db.BenchDatabase``) and the API as production runs
  it (``uvicorn api.app:create_app --factory``, one process, ``AUDITFLOW_AUTH=off``): one LISTEN
  connection (``api/event_bus.py``) fanning the ``events`` outbox out to every SSE client;
* ``--clients`` SSE clients in ``--client-procs`` asyncio processes: ``--clients - --distinct``
  on the shared channel ``/api/realtime/global`` and ``--distinct`` each on its own channel
  ``/api/realtime/audits/bench-<j>``. Each speaks HTTP/1.1 on an asyncio stream and decodes the
  chunked body itself (``--client raw``, default): with httpx streaming (``--client httpx``) one
  client process spent more CPU than the API and its lag became the measurement;
* once every client is subscribed (it received the ``retry:`` frame, sent after the subscription),
  a thread emits ``--rate`` events per second for ``--duration`` seconds through the real emitter
  (``auditflow_dagster.db.events.emit``: INSERT into ``events`` + ``pg_notify``, one transaction
  each). Event ``i`` goes to ``global`` and to ``audit-bench-<i mod distinct>``, with its sequence
  number and the wall-clock instant just before its transaction in the payload.

Measured: event-to-client latency of every delivery (commit + NOTIFY + bus read + fan-out +
framing + socket + client parse; client receive instant − emit instant, one machine clock),
deliveries lost and duplicated (both must be 0: every client knows which sequence numbers it is
owed; after the last emit the bench waits until everything arrived or nothing arrived for
``--drain`` seconds), frames out of id order, the API process's CPU (over the emission window) and RSS (idle, with
every client connected, peak), and — so the numbers are about the server — the clients' own event
loop lag (a 10 ms ticker per client process: how late it wakes). One JSON line, then a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import resource
import sys
import threading
import time
from array import array
from typing import Any

import httpx

from bench._util import ApiServer, pct

EVENT = "bench.tick"
GOAL_LOST = 0
GOAL_DUPLICATED = 0


# ------------------------------------------------------------------------------------------------
# clients (one asyncio loop per client process)
# ------------------------------------------------------------------------------------------------


def _client_urls(base: str, clients: int, distinct: int) -> list[tuple[str, int | None]]:
    """``(url, channel index)`` for every client; ``None`` = the shared channel."""
    out: list[tuple[str, int | None]] = [(f"{base}/api/realtime/audits/bench-{j}", j) for j in range(distinct)]
    out += [(f"{base}/api/realtime/global", None)] * (clients - distinct)
    return out


class ClientStats:
    def __init__(self) -> None:
        self.latencies = array("d")  # seconds
        self.seqs = array("l")  # the sequence number of each latency
        self.received: dict[int, int] = {}  # seq -> times received
        self.out_of_order = 0
        self.last_id = 0
        self.subscribed_at: float | None = None
        self.error: str | None = None


def _consume(buf: bytes, now: float, stats: ClientStats) -> bytes:
    """Parse the complete SSE frames at the start of ``buf``; returns the incomplete rest."""
    while True:
        end = buf.find(b"\n\n")
        if end < 0:
            return buf
        frame, buf = buf[:end], buf[end + 2:]
        event_id = name = data = None
        for line in frame.split(b"\n"):
            if line.startswith(b"data: "):
                data = line[6:]
            elif line.startswith(b"event: "):
                name = line[7:]
            elif line.startswith(b"id: "):
                event_id = int(line[4:])
            elif line.startswith(b"retry:") and stats.subscribed_at is None:
                stats.subscribed_at = now
        if name != _EVENT or data is None:
            continue
        payload = json.loads(data)
        seq = payload["seq"]
        stats.latencies.append(now - payload["emitted_at"])
        stats.seqs.append(seq)
        stats.received[seq] = stats.received.get(seq, 0) + 1
        if event_id is not None:
            if event_id <= stats.last_id:
                stats.out_of_order += 1
            stats.last_id = max(stats.last_id, event_id)


_EVENT = EVENT.encode()


async def _one_client_httpx(http: httpx.AsyncClient, url: str, stats: ClientStats, stop: asyncio.Event) -> None:
    try:
        async with http.stream("GET", url, headers={"Accept": "text/event-stream"}) as resp:
            if resp.status_code != 200:
                stats.error = f"HTTP {resp.status_code}"
                return
            buf = b""
            async for chunk in resp.aiter_raw():
                buf = _consume(buf + chunk, time.time(), stats)  # time: when the bytes reached the client
                if stop.is_set():
                    return
    except (httpx.HTTPError, OSError) as exc:
        if not stop.is_set():
            stats.error = f"{type(exc).__name__}: {exc}"[:200]


async def _one_client_raw(url: str, stats: ClientStats, stop: asyncio.Event) -> None:
    """HTTP/1.1 over an asyncio stream, chunked transfer decoded by hand: a fraction of httpx's
    per-chunk cost, so one client process keeps up with thousands of frames a second."""
    u = httpx.URL(url)
    writer = None
    try:
        reader, writer = await asyncio.open_connection(u.host, u.port, limit=2**20)
        writer.write(f"GET {u.raw_path.decode()} HTTP/1.1\r\nHost: {u.host}:{u.port}\r\n"
                     "Accept: text/event-stream\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 200:
            stats.error = f"HTTP {status}"
            return
        chunked = b"transfer-encoding: chunked" in head.lower()
        raw = body = b""
        while not stop.is_set():
            data = await reader.read(1 << 16)
            if not data:
                return
            now = time.time()  # when the bytes reached the client, before any parsing
            if not chunked:
                body = _consume(body + data, now, stats)
                continue
            raw += data
            while True:
                i = raw.find(b"\r\n")
                if i < 0:
                    break
                size = int(raw[:i].split(b";", 1)[0], 16)
                if len(raw) < i + 4 + size:
                    break
                body += raw[i + 2:i + 2 + size]
                raw = raw[i + 4 + size:]
                if size == 0:
                    return
            body = _consume(body, now, stats)
    except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
        if not stop.is_set():
            stats.error = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        if writer is not None:
            writer.close()


async def _clients_main(urls: list[tuple[str, int | None]], conn: Any, kind: str) -> None:
    stop = asyncio.Event()
    stats = [ClientStats() for _ in urls]
    lag = array("d")

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            t = loop.time()
            await asyncio.sleep(0.01)
            lag.append(loop.time() - t - 0.01)

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30.0, read=None)) as http:
        tasks = []
        for (url, _), st in zip(urls, stats, strict=True):
            one = _one_client_raw(url, st, stop) if kind == "raw" else _one_client_httpx(http, url, st, stop)
            tasks.append(asyncio.create_task(one))
            await asyncio.sleep(0)  # a gentle ramp: one connect per loop turn
        lag_task = asyncio.create_task(ticker())
        # report subscriptions until the parent says "emitting" / "stop"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while loop.time() < deadline:
            subscribed = sum(1 for s in stats if s.subscribed_at is not None)
            failed = sum(1 for s in stats if s.error is not None)
            conn.send(("subscribed", subscribed, failed))
            if subscribed + failed >= len(stats):
                break
            await asyncio.sleep(0.1)
        del lag[:]  # lag while connecting is not what we report
        while True:  # wait for "stop" (sent after the drain)
            if await loop.run_in_executor(None, conn.poll, 0.2):
                msg = conn.recv()
                if msg == "stop":
                    break
            if msg_progress := sum(len(s.received) for s in stats):
                conn.send(("progress", msg_progress))
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, lag_task, return_exceptions=True)
    conn.send(("result", [(u[1], s.latencies, s.seqs, s.received, s.out_of_order, s.error, s.subscribed_at)
                          for u, s in zip(urls, stats, strict=True)], lag))


def _client_process(urls: list[tuple[str, int | None]], conn: Any, kind: str) -> None:
    asyncio.run(_clients_main(urls, conn, kind))


# ------------------------------------------------------------------------------------------------
# emitter (the real one) and the API process sampler
# ------------------------------------------------------------------------------------------------


def emit_steadily(rate: float, duration: float, distinct: int, log: list[tuple[int, float, float]]) -> None:
    """``rate`` events a second on an absolute schedule; ``log`` gets ``(seq, emitted_at, commit_s)``."""
    from auditflow_dagster.db.events import emit
    from auditflow_dagster.db.session import session_scope

    n = int(rate * duration)
    t0 = time.monotonic()
    for i in range(n):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        channels = ["global", f"audit-bench-{i % distinct}"] if distinct else ["global"]
        emitted_at = time.time()
        with session_scope() as s:
            emit(s, EVENT, {"seq": i, "emitted_at": emitted_at, "audit_id": f"bench-{i % max(1, distinct)}"}, channels)
        log.append((i, emitted_at, time.time() - emitted_at))


class ProcSampler:
    """RSS (peak) and CPU seconds of one process, sampled every ``interval``."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak_rss = 0
        self.rss_samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def rss(self) -> int:
        return self.proc.memory_info().rss

    def cpu(self) -> float:
        t = self.proc.cpu_times()
        return t.user + t.system

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                r = self.rss()
                self.peak_rss = max(self.peak_rss, r)
                self.rss_samples.append(r)
            self._stop.wait(self.interval)

    def __enter__(self) -> ProcSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# ------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    notes: list[str] = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.clients * 2 + 256  # client sockets here and their server ends in the API (a child)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    os.environ["AUDITFLOW_AUTH"] = "off"
    with ApiServer() as api:
        import psutil

        api_proc = psutil.Process(api.proc.pid)
        MB = 2**20
        rss_idle = api_proc.memory_info().rss
        urls = _client_urls(api.url, args.clients, args.distinct)
        chunks = [urls[k::args.client_procs] for k in range(args.client_procs)]
        ctx = mp.get_context("spawn")
        pipes, procs = [], []
        load_start = os.getloadavg()
        t_connect = time.monotonic()
        for chunk in chunks:
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_client_process, args=(chunk, child, args.client), daemon=True)
            p.start()
            pipes.append(parent)
            procs.append(p)
        with ProcSampler(api.proc.pid) as sampler:
            subscribed = [0] * len(procs)
            failed = [0] * len(procs)
            deadline = time.monotonic() + 150
            while sum(subscribed) + sum(failed) < args.clients and time.monotonic() < deadline:
                if dead := [p for p in procs if not p.is_alive()]:
                    raise RuntimeError(f"client process {dead[0].pid} died (exit code {dead[0].exitcode})")
                for k, conn in enumerate(pipes):
                    while conn.poll(0.05):
                        msg = conn.recv()
                        if msg[0] == "subscribed":
                            subscribed[k], failed[k] = msg[1], msg[2]
            connect_s = time.monotonic() - t_connect
            if sum(subscribed) < args.clients:
                notes.append(f"only {sum(subscribed)}/{args.clients} clients subscribed ({sum(failed)} failed)")
            time.sleep(1.0)  # let the last subscriptions settle
            rss_connected = api_proc.memory_info().rss
            log: list[tuple[int, float, float]] = []
            cpu0, wall0 = sampler.cpu(), time.monotonic()
            emitter = threading.Thread(target=emit_steadily, args=(args.rate, args.duration, args.distinct, log))
            emitter.start()
            while emitter.is_alive():
                for conn in pipes:
                    while conn.poll():
                        conn.recv()  # progress messages
                emitter.join(0.2)
            emit_wall = time.monotonic() - wall0
            cpu_emit = sampler.cpu() - cpu0
            n_events = len(log)
            expected_total = n_events * (args.clients - args.distinct) + n_events * (1 if args.distinct else 0)
            # drain: until every delivery arrived, or none arrived for --drain seconds (what is
            # still missing then is lost), at most --drain-max seconds
            got = [0] * len(procs)
            last_total, last_change = -1, time.monotonic()
            drain_end = time.monotonic() + args.drain_max
            while time.monotonic() < drain_end:
                for k, conn in enumerate(pipes):
                    while conn.poll():
                        msg = conn.recv()
                        if msg[0] == "progress":
                            got[k] = msg[1]
                if sum(got) >= expected_total:
                    break
                if sum(got) != last_total:
                    last_total, last_change = sum(got), time.monotonic()
                elif time.monotonic() - last_change > args.drain:
                    break
                time.sleep(0.1)
            drain_s = time.monotonic() - wall0 - emit_wall
            cpu_total = sampler.cpu() - cpu0
            peak_rss = sampler.peak_rss
        results: list[Any] = []
        lags = array("d")
        for conn in pipes:
            conn.send("stop")
        for conn, p in zip(pipes, procs, strict=True):
            while True:
                if not conn.poll(1.0):
                    if not p.is_alive():
                        raise RuntimeError(f"client process {p.pid} died (exit code {p.exitcode})")
                    continue
                msg = conn.recv()
                if msg[0] == "result":
                    results.extend(msg[1])
                    lags.extend(msg[2])
                    break
            p.join(timeout=30)
        load_end = os.getloadavg()

    # ---- per-client accounting -------------------------------------------------------------
    seqs = [s for s, _, _ in log]
    lat_ms: list[float] = []
    lost = duplicated = out_of_order = errors = 0
    per_client_lost: list[int] = []
    by_tenth: list[list[float]] = [[] for _ in range(10)]
    for channel, latencies, seqs_of, received, ooo, error, _ in results:
        for lat, sq in zip(latencies, seqs_of, strict=True):
            by_tenth[min(9, sq * 10 // max(1, len(seqs)))].append(lat * 1000)
        owed = set(seqs) if channel is None else {s for s in seqs if s % args.distinct == channel}
        missing = len(owed - set(received))
        lost += missing
        per_client_lost.append(missing)
        duplicated += sum(n - 1 for n in received.values() if n > 1)
        duplicated += sum(n for s, n in received.items() if s not in owed)  # delivered to the wrong client
        out_of_order += ooo
        errors += error is not None
        lat_ms.extend(x * 1000 for x in latencies)
    commit_ms = [c * 1000 for _, _, c in log]
    lag_ms = [x * 1000 for x in lags]
    deliveries = len(lat_ms)
    result: dict[str, Any] = {
        "bench": "sse", "clients": args.clients, "shared_channel_clients": args.clients - args.distinct,
        "distinct_channel_clients": args.distinct, "client_procs": args.client_procs,
        "rate_per_s": args.rate, "duration_s": args.duration, "events": n_events,
        "deliveries_expected": expected_total, "deliveries": deliveries,
        "lost": lost, "duplicated": duplicated, "out_of_order": out_of_order, "client_errors": errors,
        "clients_with_loss": sum(1 for x in per_client_lost if x),
        "latency_p50_ms": round(pct(lat_ms, 50), 2), "latency_p90_ms": round(pct(lat_ms, 90), 2),
        "latency_p99_ms": round(pct(lat_ms, 99), 2), "latency_max_ms": round(max(lat_ms), 2) if lat_ms else None,
        "latency_p50_ms_by_tenth_of_run": [round(pct(t, 50), 1) for t in by_tenth],
        "emit_commit_p50_ms": round(pct(commit_ms, 50), 2), "emit_commit_max_ms": round(max(commit_ms), 2) if commit_ms else None,
        "emit_wall_s": round(emit_wall, 2), "deliveries_per_s": round(deliveries / emit_wall, 1) if emit_wall else None,
        "connect_all_s": round(connect_s, 2), "drain_s": round(drain_s, 2), "client": args.client,
        "api_cpu_pct_emitting": round(100 * cpu_emit / emit_wall, 1) if emit_wall else None,
        "api_cpu_s_total": round(cpu_total, 2),
        "api_rss_idle_mb": round(rss_idle / MB, 1), "api_rss_connected_mb": round(rss_connected / MB, 1),
        "api_rss_peak_mb": round(peak_rss / MB, 1),
        "api_rss_per_client_kb": round((rss_connected - rss_idle) / 1024 / max(1, args.clients), 1),
        "client_loop_lag_p50_ms": round(pct(lag_ms, 50), 2), "client_loop_lag_p99_ms": round(pct(lag_ms, 99), 2),
        "client_loop_lag_max_ms": round(max(lag_ms), 2) if lag_ms else None,
        "cpus": os.cpu_count(), "load_avg_1m_start": round(load_start[0], 2), "load_avg_1m_end": round(load_end[0], 2),
        "goal_lost": GOAL_LOST, "goal_duplicated": GOAL_DUPLICATED,
    }
    return result, notes


def _human(r: dict[str, Any], notes: list[str]) -> None:
    ok = r["lost"] == GOAL_LOST and r["duplicated"] == GOAL_DUPLICATED
    lines = [
        "",
        f"sse — {r['clients']} SSE clients on one API process ({r['shared_channel_clients']} on global, "
        f"{r['distinct_channel_clients']} on their own audit channel; {r['client_procs']} client process(es)); "
        f"{r['events']} events at {r['rate_per_s']}/s through db.events.emit; {r['cpus']} CPUs, load average "
        f"{r['load_avg_1m_start']} → {r['load_avg_1m_end']}",
        f"  deliveries {r['deliveries']:,}/{r['deliveries_expected']:,} ({r['deliveries_per_s']:,}/s): lost {r['lost']}, "
        f"duplicated {r['duplicated']}, out of order {r['out_of_order']}, client errors {r['client_errors']}; "
        f"last delivery {r['drain_s']} s after the last emit"
        f" → {'OK' if ok else 'NOT OK'} (goal 0 lost, 0 duplicated)",
        f"  event → client latency: p50 {r['latency_p50_ms']} ms  p90 {r['latency_p90_ms']} ms  p99 {r['latency_p99_ms']} ms  "
        f"max {r['latency_max_ms']} ms (emit transaction p50 {r['emit_commit_p50_ms']} ms); p50 by tenth of the run: "
        + " ".join(str(x) for x in r["latency_p50_ms_by_tenth_of_run"]) + " ms",
        f"  API process: CPU {r['api_cpu_pct_emitting']} % of a core while emitting; RSS {r['api_rss_idle_mb']} MB idle → "
        f"{r['api_rss_connected_mb']} MB with every client connected (≈ {r['api_rss_per_client_kb']} KB/client), "
        f"peak {r['api_rss_peak_mb']} MB; all clients subscribed in {r['connect_all_s']} s",
        f"  client event-loop lag (what the clients add): p50 {r['client_loop_lag_p50_ms']} ms  "
        f"p99 {r['client_loop_lag_p99_ms']} ms  max {r['client_loop_lag_max_ms']} ms",
    ]
    lines += [f"  note: {n}" for n in notes]
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=500)
    ap.add_argument("--distinct", type=int, default=50, help="clients each on their own channel (the rest share global)")
    ap.add_argument("--rate", type=float, default=20.0, help="events per second")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of emission")
    ap.add_argument("--drain", type=float, default=10.0, help="after the last emit: stop waiting once no delivery "
                    "arrived for this long")
    ap.add_argument("--drain-max", type=float, default=300.0, help="after the last emit: stop waiting after this long")
    ap.add_argument("--client", choices=("raw", "httpx"), default="raw",
                    help="SSE client: HTTP/1.1 on asyncio streams (default) or httpx streaming")
    ap.add_argument("--client-procs", type=int, default=1)
    ap.add_argument("--database-url", default=os.environ.get("AUDITFLOW_BENCH_DATABASE_URL"))
    ap.add_argument("--keep", action="store_true", help="keep the database")
    args = ap.parse_args(argv)
    args.distinct = max(0, min(args.distinct, args.clients))
    args.client_procs = max(1, min(args.client_procs, args.clients))

    from bench._db import BenchDatabase

    with BenchDatabase(args.database_url, keep=args.keep) as db:
        result, notes = run(args)
        result["database_dropped"] = not db.keep
    print(json.dumps(result, separators=(",", ":")), flush=True)
    _human(result, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
