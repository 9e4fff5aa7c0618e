"""``auditflow stack`` and ``auditflow demo``: the whole system as child processes
(:class:`auditflow_dagster.stack.Stack`: synthetic CRM, Dagster webserver + daemon, API) served
until Ctrl-C. ``demo`` is ``stack`` offline, plus one sales day audited (the ``run-day`` code)
and a summary."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import time
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import click
import httpx

from auditflow_dagster.cli_commands.common import (
    SALES_DAY,
    CliError,
    ProgressReport,
    dagster,
    run,
)
from auditflow_dagster.cli_commands.days import (
    day_progress,
    follow_days,
    launch_day,
    run_sales_state,
)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops like Ctrl-C


@contextlib.contextmanager
def started_stack(stack: Any, *, with_crm: bool = True) -> Iterator[Any]:
    """Start every process of ``stack``, wait until it answers, and stop them all on the way out
    (Ctrl-C or SIGTERM included)."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    t0 = time.monotonic()
    try:
        stack.start(with_crm=with_crm)
        try:
            stack.wait_ready()
        except (RuntimeError, TimeoutError) as exc:
            raise CliError(f"the stack did not start: {exc}") from None
        click.echo(f"  stack ready in {time.monotonic() - t0:.1f}s")
        yield stack
    finally:
        click.echo("stopping…")
        stack.stop()
        signal.signal(signal.SIGTERM, previous)


def print_urls(stack: Any) -> None:
    click.echo(f" Dagster UI : {stack.dagster_url}   (asset lineage: {stack.dagster_url}/asset-groups)")
    click.echo(f" API        : {stack.api_url}   OpenAPI: {stack.api_url}/api/openapi.json")
    if any(c.name == "crm" for c in stack.children):
        click.echo(f" CRM        : {stack.crm_url}   (synthetic)")
    click.echo(f" logs       : {stack.log_dir}")


def serve_until_stopped() -> None:
    """Block until Ctrl-C (or SIGTERM)."""
    click.echo("\nRunning — Ctrl-C stops every process.")
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass


def _warn_if_auth_off() -> None:
    from auditflow_dagster.settings import get_settings

    if not get_settings().auth_enabled:
        click.echo("  WARNING: AUDITFLOW_AUTH=off — the API accepts every request without credentials "
                   "(offline demo only)", err=True)


def _new_stack(api_port: int | None, dagster_port: int | None, fiches: int) -> Any:
    from auditflow_dagster.settings import get_settings
    from auditflow_dagster.stack import Stack

    get_settings.cache_clear()
    stack = Stack(crm_options=["--fiches-per-day", str(fiches)])
    if api_port:
        stack.api_port = api_port
    if dagster_port:
        stack.dagster_port = dagster_port
    return stack


def port_options(fn: Any) -> Any:
    fn = click.option("--dagster-port", type=int, default=3000, show_default=True, help="Dagster webserver port")(fn)
    fn = click.option("--api-port", type=int, default=8000, show_default=True, help="API port")(fn)
    return click.option("--fiches", type=click.IntRange(0, 999), default=40, show_default=True,
                        help="fiches per day of the synthetic CRM")(fn)


@click.command("stack")
@port_options
@click.option("--crm/--no-crm", "with_crm", default=None,
              help="start the synthetic CRM (default: when AUDITFLOW_CRM is http and FICHE_API_BASE_URL is unset)")
def stack_cmd(api_port: int, dagster_port: int, fiches: int, with_crm: bool | None) -> None:
    """Start the whole stack and serve it until Ctrl-C.

    PostgreSQL (embedded under AUDITFLOW_HOME, or AUDITFLOW_DATABASE_URL), migrations, the Dagster
    webserver and daemon (schedules, sensors, backfills), the API, and the synthetic CRM unless a
    real one is configured. Prints the URLs; then `auditflow run-day DAY` or `auditflow backfill
    FROM TO` audit days through it.
    """
    if with_crm is None:
        with_crm = os.environ.get("AUDITFLOW_CRM", "http") == "http" and not os.environ.get("FICHE_API_BASE_URL")
    stack = _new_stack(api_port, dagster_port, fiches)
    click.echo(f"AuditFlow stack, logs in {stack.log_dir}")
    _warn_if_auth_off()
    with started_stack(stack, with_crm=with_crm):
        print_urls(stack)
        serve_until_stopped()


# --------------------------------------------------------------------------------------------- #
# demo
# --------------------------------------------------------------------------------------------- #


def run_summary(dagster_graphql: str) -> dict[str, Any]:
    """Runs of the instance: total, how many belong to backfills, how many are still in flight."""
    q = """query { runsOrError { __typename ... on Runs { results { runId status jobName tags { key value } } } } }"""
    runs = httpx.post(dagster_graphql, json={"query": q}, timeout=10).json()["data"]["runsOrError"]["results"]
    backfill = [r for r in runs if any(t["key"] == "dagster/backfill" for t in r["tags"])]
    active = [r for r in runs if r["status"] in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED")]
    return {"total": len(runs), "backfill": len(backfill), "active": len(active)}


def follow_live_audit(api_url: str, fiche_id: str, config_id: int) -> dict[str, Any]:
    """POST an audit and follow its run's SSE stream; returns latencies in seconds."""
    t0 = time.monotonic()
    resp = httpx.post(f"{api_url}/api/audits/run", json={"fiche_id": fiche_id, "audit_config_id": config_id}, timeout=30)
    resp.raise_for_status()
    body = resp.json()
    out: dict[str, Any] = {"run_id": body["run_id"], "tracking_id": body["audit_id"]}
    with httpx.stream("GET", f"{api_url}/api/runs/{body['run_id']}/events", timeout=httpx.Timeout(300, read=120)) as s:
        for line in s.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
                if event == "STEP_START" and "first_step" not in out:
                    out["first_step"] = time.monotonic() - t0
                if event in ("RUN_SUCCESS", "RUN_FAILURE", "RUN_CANCELED"):
                    out["terminal"] = time.monotonic() - t0
                    out["outcome"] = event
    return out


def _one_audited_fiche(day: str) -> tuple[str, int] | None:
    from sqlalchemy import text

    from auditflow_dagster.db.session import session_scope

    with session_scope() as s:
        row = s.execute(text("""
            SELECT f.fiche_id, a.audit_config_id FROM audits a JOIN fiche_cache f ON f.id = a.fiche_cache_id
            WHERE f.sales_date = :d AND a.status = 'completed' ORDER BY a.id LIMIT 1"""), {"d": day}).first()
    return (row[0], int(row[1])) if row else None


async def _audit_day(graphql: str, day: str, timeout: float) -> None:
    async with dagster(graphql) as client:
        run_id = await launch_day(client, day, trigger="demo")
        click.echo(f"  launched sales_day[{day}] run {run_id}; the sensor backfills its fiches through the chain")
        with ProgressReport() as report:
            await follow_days(client, [day], run_sales_state(client, run_id), timeout=timeout, report=report)


def _print_summary(stack: Any, day: str, wall: float) -> None:
    graphql = f"{stack.dagster_url}/graphql"
    p = day_progress(day)
    while run_summary(graphql)["active"]:
        time.sleep(0.5)  # let the backfill's runs finish (asset checks) before counting them
    runs = run_summary(graphql)
    click.echo()
    click.echo("═" * 76)
    click.echo(f" Audited day {day}: {wall:.1f}s wall from start (stack start-up included)")
    click.echo(f"   Dagster runs: {runs['total']} (1 sales_day + {runs['backfill']} backfill run(s) for {p['fiches']} fiches)")
    click.echo(f"   fiches: {p['fiches']}   recordings: {p['recordings']} ({p['transcribed']} transcribed)")
    click.echo(f"   audits: {p['completed']} completed, {p['failed']} failed (no usable recording)")
    mean = f"{p['mean_score']:.2f} %" if p["mean_score"] is not None else "n/a"
    click.echo("   niveau: " + ", ".join(f"{k} {v}" for k, v in p["niveaux"].items()) + f"   mean score: {mean}")
    click.echo("═" * 76)
    print_urls(stack)
    fiche = _one_audited_fiche(day)
    if fiche:
        live = follow_live_audit(stack.api_url, *fiche)
        click.echo(f" Live audit : POST /api/audits/run (fiche {fiche[0]}) → first step event after "
                   f"{live.get('first_step', float('nan')):.2f}s, {live.get('outcome')} after "
                   f"{live.get('terminal', float('nan')):.2f}s")
        click.echo(f"   replay its events:  curl -N {stack.api_url}/api/runs/{live['run_id']}/events")
    click.echo(f"   day status:         curl -s '{stack.api_url}/api/fiches/status/by-date?date={day}'")


@click.command("demo")
@click.option("--day", type=SALES_DAY, help="sales day (default: yesterday, Europe/Paris)")
@port_options
@click.option("--timeout", type=click.FloatRange(min=1), default=600, show_default=True,
              help="seconds to wait for the day")
@click.option("--exit", "exit_after", is_flag=True, help="stop after the summary instead of serving")
def demo(day: str | None, fiches: int, api_port: int, dagster_port: int, timeout: float, exit_after: bool) -> None:
    """Start everything offline and audit yesterday's sales.

    The stack of `auditflow stack` with the synthetic CRM, sample transcripts and the offline
    auditor, API authentication off (export AUDITFLOW_AUTH=on to try API keys); then one sales day
    audited as `auditflow run-day` does, a summary, the URLs and a live audit followed over SSE.
    Serves until Ctrl-C unless --exit.
    """
    os.environ.setdefault("AUDITFLOW_AUTH", "off")
    os.environ.setdefault("AUDITFLOW_CRM", "http")
    os.environ.setdefault("AUDITFLOW_STT", "sample")
    os.environ.setdefault("AUDITFLOW_LLM", "offline")
    stack = _new_stack(api_port, dagster_port, fiches)
    from auditflow_dagster.settings import get_settings

    day = day or (dt.datetime.now(ZoneInfo(get_settings().business_timezone)).date() - dt.timedelta(days=1)).isoformat()
    t0 = time.monotonic()
    click.echo(f"AuditFlow demo — auditing sales day {day} ({fiches} synthetic fiches), logs in {stack.log_dir}")
    _warn_if_auth_off()
    with started_stack(stack):
        run(_audit_day(f"{stack.dagster_url}/graphql", day, timeout))
        _print_summary(stack, day, time.monotonic() - t0)
        if not exit_after:
            serve_until_stopped()
