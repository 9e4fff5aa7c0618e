"""Benchmark ``batch`` (issue 9 §1): a day of N fiches through the whole stack against providers
with simulated latencies, compared with the ideal wall time those latencies and our caps allow.

    python -m bench.batch [--fiches 200] [--recordings 2] [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

Set-up (real processes, real HTTP, real Postgres):

* the synthetic CRM (``auditflow_dagster.sample.crm_app``) answering every call after ``--crm-ms``
  (100 ms), N fiches on one sales day, each with ``--recordings`` recordings;
* an ElevenLabs speech-to-text server (the real STT client downloads each recording from the CRM
  and uploads it) answering after ``--stt-s`` (1 s) with the synthetic transcript of that audio;
* an OpenAI Responses server answering each step after ``--llm-s`` (500 ms) — the real ``openai``
  SDK as in production;
* caps: CRM details ``--crm-cap`` 3, STT ``--stt-cap`` 4, LLM ``--llm-cap`` 16 (the production
  defaults), one automatic 18-step audit config;
* the stack as ``auditflow demo`` runs it (Dagster webserver + daemon, API) with the repository's
  ``dagster.yaml`` (the same run queue and tag limits as ``deploy/dagster.yaml``).

The bench launches ``sales_day[day]`` and stops the clock when every fiche of the day has a final
audit. It reports the wall time, ``T_ideal`` (see :func:`ideal_wall_seconds`) and their ratio
(goal ≤ 1.15), the Dagster runs created, the peak summed RSS and the CPU seconds of the stack's
processes (Postgres excluded: a shared server), and, to show where the time goes, how busy each
provider was (calls, peak concurrency, utilization of its cap over the run, when it first and
last served). One JSON line, then a human summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench._stack import ProcessTreeSampler, eighteen_step_config, stack_databases

DAY = "2026-03-18"
STEPS = 18


def ideal_wall_seconds(*, fiches: int, recordings: int, steps: int, crm_s: float, stt_s: float, llm_s: float,
                       crm_cap: int, stt_cap: int, llm_cap: int, per_audit_cap: int) -> dict[str, float]:
    """The shortest wall time the providers' latencies and our caps allow, for ``fiches`` fiches.

    Each fiche needs one CRM details call, then its ``recordings`` transcriptions (in parallel),
    then ``steps`` LLM calls (at most ``per_audit_cap`` at once); the day starts with one CRM sales
    search. Each capped resource is a queue served ``cap`` at a time, so a resource bounds the wall
    time from below by: when its first piece of work can start + its whole work in waves of
    ``cap`` + what the last fiche it serves still needs after it. ``T_ideal`` is the largest of
    the three bounds (the critical resource); it ignores our own overhead entirely, which is
    what the ratio measures."""
    llm_tail = math.ceil(steps / min(llm_cap, per_audit_cap)) * llm_s
    crm = crm_s + math.ceil(fiches / crm_cap) * crm_s + stt_s + llm_tail
    stt = crm_s + crm_s + math.ceil(fiches * recordings / stt_cap) * stt_s + llm_tail
    llm = crm_s + crm_s + stt_s + math.ceil(fiches * steps / llm_cap) * llm_s
    bounds = {"crm": crm, "stt": stt, "llm": llm}
    critical = max(bounds, key=bounds.get)
    return {"t_ideal": round(bounds[critical], 3), "critical": critical, **{f"bound_{k}": round(v, 3) for k, v in bounds.items()}}


class CallLog:
    """Start/end times of a fake provider's calls (thread-safe), for utilization and peaks."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []
        self.in_flight = 0
        self.peak = 0
        self._lock = threading.Lock()

    def begin(self) -> float:
        with self._lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        return time.monotonic()

    def end(self, t0: float) -> None:
        with self._lock:
            self.in_flight -= 1
            self.spans.append((t0, time.monotonic()))

    def summary(self, t0: float, t1: float, cap: int) -> dict[str, Any]:
        if not self.spans:
            return {"calls": 0}
        busy = sum(e - s for s, e in self.spans)
        return {"calls": len(self.spans), "peak_concurrency": self.peak,
                "first_s": round(min(s for s, _ in self.spans) - t0, 2),
                "last_s": round(max(e for _, e in self.spans) - t0, 2),
                "utilization": round(busy / (cap * (t1 - t0)), 3)}


def providers(stt_s: float, llm_s: float) -> tuple[Any, Any, CallLog, CallLog]:
    """The ElevenLabs and OpenAI fakes (apps) with their call logs."""
    from starlette.responses import JSONResponse

    from auditflow_dagster.sample import generator
    from tests.fakes.elevenlabs import FakeElevenLabs, parse_multipart
    from tests.fakes.openai_server import FakeOpenAI

    stt_log, llm_log = CallLog(), CallLog()

    class SyntheticElevenLabs(FakeElevenLabs):
        async def _stt(self, request: Any) -> Any:
            t0 = stt_log.begin()
            try:
                body = await request.body()
                if request.headers.get("xi-api-key") != self.api_key:
                    return JSONResponse({"detail": {"status": "invalid_api_key"}}, status_code=401)
                fields = parse_multipart(request.headers.get("content-type", ""), body)
                await asyncio.sleep(stt_s)
                return JSONResponse(generator.transcript_for_audio_bytes(fields["file"]["data"]))
            finally:
                stt_log.end(t0)

    class SlowOpenAI(FakeOpenAI):
        async def _responses(self, request: Any) -> Any:
            t0 = llm_log.begin()
            try:
                await asyncio.sleep(llm_s)
                answer = await super()._responses(request)
                self.requests.clear()  # the bench keeps timings, not 3,600 prompt bodies
                return answer
            finally:
                llm_log.end(t0)

    return SyntheticElevenLabs(api_key="xi-bench-key-000000"), SlowOpenAI(api_key="sk-bench-key-0000000000"), stt_log, llm_log


def day_state(day: str) -> dict[str, int]:
    from sqlalchemy import text

    from auditflow_dagster.db.session import session_scope

    with session_scope() as s:
        return dict(s.execute(text("""
            SELECT (SELECT count(*) FROM fiche_cache WHERE sales_date = :d) AS fiches,
                   (SELECT count(*) FROM fiche_sales_days WHERE sales_date = :d) AS day_done,
                   (SELECT count(DISTINCT a.fiche_cache_id) FROM audits a JOIN fiche_cache f ON f.id = a.fiche_cache_id
                     WHERE f.sales_date = :d AND a.status IN ('completed', 'failed')) AS fiches_audited,
                   (SELECT count(*) FROM audits a JOIN fiche_cache f ON f.id = a.fiche_cache_id
                     WHERE f.sales_date = :d AND a.status = 'completed') AS completed,
                   (SELECT count(*) FROM audits a JOIN fiche_cache f ON f.id = a.fiche_cache_id
                     WHERE f.sales_date = :d AND a.status = 'failed') AS failed,
                   (SELECT count(*) FROM audit_step_results r JOIN audits a ON a.id = r.audit_id
                     JOIN fiche_cache f ON f.id = a.fiche_cache_id WHERE f.sales_date = :d) AS step_results
        """), {"d": day}).mappings().one())


def dagster_runs(dagster_url: str) -> list[dict[str, Any]]:
    q = """query { runsOrError { ... on Runs { results { runId status jobName startTime endTime
             tags { key value } } } } }"""
    return httpx.post(f"{dagster_url}/graphql", json={"query": q}, timeout=30).json()["data"]["runsOrError"]["results"]


def run(args: argparse.Namespace, app_url: str, dagster_db_url: str) -> dict[str, Any]:
    from tests.fakes.server import serve_app

    stt_app, llm_app, stt_log, llm_log = providers(args.stt_s, args.llm_s)
    with serve_app(stt_app.app) as stt_url, serve_app(llm_app.app) as llm_url:
        os.environ.update({
            "AUDITFLOW_DATABASE_URL": app_url, "AUDITFLOW_DAGSTER_PG_URL": dagster_db_url, "AUDITFLOW_AUTH": "off",
            "AUDITFLOW_CRM": "http", "FICHE_FETCH_CONCURRENCY": str(args.crm_cap),
            "AUDITFLOW_SAMPLE_RECORDINGS_PER_FICHE": str(args.recordings),
            "AUDITFLOW_STT": "elevenlabs", "ELEVENLABS_API_KEY": stt_app.api_key, "ELEVENLABS_BASE_URL": stt_url,
            "AUDITFLOW_STT_CONCURRENCY": str(args.stt_cap), "TRANSCRIPTION_ELEVENLABS_RATE_LIMIT_PER_MINUTE": "100000",
            "AUDITFLOW_LLM": "openai", "OPENAI_API_KEY": llm_app.api_key, "OPENAI_BASE_URL": f"{llm_url}/v1",
            "AUDITFLOW_LLM_CONCURRENCY": str(args.llm_cap),
        })
        os.environ.pop("FICHE_API_BASE_URL", None)
        from auditflow_dagster.settings import get_settings

        get_settings.cache_clear()
        settings = get_settings()
        from auditflow_dagster.db.session import session_scope
        from auditflow_dagster.stack import Stack, prepare_database

        prepare_database()
        with session_scope() as s:
            config_id = eighteen_step_config(s, automatic=True)
        ideal = ideal_wall_seconds(fiches=args.fiches, recordings=args.recordings, steps=STEPS,
                                   crm_s=args.crm_ms / 1000, stt_s=args.stt_s, llm_s=args.llm_s, crm_cap=args.crm_cap,
                                   stt_cap=args.stt_cap, llm_cap=args.llm_cap,
                                   per_audit_cap=settings.audit_step_per_audit_concurrency)
        stack = Stack(log_dir=Path(tempfile.mkdtemp(prefix="af_bench_batch_")),
                      crm_options=["--fiches-per-day", str(args.fiches), "--latency-ms", str(args.crm_ms)])
        with stack:
            from api.dagster_client import DagsterClient

            async def launch() -> str:
                client = DagsterClient(f"{stack.dagster_url}/graphql")
                try:
                    return await client.launch_job("sales_day", run_config={},
                                                   tags={"dagster/partition": DAY, "auditflow/trigger": "bench"})
                finally:
                    await client.aclose()

            with ProcessTreeSampler([c.proc.pid for c in stack.children if c.name != "crm"]) as sampler:
                load_start = os.getloadavg()
                t0 = time.monotonic()
                asyncio.run(launch())
                deadline = t0 + args.timeout
                state = day_state(DAY)
                while time.monotonic() < deadline:
                    state = day_state(DAY)
                    if state["day_done"] and state["fiches"] and state["fiches_audited"] >= state["fiches"]:
                        break
                    time.sleep(0.5)
                wall = time.monotonic() - t0
                t1 = t0 + wall
                load_end = os.getloadavg()
            runs = dagster_runs(stack.dagster_url)
            log_dir = str(stack.log_dir)
    backfill_runs = [r for r in runs if any(t["key"] == "dagster/backfill" for t in r["tags"])]
    return {
        "bench": "batch", "fiches": args.fiches, "recordings_per_fiche": args.recordings, "steps": STEPS,
        "latency": {"crm_ms": args.crm_ms, "stt_s": args.stt_s, "llm_s": args.llm_s},
        "caps": {"crm_details": args.crm_cap, "stt": args.stt_cap, "llm": args.llm_cap,
                 "per_audit": settings.audit_step_per_audit_concurrency},
        **ideal, "wall_s": round(wall, 2), "ratio": round(wall / ideal["t_ideal"], 3),
        "completed": state["completed"], "failed": state["failed"], "fiches_audited": state["fiches_audited"],
        "step_results": state["step_results"], "config_id": config_id,
        "dagster_runs": len(runs), "backfill_runs": len(backfill_runs),
        "run_statuses": sorted({r["status"] for r in runs}),
        "peak_rss_mb": round(sampler.peak_rss / 2**20, 1), "cpu_s": round(sampler.cpu_seconds, 1),
        "stt": stt_log.summary(t0, t1, args.stt_cap), "llm": llm_log.summary(t0, t1, args.llm_cap),
        "loadavg_start": round(load_start[0], 2), "loadavg_end": round(load_end[0], 2), "cpus": os.cpu_count(),
        "logs": log_dir, "timed_out": wall >= args.timeout,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fiches", type=int, default=200)
    ap.add_argument("--recordings", type=int, default=2)
    ap.add_argument("--crm-ms", type=float, default=100.0)
    ap.add_argument("--stt-s", type=float, default=1.0)
    ap.add_argument("--llm-s", type=float, default=0.5)
    ap.add_argument("--crm-cap", type=int, default=3)
    ap.add_argument("--stt-cap", type=int, default=4)
    ap.add_argument("--llm-cap", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--database-url", default=os.environ.get("AUDITFLOW_BENCH_DATABASE_URL"))
    args = ap.parse_args(argv)
    with stack_databases(args.database_url) as (app_url, dagster_url):
        r = run(args, app_url, dagster_url)
    print(json.dumps(r))
    print(f"\nbatch — {r['fiches']} fiches × {r['recordings_per_fiche']} recordings × {STEPS} steps; "
          f"CRM {args.crm_ms:.0f} ms cap {args.crm_cap}, STT {args.stt_s} s cap {args.stt_cap}, "
          f"LLM {args.llm_s} s cap {args.llm_cap}")
    print(f"  wall {r['wall_s']} s vs T_ideal {r['t_ideal']} s ({r['critical']}-bound) → ratio {r['ratio']} (goal ≤ 1.15)")
    print(f"  audits: {r['completed']} completed, {r['failed']} failed; {r['step_results']} step results")
    print(f"  Dagster runs: {r['dagster_runs']} ({r['backfill_runs']} backfill runs); "
          f"peak RSS {r['peak_rss_mb']} MB, CPU {r['cpu_s']} s (stack processes, Postgres excluded)")
    for name in ("stt", "llm"):
        p = r[name]
        if p.get("calls"):
            print(f"  {name.upper()}: {p['calls']} calls, peak {p['peak_concurrency']} in flight, cap utilization "
                  f"{p['utilization']:.0%}, served from {p['first_s']} s to {p['last_s']} s")
    print(f"  load average {r['loadavg_start']} → {r['loadavg_end']} on {r['cpus']} CPUs; logs {r['logs']}")


if __name__ == "__main__":
    main()
