"""Batch audits (spec 04 §5) without Redis: the batch state lives in ``audit_batches`` and
``audit_batch_items``.

Each item carries the tracking id of *its* audit, so progress counts only the batch's own audits
(never another audit of the same fiche/config, never an overlapping batch's). Progress is derived
from the ``audits`` table by :func:`refresh_batch`, under the batch row lock: an item moves out of
``pending`` once (idempotent), the counters are recomputed from the items (atomic), and the batch
finalizes exactly once (``status`` leaves ``running`` under the lock) with one ``batch.completed``.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import secrets
import time
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from auditflow_dagster.db.clock import iso, now_utc
from auditflow_dagster.db.config_admin import latest_active_config
from auditflow_dagster.db.events import emit
from auditflow_dagster.db.models import Audit, AuditBatch, AuditBatchItem, AuditConfig

OPERATION = "audit"
#: legacy AUDIT_BATCH_STATE_TTL_SECONDS: a batch still running after this long is expired.
DEFAULT_TTL_SECONDS = 21600


def _env_int(name: str, default: int | None) -> int | None:
    """A positive int from the environment; missing or malformed → the default (spec 04 §8)."""
    raw = (os.environ.get(name) or "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else default


def batch_ttl_seconds() -> int:
    return max(60, _env_int("AUDIT_BATCH_STATE_TTL_SECONDS", DEFAULT_TTL_SECONDS) or DEFAULT_TTL_SECONDS)


def default_config(session: Session) -> AuditConfig | None:
    """``DEFAULT_AUDIT_CONFIG_ID`` when set (and valid), else the newest active config."""
    env_id = _env_int("DEFAULT_AUDIT_CONFIG_ID", None)
    if env_id is not None:
        return session.get(AuditConfig, env_id)
    return latest_active_config(session)


def half_up_percent(done: int, total: int) -> int:
    return math.floor(done * 100 / total + 0.5) if total else 0


def new_batch_id(n: int) -> str:
    return f"batch-{int(time.time() * 1000)}-{n}-{secrets.token_hex(4)}"


def create_batch(
    session: Session, *, fiche_ids: list[str], audit_config_id: int, use_rlm: bool, user_id: str | None
) -> tuple[AuditBatch, dict[str, str]]:
    """Insert the batch and one item (with its own tracking id) per fiche. ``fiche_ids`` are
    already de-duplicated. Returns the batch and ``{fiche_id: tracking_id}``."""
    batch_id = new_batch_id(len(fiche_ids))
    ms = int(time.time() * 1000)
    suffix = batch_id.rsplit("-", 1)[1]
    # the spec's tracking id audit-<fiche>-<config>-<ms>, plus the batch's random suffix so two
    # batches queued in the same millisecond never share an audit
    tracking = {f: f"audit-{f}-{audit_config_id}-{ms}-{suffix}" for f in fiche_ids}
    batch = AuditBatch(id=batch_id, audit_config_id=audit_config_id, total=len(fiche_ids), use_rlm=use_rlm,
                       user_id=user_id, status="running", started_at=now_utc())
    session.add(batch)
    session.flush()
    session.add_all([AuditBatchItem(batch_id=batch_id, fiche_id=f, position=i, tracking_id=tracking[f])
                     for i, f in enumerate(fiche_ids)])
    session.flush()
    return batch, tracking


def mark_launched(session: Session, batch_id: str, backfill_id: str) -> None:
    """Record the backfill and publish the opening ``batch.progress`` (0/0)."""
    batch = session.get(AuditBatch, batch_id, with_for_update=True)
    batch.backfill_id = backfill_id
    emit(session, "batch.progress", _progress(batch, 0, 0))


def drop_batch(session: Session, batch_id: str) -> None:
    """The launch failed: nothing will run, so the batch never existed (items cascade)."""
    batch = session.get(AuditBatch, batch_id)
    if batch is not None:
        session.delete(batch)


def _progress(batch: AuditBatch, completed: int, failed: int) -> dict[str, Any]:
    return {"batch_id": batch.id, "operation_type": OPERATION, "total": batch.total, "completed": completed,
            "failed": failed, "progress_percentage": half_up_percent(completed, batch.total)}


def refresh_batch(session: Session, batch_id: str, *, now: dt.datetime | None = None,
                  runs_done: bool = False) -> dict[str, Any] | None:
    """Advance one batch from the audits table (row-locked, idempotent, finalizes once).

    - items whose audit (by tracking id) is ``completed`` / ``failed`` leave ``pending``;
    - ``runs_done`` (the backfill and its runs are over): pending items with no audit at all fail;
    - past the TTL, the pending items expire (counted as failed) and the batch ends ``expired``.
    One ``batch.progress`` per newly finished item; ``batch.completed`` once, when nothing is pending.
    Returns a summary, or None when the batch is unknown or already final."""
    now = now or now_utc()
    batch = session.scalar(select(AuditBatch).where(AuditBatch.id == batch_id).with_for_update(skip_locked=True))
    if batch is None or batch.status != "running":
        return None
    done = session.execute(
        update(AuditBatchItem)
        .where(AuditBatchItem.batch_id == batch_id, AuditBatchItem.status == "pending",
               AuditBatchItem.tracking_id == Audit.tracking_id, Audit.status.in_(("completed", "failed")))
        .values(status=Audit.status, audit_id=Audit.id, updated_at=now)
        .returning(AuditBatchItem.fiche_id, AuditBatchItem.status)
    ).all()
    newly = [status for _, status in done]
    if runs_done:
        lost = session.execute(
            update(AuditBatchItem)
            .where(AuditBatchItem.batch_id == batch_id, AuditBatchItem.status == "pending",
                   ~select(Audit.id).where(Audit.tracking_id == AuditBatchItem.tracking_id).exists())
            .values(status="failed", updated_at=now)
            .returning(AuditBatchItem.fiche_id)
        ).all()
        newly += ["failed"] * len(lost)
    expired = False
    if (now - batch.started_at).total_seconds() > batch_ttl_seconds():
        gone = session.execute(
            update(AuditBatchItem)
            .where(AuditBatchItem.batch_id == batch_id, AuditBatchItem.status == "pending")
            .values(status="expired", updated_at=now)
            .returning(AuditBatchItem.fiche_id)
        ).all()
        newly += ["failed"] * len(gone)
        expired = True
    counts = dict(session.execute(
        select(AuditBatchItem.status, func.count()).where(AuditBatchItem.batch_id == batch_id)
        .group_by(AuditBatchItem.status)).all())
    succeeded = counts.get("completed", 0)
    failed = counts.get("failed", 0) + counts.get("expired", 0)
    # one progress event per finished item, counters climbing to the recomputed totals
    ok_before, ko_before = succeeded - newly.count("completed"), failed - newly.count("failed")
    for status in newly:
        ok_before += status == "completed"
        ko_before += status != "completed"
        emit(session, "batch.progress", _progress(batch, ok_before + ko_before, ko_before))
    batch.succeeded, batch.failed = succeeded, failed
    finalized = False
    if succeeded + failed >= batch.total:
        batch.status = "expired" if expired else "completed"
        batch.completed_at = now
        duration_ms = int((now - batch.started_at).total_seconds() * 1000)
        emit(session, "batch.completed", {"batch_id": batch.id, "operation_type": OPERATION, "total": batch.total,
                                          "completed": succeeded + failed, "failed": failed,
                                          "duration_ms": duration_ms})
        finalized = True
    return {"batch_id": batch_id, "advanced": len(newly), "succeeded": succeeded, "failed": failed,
            "finalized": finalized, "status": batch.status}


def unlaunched_batches(session: Session, *, created_before: dt.datetime, limit: int = 50) -> list[str]:
    """Running batches with no backfill recorded, created before ``created_before``: the API
    request that wrote them died before recording the backfill it launched, or before launching it
    (``POST /api/audits/batch`` writes the rows, launches, then records the backfill id)."""
    return list(session.scalars(
        select(AuditBatch.id).where(AuditBatch.status == "running", AuditBatch.backfill_id.is_(None),
                                    AuditBatch.started_at < created_before)
        .order_by(AuditBatch.started_at).limit(limit)))


def running_batches(session: Session, limit: int = 200) -> list[tuple[str, str | None]]:
    return [tuple(r) for r in session.execute(
        select(AuditBatch.id, AuditBatch.backfill_id).where(AuditBatch.status == "running")
        .order_by(AuditBatch.started_at).limit(limit)).all()]


def batch_status(session: Session, batch_id: str) -> dict[str, Any] | None:
    """``GET /api/audits/batch/{batch_id}``: totals (the batch's own audits) and per-fiche status."""
    batch = session.get(AuditBatch, batch_id)
    if batch is None:
        return None
    rows = session.execute(
        select(AuditBatchItem, Audit.id, Audit.status)
        .outerjoin(Audit, Audit.tracking_id == AuditBatchItem.tracking_id)
        .where(AuditBatchItem.batch_id == batch_id).order_by(AuditBatchItem.position)
    ).all()
    completed = batch.succeeded + batch.failed
    end = batch.completed_at or now_utc()
    return {
        "batch_id": batch.id, "operation_type": OPERATION, "status": batch.status,
        "total": batch.total, "completed": completed, "succeeded": batch.succeeded, "failed": batch.failed,
        "pending": batch.total - completed, "progress_percentage": half_up_percent(completed, batch.total),
        "audit_config_id": batch.audit_config_id, "use_rlm": batch.use_rlm, "user_id": batch.user_id,
        "backfill_id": batch.backfill_id, "started_at": iso(batch.started_at), "completed_at": iso(batch.completed_at),
        "duration_ms": int((end - batch.started_at).total_seconds() * 1000),
        "items": [{"fiche_id": item.fiche_id, "position": item.position, "tracking_id": item.tracking_id,
                   "status": item.status, "audit_id": str(audit_id or item.audit_id) if (audit_id or item.audit_id) else None,
                   "audit_status": audit_status}
                  for item, audit_id, audit_status in rows],
    }
