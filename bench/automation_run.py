"""Benchmark: one automation run of N fiches through the real stack → how many Dagster runs.

Starts the whole system (synthetic CRM over HTTP, Dagster webserver + daemon, API) on a fresh
database, creates a MANUAL schedule whose selection is N fiches (``N / 40`` business days of the
synthetic CRM, the bundled 18-step checklist, offline LLM/STT twins), triggers it through
``POST /api/automation/trigger`` and waits for the run to end. Prints one JSON line and a summary:
wall time, the Dagster runs the automation run produced (the job run + the fiche backfill runs),
and the per-fiche outcome counts.

    python -m bench.automation_run --fiches 200 [--database-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench._stack import stack_databases

FICHES_PER_DAY = 40


def business_days(start: dt.date, n: int) -> list[dt.date]:
    out, d = [], start
    while len(out) < n:
        if d.weekday() < 5:
            out.append(d)
        d += dt.timedelta(days=1)
    return out


def count_runs(dagster_url: str, run_id: str) -> list[dict]:
    query = """query($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) {
                 ... on Runs { results { runId status jobName tags { key value } } } } }"""
    data = httpx.post(f"{dagster_url}/graphql", json={"query": query, "variables": {
        "tags": [{"key": "automation/run_id", "value": run_id}]}}, timeout=30).json()
    return data["data"]["runsOrError"]["results"]


def run(args: argparse.Namespace, days: list[dt.date], app_url: str, dagster_url_db: str) -> dict:
    os.environ.update({"AUDITFLOW_DATABASE_URL": app_url, "AUDITFLOW_DAGSTER_PG_URL": dagster_url_db,
                       "AUDITFLOW_CRM": "http"})
    os.environ.pop("FICHE_API_BASE_URL", None)
    os.environ.setdefault("AUDITFLOW_AUTH", "off")  # the bench calls the API without credentials
    from auditflow_dagster.settings import get_settings

    get_settings.cache_clear()
    from auditflow_dagster.stack import Stack

    with Stack(log_dir=Path(tempfile.mkdtemp(prefix="af_bench_automation_"))) as stack:
        api = f"{stack.api_url}/api/automation"
        schedule = httpx.post(f"{api}/schedules", json={
            "name": f"bench {args.fiches} fiches", "scheduleType": "MANUAL",
            "ficheSelection": {"mode": "date_range", "dateRange": "custom",
                               "customStartDate": days[0].strftime("%d/%m/%Y"),
                               "customEndDate": days[-1].strftime("%d/%m/%Y"), "maxFiches": args.fiches},
            "notifyOnComplete": False, "notifyOnError": False}, timeout=30).json()["data"]
        peak = {"connections": 0}
        stop = threading.Event()

        def watch_connections() -> None:  # server backends, all databases (what max_connections bounds)
            import psycopg

            with psycopg.connect(app_url, autocommit=True) as conn:
                while not stop.is_set():
                    n = conn.execute("SELECT count(*) FROM pg_stat_activity").fetchone()[0]
                    peak["connections"] = max(peak["connections"], n)
                    stop.wait(0.5)

        watcher = threading.Thread(target=watch_connections, daemon=True)
        watcher.start()
        t0 = time.monotonic()
        trig = httpx.post(f"{api}/trigger", json={"scheduleId": schedule["id"]}, timeout=30).json()
        run_id = trig["run_id"]
        deadline = t0 + args.timeout
        while True:
            run = httpx.get(f"{api}/runs/{run_id}", timeout=30).json()["data"]
            if run["status"] != "running" or time.monotonic() > deadline:
                break
            time.sleep(2)
        wall = time.monotonic() - t0
        stop.set()
        watcher.join(timeout=5)
        runs = count_runs(stack.dagster_url, run_id)
        job_runs = [r for r in runs if r["jobName"] == "automation_run_job"]
        summary = run["resultSummary"] or {}
        return {
            "bench": "automation_run", "fiches_selected": len(summary.get("successful", []))
            + len(summary.get("failed", [])) + len(summary.get("ignored", [])),
            "status": run["status"], "wall_seconds": round(wall, 1), "dagster_job_runs": len(job_runs),
            "dagster_fiche_runs": len(runs) - len(job_runs), "successful": run["successfulFiches"],
            "failed": run["failedFiches"], "ignored": len(summary.get("ignored", [])),
            "audits_run": run["auditsRun"], "days": len(days), "peak_pg_connections": peak["connections"],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fiches", type=int, default=200)
    parser.add_argument("--database-url", default=os.environ.get("AUDITFLOW_BENCH_DATABASE_URL"))
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    days = business_days(dt.date(2026, 3, 2), max(1, -(-args.fiches // FICHES_PER_DAY)))

    with stack_databases(args.database_url) as (app_url, dagster_url):
        result = run(args, days, app_url, dagster_url)
    print(json.dumps(result))
    print(f"automation run of {result['fiches_selected']} fiches over {len(days)} days: {result['status']} in "
          f"{result['wall_seconds']} s; Dagster runs: {result['dagster_job_runs']} job run + "
          f"{result['dagster_fiche_runs']} fiche backfill runs (not one per fiche); "
          f"successful={result['successful']} failed={result['failed']} ignored={result['ignored']}, "
          f"audits={result['audits_run']}; peak server connections {result['peak_pg_connections']}")


if __name__ == "__main__":
    main()
