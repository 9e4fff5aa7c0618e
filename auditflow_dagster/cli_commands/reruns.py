"""``auditflow rerun AUDIT_ID [--step N [--control-point I]]``: rerun an audit, one step or one
control point, exactly as the API does it, then follow the run to its end.

The launch is the API's own route handler, called in-process (:func:`call_route`) with a local
principal holding every permission (whoever can run the CLI can read the database anyway): the
same validation (404 unknown audit/step/point, 409 while the audit runs), the same partition
re-registration, run config and tags, the same Dagster jobs. Without ``--step`` it is
``POST /api/audits`` for the audit's fiche and config (a new audit, ``trigger_source=cli``); with
``--step`` it is ``POST /api/audits/{id}/steps/{n}/rerun`` (job ``rerun_audit_step``, frozen
snapshot, a new step version in the rerun trail).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import click

from auditflow_dagster.cli_commands.common import (
    CliError,
    ProgressReport,
    dagster,
    dagster_url_option,
    database,
    no_wait_option,
    run,
    timeout_option,
)

TRIGGER = "cli"


async def call_route(handler: Callable[[Any], Awaitable[Any]], client: Any, *, path: str,
                     path_params: dict[str, str] | None = None, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Call an API route handler in-process as a local all-permission caller whose app's Dagster
    client is ``client``; returns its JSON body, or raises CliError with the API's error message."""
    from starlette.requests import Request

    from api.auth import Principal
    from api.errors import ApiError

    raw = json.dumps(body or {}).encode()
    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(b"content-type", b"application/json")], "path_params": path_params or {},
             "app": SimpleNamespace(state=SimpleNamespace(dagster=client)),
             "state": {"principal": Principal(kind=TRIGGER, permissions=frozenset({"*"}))}}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    try:
        response = await handler(Request(scope, receive))
    except ApiError as exc:
        raise CliError(exc.error) from None
    reply = json.loads(response.body)
    if response.status_code >= 400:
        raise CliError(str(reply.get("message") or reply.get("error") or reply))
    return reply


def audit_target(audit_id: int) -> dict[str, Any]:
    """The fiche, config and mode of an audit (CliError when there is no such audit)."""
    from auditflow_dagster.db.models import Audit, FicheCache
    from auditflow_dagster.db.session import session_scope

    with session_scope() as s:
        audit = s.get(Audit, audit_id)
        if audit is None:
            raise CliError(f"no audit {audit_id}")
        fiche = s.get(FicheCache, audit.fiche_cache_id)
        return {"fiche_id": fiche.fiche_id, "audit_config_id": audit.audit_config_id, "use_rlm": audit.use_rlm}


async def launch_rerun(client: Any, audit_id: int, step: int | None, point: int | None, prompt: str | None,
                       replace_human_review: bool) -> dict[str, Any]:
    """Launch through the API's handlers; returns ``{run_id, tracking_id?}``."""
    from api.routes import audits, reruns

    target = audit_target(audit_id)  # "no audit N" before anything is launched
    if step is None:
        reply = await call_route(audits.run_audit_alias, client, path="/api/audits",
                                 body={**target, "trigger_source": TRIGGER})
        return {"run_id": reply["run_id"], "tracking_id": reply["audit_id"]}
    params = {"audit_id": str(audit_id), "step_position": str(step)}
    body: dict[str, Any] = {"replaceHumanReview": replace_human_review}
    if prompt:
        body["customPrompt"] = prompt
    path = f"/api/audits/{audit_id}/steps/{step}/rerun"
    handler = reruns.rerun_step
    if point is not None:
        params["control_point_index"] = str(point)
        path = f"/api/audits/{audit_id}/steps/{step}/control-points/{point}/rerun"
        handler = reruns.rerun_control_point
    reply = await call_route(handler, client, path=path, path_params=params, body=body)
    return {"run_id": reply["event_id"]}


async def wait_for_run(client: Any, run_id: str, *, timeout: float, report: ProgressReport, poll: float = 1.0) -> str:
    """The run's terminal status (a spinner meanwhile); CliError on timeout."""
    from api.dagster_client import TERMINAL_STATUSES

    task = report.add(f"run {run_id}", info="QUEUED")
    deadline = time.monotonic() + timeout
    while True:
        status = await client.run_status(run_id)
        report.update(task, info=status or "?")
        if status in TERMINAL_STATUSES:
            return status
        if status is None:
            raise CliError(f"run {run_id} vanished from Dagster")
        if time.monotonic() > deadline:
            raise CliError(f"timed out after {timeout:g}s: run {run_id} is {status} (raise --timeout to wait longer)")
        await asyncio.sleep(poll)


async def run_failure(client: Any, run_id: str) -> str:
    """The first step failure message of a failed run (its event log), else a generic line."""
    after = None
    while True:
        logs = await client.logs_for_run(run_id, after)
        for event in logs.get("events", []) or []:
            message = (event.get("error") or {}).get("message")
            if message:
                return message.strip().splitlines()[-1][:300]
        if not logs.get("hasMore"):
            return "see the run in the Dagster UI"
        after = logs.get("cursor")


def audit_outcome(tracking_id: str) -> dict[str, Any]:
    from auditflow_dagster.db.audits import get_by_tracking_id
    from auditflow_dagster.db.session import session_scope

    with session_scope() as s:
        audit = get_by_tracking_id(s, tracking_id)
        if audit is None:
            return {}
        return {"id": audit.id, "status": audit.status, "score": audit.score_percentage, "niveau": audit.niveau,
                "error": audit.error_message}


def step_outcome(audit_id: int, run_id: str) -> dict[str, Any]:
    """The rerun trail row the run wrote (its ``event_id`` is the run id) and the audit's summary."""
    from sqlalchemy import select

    from auditflow_dagster.db.models import Audit, AuditStepResultRerunEvent
    from auditflow_dagster.db.session import session_scope

    with session_scope() as s:
        trail = s.scalars(select(AuditStepResultRerunEvent).where(
            AuditStepResultRerunEvent.audit_id == audit_id, AuditStepResultRerunEvent.event_id == run_id)
            .order_by(AuditStepResultRerunEvent.id.desc())).first()
        audit = s.get(Audit, audit_id)
        out = {"score": audit.score_percentage, "niveau": audit.niveau}
        if trail is not None:
            out.update(trail=trail.id, previous_score=trail.previous_score, next_score=trail.next_score,
                       previous_conforme=trail.previous_conforme, next_conforme=trail.next_conforme,
                       previous_statut=trail.previous_statut, next_statut=trail.next_statut)
        return out


def report_audit(tracking_id: str) -> None:
    out = audit_outcome(tracking_id)
    if not out:
        raise CliError(f"the run ended but audit {tracking_id} was not recorded")
    if out["status"] != "completed":
        raise CliError(f"audit {out['id']} {out['status']}: {out['error'] or 'no error recorded'}")
    click.echo(f"audit {out['id']} ({tracking_id}) completed: score {out['score']} %, niveau {out['niveau']}")


def report_step(audit_id: int, step: int, point: int | None, run_id: str) -> None:
    out = step_outcome(audit_id, run_id)
    what = f"step {step}" + (f" control point {point}" if point is not None else "")
    if "trail" not in out:
        click.echo(f"audit {audit_id} {what}: nothing new (this rerun was already applied)")
    elif point is not None:
        click.echo(f"audit {audit_id} {what} rerun: statut {out['previous_statut']} → {out['next_statut']}")
    else:
        click.echo(f"audit {audit_id} {what} rerun: score {out['previous_score']} → {out['next_score']}, "
                   f"conforme {out['previous_conforme']} → {out['next_conforme']}")
    click.echo(f"audit {audit_id} now: score {out['score']} %, niveau {out['niveau']}")


async def _rerun(audit_id: int, step: int | None, point: int | None, prompt: str | None, replace: bool,
                 dagster_url: str | None, timeout: float, no_wait: bool) -> None:
    async with dagster(dagster_url) as client:
        launched = await launch_rerun(client, audit_id, step, point, prompt, replace)
        run_id = launched["run_id"]
        job = "audit_fiche" if step is None else "rerun_audit_step"
        click.echo(f"launched {job} run {run_id}" + (f" (audit {launched['tracking_id']})" if step is None else ""))
        if no_wait:
            return
        with ProgressReport(counted=False) as report:
            status = await wait_for_run(client, run_id, timeout=timeout, report=report)
        if status != "SUCCESS":
            raise CliError(f"run {run_id} ended {status}: {await run_failure(client, run_id)}")
    if step is None:
        report_audit(launched["tracking_id"])
    else:
        report_step(audit_id, step, point, run_id)


@click.command("rerun")
@click.argument("audit_id", type=click.IntRange(min=1))
@click.option("--step", type=click.IntRange(min=1), metavar="N", help="rerun only step N (its position)")
@click.option("--control-point", type=click.IntRange(min=1), metavar="I",
              help="with --step: rerun only control point I (1-based) of that step")
@click.option("--prompt", metavar="TEXT", help="with --step: extra instructions for the re-analysis")
@click.option("--replace-human-review", is_flag=True,
              help="with --step: end a human review in force and apply the rerun's verdict")
@dagster_url_option
@timeout_option(1800)
@no_wait_option
def rerun(audit_id: int, step: int | None, control_point: int | None, prompt: str | None,
          replace_human_review: bool, dagster_url: str | None, timeout: float, no_wait: bool) -> None:
    """Rerun an audit, or one of its steps, and wait for it.

    Launched exactly as the API does. Without --step: a new audit of the same fiche with the same config (an audit_fiche run, like
    POST /api/audits). With --step N: a rerun of that step from the audit's frozen snapshot (a
    rerun_audit_step run, like POST /api/audits/{id}/steps/{n}/rerun), --control-point I for one
    control point. Prints the resulting score and niveau (or the error); exits 1 on an unknown
    audit, a refused launch, a failed run, an unreachable Dagster or --timeout.
    """
    if step is None and (control_point is not None or prompt or replace_human_review):
        raise click.UsageError("--control-point, --prompt and --replace-human-review need --step")
    database()
    run(_rerun(audit_id, step, control_point, prompt, replace_human_review, dagster_url, timeout, no_wait))
