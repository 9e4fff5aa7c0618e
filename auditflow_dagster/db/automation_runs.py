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

import logging
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from auditflow_dagster.core.automation import SCHEDULE_STATUS, Verdict, sanitize_log_metadata
from auditflow_dagster.db.clock import now_utc
from auditflow_dagster.db.models import AutomationLog, AutomationRunFicheResult, AutomationSchedule

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
