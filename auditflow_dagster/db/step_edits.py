"""Writes that change a finished audit's step after the fact: step reruns, control-point reruns and
human reviews (spec 04 §1, §2, §3), plus the helpers they share.

Invariants every writer here keeps (each runs in ONE transaction):

* the audit row is locked first (``SELECT … FOR UPDATE``), so reruns and reviews of one audit are
  serialized and a reader never sees half a change;
* the legacy trails of the step are backfilled into the trail tables before anything else
  (:func:`auditflow_dagster.db.trails.backfill_step_trails`), and a legacy step whose control points
  live only in ``raw_result.points_controle`` gets normalized point rows first
  (:func:`ensure_point_rows`), so every write goes down one (normalized) path;
* exactly one trail row is appended per action (a review row or a rerun event row);
* the audit summary is recomputed from the stored step rows afterwards (:func:`recompute_summary`,
  spec 04 §1.2) with the one scoring implementation (:mod:`auditflow_dagster.core.scoring`), so
  ``audits`` always equals the summary recomputed from ``audit_step_results``.

Human override precedence (a documented deviation from the legacy "a later control-point rerun
silently overwrites a human step override"):

* a step review stores its resolved override in ``raw_result.human_override``
  (``{traite, conforme, score, niveau_conformite, review_id, reviewed_at}``): the override is *in force*;
* while it is in force, a step rerun, a control-point rerun or a control-point review still rewrites
  the evidence (control points, citations, comments, keywords, minutages, citation counts), but the
  step verdict (``traite``, ``conforme``, ``score``, ``niveau_conformite``) keeps the override values;
  the rerun's own verdict is kept in ``raw_result.rerun_proposal`` and in the realtime event
  (``human_override_kept: true``), and the rerun event row's ``next_*`` columns hold what was stored;
* a rerun launched with ``replace_human_review=true`` (API body ``replaceHumanReview: true``) applies
  its verdict and ends the override (the marker is dropped); a new step review replaces it.

Both trails therefore show the full story: the review row (what the human decided) and each later
rerun event (what the model proposed is in the event; what was stored is in the row).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from auditflow_dagster.core.audit_config import AuditStepSpec
from auditflow_dagster.core.evidence import norm
from auditflow_dagster.core.scoring import (
    Compliance,
    StepScoreInput,
    compute_compliance,
    derived_step_score,
    half_up,
    niveau_for,
    step_ratio,
    verdict_for_ratio,
)
from auditflow_dagster.db import audits as audit_db
from auditflow_dagster.db.clock import iso, now_utc
from auditflow_dagster.db.models import (
    Audit,
    AuditStepResult,
    AuditStepResultCitation,
    AuditStepResultControlPoint,
    AuditStepResultHumanReview,
    AuditStepResultRerunEvent,
)
from auditflow_dagster.db.trails import TRAIL_KEYS, backfill_step_trails

OVERRIDE_KEY = "human_override"
PROPOSAL_KEY = "rerun_proposal"
VERDICT_FIELDS = ("traite", "conforme", "score", "niveau_conformite")
STATUTS = ("PRESENT", "ABSENT", "PARTIEL", "NON_APPLICABLE")
STEP_CONFORME = ("CONFORME", "NON_CONFORME", "PARTIEL")
NIVEAUX = ("EXCELLENT", "BON", "ACCEPTABLE", "INSUFFISANT", "REJET")
EDITABLE_STATUSES = ("completed", "failed")  # pending/running audits belong to the engine (409)


class EditError(Exception):
    """A refused edit: ``status`` is the HTTP status the API answers with (404, 409, 400)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


# --------------------------------------------------------------------------------------------- #
# Reads and shared helpers
# --------------------------------------------------------------------------------------------- #


def lock_audit(s: Session, audit_id: int) -> Audit | None:
    """The audit row, locked for the rest of the transaction (serializes reruns and reviews)."""
    return s.scalar(select(Audit).where(Audit.id == audit_id).with_for_update().execution_options(populate_existing=True))


def step_row(s: Session, audit_id: int, position: int) -> AuditStepResult | None:
    return s.scalar(select(AuditStepResult).where(AuditStepResult.audit_id == audit_id,
                                                  AuditStepResult.step_position == position)
                    .execution_options(populate_existing=True))


def point_rows(s: Session, audit_id: int, position: int) -> list[AuditStepResultControlPoint]:
    return list(s.scalars(select(AuditStepResultControlPoint).where(
        AuditStepResultControlPoint.audit_id == audit_id, AuditStepResultControlPoint.step_position == position)
        .order_by(AuditStepResultControlPoint.control_point_index).execution_options(populate_existing=True)))


def citation_dicts(s: Session, audit_id: int, position: int, index: int | None = None) -> list[dict[str, Any]]:
    q = select(AuditStepResultCitation).where(AuditStepResultCitation.audit_id == audit_id,
                                              AuditStepResultCitation.step_position == position)
    if index is not None:
        q = q.where(AuditStepResultCitation.control_point_index == index)
    q = q.order_by(AuditStepResultCitation.control_point_index, AuditStepResultCitation.citation_index)
    return [{"texte": c.texte, "minutage": c.minutage, "minutage_secondes": c.minutage_secondes, "speaker": c.speaker,
             "recording_index": c.recording_index, "chunk_index": c.chunk_index, "recording_date": c.recording_date,
             "recording_time": c.recording_time, "recording_url": c.recording_url} for c in s.scalars(q)]


def _add_citations(s: Session, audit_id: int, position: int, index: int, citations: list[Any]) -> None:
    for j, c in enumerate([c for c in citations if isinstance(c, dict)], start=1):
        ri, ci = c.get("recording_index"), c.get("chunk_index")
        s.add(AuditStepResultCitation(
            audit_id=audit_id, step_position=position, control_point_index=index, citation_index=j,
            texte=str(c.get("texte") or ""), minutage=str(c.get("minutage") or ""),
            minutage_secondes=float(c.get("minutage_secondes") or 0) if isinstance(c.get("minutage_secondes"), (int, float)) else 0.0,
            speaker=str(c.get("speaker") or ""),
            recording_index=int(ri) if isinstance(ri, (int, float)) and not isinstance(ri, bool) else 0,
            chunk_index=int(ci) if isinstance(ci, (int, float)) and not isinstance(ci, bool) else 0,
            recording_date=str(c.get("recording_date") or "N/A"), recording_time=str(c.get("recording_time") or "N/A"),
            recording_url=str(c.get("recording_url") or "N/A")))


def ensure_point_rows(s: Session, row: AuditStepResult) -> None:
    """Give a legacy step (points only in ``raw_result.points_controle``) its normalized point and
    citation rows, so every later write goes down the normalized path (spec 04 §3.1 deviation)."""
    raw = row.raw_result if isinstance(row.raw_result, dict) else {}
    legacy = raw.get("points_controle")
    if not isinstance(legacy, list) or point_rows(s, row.audit_id, row.step_position):
        return
    points = [p for p in audit_db.strip_nul(legacy) if isinstance(p, dict)]
    for i, p in enumerate(points, start=1):
        s.add(AuditStepResultControlPoint(
            audit_id=row.audit_id, step_position=row.step_position, control_point_index=i,
            point=str(p.get("point") or ""), statut=str(p.get("statut") or "ABSENT"),
            commentaire=str(p.get("commentaire") or ""), minutages=[str(x) for x in p.get("minutages") or []],
            erreur_transcription_notee=bool(p.get("erreur_transcription_notee")),
            variation_phonetique_utilisee=p.get("variation_phonetique_utilisee")))
    s.flush()
    for i, p in enumerate(points, start=1):
        _add_citations(s, row.audit_id, row.step_position, i, p.get("citations") or [])
    row.raw_result = {k: v for k, v in raw.items() if k != "points_controle"}
    s.flush()


def shrunk_raw(raw: Any, **extra: Any) -> dict[str, Any]:
    """``raw_result`` without the legacy trails and points (they live in tables now)."""
    base = {k: v for k, v in (raw or {}).items() if k not in (*TRAIL_KEYS, "points_controle")} if isinstance(raw, dict) else {}
    for k, v in extra.items():
        if v is None:
            base.pop(k, None)
        else:
            base[k] = v
    return base


def override_in_force(row: AuditStepResult) -> dict[str, Any] | None:
    raw = row.raw_result if isinstance(row.raw_result, dict) else {}
    marker = raw.get(OVERRIDE_KEY)
    return marker if isinstance(marker, dict) else None


def _distinct(values: list[Any]) -> list[str]:
    out: list[str] = []
    for v in values:
        if isinstance(v, str) and v.strip() and v not in out:
            out.append(v)
    return out


def derive_step(s: Session, row: AuditStepResult) -> None:
    """Re-derive a step from its stored control points (spec 04 §2 "deterministic step derivation").

    ``total_citations`` and ``minutages`` always follow the points. ``score``/``conforme``/
    ``niveau_conformite`` follow the statuses (and may rise) unless a human override is in force,
    in which case they keep the override values (module docstring).
    """
    pts = point_rows(s, row.audit_id, row.step_position)
    cites = citation_dicts(s, row.audit_id, row.step_position)
    ratio = step_ratio([p.statut for p in pts])
    row.total_citations = len(cites)
    row.minutages = _distinct([c["minutage"] for c in cites])
    marker = override_in_force(row)
    if marker is None:
        row.score = derived_step_score(ratio, row.weight)
        row.conforme = verdict_for_ratio(ratio)
        row.niveau_conformite = niveau_for(row.conforme, ratio)
    else:
        _apply_marker(row, marker)
    row.updated_at = now_utc()


def _apply_marker(row: AuditStepResult, marker: dict[str, Any]) -> None:
    for key in VERDICT_FIELDS:
        if marker.get(key) is not None:
            setattr(row, key, marker[key])


def recompute_summary(s: Session, audit: Audit) -> Compliance:
    """Spec 04 §1.2: the audit summary from ALL stored step rows (status, tokens and
    ``result_data`` unchanged). Runs inside the caller's transaction: the summary and the rows it
    is computed from commit together (no best-effort window where they disagree)."""
    s.flush()
    rows = list(s.scalars(select(AuditStepResult).where(AuditStepResult.audit_id == audit.id)
                          .execution_options(populate_existing=True)))
    c = compute_compliance([StepScoreInput(position=r.step_position, weight=max(0, r.weight), is_critical=r.is_critical,
                                           score=r.score, conforme=r.conforme) for r in rows])
    audit_db.apply_compliance(audit, c)
    s.flush()
    return c


def _editable(s: Session, audit_id: int, position: int) -> tuple[Audit, AuditStepResult]:
    audit = lock_audit(s, audit_id)
    if audit is None:
        raise EditError(404, "Audit not found")
    if audit.status not in EDITABLE_STATUSES:
        raise EditError(409, f"Audit is {audit.status}; retry once it has finished")
    row = step_row(s, audit_id, position)
    if row is None:
        raise EditError(404, "Audit step result not found")
    ensure_point_rows(s, row)
    backfill_step_trails(s, audit_id, position)
    s.refresh(row)
    return audit, row


def step_result(row: AuditStepResult) -> dict[str, Any]:
    """The StepResult object of spec 04 §3.1 (camelCase, string ids)."""
    return {
        "id": str(row.id), "auditId": str(row.audit_id), "stepPosition": row.step_position, "stepName": row.step_name,
        "severityLevel": row.severity_level, "isCritical": row.is_critical, "weight": row.weight, "traite": row.traite,
        "conforme": row.conforme, "score": row.score, "niveauConformite": row.niveau_conformite,
        "commentaireGlobal": row.commentaire_global, "motsClesTrouves": list(row.mots_cles_trouves),
        "minutages": list(row.minutages), "erreursTranscriptionTolerees": row.erreurs_transcription_tolerees,
        "totalCitations": row.total_citations, "totalTokens": row.total_tokens, "createdAt": iso(row.created_at),
    }


# --------------------------------------------------------------------------------------------- #
# Human reviews (spec 04 §3)
# --------------------------------------------------------------------------------------------- #


def review_step(s: Session, audit_id: int, position: int, *, conforme: str, traite: bool | None = None,
                score: int | None = None, niveau_conformite: str | None = None, reviewer: str | None = None,
                reason: str | None = None) -> dict[str, Any]:
    """``PATCH …/steps/{pos}/review``: one review row (omitted fields resolve to the current value),
    the step updated, the override put in force, the summary recomputed. Returns StepResult."""
    audit, row = _editable(s, audit_id, position)
    if score is not None and score > max(0, row.weight):
        raise EditError(400, f"score must be between 0 and the step weight ({row.weight})")
    when = now_utc()
    over = {"traite": row.traite if traite is None else traite, "conforme": conforme,
            "score": row.score if score is None else score,
            "niveau_conformite": row.niveau_conformite if niveau_conformite is None else niveau_conformite}
    review = AuditStepResultHumanReview(
        audit_id=audit_id, step_position=position, reviewed_at=when, reviewer=reviewer, reason=reason, kind="step",
        previous_traite=row.traite, previous_conforme=row.conforme, previous_score=row.score,
        previous_niveau_conformite=row.niveau_conformite, override_traite=over["traite"],
        override_conforme=over["conforme"], override_score=over["score"],
        override_niveau_conformite=over["niveau_conformite"])
    s.add(review)
    s.flush()
    for key, value in over.items():
        setattr(row, key, value)
    row.raw_result = shrunk_raw(row.raw_result, **{OVERRIDE_KEY: {**over, "review_id": str(review.id),
                                                                  "reviewed_at": iso(when)}})
    row.updated_at = when
    recompute_summary(s, audit)
    return step_result(row)


def control_point_data(s: Session, audit_id: int, position: int, index: int) -> dict[str, Any] | None:
    """§3.3 read helper: the point from its normalized row, else from legacy ``points_controle``."""
    cp = s.scalar(select(AuditStepResultControlPoint).where(
        AuditStepResultControlPoint.audit_id == audit_id, AuditStepResultControlPoint.step_position == position,
        AuditStepResultControlPoint.control_point_index == index))
    if cp is not None:
        return {"auditId": str(audit_id), "stepPosition": position, "controlPointIndex": index, "point": cp.point,
                "statut": cp.statut, "commentaire": cp.commentaire}
    row = step_row(s, audit_id, position)
    legacy = (row.raw_result or {}).get("points_controle") if row is not None and isinstance(row.raw_result, dict) else None
    if isinstance(legacy, list) and len(legacy) >= index and isinstance(legacy[index - 1], dict):
        p = legacy[index - 1]
        return {"auditId": str(audit_id), "stepPosition": position, "controlPointIndex": index,
                "point": p.get("point"), "statut": p.get("statut"), "commentaire": p.get("commentaire")}
    return None


def review_control_point(s: Session, audit_id: int, position: int, index: int, *, statut: str | None = None,
                         commentaire: str | None = None, reviewer: str | None = None,
                         reason: str | None = None) -> dict[str, Any]:
    """``PATCH …/control-points/{i}/review``: one review row, the point row updated, then — the
    spec's recommended deviation — the step re-derived from its points (§2 rule; a human step
    override in force keeps the step verdict) and the audit summary recomputed."""
    audit, row = _editable(s, audit_id, position)
    cp = s.scalar(select(AuditStepResultControlPoint).where(
        AuditStepResultControlPoint.audit_id == audit_id, AuditStepResultControlPoint.step_position == position,
        AuditStepResultControlPoint.control_point_index == index))
    if cp is None:
        raise EditError(404, "Control point not found")
    when = now_utc()
    s.add(AuditStepResultHumanReview(
        audit_id=audit_id, step_position=position, reviewed_at=when, reviewer=reviewer, reason=reason,
        kind="control_point", control_point_index=index, point=cp.point, previous_statut=cp.statut,
        previous_commentaire=cp.commentaire, override_statut=statut if statut is not None else cp.statut,
        override_commentaire=commentaire if commentaire is not None else cp.commentaire,
        # the step verdict before this review (it may be re-derived below): the review's override_*
        # step columns stay NULL (no human step verdict), previous_* keep the step's AI verdict
        # recoverable for calibration (core/calibration.py) when a point review comes first
        previous_traite=row.traite, previous_conforme=row.conforme, previous_score=row.score,
        previous_niveau_conformite=row.niveau_conformite))
    if statut is not None:
        cp.statut = statut
    if commentaire is not None:
        cp.commentaire = audit_db.strip_nul(commentaire)
    row.raw_result = shrunk_raw(row.raw_result)
    s.flush()
    derive_step(s, row)
    recompute_summary(s, audit)
    return {"auditId": str(audit_id), "stepPosition": position, "controlPointIndex": index, "point": cp.point,
            "statut": cp.statut, "commentaire": cp.commentaire}


# --------------------------------------------------------------------------------------------- #
# Reruns (spec 04 §1, §2): persistence of an already gated model result
# --------------------------------------------------------------------------------------------- #


@dataclass
class RerunOutcome:
    applied: bool  # False: this rerun_id was already applied (a retry): nothing written, nothing billed
    event: dict[str, Any] = field(default_factory=dict)  # the audit.step_completed payload
    summary: Compliance | None = None


def rerun_already_applied(s: Session, rerun_id: str) -> bool:
    return s.scalar(select(AuditStepResultRerunEvent.id).where(AuditStepResultRerunEvent.rerun_id == rerun_id)
                    .limit(1)) is not None


def _clamp_int(v: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return lo
    x = int(half_up(v))
    x = max(lo, x)
    return min(hi, x) if hi is not None else x


def persist_step_rerun(s: Session, *, audit_id: int, step: AuditStepSpec, gated: dict[str, Any],
                       raw_score: Any, raw_conforme: Any, usage: dict[str, int], model: str | None, rerun_id: str,
                       event_id: str, custom_prompt: str | None, replace_human_review: bool) -> RerunOutcome:
    """Spec 04 §1 step 9–10 in one transaction: trail backfill, rerun event row, step row and its
    points/citations replaced, summary recomputed. Idempotent by ``rerun_id``."""
    audit = lock_audit(s, audit_id)
    if audit is None:
        raise EditError(404, "Audit not found")
    if rerun_already_applied(s, rerun_id):
        return RerunOutcome(applied=False)
    row = step_row(s, audit_id, step.position)
    if row is None:
        raise EditError(404, f"Step {step.position} of audit {audit_id} has no stored result")
    ensure_point_rows(s, row)
    backfill_step_trails(s, audit_id, step.position)
    s.refresh(row)
    original = {"score": row.score, "conforme": row.conforme, "commentaire": row.commentaire_global,
                "citations": row.total_citations}
    payload = copy.deepcopy(gated)
    payload["score"] = _clamp_int(payload.get("score"), 0, max(0, step.weight))
    payload["erreurs_transcription_tolerees"] = _clamp_int(payload.get("erreurs_transcription_tolerees"), 0)
    payload["traite"] = bool(payload.get("traite"))
    for key in ("conforme", "niveau_conformite", "commentaire_global"):
        if payload.get(key) is None:
            payload[key] = getattr(row, key)
    proposal = {k: payload[k] for k in VERDICT_FIELDS}
    marker = override_in_force(row)
    kept = marker is not None and not replace_human_review
    if kept:
        for key in VERDICT_FIELDS:
            if marker.get(key) is not None:
                payload[key] = marker[key]
    extra: dict[str, Any] = {}
    if kept:
        extra = {OVERRIDE_KEY: marker, PROPOSAL_KEY: {**proposal, "rerun_id": rerun_id}}
    audit_db.upsert_step_result(s, audit_id, step, payload, usage=usage, model=model, extra_raw=extra)
    row = step_row(s, audit_id, step.position)
    assert row is not None
    s.add(AuditStepResultRerunEvent(
        audit_id=audit_id, step_position=step.position, occurred_at=now_utc(), kind="step_rerun", rerun_id=rerun_id,
        event_id=event_id, custom_prompt=custom_prompt, previous_score=original["score"],
        previous_conforme=original["conforme"], previous_total_citations=original["citations"],
        next_score=row.score, next_conforme=row.conforme, next_total_citations=row.total_citations))
    summary = recompute_summary(s, audit)
    new_score = raw_score if isinstance(raw_score, (int, float)) and not isinstance(raw_score, bool) else 0
    new_conforme = raw_conforme if isinstance(raw_conforme, str) and raw_conforme else "UNKNOWN"
    comparison = {"scoreChanged": original["score"] != new_score, "conformeChanged": original["conforme"] != new_conforme,
                  "citationsChanged": original["citations"] != row.total_citations, "originalScore": original["score"],
                  "newScore": new_score, "originalConforme": original["conforme"], "newConforme": new_conforme}
    rerun_view = {**gated, "score": proposal["score"]}
    return RerunOutcome(applied=True, summary=summary, event={
        "original": original, "rerun": rerun_view, "comparison": comparison, "human_override_kept": kept,
        "stored": {"score": row.score, "conforme": row.conforme, "niveau_conformite": row.niveau_conformite,
                   "traite": row.traite, "total_citations": row.total_citations}})


def previous_point(s: Session, audit_id: int, position: int, index: int, text: str) -> dict[str, Any] | None:
    """Spec 04 §2 step 3: the previous result of the point (normalized row, else legacy raw entry at
    ``i-1`` or the one whose normalized text matches)."""
    cp = s.scalar(select(AuditStepResultControlPoint).where(
        AuditStepResultControlPoint.audit_id == audit_id, AuditStepResultControlPoint.step_position == position,
        AuditStepResultControlPoint.control_point_index == index))
    if cp is not None:
        cites = citation_dicts(s, audit_id, position, index)
        return {"point": cp.point, "statut": cp.statut, "commentaire": cp.commentaire, "citations": cites,
                "minutages": list(cp.minutages)}
    row = step_row(s, audit_id, position)
    legacy = (row.raw_result or {}).get("points_controle") if row is not None and isinstance(row.raw_result, dict) else None
    if not isinstance(legacy, list):
        return None
    pick = legacy[index - 1] if len(legacy) >= index and isinstance(legacy[index - 1], dict) else None
    if pick is None:
        pick = next((p for p in legacy if isinstance(p, dict) and norm(str(p.get("point") or "")) == norm(text)), None)
    if pick is None:
        return None
    return {"point": pick.get("point"), "statut": pick.get("statut"), "commentaire": pick.get("commentaire"),
            "citations": list(pick.get("citations") or []), "minutages": list(pick.get("minutages") or [])}


def persist_control_point_rerun(s: Session, *, audit_id: int, position: int, index: int, point_text: str,
                                new_point: dict[str, Any], rerun_id: str, event_id: str, custom_prompt: str | None,
                                replace_human_review: bool) -> RerunOutcome:
    """Spec 04 §2 "Persist" (normalized path; legacy rows are normalized first): row ``i`` and its
    citations replaced, the step re-derived from all its points, one rerun event row, summary."""
    audit = lock_audit(s, audit_id)
    if audit is None:
        raise EditError(404, "Audit not found")
    if rerun_already_applied(s, rerun_id):
        return RerunOutcome(applied=False)
    row = step_row(s, audit_id, position)
    if row is None:
        raise EditError(404, f"Step {position} of audit {audit_id} has no stored result")
    ensure_point_rows(s, row)
    backfill_step_trails(s, audit_id, position)
    s.refresh(row)
    cp = s.scalar(select(AuditStepResultControlPoint).where(
        AuditStepResultControlPoint.audit_id == audit_id, AuditStepResultControlPoint.step_position == position,
        AuditStepResultControlPoint.control_point_index == index))
    if cp is None:
        raise EditError(404, f"Step {position} has fewer than {index} stored control points")
    new_point = audit_db.strip_nul(new_point)
    prev = {"statut": cp.statut, "commentaire": cp.commentaire,
            "citations": citation_dicts(s, audit_id, position, index), "step_score": row.score,
            "step_conforme": row.conforme}
    marker = override_in_force(row)
    if marker is not None and replace_human_review:
        row.raw_result = shrunk_raw(row.raw_result, **{OVERRIDE_KEY: None})
        marker = None
    cp.point = str(new_point.get("point") or "") or cp.point
    cp.statut = str(new_point.get("statut") or "ABSENT")
    cp.commentaire = str(new_point.get("commentaire") or "")
    cp.minutages = [str(x) for x in new_point.get("minutages") or []]
    cp.erreur_transcription_notee = bool(new_point.get("erreur_transcription_notee"))
    cp.variation_phonetique_utilisee = new_point.get("variation_phonetique_utilisee")
    s.execute(delete(AuditStepResultCitation).where(
        AuditStepResultCitation.audit_id == audit_id, AuditStepResultCitation.step_position == position,
        AuditStepResultCitation.control_point_index == index))
    s.flush()
    _add_citations(s, audit_id, position, index, new_point.get("citations") or [])
    s.flush()
    # what the statuses alone would give (the proposal when an override is kept)
    derived_ratio = step_ratio([p.statut for p in point_rows(s, audit_id, position)])
    proposal = {"score": derived_step_score(derived_ratio, row.weight), "conforme": verdict_for_ratio(derived_ratio)}
    row.raw_result = shrunk_raw(row.raw_result, **({PROPOSAL_KEY: {**proposal, "rerun_id": rerun_id}}
                                                   if marker is not None else {PROPOSAL_KEY: None}))
    derive_step(s, row)
    nxt_cites = citation_dicts(s, audit_id, position, index)
    s.add(AuditStepResultRerunEvent(
        audit_id=audit_id, step_position=position, occurred_at=now_utc(), kind="control_point_rerun",
        rerun_id=rerun_id, event_id=event_id, custom_prompt=custom_prompt, control_point_index=index,
        point=cp.point or point_text, previous_statut=prev["statut"], previous_commentaire=prev["commentaire"],
        previous_citations=prev["citations"], previous_step_score=prev["step_score"],
        previous_step_conforme=prev["step_conforme"], next_statut=cp.statut, next_commentaire=cp.commentaire,
        next_citations=nxt_cites, next_step_score=row.score, next_step_conforme=row.conforme))
    summary = recompute_summary(s, audit)
    comparison = {"statutChanged": prev["statut"] != cp.statut,
                  "citationsChanged": len(prev["citations"]) != len(nxt_cites),
                  "originalStatut": prev["statut"], "newStatut": cp.statut,
                  "originalCitations": len(prev["citations"]), "newCitations": len(nxt_cites)}
    return RerunOutcome(applied=True, summary=summary, event={
        "original": {"statut": prev["statut"], "commentaire": prev["commentaire"],
                     "citations": len(prev["citations"]), "step_score": prev["step_score"],
                     "step_conforme": prev["step_conforme"]},
        "rerun": new_point, "comparison": comparison, "human_override_kept": marker is not None,
        "stored": {"step_score": row.score, "step_conforme": row.conforme, "total_citations": row.total_citations}})
