"""Chat conversations and messages, and what the chat context is built from (spec 04 §6).

A conversation is keyed by ``(fiche_id, audit_id)``; a fiche-level chat has ``audit_id`` NULL and is
unique through the partial index of migration 0006, so get-or-create is one upsert that two
concurrent requests cannot duplicate.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from auditflow_dagster.core.chat import CHAT_WINDOW
from auditflow_dagster.core.timeline import build_timeline
from auditflow_dagster.db.clock import iso, now_utc
from auditflow_dagster.db.models import (
    Audit,
    AuditConfig,
    AuditSnapshot,
    AuditStepResult,
    ChatConversation,
    ChatMessage,
    FicheCache,
    FicheCacheInformation,
    Recording,
)
from auditflow_dagster.db.recordings import timeline_input


def get_or_create_conversation(session: Session, fiche_id: str, audit_id: int | None) -> ChatConversation:
    stmt = pg_insert(ChatConversation).values(fiche_id=fiche_id, audit_id=audit_id)
    session.execute(stmt.on_conflict_do_nothing())  # either unique key (pair, or fiche-level partial index)
    query = select(ChatConversation).where(ChatConversation.fiche_id == fiche_id)
    query = query.where(ChatConversation.audit_id.is_(None) if audit_id is None else ChatConversation.audit_id == audit_id)
    return session.scalars(query).one()


def window(session: Session, conversation_id: int, limit: int = CHAT_WINDOW) -> list[ChatMessage]:
    """The ``limit`` newest messages, oldest first (timestamp ties broken by id)."""
    rows = list(session.scalars(
        select(ChatMessage)
        .where(ChatMessage.conversation_id == conversation_id)
        .order_by(ChatMessage.timestamp.desc(), ChatMessage.id.desc())
        .limit(limit)
    ))
    rows.reverse()
    return rows


def add_message(session: Session, conversation_id: int, role: str, content: str) -> ChatMessage:
    msg = ChatMessage(conversation_id=conversation_id, role=role, content=content.replace("\x00", ""))
    session.add(msg)
    session.execute(update(ChatConversation).where(ChatConversation.id == conversation_id).values(updated_at=now_utc()))
    session.flush()
    return msg


def message_json(m: ChatMessage) -> dict[str, Any]:
    return {"id": str(m.id), "conversationId": str(m.conversation_id), "role": m.role, "content": m.content,
            "timestamp": iso(m.timestamp)}


def history(session: Session, conversation: ChatConversation, *, with_audit: bool) -> dict[str, Any]:
    messages = [message_json(m) for m in window(session, conversation.id)]
    data: dict[str, Any] = {"conversationId": str(conversation.id), "ficheId": conversation.fiche_id}
    if with_audit:
        data["auditId"] = str(conversation.audit_id)
    data.update({"messages": messages, "messageCount": len(messages)})
    return data


# --------------------------------------------------------------------------------------------- #
# Context sources
# --------------------------------------------------------------------------------------------- #


def cached_fiche(session: Session, fiche_id: str) -> FicheCache | None:
    """The fiche's cache row; a CRM not-found marker counts as unknown."""
    row = session.scalar(select(FicheCache).where(FicheCache.fiche_id == fiche_id))
    if row is None or (row.details_success is False and row.details_message == "NOT_FOUND"):
        return None
    return row


def live_audit(session: Session, audit_id: int) -> Audit | None:
    """The audit row, unless missing or soft-deleted."""
    a = session.get(Audit, audit_id)
    return None if a is None or a.deleted_at is not None else a


def fiche_id_of(session: Session, audit: Audit) -> str:
    """The CRM fiche id of an audit (the conversation key)."""
    return session.scalar(select(FicheCache.fiche_id).where(FicheCache.id == audit.fiche_cache_id))


def _fiche_facts(session: Session, row: FicheCache) -> dict[str, Any]:
    info_groupe = session.scalar(
        select(FicheCacheInformation.groupe).where(FicheCacheInformation.fiche_cache_id == row.id)
    )
    return {"fiche_id": row.fiche_id, "prospect_nom": row.prospect_nom, "prospect_prenom": row.prospect_prenom,
            "prospect_email": row.prospect_email, "prospect_tel": row.prospect_tel,
            "groupe": info_groupe or row.groupe}


def _recording_totals(session: Session, fiche_cache_id: int) -> dict[str, Any]:
    total, transcribed, seconds = session.execute(
        select(func.count(), func.count().filter(Recording.has_transcription.is_(True)),
               func.coalesce(func.sum(Recording.duration_seconds), 0))
        .where(Recording.fiche_cache_id == fiche_cache_id)
    ).one()
    return {"total": int(total), "transcribed": int(transcribed), "seconds": int(seconds)}


def _pct(v: Any) -> str:
    """NUMERIC(5,2) in its shortest form (``87.5``)."""
    if v is None:
        return "0"
    return format((v if isinstance(v, Decimal) else Decimal(str(v))).normalize(), "f")


def audit_source(session: Session, audit: Audit) -> dict[str, Any]:
    """Inputs of :func:`core.chat.audit_context`. The timeline is the audit's frozen snapshot, so
    the indices the model cites are those of the audit's own citations (rebuilt from the current
    DB only when the audit has no snapshot)."""
    row = session.get(FicheCache, audit.fiche_cache_id)
    snapshot = session.get(AuditSnapshot, audit.id)
    timeline = list(snapshot.timeline) if snapshot is not None else build_timeline(timeline_input(session, row.id))
    config_name = session.scalar(select(AuditConfig.name).where(AuditConfig.id == audit.audit_config_id))
    steps = [
        {"position": r.step_position, "name": r.step_name, "conforme": r.conforme, "score": r.score, "weight": r.weight}
        for r in session.scalars(
            select(AuditStepResult).where(AuditStepResult.audit_id == audit.id).order_by(AuditStepResult.step_position)
        )
    ]
    return {
        "fiche": _fiche_facts(session, row),
        "recordings": _recording_totals(session, row.id),
        "audit": {
            "config_name": config_name, "score_percentage": _pct(audit.score_percentage), "niveau": audit.niveau,
            "is_compliant": audit.is_compliant, "critical_passed": audit.critical_passed,
            "critical_total": audit.critical_total, "successful_steps": audit.successful_steps,
            "failed_steps": audit.failed_steps, "total_tokens": audit.total_tokens,
        },
        "steps": steps,
        "timeline": timeline,
    }


def fiche_source(session: Session, row: FicheCache) -> dict[str, Any]:
    """Inputs of :func:`core.chat.fiche_context`: the timeline rebuilt from the current DB
    (spec 04 §1.1) and the fiche's audits newest first, soft-deleted ones left out."""
    audits = [
        {
            "config_name": name, "score_percentage": _pct(a.score_percentage), "niveau": a.niveau,
            "date": iso(a.completed_at or a.created_at), "is_compliant": a.is_compliant,
            "critical_passed": a.critical_passed, "critical_total": a.critical_total,
        }
        for a, name in session.execute(
            select(Audit, AuditConfig.name)
            .join(AuditConfig, AuditConfig.id == Audit.audit_config_id)
            .where(Audit.fiche_cache_id == row.id, Audit.deleted_at.is_(None))
            .order_by(Audit.created_at.desc(), Audit.id.desc())
        )
    ]
    return {
        "fiche": _fiche_facts(session, row),
        "recordings": _recording_totals(session, row.id),
        "audits": audits,
        "timeline": build_timeline(timeline_input(session, row.id)),
    }
