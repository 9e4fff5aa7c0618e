"""Automation run state (spec 05 §2.3–§3.10): start compare-and-set, per-fiche outcomes, logs,
progress and the one finalization.

Every write here is idempotent, because every caller may be retried: the run job by Dagster's run
retries, the fiche assets by backfill re-executions, the finalizer by the next sensor tick.

- :func:`log` is the one writer of ``automation_logs`` (mirrored to the process logger, metadata
  sanitized, spec 05 §3.11);
- :func:`record_outcome` upserts a fiche's verdict as soon as it is known;
- :func:`finish_schedule` applies the §2.3 bookkeeping with atomic increments.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from auditflow_dagster.core.automation import (
    LOST,
    SCHEDULE_STATUS,
    Verdict,
    final_status,
    sanitize_log_metadata,
    should_notify,
)
from auditflow_dagster.db.clock import iso, now_utc
from auditflow_dagster.db.configs import automatic_config_ids
from auditflow_dagster.db.events import emit
from auditflow_dagster.db.models import (
    Audit,
    AuditConfig,
    AutomationLog,
    AutomationRun,
    AutomationRunFicheResult,
    AutomationSchedule,
    Event,
    FicheCache,
    Recording,
)

logger = logging.getLogger("auditflow.automation")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def log(session: Session, run_id: int, level: str, message: str, meta: dict[str, Any] | None = None) -> None:
    """One ``automation_logs`` row (in the caller's transaction), mirrored to the process logger."""
    level = level if level in _LEVELS else "info"
    clean = sanitize_log_metadata(meta)
    session.add(AutomationLog(run_id=run_id, level=level, message=message, meta=clean, timestamp=now_utc()))
    logger.log(_LEVELS[level], "automation run %s: %s %s", run_id, message, clean if clean else "")


def record_outcome(session: Session, run_id: int, fiche_id: str, verdict: Verdict) -> None:
    """Upsert the fiche's result row (one per fiche and run). A later attempt's verdict replaces
    an earlier ``failed`` one (retries); an ``ignored`` or ``successful`` verdict is final."""
    values = {"run_id": run_id, "fiche_id": fiche_id, "status": verdict.status,
              "error": verdict.error if verdict.status == "failed" else None,
              "ignore_reason": verdict.reason if verdict.status == "ignored" else None,
              "recordings_count": verdict.recordings_count if verdict.status == "ignored" else None,
              "created_at": now_utc()}
    stmt = pg_insert(AutomationRunFicheResult).values(**values)
    session.execute(stmt.on_conflict_do_update(
        index_elements=["run_id", "fiche_id"],
        set_={k: stmt.excluded[k] for k in ("status", "error", "ignore_reason", "recordings_count", "created_at")},
        where=AutomationRunFicheResult.status == "failed",
    ))


def finish_schedule(session: Session, schedule_id: int, run_status: str) -> None:
    """Finalization / early exit / catastrophe bookkeeping (spec 05 §2.3): ``last_run_at = now``,
    the mapped status, and atomic counter increments (legacy read-modify-write raced)."""
    status = SCHEDULE_STATUS.get(run_status, "failed")
    session.execute(
        update(AutomationSchedule).where(AutomationSchedule.id == schedule_id).values(
            last_run_at=now_utc(), last_run_status=status,
            total_runs=AutomationSchedule.total_runs + 1,
            successful_runs=AutomationSchedule.successful_runs + (1 if status == "success" else 0),
            failed_runs=AutomationSchedule.failed_runs + (1 if status == "failed" else 0),
        )
    )


# --------------------------------------------------------------------------------------------- #
# Start (spec 05 §2.5, §3.1)
# --------------------------------------------------------------------------------------------- #


class RunRefused(Exception):
    """The schedule cannot start a run (missing / inactive): non-retryable, no run row."""


def job_id(run_id: int) -> str:
    return f"automation-run-{run_id}"


def realtime(session: Session, name: str, run: AutomationRun, **fields: Any) -> None:
    """``automation.run.*`` on the run's channel ``job-automation-run-<id>`` (spec 05 §5.6)."""
    emit(session, name, {"job_id": job_id(run.id), "schedule_id": str(run.schedule_id), "run_id": str(run.id),
                         **fields})


def _snapshot(schedule: AutomationSchedule, *, due_at: dt.datetime | None, trigger: str,
              overrides: dict[str, Any] | None, dagster_run_id: str | None) -> dict[str, Any]:
    return {"schedule": {"name": schedule.name, "scheduleType": schedule.schedule_type},
            "overrides": overrides, "due_at": iso(due_at), "trigger": trigger, "dagster_run_id": dagster_run_id}


def _stale_cutoff(stale_ms: int) -> dt.datetime:
    return now_utc() - dt.timedelta(milliseconds=stale_ms)


def start_scheduled_run(session: Session, *, schedule_id: int, due_at: dt.datetime, dagster_run_id: str,
                        stale_ms: int) -> AutomationRun | None:
    """The job's compare-and-set (spec 05 §2.5): claim the occurrence only if the schedule is
    active, not running (or stale) and has not run since ``due_at``. A re-execution of the same
    Dagster run finds its own row again. None ⇒ the occurrence is someone else's: exit quietly."""
    mine = session.scalar(select(AutomationRun).where(AutomationRun.schedule_id == schedule_id,
                                                      AutomationRun.dagster_run_id == dagster_run_id))
    if mine is not None:
        return mine
    schedule = session.get(AutomationSchedule, schedule_id)
    if schedule is None:
        raise RunRefused(f"Schedule {schedule_id} not found")
    if not schedule.is_active:
        raise RunRefused(f"Schedule {schedule_id} is not active")
    claimed = session.execute(
        update(AutomationSchedule)
        .where(AutomationSchedule.id == schedule_id, AutomationSchedule.is_active.is_(True),
               or_(AutomationSchedule.last_run_status.is_distinct_from("running"),
                   AutomationSchedule.last_run_at.is_(None),
                   AutomationSchedule.last_run_at < _stale_cutoff(stale_ms)),
               or_(AutomationSchedule.last_run_at.is_(None), AutomationSchedule.last_run_at < due_at))
        .values(last_run_status="running", last_run_at=due_at, last_due_at=due_at)
        .returning(AutomationSchedule.id)
    ).first()
    if claimed is None:
        return None
    run = AutomationRun(schedule_id=schedule_id, status="running", started_at=now_utc(), trigger="scheduled",
                        dagster_run_id=dagster_run_id,
                        config_snapshot=_snapshot(schedule, due_at=due_at, trigger="scheduled", overrides=None,
                                                  dagster_run_id=dagster_run_id))
    session.add(run)
    session.flush()
    log(session, run.id, "info", "Automation run started", {"trigger": "scheduled", "due_at": iso(due_at)})
    realtime(session, "automation.run.started", run, due_at=iso(due_at), status="running")
    return run


class ScheduleRunning(Exception):
    """A manual trigger while a (non-stale) run is going: 409 unless forced."""


def create_manual_run(session: Session, schedule_id: int, *, overrides: dict[str, Any] | None, force: bool,
                      stale_ms: int) -> AutomationRun:
    """The trigger endpoint's run row (spec 05 §6.2): created before the Dagster job is launched so
    the caller gets the run id; the schedule is marked running in the same transaction."""
    schedule = session.get(AutomationSchedule, schedule_id, with_for_update=True)
    if schedule is None:
        raise LookupError(schedule_id)
    if not schedule.is_active:
        raise RunRefused("Schedule is not active")
    busy = (schedule.last_run_status == "running" and schedule.last_run_at is not None
            and schedule.last_run_at >= _stale_cutoff(stale_ms))
    if busy and not force:
        raise ScheduleRunning("Schedule already has a running automation run; retry with force=true")
    now = now_utc()
    run = AutomationRun(schedule_id=schedule_id, status="running", started_at=now, trigger="manual",
                        config_snapshot=_snapshot(schedule, due_at=None, trigger="manual", overrides=overrides,
                                                  dagster_run_id=None))
    session.add(run)
    schedule.last_run_status, schedule.last_run_at = "running", now
    session.flush()
    log(session, run.id, "info", "Automation run triggered manually", {"overrides": overrides is not None})
    return run


def attach_dagster_run(session: Session, run_id: int, dagster_run_id: str) -> None:
    run = session.get(AutomationRun, run_id, with_for_update=True)
    if run is not None and run.dagster_run_id is None:
        run.dagster_run_id = dagster_run_id
        run.config_snapshot = {**run.config_snapshot, "dagster_run_id": dagster_run_id}


def drop_manual_run(session: Session, run_id: int) -> None:
    """The launch failed: nothing will run, so the row goes and the schedule is free again."""
    run = session.get(AutomationRun, run_id)
    if run is None:
        return
    session.execute(update(AutomationSchedule).where(AutomationSchedule.id == run.schedule_id,
                                                     AutomationSchedule.last_run_status == "running")
                    .values(last_run_status=None))
    session.delete(run)


def begin_manual_run(session: Session, run_id: int, dagster_run_id: str) -> AutomationRun | None:
    """The job side of a manual trigger: the row the endpoint created (None once it is final — a
    retry of a finished run stops there)."""
    run = session.get(AutomationRun, run_id, with_for_update=True)
    if run is None or run.status != "running":
        return None
    if run.dagster_run_id is None:
        run.dagster_run_id = dagster_run_id
    if not session.scalar(select(func.count()).select_from(Event).where(
            Event.name == "automation.run.started", Event.channels.any(f"job-{job_id(run.id)}"))):
        realtime(session, "automation.run.started", run, due_at=None, status="running")
    return run


def schedule_of(session: Session, run: AutomationRun) -> AutomationSchedule:
    schedule = session.get(AutomationSchedule, run.schedule_id)
    if schedule is None:
        raise RunRefused(f"Schedule {run.schedule_id} not found")
    return schedule


# --------------------------------------------------------------------------------------------- #
# Selection and launch
# --------------------------------------------------------------------------------------------- #


def day_revalidated_at(session: Session, day_iso: str) -> dt.datetime | None:
    """Newest ``last_revalidated_at`` among the day's cached rows (the cooldown of spec 05 §3.3)."""
    return session.scalar(select(func.max(FicheCache.last_revalidated_at)).where(FicheCache.sales_date == day_iso))


def cached_day(session: Session, day_iso: str) -> list[tuple[str, str | None]]:
    """The day's cached fiches ``(fiche_id, groupe)`` in CRM order."""
    return list(session.execute(select(FicheCache.fiche_id, FicheCache.groupe)
                                .where(FicheCache.sales_date == day_iso).order_by(FicheCache.id)).tuples())


def groupes_of(session: Session, fiche_ids: list[str]) -> dict[str, str | None]:
    return dict(session.execute(select(FicheCache.fiche_id, FicheCache.groupe)
                                .where(FicheCache.fiche_id.in_(fiche_ids))).tuples().all()) if fiche_ids else {}


def audited_fiches(session: Session, fiche_ids: list[str], config_ids: list[int]) -> set[str]:
    """``onlyUnaudited`` (spec 05 §3.3 step 4): fiches where every config has a latest, completed,
    not deleted audit; with no configs, fiches with any such audit."""
    if not fiche_ids:
        return set()
    q = (select(FicheCache.fiche_id, Audit.audit_config_id).join(Audit, Audit.fiche_cache_id == FicheCache.id)
         .where(FicheCache.fiche_id.in_(fiche_ids), Audit.is_latest.is_(True), Audit.status == "completed",
                Audit.deleted_at.is_(None)))
    seen: dict[str, set[int]] = {}
    for fiche_id, config_id in session.execute(q):
        seen.setdefault(fiche_id, set()).add(config_id)
    if not config_ids:
        return set(seen)
    return {f for f, done in seen.items() if set(config_ids) <= done}


def resolve_configs(session: Session, schedule: AutomationSchedule) -> tuple[list[int], list[int]]:
    """Spec 05 §3.5: specific ids (stored order; unknown/inactive dropped) then, with automatic
    audits, every active automatic config; de-duplicated. Returns ``(config_ids, dropped)``."""
    wanted = [i for i in (schedule.specific_audit_configs or []) if i and i > 0]
    active = set(session.scalars(select(AuditConfig.id).where(AuditConfig.id.in_(wanted),
                                                               AuditConfig.is_active.is_(True)))) if wanted else set()
    out = [i for i in wanted if i in active]
    dropped = [i for i in wanted if i not in active]
    if schedule.use_automatic_audits:
        out += automatic_config_ids(session)
    return list(dict.fromkeys(out)), dropped


def save_plan(session: Session, run_id: int, *, selected: list[str], plan: dict[str, Any],
              revalidation_failures: list[dict[str, Any]]) -> None:
    run = session.get(AutomationRun, run_id, with_for_update=True)
    run.selected_fiche_ids = selected
    run.config_snapshot = {**run.config_snapshot, "plan": plan}
    if revalidation_failures:
        run.error_details = {**(run.error_details or {}), "revalidation_failures": revalidation_failures}


def add_backfill(session: Session, run_id: int, backfill_id: str, *, attempt: int) -> None:
    run = session.get(AutomationRun, run_id, with_for_update=True)
    run.backfill_ids = [*run.backfill_ids, backfill_id]
    run.attempt = attempt


def plan_of(session: Session, run_id: int) -> dict[str, Any] | None:
    snapshot = session.scalar(select(AutomationRun.config_snapshot).where(AutomationRun.id == run_id))
    return (snapshot or {}).get("plan")


def verdicts(session: Session, run_id: int, fiche_ids: list[str] | None = None) -> dict[str, str]:
    q = select(AutomationRunFicheResult.fiche_id, AutomationRunFicheResult.status).where(
        AutomationRunFicheResult.run_id == run_id)
    if fiche_ids is not None:
        q = q.where(AutomationRunFicheResult.fiche_id.in_(fiche_ids))
    return dict(session.execute(q).tuples().all())


def has_failure(session: Session, run_id: int) -> bool:
    return session.scalar(select(func.count()).select_from(AutomationRunFicheResult).where(
        AutomationRunFicheResult.run_id == run_id, AutomationRunFicheResult.status == "failed")) > 0


# --------------------------------------------------------------------------------------------- #
# Endings (spec 05 §3.4, §3.9, §3.10)
# --------------------------------------------------------------------------------------------- #

EARLY_EXITS = {
    "no_fiches_manual": ("No fiches in manual selection", {"message": "No fiches found", "ficheIds": []},
                         "no-fiches"),
    "no_dates": ("No dates to query", {"message": "No dates to query", "ficheIds": []}, "no-dates"),
    "no_fiches": ("No fiches found matching criteria", {"message": "No fiches found", "ficheIds": []},
                  "no-fiches-found"),
}


def _close(run: AutomationRun, status: str) -> int:
    now = now_utc()
    run.status, run.completed_at = status, now
    run.duration_ms = max(0, int((now - run.started_at).total_seconds() * 1000))
    return run.duration_ms


def early_exit(session: Session, run_id: int, reason: str) -> None:
    """Completed with zero counters, schedule ``success``, a warning, the completed events; no
    webhook or email (spec 05 §3.4)."""
    run = session.get(AutomationRun, run_id, with_for_update=True)
    if run is None or run.status != "running":
        return
    message, summary, key = EARLY_EXITS[reason]
    duration = _close(run, "completed")
    run.result_summary = summary
    finish_schedule(session, run.schedule_id, "completed")
    log(session, run.id, "warning", message, {"reason": reason})
    emit(session, "automation/completed", {"schedule_id": str(run.schedule_id), "run_id": str(run.id),
                                           "status": "completed", "total_fiches": 0, "successful_fiches": 0,
                                           "failed_fiches": 0, "duration_ms": duration, "reason": reason,
                                           "dedupe_key": f"automation-completed-{run.id}-{key}"})
    realtime(session, "automation.run.completed", run, status="completed", total_fiches=0, successful_fiches=0,
             failed_fiches=0, ignored_fiches=0, transcriptions_run=0, audits_run=0, duration_ms=duration,
             reason=reason)


@dataclasses.dataclass
class Ending:
    """What the notifier needs once the ending is committed (plain values)."""

    run_id: int
    schedule_id: int
    schedule_name: str
    status: str
    duration_ms: int
    counts: dict[str, int]
    failures: list[dict[str, str]]
    error: str | None
    webhook_url: str | None
    emails: list[str]
    notify: bool


def fail_run(session: Session, run_id: int, error: str, *, name: str = "Error") -> Ending | None:
    """The catastrophic path (spec 05 §3.10): run failed, schedule failed, log, events. No stack
    is stored (legacy exposed it). None when the run is already final."""
    run = session.get(AutomationRun, run_id, with_for_update=True)
    if run is None or run.status != "running":
        return None
    schedule = session.get(AutomationSchedule, run.schedule_id)
    duration = _close(run, "failed")
    run.error_message = error[:2000]
    run.error_details = {**(run.error_details or {}), "name": name, "message": error[:2000]}
    run.result_summary = None
    finish_schedule(session, run.schedule_id, "failed")
    log(session, run.id, "error", f"Automation failed: {error[:2000]}")
    emit(session, "automation/failed", {"schedule_id": str(run.schedule_id), "run_id": str(run.id),
                                        "error": error[:2000], "dedupe_key": f"automation-failed-{run.id}"})
    realtime(session, "automation.run.failed", run, status="failed", error=error[:2000], duration_ms=duration)
    return Ending(run.id, run.schedule_id, schedule.name if schedule else "", "failed", duration, {}, [],
                  error[:2000], schedule.webhook_url if schedule else None, list(schedule.notify_emails or [])
                  if schedule else [], bool(schedule and schedule.notify_on_error))


def result_counts(session: Session, run_id: int) -> dict[str, int]:
    rows = session.execute(select(AutomationRunFicheResult.status, func.count())
                           .where(AutomationRunFicheResult.run_id == run_id)
                           .group_by(AutomationRunFicheResult.status)).tuples()
    counts = {"successful": 0, "failed": 0, "ignored": 0}
    counts.update(dict(rows.all()))
    return counts


def publish_progress(session: Session, run_id: int) -> bool:
    """``automation.run.progress`` when the counters moved since the last one (spec 05 §5.6)."""
    run = session.get(AutomationRun, run_id, with_for_update=True)
    if run is None or run.status != "running":
        return False
    counts = result_counts(session, run_id)
    audits = _audits_run(session, run_id)
    current = {**counts, "audits": audits, "total": len(run.selected_fiche_ids)}
    if run.last_progress == current:
        return False
    run.last_progress = current
    realtime(session, "automation.run.progress", run, successful=counts["successful"], failed=counts["failed"],
             ignored=counts["ignored"], audits=audits, processed=sum(counts.values()),
             total_fiches=len(run.selected_fiche_ids))
    return True


def _audits_run(session: Session, run_id: int) -> int:
    return session.scalar(select(func.count()).select_from(Audit).where(
        Audit.automation_run_id == run_id, Audit.status.in_(("completed", "failed")))) or 0


def _transcriptions_run(session: Session, run_id: int, fiche_ids: list[str]) -> int:
    """Fiches of the run (not ignored) whose every recording is transcribed (spec 05 §3.9)."""
    if not fiche_ids:
        return 0
    ignored = select(AutomationRunFicheResult.fiche_id).where(AutomationRunFicheResult.run_id == run_id,
                                                               AutomationRunFicheResult.status == "ignored")
    per_fiche = (select(FicheCache.fiche_id)
                 .join(Recording, Recording.fiche_cache_id == FicheCache.id)
                 .where(FicheCache.fiche_id.in_(fiche_ids), FicheCache.fiche_id.not_in(ignored))
                 .group_by(FicheCache.fiche_id)
                 .having(func.bool_and(Recording.has_transcription)))
    return session.scalar(select(func.count()).select_from(per_fiche.subquery())) or 0


def finalize_run(session: Session, run_id: int) -> Ending | None:
    """The one normal ending (spec 05 §3.9), under the run row lock; None when already final.

    Selected fiches without a verdict fail ("Not processed …"); status from the verdicts;
    counters; ``result_summary = {}``; schedule stats; log and events."""
    run = session.scalar(select(AutomationRun).where(AutomationRun.id == run_id).with_for_update())
    if run is None or run.status != "running":
        return None
    schedule = session.get(AutomationSchedule, run.schedule_id)
    have = verdicts(session, run_id)
    for fiche_id in run.selected_fiche_ids:
        if fiche_id not in have:
            record_outcome(session, run_id, fiche_id, Verdict("failed", error=LOST))
    counts = result_counts(session, run_id)
    status = final_status(counts["successful"], counts["failed"])
    duration = _close(run, status)
    run.total_fiches = counts["successful"] + counts["failed"]
    run.successful_fiches, run.failed_fiches = counts["successful"], counts["failed"]
    run.audits_run = _audits_run(session, run_id)
    run.transcriptions_run = _transcriptions_run(session, run_id, list(run.selected_fiche_ids))
    run.result_summary = {}
    finish_schedule(session, run.schedule_id, status)
    failures = [{"ficheId": f, "error": e or "Unknown error"} for f, e in session.execute(
        select(AutomationRunFicheResult.fiche_id, AutomationRunFicheResult.error)
        .where(AutomationRunFicheResult.run_id == run_id, AutomationRunFicheResult.status == "failed")
        .order_by(AutomationRunFicheResult.fiche_id)).tuples()]
    log(session, run.id, "info", "Automation run completed", {"status": status, "duration_ms": duration})
    emit(session, "automation/completed", {"schedule_id": str(run.schedule_id), "run_id": str(run.id),
                                           "status": status, "total_fiches": run.total_fiches,
                                           "successful_fiches": run.successful_fiches,
                                           "failed_fiches": run.failed_fiches, "duration_ms": duration,
                                           "dedupe_key": f"automation-completed-{run.id}"})
    realtime(session, "automation.run.completed", run, status=status, total_fiches=run.total_fiches,
             successful_fiches=run.successful_fiches, failed_fiches=run.failed_fiches,
             ignored_fiches=counts["ignored"], transcriptions_run=run.transcriptions_run,
             audits_run=run.audits_run, duration_ms=duration)
    notify = bool(schedule) and should_notify(status, notify_on_complete=schedule.notify_on_complete,
                                              notify_on_error=schedule.notify_on_error)
    return Ending(run.id, run.schedule_id, schedule.name if schedule else "", status, duration,
                  {"total_fiches": run.total_fiches, "successful_fiches": run.successful_fiches,
                   "failed_fiches": run.failed_fiches, "ignored_fiches": counts["ignored"],
                   "transcriptions_run": run.transcriptions_run, "audits_run": run.audits_run},
                  failures, None, schedule.webhook_url if schedule else None,
                  list(schedule.notify_emails or []) if schedule else [], notify)


def running_runs(session: Session) -> list[tuple[int, list[str], int]]:
    """Running runs that launched a fiche backfill: ``(run_id, backfill_ids, attempt)``."""
    return list(session.execute(select(AutomationRun.id, AutomationRun.backfill_ids, AutomationRun.attempt)
                                .where(AutomationRun.status == "running",
                                       func.cardinality(AutomationRun.backfill_ids) > 0)
                                .order_by(AutomationRun.id)).tuples())


def failed_fiches(session: Session, run_id: int) -> list[str]:
    return list(session.scalars(select(AutomationRunFicheResult.fiche_id).where(
        AutomationRunFicheResult.run_id == run_id, AutomationRunFicheResult.status == "failed")
        .order_by(AutomationRunFicheResult.id)))


def run_audit_statuses(session: Session, run_id: int, fiche_id: str,
                       config_ids: list[int]) -> list[tuple[str, str | None]]:
    """``[(status, error_message)]`` of the run's newest audit of the fiche per config, in config
    order; a config without an audit is ``("missing", None)``."""
    rows = session.execute(
        select(Audit.audit_config_id, Audit.status, Audit.error_message)
        .join(FicheCache, FicheCache.id == Audit.fiche_cache_id)
        .where(Audit.automation_run_id == run_id, FicheCache.fiche_id == fiche_id)
        .order_by(Audit.id)).tuples()
    newest = {cid: (status, error) for cid, status, error in rows}
    return [newest.get(c, ("missing", None)) for c in config_ids]


def take_failed_for_retry(session: Session, run_id: int) -> list[dict[str, str]]:
    """The failed fiches of the run, their rows removed so the retry attempt records fresh
    verdicts (a fiche is still counted once: one row per fiche). Returns ``[{ficheId, error}]``."""
    gone = session.execute(
        delete(AutomationRunFicheResult)
        .where(AutomationRunFicheResult.run_id == run_id, AutomationRunFicheResult.status == "failed")
        .returning(AutomationRunFicheResult.fiche_id, AutomationRunFicheResult.error)).tuples()
    return [{"ficheId": f, "error": e or "Unknown error"} for f, e in sorted(gone)]


def notify(ending: Ending) -> None:
    """Notifications of a committed ending (spec 05 §5.1–§5.4): the webhook goes through the
    outbox (signed, SSRF-checked again at send time, retried), the e-mail is sent now. Each outcome
    is a run log line; nothing here can fail the run."""
    from auditflow_dagster.core import automation_notify as texts
    from auditflow_dagster.db.session import session_scope
    from auditflow_dagster.db.webhooks import enqueue_automation_webhook
    from auditflow_dagster.resources.mailer import send_mail
    from auditflow_dagster.settings import get_settings

    if not ending.notify:
        return
    failed = ending.error is not None
    try:
        if ending.webhook_url:
            payload = (texts.failure_webhook_payload(
                schedule_id=ending.schedule_id, schedule_name=ending.schedule_name, run_id=ending.run_id,
                error=ending.error, duration_ms=ending.duration_ms) if failed else texts.webhook_payload(
                schedule_id=ending.schedule_id, schedule_name=ending.schedule_name, run_id=ending.run_id,
                status=ending.status, duration_ms=ending.duration_ms, failures=ending.failures, **ending.counts))
            with session_scope() as s:
                delivery = enqueue_automation_webhook(
                    s, run_id=ending.run_id, url=ending.webhook_url,
                    event="automation.failed" if failed else "automation.completed", payload=payload)
                log(s, ending.run_id, "info", "Webhook notification queued", {"delivery_id": delivery})
    except Exception as exc:  # noqa: BLE001 - notifications never affect the run (spec 05 §5.1)
        logger.warning("automation run %s: webhook not queued: %s", ending.run_id, exc.__class__.__name__)
    try:
        if ending.emails:
            subject = texts.email_subject(ending.schedule_name, ending.status)
            body = (texts.failure_email_body(ending.error, ending.duration_ms) if failed else
                    texts.email_body(ending.status, ending.counts, ending.duration_ms, ending.failures))
            outcome = send_mail(get_settings(), ending.emails, subject, body)
            with session_scope() as s:
                level = "warning" if outcome.startswith("failed") else "info"
                log(s, ending.run_id, level, f"Email notification {outcome}", {"recipients": len(ending.emails)})
    except Exception as exc:  # noqa: BLE001
        logger.warning("automation run %s: email not sent: %s", ending.run_id, exc.__class__.__name__)
