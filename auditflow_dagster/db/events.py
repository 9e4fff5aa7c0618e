"""The one event emitter: append to the ``events`` outbox and NOTIFY, in the caller's transaction.

Events are hints (spec 06 §1.1): a failure to record one is logged and never fails the work that
produced it, which is why :func:`emit_best_effort` exists for callers without a transaction of their
own. Inside a transaction, :func:`emit` makes the event visible exactly when the state change it
reports commits.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from auditflow_dagster.core.events import derive_channels, shrink_payload
from auditflow_dagster.db.models import Event
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.settings import get_settings

log = logging.getLogger(__name__)
NOTIFY_CHANNEL = "auditflow_events"


def emit(session: Session, name: str, payload: dict[str, Any], channels: list[str] | None = None) -> int:
    body = shrink_payload(payload, get_settings().event_max_payload_bytes)
    if body is not payload and body.get("truncated"):
        log.info("event %s payload truncated", name)
    row = Event(name=name, channels=channels or derive_channels(name, payload), payload=body)
    session.add(row)
    session.flush()
    session.execute(text("SELECT pg_notify(:c, :id)"), {"c": NOTIFY_CHANNEL, "id": str(row.id)})
    return row.id


def emit_best_effort(name: str, payload: dict[str, Any], channels: list[str] | None = None) -> int | None:
    try:
        with session_scope() as s:
            return emit(s, name, payload, channels)
    except Exception:  # noqa: BLE001 - events never fail the workflow (spec 06 §1.1)
        log.warning("could not record event %s", name, exc_info=True)
        return None


#: events older than ``:secs`` seconds (the retention of :func:`prune_events`)
_EXPIRED = "created_at < (now() AT TIME ZONE 'utc') - make_interval(secs => :secs)"


def count_expired_events(session: Session, *, older_than_hours: float) -> int:
    """How many events :func:`prune_events` would delete in all (0 when retention is off)."""
    if older_than_hours <= 0:
        return 0
    return int(session.execute(text(f"SELECT count(*) FROM events WHERE {_EXPIRED}"),
                               {"secs": older_than_hours * 3600}).scalar_one())


def prune_events(session: Session, *, older_than_hours: float, limit: int = 5000) -> int:
    """Delete at most ``limit`` events older than the retention (oldest first). A client resuming
    from a pruned id gets ``realtime.reset`` and refetches (spec 06 §2.4), so retention bounds the
    table without ever losing state: events are hints, the rows they point at stay."""
    if older_than_hours <= 0:
        return 0
    result = session.execute(text(
        f"DELETE FROM events WHERE id IN (SELECT id FROM events WHERE {_EXPIRED} ORDER BY id LIMIT :limit)"),
        {"secs": older_than_hours * 3600, "limit": limit})
    return result.rowcount or 0
