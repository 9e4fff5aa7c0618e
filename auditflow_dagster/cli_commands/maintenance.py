"""``auditflow migrate``, ``auditflow import-config`` and ``auditflow prune``.

``prune`` is the ``partition_lifecycle`` sensor on demand (:mod:`auditflow_dagster.sensors.lifecycle`,
:func:`auditflow_dagster.db.events.prune_events`) against the configured Dagster instance
(``$DAGSTER_HOME``) and application database, without the sensor's per-tick bounds: the same
selection (old, quiet, final fiches that nothing in flight targets; finished runs outside live
backfills; expired realtime events), ``--dry-run`` to list what would go.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from typing import Any

import click

from auditflow_dagster.cli_commands.common import CliError, ProgressReport, database

EVENTS_PER_BATCH = 5000


@click.command("migrate")
def migrate() -> None:
    """Apply the database migrations.

    On AUDITFLOW_DATABASE_URL, or the embedded server when it is unset; also installs the bundled
    audit config. Safe to run from several processes at once (advisory lock).
    """
    from auditflow_dagster.stack import prepare_database

    prepare_database()
    click.echo("migrations applied")


@click.command("import-config")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def import_config(path: str) -> None:
    """Import the audit config in the legacy JSON file PATH."""
    from auditflow_dagster.db.configs import import_legacy_json
    from auditflow_dagster.db.session import session_scope
    from auditflow_dagster.stack import prepare_database

    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CliError(f"{path} is not a JSON file: {exc}") from None
    prepare_database()
    with session_scope() as s:
        row = import_legacy_json(s, data, created_by="cli")
        click.echo(f"imported config {row.id}: {row.name}")


def dagster_instance() -> Any:
    """The Dagster instance of ``$DAGSTER_HOME`` (its own ``dagster.yaml`` when there is one, else
    the repository's, installed as every entry point does)."""
    from dagster import DagsterInstance

    from auditflow_dagster.settings import get_settings
    from auditflow_dagster.stack import prepare_dagster_home

    home = get_settings().dagster_home
    if (home / "dagster.yaml").exists():
        os.environ["DAGSTER_HOME"] = str(home)
    else:
        prepare_dagster_home()
    return DagsterInstance.get()


def _asset_graph(instance: Any) -> Any:
    """The code location's asset graph, loaded only when a backfill is in progress (it is needed to
    read what an asset backfill targets; loading the definitions takes seconds)."""
    from auditflow_dagster.sensors.lifecycle import active_backfills

    if not active_backfills(instance):
        return None
    from auditflow_dagster.definitions import defs

    return defs.get_repository_def().asset_graph


def _listed(label: str, items: list[str], show: int) -> None:
    if not items:
        return
    more = f" … and {len(items) - show} more" if len(items) > show else ""
    click.echo(f"  {label}: {', '.join(items[:show])}{more}")


def _plan(instance: Any, now: dt.datetime, retention: dict[str, Any], asset_graph: Any) -> dict[str, Any]:
    """What a prune would delete now (reads only)."""
    from auditflow_dagster.db.events import count_expired_events
    from auditflow_dagster.db.session import session_scope
    from auditflow_dagster.sensors.lifecycle import (
        fiche_partitions_to_retire,
        runs_to_prune,
    )

    keys, parts = fiche_partitions_to_retire(instance, now=now, retention_days=retention["partitions"],
                                             timezone=retention["timezone"], asset_graph=asset_graph)
    run_ids, runs = runs_to_prune(instance, now=now, retention_days=retention["runs"])
    with session_scope() as s:
        events = count_expired_events(s, older_than_hours=retention["events"])
    return {"keys": keys, "parts": parts, "run_ids": run_ids, "runs": runs, "events": events}


def _print_plan(plan: dict[str, Any], retention: dict[str, Any]) -> None:
    parts, runs = plan["parts"], plan["runs"]
    off = "disabled (retention 0)"
    click.echo("fiche partitions: " + (off if retention["partitions"] < 1 else
               f"{len(plan['keys'])} of {parts['partitions']} to retire (older than {retention['partitions']} days; "
               f"{parts['protected']} kept: a run or backfill targets them; {parts['unknown']} without a fiche row, kept)"
               + (" — BLOCKED: an in-progress backfill cannot be read" if parts["blocked"] else "")))
    click.echo("runs: " + (off if retention["runs"] < 1 else
               f"{len(plan['run_ids'])} finished run(s) to delete with their event logs (older than "
               f"{retention['runs']} days; {runs['kept_for_backfill']} kept: their backfill is in progress)"))
    click.echo("events: " + (off if retention["events"] <= 0 else
               f"{plan['events']} realtime event(s) to delete (older than {retention['events']:g} h)"))


def _delete(instance: Any, now: dt.datetime, retention: dict[str, Any], plan: dict[str, Any],
            asset_graph: Any) -> dict[str, int]:
    """Delete with the sensor's own functions, unbounded, one progress bar per kind."""
    from auditflow_dagster.db.events import prune_events
    from auditflow_dagster.db.session import session_scope
    from auditflow_dagster.sensors.lifecycle import prune_runs, retire_fiche_partitions

    with ProgressReport() as report:
        t_parts = report.add("retiring fiche partitions", total=len(plan["keys"]))
        t_runs = report.add("deleting runs", total=len(plan["run_ids"]))
        t_events = report.add("deleting events", total=plan["events"])
        parts = retire_fiche_partitions(
            instance, now=now, retention_days=retention["partitions"], timezone=retention["timezone"], limit=None,
            asset_graph=asset_graph, time_budget_seconds=math.inf,
            on_retired=lambda _key: report.update(t_parts, advance=1))
        runs = prune_runs(instance, now=now, retention_days=retention["runs"], limit=None,
                          time_budget_seconds=math.inf, on_pruned=lambda _run: report.update(t_runs, advance=1))
        events = 0
        while True:
            with session_scope() as s:
                n = prune_events(s, older_than_hours=retention["events"], limit=EVENTS_PER_BATCH)
            if not n:
                break
            events += n
            report.update(t_events, advance=n)
    return {"partitions": parts["retired"], "runs": runs["pruned"], "events": events, "blocked": parts["blocked"]}


@click.command("prune")
@click.option("--dry-run", is_flag=True, help="print what would be deleted; delete nothing")
@click.option("--partition-retention-days", type=int, metavar="DAYS",
              help="retire fiche partitions older than this (default AUDITFLOW_FICHE_PARTITION_RETENTION_DAYS; 0 skips)")
@click.option("--run-retention-days", type=int, metavar="DAYS",
              help="delete finished runs older than this (default AUDITFLOW_RUN_RETENTION_DAYS; 0 skips)")
@click.option("--event-retention-hours", type=float, metavar="HOURS",
              help="delete realtime events older than this (default AUDITFLOW_EVENT_RETENTION_HOURS; 0 skips)")
@click.option("--show", type=click.IntRange(min=0), default=50, show_default=True,
              help="with --dry-run: how many partition keys and run ids to list")
def prune(dry_run: bool, partition_retention_days: int | None, run_retention_days: int | None,
          event_retention_hours: float | None, show: int) -> None:
    """Prune old fiche partitions, runs and events now.

    What the hourly partition_lifecycle sensor does, on demand and without its per-tick bounds,
    against $DAGSTER_HOME's instance and the application database: retires fiche partitions older
    than the retention whose audits are final and that no run or backfill targets (app rows are
    kept; a fiche is re-registered on demand), deletes finished runs (and their event logs) outside
    in-progress backfills, and expired events. Prints the plan, then a progress bar per kind and the
    counts.
    """
    from auditflow_dagster.settings import get_settings

    database()
    settings = get_settings()
    retention = {
        "partitions": settings.fiche_partition_retention_days if partition_retention_days is None
        else partition_retention_days,
        "runs": settings.run_retention_days if run_retention_days is None else run_retention_days,
        "events": settings.event_retention_hours if event_retention_hours is None else event_retention_hours,
        "timezone": settings.business_timezone,
    }
    now = dt.datetime.now(dt.UTC)
    with dagster_instance() as instance:
        asset_graph = _asset_graph(instance)
        plan = _plan(instance, now, retention, asset_graph)
        _print_plan(plan, retention)
        if dry_run:
            _listed("partitions", plan["keys"], show)
            _listed("runs", plan["run_ids"], show)
            click.echo("dry run: nothing deleted")
            return
        done = _delete(instance, now, retention, plan, asset_graph)
    click.echo(f"pruned: {done['partitions']} fiche partition(s) retired, {done['runs']} run(s) deleted, "
               f"{done['events']} event(s) deleted")
    if done["blocked"]:
        raise CliError("fiche partitions were not retired: an in-progress backfill cannot be read")
