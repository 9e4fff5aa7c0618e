"""Review and rerun trails of audit steps (spec 04 §3.4): writing the legacy backfill, reading the
legacy API shape.

Two append-only tables hold the trails: ``audit_step_result_human_reviews`` (one row per human
override of a step or of one of its control points) and ``audit_step_result_rerun_events`` (one row
per step or control-point rerun). Old rows kept their trails inside ``raw_result.human_review`` /
``raw_result.rerun_history``; :func:`backfill_step_trails` copies them into the tables on the first
write to such a step, and :func:`step_trails` falls back to them on read while a step has no table
rows.

Public read API (stable, used by the audit detail of the read routes)::

    step_trails(session, audit_id) -> {step_position: {"human_review": [...], "rerun_history": [...]}}

Every stored step of the audit has an entry (possibly two empty lists); entries are oldest first
(by time, then row id), and every documented key is present with ``None`` for a missing value.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from auditflow_dagster.db.clock import iso, now_utc
from auditflow_dagster.db.models import (
    AuditStepResult,
    AuditStepResultHumanReview,
    AuditStepResultRerunEvent,
)

__all__ = ["backfill_step_trails", "review_entry", "rerun_entry", "step_trails", "TRAIL_KEYS"]

#: ``raw_result`` keys that hold legacy trails (stripped once they are copied into the tables).
TRAIL_KEYS = ("human_review", "rerun_history")


def _parse_at(value: Any, default: dt.datetime) -> dt.datetime:
    """A legacy ``at`` string → naive UTC; unparseable → ``default`` (the write time, spec §3.4)."""
    if isinstance(value, str) and value.strip():
        try:
            parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return default
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
        return parsed
    return default


def _d(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _int(v: Any) -> int | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return None


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _bool(v: Any) -> bool | None:
    return v if isinstance(v, bool) else None


def _citations(v: Any) -> list[Any] | None:
    if isinstance(v, list):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return None  # a legacy count: the list itself is unknown
    return None


def backfill_step_trails(session: Session, audit_id: int, step_position: int, *, at: dt.datetime | None = None) -> int:
    """Copy the legacy ``raw_result`` trails of one step into the trail tables (spec 04 §3.4 migration).

    Each table is filled only while it has no row for the step (so calling this before every write
    is idempotent), then both keys are stripped from ``raw_result``. Returns the rows inserted.
    Call it inside the write's transaction, after locking the audit.
    """
    row = session.scalar(select(AuditStepResult).where(AuditStepResult.audit_id == audit_id,
                                                       AuditStepResult.step_position == step_position))
    if row is None or not isinstance(row.raw_result, dict):
        return 0
    raw = row.raw_result
    if not any(k in raw for k in TRAIL_KEYS):
        return 0
    when = at or now_utc()
    inserted = 0
    has_reviews = session.scalar(select(func.count()).select_from(AuditStepResultHumanReview).where(
        AuditStepResultHumanReview.audit_id == audit_id, AuditStepResultHumanReview.step_position == step_position))
    if not has_reviews and isinstance(raw.get("human_review"), list):
        for e in raw["human_review"]:
            if not isinstance(e, dict):
                continue
            prev, over = _d(e.get("previous")), _d(e.get("override"))
            kind = "control_point" if e.get("kind") == "control_point" else "step"
            session.add(AuditStepResultHumanReview(
                audit_id=audit_id, step_position=step_position, reviewed_at=_parse_at(e.get("at"), when),
                reviewer=_str(e.get("by")), reason=_str(e.get("reason")), kind=kind,
                control_point_index=_int(e.get("control_point_index")), point=_str(e.get("point")),
                previous_traite=_bool(prev.get("traite")), previous_conforme=_str(prev.get("conforme")),
                previous_score=_int(prev.get("score")), previous_niveau_conformite=_str(prev.get("niveau_conformite")),
                override_traite=_bool(over.get("traite")), override_conforme=_str(over.get("conforme")),
                override_score=_int(over.get("score")), override_niveau_conformite=_str(over.get("niveau_conformite")),
                previous_statut=_str(prev.get("statut")), previous_commentaire=_str(prev.get("commentaire")),
                override_statut=_str(over.get("statut")), override_commentaire=_str(over.get("commentaire"))))
            inserted += 1
    has_reruns = session.scalar(select(func.count()).select_from(AuditStepResultRerunEvent).where(
        AuditStepResultRerunEvent.audit_id == audit_id, AuditStepResultRerunEvent.step_position == step_position))
    if not has_reruns and isinstance(raw.get("rerun_history"), list):
        for e in raw["rerun_history"]:
            if not isinstance(e, dict):
                continue
            prev, nxt = _d(e.get("previous")), _d(e.get("next"))
            session.add(AuditStepResultRerunEvent(
                audit_id=audit_id, step_position=step_position, occurred_at=_parse_at(e.get("at"), when),
                kind=_str(e.get("kind")) or "unknown", rerun_id=_str(e.get("rerun_id")),
                event_id=_str(e.get("event_id")), custom_prompt=_str(e.get("custom_prompt")),
                control_point_index=_int(e.get("control_point_index")), point=_str(e.get("point")),
                previous_score=_int(prev.get("score")), previous_conforme=_str(prev.get("conforme")),
                previous_total_citations=_int(prev.get("total_citations")),
                next_score=_int(nxt.get("score")), next_conforme=_str(nxt.get("conforme")),
                next_total_citations=_int(nxt.get("total_citations")),
                previous_statut=_str(prev.get("statut")), previous_commentaire=_str(prev.get("commentaire")),
                previous_citations=_citations(prev.get("citations")), previous_step_score=_int(prev.get("step_score")),
                previous_step_conforme=_str(prev.get("step_conforme")),
                next_statut=_str(nxt.get("statut")), next_commentaire=_str(nxt.get("commentaire")),
                next_citations=_citations(nxt.get("citations")), next_step_score=_int(nxt.get("step_score")),
                next_step_conforme=_str(nxt.get("step_conforme"))))
            inserted += 1
    row.raw_result = {k: v for k, v in raw.items() if k not in TRAIL_KEYS}
    session.flush()
    return inserted


def review_entry(r: AuditStepResultHumanReview) -> dict[str, Any]:
    """One ``human_review[]`` entry in the legacy shape (spec 04 §3.4)."""
    if r.kind == "control_point":
        return {
            "at": iso(r.reviewed_at or r.created_at), "by": r.reviewer, "reason": r.reason, "kind": "control_point",
            "control_point_index": r.control_point_index, "point": r.point,
            "previous": {"statut": r.previous_statut, "commentaire": r.previous_commentaire},
            "override": {"statut": r.override_statut, "commentaire": r.override_commentaire},
        }
    return {
        "at": iso(r.reviewed_at or r.created_at), "by": r.reviewer, "reason": r.reason,
        "previous": {"traite": r.previous_traite, "conforme": r.previous_conforme, "score": r.previous_score,
                     "niveau_conformite": r.previous_niveau_conformite},
        "override": {"traite": r.override_traite, "conforme": r.override_conforme, "score": r.override_score,
                     "niveau_conformite": r.override_niveau_conformite},
    }


def rerun_entry(e: AuditStepResultRerunEvent) -> dict[str, Any]:
    """One ``rerun_history[]`` entry in the legacy shape (spec 04 §3.4)."""
    base = {"at": iso(e.occurred_at or e.created_at), "kind": e.kind, "rerun_id": e.rerun_id, "event_id": e.event_id,
            "step_position": e.step_position}
    if e.kind == "control_point_rerun":
        return {
            **base, "control_point_index": e.control_point_index, "point": e.point,
            "previous": {"statut": e.previous_statut, "commentaire": e.previous_commentaire,
                         "citations": e.previous_citations, "step_score": e.previous_step_score,
                         "step_conforme": e.previous_step_conforme},
            "next": {"statut": e.next_statut, "commentaire": e.next_commentaire, "citations": e.next_citations,
                     "step_score": e.next_step_score, "step_conforme": e.next_step_conforme},
        }
    return {
        **base, "custom_prompt": e.custom_prompt,
        "previous": {"score": e.previous_score, "conforme": e.previous_conforme,
                     "total_citations": e.previous_total_citations},
        "next": {"score": e.next_score, "conforme": e.next_conforme, "total_citations": e.next_total_citations},
    }


def step_trails(session: Session, audit_id: int,
                raw_results: list[tuple[int, Any]] | None = None) -> dict[int, dict[str, list[dict[str, Any]]]]:
    """``{step_position: {"human_review": [...], "rerun_history": [...]}}`` for every stored step.

    Table rows win; a step with no row in a table passes its legacy ``raw_result`` array through
    unchanged (spec 04 §3.4 read fallback). Oldest first: ``(time, id)``. ``raw_results``: the
    audit's ``(step_position, raw_result)`` pairs when the caller already loaded its step rows.
    """
    rows = raw_results if raw_results is not None else session.execute(
        select(AuditStepResult.step_position, AuditStepResult.raw_result).where(AuditStepResult.audit_id == audit_id)).all()
    out: dict[int, dict[str, list[dict[str, Any]]]] = {pos: {"human_review": [], "rerun_history": []} for pos, _ in rows}
    reviews = session.scalars(select(AuditStepResultHumanReview).where(AuditStepResultHumanReview.audit_id == audit_id)
                              .order_by(AuditStepResultHumanReview.reviewed_at, AuditStepResultHumanReview.id))
    for r in reviews:
        out.setdefault(r.step_position, {"human_review": [], "rerun_history": []})["human_review"].append(review_entry(r))
    events = session.scalars(select(AuditStepResultRerunEvent).where(AuditStepResultRerunEvent.audit_id == audit_id)
                             .order_by(AuditStepResultRerunEvent.occurred_at, AuditStepResultRerunEvent.id))
    for e in events:
        out.setdefault(e.step_position, {"human_review": [], "rerun_history": []})["rerun_history"].append(rerun_entry(e))
    for pos, raw in rows:
        if not isinstance(raw, dict):
            continue
        for key in TRAIL_KEYS:
            if not out[pos][key] and isinstance(raw.get(key), list):
                out[pos][key] = list(raw[key])
    return out
