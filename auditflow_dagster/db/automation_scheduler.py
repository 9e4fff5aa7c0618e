"""What the automation scheduler sensor reads and repairs (spec 05 §2.1, §2.4).

- :func:`active_schedules` gives the sensor plain dicts (no ORM rows outlive the session);
- :func:`runs_awaiting_pipeline` lists the running automation runs whose fate is still decided by
  their Dagster run (no fiche backfill launched yet), so the sensor can ask the instance about them;
- :func:`reconcile_stale` fails the runs of a schedule that are stale (§2.4) or whose Dagster run
  ended FAILURE/CANCELED before a backfill existed (rewrite extension), and then the schedule.

The sensor writes no due marks (§2.5: the run job compare-and-sets at start); reconciliation is
the only schedule write done here, and it is idempotent: a run is only failed while still
``running`` and under its row lock, so two ticks (or a tick and the job's own finalization) never
both write it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session

from auditflow_dagster.db import automation_runs
from auditflow_dagster.db.clock import iso
from auditflow_dagster.db.events import emit
from auditflow_dagster.db.models import AutomationRun, AutomationSchedule

STALE_LOG_MESSAGE = "Automation run marked stale by scheduler"
DAGSTER_FAILED_LOG_MESSAGE = "Automation run failed: its Dagster run ended before the fiche pipeline started"
STALE_REASON = "stale_threshold_exceeded"
DAGSTER_REASONS = {"FAILURE": "dagster_run_failed", "CANCELED": "dagster_run_canceled"}
_INT_MAX = 2**31 - 1  # duration_ms is an int column: a run stale for > 24 days must not overflow it

_SCHEDULE_FIELDS = ("id", "name", "schedule_type", "cron_expression", "timezone", "time_of_day", "day_of_week",
                    "day_of_month", "last_run_at", "last_run_status", "last_due_at")


def _naive_utc(value: dt.datetime) -> dt.datetime:
    """The DB's convention: naive UTC ``timestamp(3)`` (aware input is converted)."""
    return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value


def active_schedules(session: Session) -> list[dict[str, Any]]:
    """Active schedules (§2.1 step 1) as dicts of the fields due detection needs, by id."""
    columns = [getattr(AutomationSchedule, name) for name in _SCHEDULE_FIELDS]
    rows = session.execute(
        select(*columns).where(AutomationSchedule.is_active.is_(True)).order_by(AutomationSchedule.id)
    ).all()
    return [dict(zip(_SCHEDULE_FIELDS, row, strict=True)) for row in rows]


def runs_awaiting_pipeline(session: Session) -> list[dict[str, Any]]:
    """Running automation runs with a Dagster run and no fiche backfill yet.

    Only their Dagster run can tell whether they are alive: once a backfill exists, the run's
    progress sensor finalizes it from our rows (DESIGN §3.4), so those are not listed.
    """
    rows = session.execute(
        select(AutomationRun.id, AutomationRun.schedule_id, AutomationRun.dagster_run_id)
        .where(AutomationRun.status == "running", AutomationRun.dagster_run_id.is_not(None),
               func.cardinality(AutomationRun.backfill_ids) == 0)
        .order_by(AutomationRun.id)
    ).all()
    return [{"id": r.id, "schedule_id": r.schedule_id, "dagster_run_id": r.dagster_run_id} for r in rows]


def schedule_is_stale(last_run_status: str | None, last_run_at: dt.datetime | None, *, now: dt.datetime,
                      stale_ms: int) -> bool:
    """§2.1 step 2.1: ``running`` for at least STALE — or ``running`` with a NULL ``last_run_at``
    (legacy never reconciled those, leaving the schedule stuck forever ⚠)."""
    if last_run_status != "running":
        return False
    if last_run_at is None:
        return True
    return _naive_utc(now) - _naive_utc(last_run_at) >= dt.timedelta(milliseconds=stale_ms)


def last_run_status(session: Session, schedule_id: int) -> str | None:
    """The schedule's current ``last_run_status`` (after a reconciliation)."""
    return session.scalar(select(AutomationSchedule.last_run_status).where(AutomationSchedule.id == schedule_id))


def _minutes(ms: float) -> int:
    return round(ms / 60_000)


def reconcile_stale(
    session: Session,
    schedule_id: int,
    *,
    now: dt.datetime,
    stale_ms: int,
    failed_dagster_runs: Mapping[int, str] | None = None,
) -> int:
    """Fail the schedule's dead runs (spec 05 §2.4); returns how many runs were failed.

    A run is dead when it is ``running`` and either started before ``now − STALE``, or is listed in
    ``failed_dagster_runs`` (``{automation_run_id: "FAILURE" | "CANCELED"}``, the status of its
    Dagster run) and still has no fiche backfill. Each gets ``completed_at``, ``duration_ms``,
    ``error_message``/``error_details``, an ``error`` log and an ``automation.run.failed`` event.

    The schedule then becomes ``failed`` (``last_run_at`` and counters unchanged, §2.3) when it is
    ``running`` and either a run was failed here or it is itself stale (NULL ``last_run_at``
    included), unless a live run of it is still ``running``. Rows locked by a concurrent writer are
    skipped (the next tick sees their new state), so this is safe to call on every tick.
    """
    failed_dagster_runs = dict(failed_dagster_runs or {})
    now = _naive_utc(now)
    stale_before = now - dt.timedelta(milliseconds=stale_ms)
    schedule = session.execute(
        select(AutomationSchedule.id, AutomationSchedule.last_run_status, AutomationSchedule.last_run_at)
        .where(AutomationSchedule.id == schedule_id).with_for_update()
    ).one_or_none()
    if schedule is None:
        return 0

    candidates = (AutomationRun.started_at < stale_before)
    if failed_dagster_runs:
        candidates = candidates | (
            AutomationRun.id.in_(list(failed_dagster_runs)) & (func.cardinality(AutomationRun.backfill_ids) == 0))
    runs = session.scalars(
        select(AutomationRun)
        .where(AutomationRun.schedule_id == schedule_id, AutomationRun.status == "running", candidates)
        .order_by(AutomationRun.id).with_for_update(skip_locked=True)
    ).all()

    for run in runs:
        age_ms = (now - run.started_at) / dt.timedelta(milliseconds=1)
        duration_ms = max(0, min(_INT_MAX, int(age_ms)))
        dagster_status = None if run.started_at < stale_before else failed_dagster_runs.get(run.id)
        details: dict[str, Any] = {"marked_stale": True,
                                   "reason": DAGSTER_REASONS.get(dagster_status or "", STALE_REASON),
                                   "stale_before": iso(stale_before), "marked_at": iso(now)}
        if dagster_status:
            message = (f"Dagster run {run.dagster_run_id} ended {dagster_status} "
                       "before the fiche pipeline started")
            details.update(dagster_run_id=run.dagster_run_id, dagster_status=dagster_status)
            log_message = DAGSTER_FAILED_LOG_MESSAGE
        else:
            message = f"Marked stale by scheduler after {_minutes(age_ms)}m (threshold {_minutes(stale_ms)}m)"
            log_message = STALE_LOG_MESSAGE
        run.status = "failed"
        run.completed_at = now
        run.duration_ms = duration_ms
        run.error_message = message
        run.error_details = details
        automation_runs.log(session, run.id, "error", log_message, {**details, "error": message})
        emit(session, "automation.run.failed", {
            "job_id": f"automation-run-{run.id}", "schedule_id": str(schedule_id), "run_id": str(run.id),
            "status": "failed", "error": message, "duration_ms": duration_ms,
        })
    session.flush()

    stale = schedule_is_stale(schedule.last_run_status, schedule.last_run_at, now=now, stale_ms=stale_ms)
    if schedule.last_run_status == "running" and (runs or stale):
        still_running = exists().where(AutomationRun.schedule_id == schedule_id, AutomationRun.status == "running",
                                       AutomationRun.started_at >= stale_before)
        session.execute(
            update(AutomationSchedule)
            .where(AutomationSchedule.id == schedule_id, AutomationSchedule.last_run_status == "running",
                   ~still_running)
            .values(last_run_status="failed")
        )
    return len(runs)
