"""Benchmark ``interactive`` (issue 9 §1): one audit asked for through the API, as a user does —
how long until the client sees the first step, and the end — against the same asset run in process.

    python -m bench.interactive [--audits 20] [--baseline 5] [--llm-s 0.5] [--llm-cap 16] \\
        [--database-url postgresql://postgres@127.0.0.1:5432/postgres] [--py-spy]

Set-up (real processes, real HTTP, real Postgres):

* the whole stack (``auditflow_dagster.stack.Stack``: synthetic CRM, Dagster webserver + daemon
  with the repository's ``dagster.yaml``, API with ``AUDITFLOW_AUTH=off``) on throw-away app and
  Dagster databases, the real ``openai`` client against the fake Responses server
  (``tests/fakes/openai_timed.py``) answering after ``--llm-s`` (500 ms), LLM cap ``--llm-cap``
  (16), one 18-step audit config (``bench._stack.eighteen_step_config``);
* a synthetic CRM day already cached and transcribed: ``fiche_details`` + ``transcripts`` of the
  day's auditable fiches materialized in process before the stack starts (sample CRM/STT: the same
  synthetic data the CRM app serves), so an audit's forced details refresh is answered from the
  cache (``FICHE_FORCE_REFRESH_COOLDOWN_MS``) and nothing is transcribed again.

Then, one after the other (after ``--warmup`` unmeasured audits), ``--audits`` times:
``POST /api/audits/run {fiche_id, audit_config_id}`` for a different cached fiche, with the client
already subscribed to the fiche's realtime channel (``/api/realtime/fiches/{id}``) and opening the
run relay (``/api/runs/{run_id}/events``) as soon as the POST answers. Measured from the instant
the POST is sent, as the client observes it over SSE:

* realtime: first ``audit.step_started`` (the first LLM step) and ``audit.completed``;
* run relay: first ``STEP_START`` (the job's first op, ``fiche_details``) and the terminal event.

Baseline: ``audit_step_results`` + ``audits`` for one cached fiche materialized in process
(``dagster.materialize``, as ``bench/audit_step.py`` does, ephemeral instance, same fake LLM and
cap): time to its first ``STEP_START`` (Dagster event log), to the first ``audit.step_started``
(outbox) and the total.

Profile: every measured run's Dagster event log (GraphQL ``logsForRun``) gives where the time
between the POST and the first step goes — API (partition + launch) → ``RUN_ENQUEUED``, queue and
launch (``QueuedRunCoordinator``, ``dequeue_interval_seconds``; Dagster 1.13 logs no dequeue event)
→ ``RUN_STARTING``, run process start-up (a ``multiprocessing`` spawn child of the daemon's code
server: interpreter, ``import dagster``, instance) → ``Started process for run``, code location
load (``import auditflow_dagster.definitions``, the job) → ``RUN_START``, executor + resources →
first ``STEP_START``, then the ``fiche_details``/``transcripts`` steps and ``audit_step_results``
up to its first LLM step. The import cost of the code location is measured separately in fresh
interpreters (``dagster``, ``pandas``, ``openai``, ``auditflow_dagster.definitions``), and
``--py-spy`` samples the daemon and its descendants during one extra audit (``py-spy record
--subprocesses``), summarized by where the run process spends its samples.

One JSON line, then a human summary (goal: first-step p50 ≤ 2.5 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx

from bench._util import pct

DAY = dt.date(2026, 3, 18)
GOAL_FIRST_STEP_P50_S = 2.5
LOGS_QUERY = """
query($runId: ID!, $after: String) {
  logsForRun(runId: $runId, afterCursor: $after, limit: 1000) {
    __typename
    ... on EventConnection { cursor hasMore events { __typename
        ... on MessageEvent { message timestamp eventType stepKey } } }
  }
}
"""


def stats_s(values: list[float], prefix: str) -> dict[str, float | None]:
    if not values:
        return {f"{prefix}_p50_s": None, f"{prefix}_p90_s": None, f"{prefix}_max_s": None}
    return {f"{prefix}_p50_s": round(pct(values, 50), 3), f"{prefix}_p90_s": round(pct(values, 90), 3),
            f"{prefix}_max_s": round(max(values), 3)}


# ------------------------------------------------------------------------------------------------
# set-up: a cached, transcribed day
# ------------------------------------------------------------------------------------------------


def auditable_fiches(n: int) -> list[str]:
    from auditflow_dagster.sample import generator

    out: list[str] = []
    day = DAY
    while len(out) < n:
        out += [f["id"] for f in generator.fiches_for_day(day) if (generator.expected_audit(f["id"]) or {}).get("auditable")]
        day += dt.timedelta(days=1)
    return out[:n]


def cache_and_transcribe(fiches: list[str]) -> float:
    """``fiche_details`` + ``transcripts`` of each fiche, in process (sample CRM and STT)."""
    from dagster import DagsterInstance, materialize

    from auditflow_dagster.assets.fiches import fiche_details
    from auditflow_dagster.assets.transcripts import transcripts
    from auditflow_dagster.resources.crm import CrmResource
    from auditflow_dagster.resources.database import DatabaseResource
    from auditflow_dagster.resources.stt import SttResource

    t0 = time.perf_counter()
    resources = {"crm": CrmResource(mode="sample"), "stt": SttResource(mode="sample"), "db": DatabaseResource()}
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("fiches", fiches)
        for fid in fiches:
            assert materialize([fiche_details, transcripts], partition_key=fid, instance=instance, resources=resources,
                               raise_on_error=True).success
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------
# one audit through the API, observed over SSE
# ------------------------------------------------------------------------------------------------


async def _sse(client: httpx.AsyncClient, url: str, on_event: Any, subscribed: asyncio.Event | None = None) -> None:
    async with client.stream("GET", url, headers={"Accept": "text/event-stream"}) as resp:
        resp.raise_for_status()
        buf = ""
        async for chunk in resp.aiter_text():
            now = time.time()
            buf += chunk
            while "\n\n" in buf:
                frame, buf = buf.split("\n\n", 1)
                name, data = None, None
                for line in frame.split("\n"):
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        data = line[6:]
                    elif line.startswith("retry:") and subscribed is not None:
                        subscribed.set()
                if name is not None and on_event(name, json.loads(data) if data else None, now):
                    return


async def one_audit(api: str, fiche_id: str, config_id: int, timeout: float) -> dict[str, Any]:
    out: dict[str, Any] = {"fiche_id": fiche_id}
    rt: dict[str, float] = {}
    relay: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=api, timeout=httpx.Timeout(30.0, read=None)) as client:
        subscribed = asyncio.Event()

        def on_realtime(name: str, payload: Any, now: float) -> bool:
            if isinstance(payload, dict) and payload.get("audit_id") == out.get("tracking_id"):
                rt.setdefault(name, now)
            return name in ("audit.completed", "audit.failed") and name in rt

        def on_relay(name: str, payload: Any, now: float) -> bool:
            relay.setdefault(name, now)
            if name == "STEP_START":
                relay.setdefault("first_step_key", (payload or {}).get("step_key"))
            if name in ("RUN_SUCCESS", "RUN_FAILURE", "RUN_CANCELED"):
                relay["terminal"], relay["outcome"] = now, name
                return True
            return False

        rt_task = asyncio.create_task(_sse(client, f"/api/realtime/fiches/{fiche_id}", on_realtime, subscribed))
        await asyncio.wait_for(subscribed.wait(), 30)
        t0 = time.time()
        resp = await client.post("/api/audits/run", json={"fiche_id": fiche_id, "audit_config_id": config_id})
        t_post = time.time()
        resp.raise_for_status()
        body = resp.json()
        out.update(run_id=body["run_id"], tracking_id=body["audit_id"], t0=t0, post_s=t_post - t0)
        relay_task = asyncio.create_task(_sse(client, f"/api/runs/{body['run_id']}/events", on_relay))
        try:
            await asyncio.wait_for(asyncio.gather(rt_task, relay_task), timeout)
        except TimeoutError:
            out["timed_out"] = True
        finally:
            for t in (rt_task, relay_task):
                t.cancel()
            await asyncio.gather(rt_task, relay_task, return_exceptions=True)

    def since(t: float | None) -> float | None:
        return None if t is None else round(t - t0, 3)

    out.update(
        rt_first_event_s=since(min(rt.values()) if rt else None),
        rt_first_step_s=since(rt.get("audit.step_started")),
        rt_terminal_s=since(rt.get("audit.completed") or rt.get("audit.failed")),
        rt_outcome="audit.completed" if "audit.completed" in rt else ("audit.failed" if "audit.failed" in rt else None),
        relay_first_step_s=since(relay.get("STEP_START")), relay_first_step_key=relay.get("first_step_key"),
        relay_terminal_s=since(relay.get("terminal")), relay_outcome=relay.get("outcome"),
        from_cache=None,
    )
    return out


def run_log(dagster_url: str, run_id: str) -> list[dict[str, Any]]:
    events, after = [], None
    while True:
        data = httpx.post(f"{dagster_url}/graphql", json={"query": LOGS_QUERY, "variables": {"runId": run_id, "after": after}},
                          timeout=60).json()["data"]["logsForRun"]
        events += data["events"]
        after = data["cursor"]
        if not data["hasMore"]:
            return events


def outbox_times(tracking_id: str) -> dict[str, float]:
    """First ``created_at`` (epoch seconds) of each event name of one audit, from the outbox."""
    from sqlalchemy import func, select

    from auditflow_dagster.db.models import Event
    from auditflow_dagster.db.session import session_scope

    with session_scope() as s:
        rows = s.execute(select(Event.name, func.min(Event.created_at)).where(Event.channels.contains([f"audit-{tracking_id}"]))
                         .group_by(Event.name)).all()
        payloads = s.scalars(select(Event.payload).where(Event.channels.contains([f"audit-{tracking_id}"]),
                                                         Event.name == "audit.fiche_fetch_completed")).all()
    out = {n: t.replace(tzinfo=dt.UTC).timestamp() for n, t in rows}
    if payloads:
        out["_from_cache"] = float(bool(payloads[0].get("from_cache")))
    return out


# ------------------------------------------------------------------------------------------------
# profile: where the time between the POST and the first step goes
# ------------------------------------------------------------------------------------------------

PHASES = [
    ("api: POST → RUN_ENQUEUED (partition + launchRun via GraphQL)", "t0", "RUN_ENQUEUED"),
    ("queue + launch: RUN_ENQUEUED → RUN_STARTING (daemon dequeue loop, code server StartRun)", "RUN_ENQUEUED",
     "RUN_STARTING"),
    ("run process: RUN_STARTING → 'Started process' (spawn, import dagster, instance)", "RUN_STARTING",
     "PROCESS_STARTED"),
    ("run process: 'Started process' → RUN_START (code location: import auditflow_dagster.definitions, job)",
     "PROCESS_STARTED", "RUN_START"),
    ("executor + resources: RUN_START → first STEP_START", "RUN_START", "STEP_START"),
    ("fiche_details + transcripts steps (cached): → STEP_START audit_step_results", "STEP_START", "STEP_START:audit_step_results"),
    ("audit_step_results: step start → first audit.step_started (config, snapshot, LLM client)",
     "STEP_START:audit_step_results", "audit.step_started"),
    ("steps + finalizer + checks: first audit.step_started → RUN_SUCCESS", "audit.step_started", "RUN_SUCCESS"),
]


def marks_of(log: list[dict[str, Any]], t0: float, outbox: dict[str, float]) -> dict[str, float]:
    marks: dict[str, float] = {"t0": t0}
    for ev in log:
        et, ts = ev.get("eventType"), ev.get("timestamp")
        if ts is None:
            continue
        t = int(ts) / 1000
        if et:
            marks.setdefault(et, t)
            if et == "STEP_START" and ev.get("stepKey"):
                marks.setdefault(f"STEP_START:{ev['stepKey']}", t)
        msg = ev.get("message") or ""
        if msg.startswith("Started process for run"):
            marks.setdefault("PROCESS_STARTED", t)
    if "audit.step_started" in outbox:
        marks["audit.step_started"] = outbox["audit.step_started"]
    return marks


def breakdown(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for label, a, b in PHASES:
        vals = [r["marks"][b] - r["marks"][a] for r in runs if a in r["marks"] and b in r["marks"]]
        if vals:
            rows.append({"phase": label, "p50_s": round(statistics.median(vals), 3), "max_s": round(max(vals), 3),
                         "n": len(vals)})
    return rows


def import_costs(repeats: int = 3) -> dict[str, float]:
    """Median seconds, in fresh interpreters, of what the run process imports before its first step."""
    code = ("import time,json,sys\nt=time.perf_counter();import dagster;a=time.perf_counter()\n"
            "import pandas;b=time.perf_counter()\nimport openai;c=time.perf_counter()\n"
            "import auditflow_dagster.definitions;d=time.perf_counter()\n"
            "print(json.dumps({'dagster':a-t,'pandas':b-a,'openai':c-b,'definitions_rest':d-c}))")
    code_defs = ("import time,json,sys\nt=time.perf_counter();import auditflow_dagster.definitions;d=time.perf_counter()\n"
                 "print(json.dumps({'definitions_total':d-t,'pandas_loaded':'pandas' in sys.modules,"
                 "'openai_loaded':'openai' in sys.modules}))")
    parts: dict[str, list[float]] = defaultdict(list)
    flags: dict[str, Any] = {}
    from auditflow_dagster.stack import REPO_ROOT

    for _ in range(repeats):
        for c in (code, code_defs):
            t = time.perf_counter()
            res = subprocess.run([sys.executable, "-c", c], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
            wall = time.perf_counter() - t
            for k, v in json.loads(res.stdout).items():
                if isinstance(v, bool):
                    flags[k] = v
                else:
                    parts[k].append(v)
            if c is code_defs:
                parts["interpreter_plus_definitions"].append(wall)
    return {**{k: round(statistics.median(v), 3) for k, v in parts.items()}, **flags}


def _package(frame: str) -> str | None:
    """``<module> (pandas/core/frame.py:1)`` → ``pandas``; our code → ``auditflow_dagster``."""
    path = frame[frame.rfind("(") + 1:]
    path = path.split("/site-packages/", 1)[-1]
    top = path.split("/", 1)[0].split(".", 1)[0]
    return top if "/" in path else None


def py_spy_summary(raw: Path) -> dict[str, Any]:
    """Collapsed stacks (``py-spy record --subprocesses --format raw``) of the run process (the
    ``multiprocessing`` spawn child of the daemon's code server) → share of its samples by phase:
    the code location import (``auditflow_dagster.definitions``, split by the first third-party
    package it entered), instance/storage set-up, the other imports of the spawn bootstrap
    (``import dagster`` for the main module and the pickled arguments), run execution, other."""
    buckets: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit() or "spawn_main" not in stack:
            continue
        count = int(n)
        total += count
        frames = [f for f in stack.split(";") if not f.startswith("process ") and f.endswith(")")]
        importing = any("_find_and_load" in f for f in frames)
        defs = next((i for i, f in enumerate(frames) if "auditflow_dagster/definitions.py" in f), None)
        if defs is not None and importing:
            inner = [_package(f) for f in frames[defs + 1:] if f.startswith("<module>")]
            third = next((p for p in inner if p and p != "auditflow_dagster"), None)
            key = f"code location import → {third}" if third else "code location import → auditflow_dagster modules"
        elif any("from_ref" in f or "Storage.__init__" in f or "_init_db" in f for f in frames):
            key = "instance / storage set-up"
        elif importing:
            key = "spawn bootstrap imports (dagster, grpc, sqlalchemy …)"
        elif any("execute_run_iterator" in f or "execute_plan" in f or "dagster_event_sequence_for_step" in f for f in frames):
            key = "run execution (executor, steps, event log writes)"
        else:
            key = "other (threads, waits)"
        buckets[key] += count
    return {"samples": total, "share_pct": {k: round(100 * v / total, 1) for k, v in buckets.most_common()} if total else {}}


# ------------------------------------------------------------------------------------------------
# baseline: the same assets in process
# ------------------------------------------------------------------------------------------------


def baseline(fiches: list[str], config_id: int, llm_base: str, api_key: str, warmup: int) -> list[dict[str, Any]]:
    from dagster import DagsterEventType, DagsterInstance, materialize

    from auditflow_dagster.assets.audits import audit_step_results, audits
    from auditflow_dagster.resources.database import DatabaseResource
    from auditflow_dagster.resources.llm import LlmResource

    out = []
    llm = LlmResource(mode="openai", api_key=api_key, base_url=llm_base)
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("fiches", fiches)
        for i, fid in enumerate(fiches):
            tracking = f"bench-baseline-{i}-{int(time.time() * 1000)}"
            t0 = time.time()
            result = materialize([audit_step_results, audits], partition_key=fid, instance=instance,
                                 resources={"llm": llm, "db": DatabaseResource()},
                                 run_config={"ops": {"audit_step_results": {"config": {
                                     "audit_config_ids": [config_id], "audit_tracking_ids": {fid: tracking},
                                     "trigger_source": "api", "skip_if_audited": False}}}})
            total = time.time() - t0
            starts = instance.all_logs(result.run_id, of_type=DagsterEventType.STEP_START)
            first = min((e.timestamp for e in starts), default=None)
            ob = outbox_times(tracking)
            if i < warmup:
                continue
            out.append({"fiche_id": fid, "success": result.success, "total_s": round(total, 3),
                        "first_dagster_step_s": round(first - t0, 3) if first else None,
                        "first_llm_step_s": round(ob["audit.step_started"] - t0, 3) if "audit.step_started" in ob else None,
                        "completed": "audit.completed" in ob})
    return out


# ------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, app_url: str, dagster_db_url: str) -> tuple[dict[str, Any], list[str]]:
    from tests.fakes.openai_timed import TimedFakeOpenAI
    from tests.fakes.server import serve_app

    notes: list[str] = []
    key = "sk-bench-fake-key-0000000000"
    fake = TimedFakeOpenAI(delay=args.llm_s, api_key=key)
    spy_runs = 1 if args.py_spy else 0
    fiches = auditable_fiches(args.warmup + args.audits + spy_runs)
    base_fiches = fiches[: args.baseline_warmup + args.baseline]
    result: dict[str, Any] = {"bench": "interactive", "audits": args.audits, "warmup": args.warmup, "llm_s": args.llm_s,
                              "llm_cap": args.llm_cap, "steps": 18, "cpus": os.cpu_count()}
    with serve_app(fake.app) as llm_url:
        os.environ.update({
            "AUDITFLOW_DATABASE_URL": app_url, "AUDITFLOW_DAGSTER_PG_URL": dagster_db_url, "AUDITFLOW_AUTH": "off",
            "AUDITFLOW_CRM": "http", "AUDITFLOW_STT": "sample", "AUDITFLOW_LLM": "openai", "OPENAI_API_KEY": key,
            "OPENAI_BASE_URL": f"{llm_url}/v1", "AUDITFLOW_LLM_CONCURRENCY": str(args.llm_cap),
        })
        os.environ.pop("FICHE_API_BASE_URL", None)
        from auditflow_dagster.settings import get_settings

        get_settings.cache_clear()
        from auditflow_dagster.db.session import session_scope
        from auditflow_dagster.stack import Stack, prepare_database
        from bench._stack import ProcessTreeSampler, eighteen_step_config

        prepare_database()
        with session_scope() as s:
            config_id = eighteen_step_config(s)
        print(f"caching and transcribing {len(fiches)} fiches …", file=sys.stderr, flush=True)
        result["cache_and_transcribe_s"] = round(cache_and_transcribe(fiches), 1)
        log_dir = Path(tempfile.mkdtemp(prefix="af_bench_interactive_"))
        stack = Stack(log_dir=log_dir)
        t_stack = time.monotonic()
        with stack:
            result["stack_start_s"] = round(time.monotonic() - t_stack, 1)
            children = {c.name: c.proc.pid for c in stack.children}
            runs: list[dict[str, Any]] = []
            load_start = os.getloadavg()
            with ProcessTreeSampler([pid for name, pid in children.items() if name != "crm"]) as sampler:
                for i, fid in enumerate(fiches[: args.warmup + args.audits]):
                    r = asyncio.run(one_audit(stack.api_url, fid, config_id, args.timeout))
                    tag = "warm-up" if i < args.warmup else f"{i - args.warmup + 1}/{args.audits}"
                    print(f"  audit {tag}: first step (relay) {r['relay_first_step_s']} s, first LLM step (realtime) "
                          f"{r['rt_first_step_s']} s, done {r['rt_terminal_s']} s", file=sys.stderr, flush=True)
                    if i < args.warmup:
                        continue
                    ob = outbox_times(r["tracking_id"])
                    r["from_cache"] = bool(ob.get("_from_cache"))
                    log = run_log(stack.dagster_url, r["run_id"])
                    if args.dump_log and not runs:
                        Path(args.dump_log).write_text(json.dumps({"t0": r["t0"], "outbox": ob, "log": log}, indent=1))
                    r["marks"] = marks_of(log, r["t0"], ob)
                    runs.append(r)
            load_end = os.getloadavg()
            result.update(stack_peak_rss_mb=round(sampler.peak_rss / 2**20, 1), stack_cpu_s=round(sampler.cpu_seconds, 1))
            if args.py_spy:
                result["py_spy"] = spy_one(stack, children, fiches[-1], config_id, args, notes)
            other = [r for r in _all_runs(stack.dagster_url) if r["jobName"] != "audit_fiche"]
            result["other_dagster_runs_during_bench"] = len(other)
        shutil.rmtree(log_dir, ignore_errors=True)

        print("baseline: materialize in process …", file=sys.stderr, flush=True)
        base = baseline(base_fiches, config_id, f"{llm_url}/v1", key, args.baseline_warmup)

    rt_first = [r["rt_first_step_s"] for r in runs if r["rt_first_step_s"] is not None]
    relay_first = [r["relay_first_step_s"] for r in runs if r["relay_first_step_s"] is not None]
    rt_done = [r["rt_terminal_s"] for r in runs if r["rt_terminal_s"] is not None]
    relay_done = [r["relay_terminal_s"] for r in runs if r["relay_terminal_s"] is not None]
    result.update(stats_s(relay_first, "relay_first_step"), **stats_s(relay_done, "relay_terminal"),
                  **stats_s(rt_first, "realtime_first_step"), **stats_s(rt_done, "realtime_terminal"),
                  **stats_s([r["post_s"] for r in runs], "post"),
                  **stats_s([b["first_dagster_step_s"] for b in base if b["first_dagster_step_s"] is not None],
                            "baseline_first_dagster_step"),
                  **stats_s([b["first_llm_step_s"] for b in base if b["first_llm_step_s"] is not None], "baseline_first_llm_step"),
                  **stats_s([b["total_s"] for b in base], "baseline_total"))
    result.update(
        measured=len(runs), completed=sum(1 for r in runs if r["rt_outcome"] == "audit.completed"),
        run_success=sum(1 for r in runs if r["relay_outcome"] == "RUN_SUCCESS"),
        timed_out=sum(1 for r in runs if r.get("timed_out")), details_from_cache=sum(1 for r in runs if r["from_cache"]),
        first_dagster_step_key=Counter(r["relay_first_step_key"] for r in runs).most_common(1)[0][0] if runs else None,
        baseline_runs=len(base), baseline_completed=sum(1 for b in base if b["completed"]),
        goal_first_step_p50_s=GOAL_FIRST_STEP_P50_S,
        goal_met_relay=bool(relay_first) and pct(relay_first, 50) <= GOAL_FIRST_STEP_P50_S,
        goal_met_realtime=bool(rt_first) and pct(rt_first, 50) <= GOAL_FIRST_STEP_P50_S,
        profile=breakdown(runs),
        load_avg_1m_start=round(load_start[0], 2), load_avg_1m_end=round(load_end[0], 2),
    )
    print("measuring import costs in fresh interpreters …", file=sys.stderr, flush=True)
    result["imports_s"] = import_costs()
    return result, notes


def _all_runs(dagster_url: str) -> list[dict[str, Any]]:
    q = "query { runsOrError { ... on Runs { results { runId jobName status } } } }"
    return httpx.post(f"{dagster_url}/graphql", json={"query": q}, timeout=30).json()["data"]["runsOrError"]["results"]


def spy_one(stack: Any, children: dict[str, int], fiche_id: str, config_id: int, args: argparse.Namespace,
            notes: list[str]) -> dict[str, Any]:
    """One more audit with py-spy recording the daemon and its descendants (code server, run process)."""
    import psutil

    from auditflow_dagster.stack import REPO_ROOT

    daemon = psutil.Process(children["dagster-daemon"])
    raw = Path(tempfile.mkdtemp(prefix="af_bench_spy_")) / "run.raw"
    uvx = REPO_ROOT / ".tools" / "bin" / "uvx"
    cmd = [str(uvx) if uvx.exists() else "uvx", "py-spy", "record", "--subprocesses", "--format", "raw", "--rate", "100",
           "--pid", str(daemon.pid), "--output", str(raw), "--duration", str(int(args.spy_seconds))]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)  # py-spy attached
    r = asyncio.run(one_audit(stack.api_url, fiche_id, config_id, args.timeout))
    try:
        _, err = spy.communicate(timeout=args.spy_seconds + 60)
    except subprocess.TimeoutExpired:
        spy.kill()
        _, err = spy.communicate()
    if not raw.exists():
        notes.append(f"py-spy produced nothing: {err[-500:] if err else ''}")
        return {}
    summary = py_spy_summary(raw)
    summary.update(relay_first_step_s=r["relay_first_step_s"], raw_stacks=str(raw))
    return summary


def _human(r: dict[str, Any], notes: list[str]) -> None:
    def f(v: Any) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    lines = [
        "",
        f"interactive — {r['measured']} audits through POST /api/audits/run, one at a time, 18 steps, fake LLM "
        f"{r['llm_s'] * 1000:.0f} ms/call, cap {r['llm_cap']}; {r['cpus']} CPUs, load average {r['load_avg_1m_start']} → "
        f"{r['load_avg_1m_end']}",
        f"  first step, run relay (STEP_START {r['first_dagster_step_key']}): p50 {f(r['relay_first_step_p50_s'])}  "
        f"p90 {f(r['relay_first_step_p90_s'])}  max {f(r['relay_first_step_max_s'])} s → goal p50 ≤ {GOAL_FIRST_STEP_P50_S} s: "
        f"{'MET' if r['goal_met_relay'] else 'MISSED'}",
        f"  first step, realtime (audit.step_started, first LLM step): p50 {f(r['realtime_first_step_p50_s'])}  "
        f"p90 {f(r['realtime_first_step_p90_s'])}  max {f(r['realtime_first_step_max_s'])} s → "
        f"{'MET' if r['goal_met_realtime'] else 'MISSED'}",
        f"  terminal: realtime audit.completed p50 {f(r['realtime_terminal_p50_s'])}  p90 {f(r['realtime_terminal_p90_s'])}  "
        f"max {f(r['realtime_terminal_max_s'])} s; relay RUN_SUCCESS p50 {f(r['relay_terminal_p50_s'])}  "
        f"max {f(r['relay_terminal_max_s'])} s; POST itself p50 {f(r['post_p50_s'])} s",
        f"  outcomes: {r['completed']}/{r['measured']} audits completed, {r['run_success']} runs succeeded, "
        f"{r['details_from_cache']} details from cache, {r['timed_out']} timed out",
        f"  baseline in process (audit_step_results + audits, {r['baseline_runs']} runs): first STEP_START p50 "
        f"{f(r['baseline_first_dagster_step_p50_s'])} s, first audit.step_started p50 {f(r['baseline_first_llm_step_p50_s'])} s, "
        f"total p50 {f(r['baseline_total_p50_s'])}  max {f(r['baseline_total_max_s'])} s",
        "  where the time goes (Dagster event log + outbox, p50 / max over the measured runs):",
    ]
    for p in r["profile"]:
        lines.append(f"    {p['p50_s']:7.3f} s  (max {p['max_s']:6.3f})  {p['phase']}")
    imp = r.get("imports_s") or {}
    if imp:
        lines.append(f"  imports in a fresh interpreter (median): dagster {imp.get('dagster')} s, pandas {imp.get('pandas')} s, "
                     f"openai {imp.get('openai')} s, rest of auditflow_dagster.definitions {imp.get('definitions_rest')} s; "
                     f"`import auditflow_dagster.definitions` alone {imp.get('definitions_total')} s "
                     f"(pulls pandas: {imp.get('pandas_loaded')}, openai: {imp.get('openai_loaded')})")
    if r.get("py_spy"):
        ps = r["py_spy"]
        lines.append(f"  py-spy on one more run ({ps.get('samples')} samples in the run process): "
                     + ", ".join(f"{k} {v}%" for k, v in ps.get("share_pct", {}).items()))
    bc = r.get("bytecode") or {}
    lines.append(f"  bytecode: PYTHONDONTWRITEBYTECODE={'1' if bc.get('dont_write_bytecode') else 'unset'}, "
                 f"cache prefix {bc.get('pycache_prefix') or 'none'}, dagster .pyc present: {bc.get('dagster_pyc_present')}")
    lines.append(f"  stack processes: peak RSS {r['stack_peak_rss_mb']} MB, CPU {r['stack_cpu_s']} s; other Dagster runs "
                 f"during the bench: {r['other_dagster_runs_during_bench']}")
    lines += [f"  note: {n}" for n in notes]
    print("\n".join(lines), flush=True)


def bytecode_state() -> dict[str, Any]:
    """Whether the processes this bench starts find compiled bytecode: ``PYTHONDONTWRITEBYTECODE``
    (set here and in ``deploy/Dockerfile``) with no ``.pyc`` shipped means every process compiles
    every module it imports, every time."""
    import importlib.util

    import dagster

    prefix = os.environ.get("PYTHONPYCACHEPREFIX")
    src = dagster.__file__
    if prefix:  # the children's view (this process started without the prefix)
        pyc = Path(prefix) / Path(importlib.util.cache_from_source(src)).relative_to("/")
        pyc = pyc.parent.parent / pyc.name  # no __pycache__ level under a prefix
    else:
        pyc = Path(importlib.util.cache_from_source(src))
    return {"dont_write_bytecode": bool(os.environ.get("PYTHONDONTWRITEBYTECODE")), "pycache_prefix": prefix,
            "dagster_pyc_present": pyc.exists()}


def precompile(prefix: str) -> float:
    """Compile the venv and the project into ``prefix`` and point every child process at it."""
    import sysconfig

    from auditflow_dagster.stack import REPO_ROOT

    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", sysconfig.get_paths()["purelib"],
                    str(REPO_ROOT / "auditflow_dagster"), str(REPO_ROOT / "api"), str(REPO_ROOT / "tests"),
                    str(REPO_ROOT / "bench")], env=dict(os.environ), stdout=subprocess.DEVNULL, check=False)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--audits", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2, help="unmeasured audits first (code server, imports, caches)")
    ap.add_argument("--baseline", type=int, default=5)
    ap.add_argument("--baseline-warmup", type=int, default=1)
    ap.add_argument("--llm-s", type=float, default=0.5)
    ap.add_argument("--llm-cap", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per audit")
    ap.add_argument("--py-spy", action="store_true", help="sample one extra run with py-spy (uvx py-spy)")
    ap.add_argument("--spy-seconds", type=float, default=25.0)
    ap.add_argument("--bytecode-cache", metavar="DIR", default=None,
                    help="compile the venv and the project into DIR first and run every process with PYTHONPYCACHEPREFIX=DIR")
    ap.add_argument("--dump-log", default=None, help="write the first measured run's Dagster event log to this file")
    ap.add_argument("--database-url", default=os.environ.get("AUDITFLOW_BENCH_DATABASE_URL"))
    args = ap.parse_args(argv)
    args.baseline = max(0, args.baseline)
    precompile_s = None
    if args.bytecode_cache:
        print(f"compiling bytecode into {args.bytecode_cache} …", file=sys.stderr, flush=True)
        precompile_s = round(precompile(args.bytecode_cache), 1)

    from bench._stack import stack_databases

    with stack_databases(args.database_url) as (app_url, dagster_url):
        result, notes = run(args, app_url, dagster_url)
    result["bytecode"] = {**bytecode_state(), "precompile_s": precompile_s}
    if not result["bytecode"]["dagster_pyc_present"]:
        notes.append("no compiled bytecode: every process (each run worker too) compiles what it imports "
                     "(PYTHONDONTWRITEBYTECODE and no .pyc shipped); --bytecode-cache DIR measures with .pyc")
    print(json.dumps(result, separators=(",", ":")), flush=True)
    _human(result, notes)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
