"""Dedup claims of ``POST /api/transcriptions/batch`` (spec 02 §5.6): one fiche is launched at most
once per UTC day, however many batches name it and however many API replicas answer them.

A claim is a row inserted with ``ON CONFLICT DO NOTHING RETURNING`` before the launch (each call
below is its own short transaction, so other replicas see the claim at once). The claimant
launches, then records the run id; if the launch fails it deletes its claim so a retry can
launch. A claim left without a run by a crashed process is taken over once it is older than the
stale delay.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from auditflow_dagster.db.models import TranscriptionRequest

#: Claims of older days are dead (the key is per day); rows past this age are pruned.
KEEP_DAYS = 7


def dedup_key(fiche_id: str, day: dt.date) -> str:
    return f"transcribe-{fiche_id}-{day.isoformat()}"


def claim(session: Session, key: str, fiche_id: str, priority: str) -> bool:
    """True when this caller now owns ``key`` and must launch the run."""
    stmt = (
        pg_insert(TranscriptionRequest)
        .values(dedup_key=key, fiche_id=fiche_id, priority=priority)
        .on_conflict_do_nothing(index_elements=["dedup_key"])
        .returning(TranscriptionRequest.dedup_key)
    )
    return session.execute(stmt).scalar() is not None


def claimed_run(session: Session, key: str) -> tuple[bool, str | None]:
    """(claim exists, its run id — None while the claimant is still launching)."""
    row = session.execute(select(TranscriptionRequest.run_id).where(TranscriptionRequest.dedup_key == key)).first()
    return (False, None) if row is None else (True, row[0])


def record_run(session: Session, key: str, run_id: str) -> None:
    session.execute(update(TranscriptionRequest).where(TranscriptionRequest.dedup_key == key).values(run_id=run_id))


def release(session: Session, key: str) -> None:
    """Drop a claim whose launch failed (never one that has a run)."""
    session.execute(
        delete(TranscriptionRequest).where(TranscriptionRequest.dedup_key == key, TranscriptionRequest.run_id.is_(None))
    )


def release_if_stale(session: Session, key: str, stale_seconds: float) -> bool:
    """Drop a run-less claim older than ``stale_seconds`` (its claimant died); True if dropped."""
    result = session.execute(
        delete(TranscriptionRequest).where(
            TranscriptionRequest.dedup_key == key,
            TranscriptionRequest.run_id.is_(None),
            TranscriptionRequest.created_at < text("now() - make_interval(secs => :secs)").bindparams(secs=stale_seconds),
        )
    )
    return result.rowcount > 0


def prune(session: Session, keep_days: int = KEEP_DAYS) -> int:
    result = session.execute(
        delete(TranscriptionRequest).where(
            TranscriptionRequest.created_at < text("now() - make_interval(days => :days)").bindparams(days=keep_days)
        )
    )
    return result.rowcount
