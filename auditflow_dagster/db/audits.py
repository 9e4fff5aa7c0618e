"""Audit rows, the frozen snapshot, step results and the summary (spec 03 §2.6).

Every writer here is idempotent on a natural key: an audit by its tracking id, a step result by
``(audit_id, step_position)``. A step row whose ``raw_result`` is set is *done*: the engine never
calls the LLM for it again (never bill twice) unless a rerun asks.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from auditflow_dagster.core.audit_config import AuditStepSpec
from auditflow_dagster.db.clock import iso, now_utc
from auditflow_dagster.db.models import (
    Audit,
    AuditSnapshot,
    AuditStepResult,
    AuditStepResultCitation,
    AuditStepResultControlPoint,
)


def strip_nul(v: Any) -> Any:
    """Strip NUL characters (PostgreSQL rejects them in text) everywhere in a JSON-ish value."""
    if isinstance(v, str):
        return v.replace("\x00", "")
    if isinstance(v, list):
        return [strip_nul(x) for x in v]
    if isinstance(v, dict):
        return {k: strip_nul(x) for k, x in v.items()}
    return v


def get_by_tracking_id(session: Session, tracking_id: str) -> Audit | None:
    return session.scalar(select(Audit).where(Audit.tracking_id == tracking_id))


def create_audit(
    session: Session,
    *,
    fiche_cache_id: int,
    audit_config_id: int,
    tracking_id: str,
    dagster_run_id: str | None,
    trigger_source: str = "api",
    trigger_user_id: str | None = None,
    use_rlm: bool = False,
    automation_schedule_id: int | None = None,
    automation_run_id: int | None = None,
) -> tuple[Audit, bool]:
    """Create the ``running`` audit row, or return the existing one for this tracking id.

    ``is_latest``/``version`` are maintained under a transaction-level advisory lock on
    (fiche, config), so two concurrent audits of the same pair cannot both end up latest.
    Returns ``(audit, created)``.
    """
    existing = get_by_tracking_id(session, tracking_id)
    if existing is not None:
        return existing, False
    session.execute(
        text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": int(fiche_cache_id) % 2**31, "b": int(audit_config_id) % 2**31}
    )
    prev_version = session.scalar(
        select(func.max(Audit.version)).where(
            Audit.fiche_cache_id == fiche_cache_id, Audit.audit_config_id == audit_config_id
        )
    )
    session.execute(
        update(Audit)
        .where(
            Audit.fiche_cache_id == fiche_cache_id,
            Audit.audit_config_id == audit_config_id,
            Audit.deleted_at.is_(None),
            Audit.is_latest.is_(True),
        )
        .values(is_latest=False)
    )
    started = now_utc()
    audit = Audit(
        fiche_cache_id=fiche_cache_id,
        audit_config_id=audit_config_id,
        tracking_id=tracking_id,
        dagster_run_id=dagster_run_id,
        trigger_source=trigger_source,
        trigger_user_id=trigger_user_id,
        use_rlm=use_rlm,
        automation_schedule_id=automation_schedule_id,
        automation_run_id=automation_run_id,
        status="running",
        niveau="PENDING",
        is_compliant=False,
        started_at=started,
        version=(prev_version or 0) + 1,
        is_latest=True,
        result_data={
            "audit_id": tracking_id,
            "status": "running",
            "started_at": iso(started),
            "approach": {"use_rlm": use_rlm, "transcript_mode": "tools" if use_rlm else "prompt"},
            "trigger_source": trigger_source,
            "automation_schedule_id": automation_schedule_id,
            "automation_run_id": automation_run_id,
        },
    )
    session.add(audit)
    session.flush()
    return audit, True


def write_snapshot(
    session: Session,
    audit_id: int,
    *,
    config: dict[str, Any],
    timeline: list[dict[str, Any]],
    timeline_text: str,
    step_excerpts: dict[str, str],
    product_info: dict[str, Any] | None = None,
) -> AuditSnapshot:
    """Write the snapshot once; a retry keeps the first one (indices must never move)."""
    session.execute(
        pg_insert(AuditSnapshot)
        .values(
            audit_id=audit_id,
            config=strip_nul(config),
            timeline=strip_nul(timeline),
            timeline_text=strip_nul(timeline_text),
            step_excerpts=strip_nul(step_excerpts),
            product_info=strip_nul(product_info) if product_info is not None else None,
        )
        .on_conflict_do_nothing(index_elements=["audit_id"])
    )
    return session.get(AuditSnapshot, audit_id)


def apply_compliance(audit: Audit, c: Any) -> None:
    """Write a computed summary (:class:`core.scoring.Compliance`) onto the audit's summary columns;
    the finalizer and the rerun/review writer share it so the columns always mean the same thing."""
    audit.overall_score = c.score_percentage
    audit.score_percentage = c.score_percentage
    audit.niveau = c.niveau
    audit.is_compliant = c.is_compliant
    audit.critical_passed = c.critical_passed
    audit.critical_total = c.critical_total


def get_snapshot(session: Session, audit_id: int) -> AuditSnapshot | None:
    return session.get(AuditSnapshot, audit_id)


def done_positions(session: Session, audit_id: int) -> set[int]:
    return set(
        session.scalars(
            select(AuditStepResult.step_position).where(
                AuditStepResult.audit_id == audit_id, AuditStepResult.raw_result.is_not(None)
            )
        )
    )


def lock_audit_steps(session: Session, audit_id: int) -> None:
    """Serialize the step writes of one audit (transaction-scoped): each writer then counts every
    step committed before it, so ``audit.progress`` climbs to 100 % instead of two steps finishing
    together both reporting the same count."""
    from auditflow_dagster.db.locks import lock_keys

    a, b = lock_keys(f"audit-steps:{audit_id}")
    session.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": a, "b": b})


def upsert_step_result(
    session: Session,
    audit_id: int,
    step: AuditStepSpec,
    output: dict[str, Any],
    *,
    usage: dict[str, int],
    failed: bool = False,
    error: str | None = None,
    model: str | None = None,
    extra_raw: dict[str, Any] | None = None,
) -> None:
    """Upsert the step row, replace its control points (citations cascade) — one transaction."""
    output = strip_nul(output)
    points = output.get("points_controle") or []
    total_citations = sum(len(p.get("citations") or []) for p in points)
    raw_result: dict[str, Any] = {
        "step_metadata": {
            "position": step.position,
            "name": step.name,
            "severity": step.severity_level,
            "is_critical": step.is_critical,
            "weight": step.weight,
            **({"failed": True, "error": error} if failed else {}),
        },
        "usage": {
            "prompt_tokens": int(usage.get("prompt_tokens", 0)),
            "completion_tokens": int(usage.get("completion_tokens", 0)),
            "total_tokens": int(usage.get("total_tokens", 0)),
        },
        **({"model": model} if model else {}),
        **(extra_raw or {}),
    }
    values = {
        "audit_id": audit_id,
        "step_position": step.position,
        "step_name": step.name,
        "severity_level": step.severity_level,
        "is_critical": step.is_critical,
        "weight": step.weight,
        "traite": bool(output.get("traite")),
        "conforme": output.get("conforme") or "NON_CONFORME",
        "score": int(output.get("score") or 0),
        "niveau_conformite": output.get("niveau_conformite") or "INSUFFISANT",
        "commentaire_global": output.get("commentaire_global") or "",
        "mots_cles_trouves": [str(x) for x in output.get("mots_cles_trouves") or []],
        "minutages": [str(x) for x in output.get("minutages") or []],
        "erreurs_transcription_tolerees": int(output.get("erreurs_transcription_tolerees") or 0),
        "total_citations": total_citations,
        "total_tokens": raw_result["usage"]["total_tokens"],
        "raw_result": raw_result,
        "updated_at": now_utc(),
    }
    stmt = pg_insert(AuditStepResult).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["audit_id", "step_position"],
        set_={k: getattr(stmt.excluded, k) for k in values if k not in ("audit_id", "step_position")},
    )
    session.execute(stmt)
    session.execute(
        delete(AuditStepResultControlPoint).where(
            AuditStepResultControlPoint.audit_id == audit_id,
            AuditStepResultControlPoint.step_position == step.position,
        )
    )
    for i, p in enumerate(points, start=1):
        session.add(
            AuditStepResultControlPoint(
                audit_id=audit_id,
                step_position=step.position,
                control_point_index=i,
                point=p.get("point") or "",
                statut=p.get("statut") or "ABSENT",
                commentaire=p.get("commentaire") or "",
                minutages=[str(x) for x in p.get("minutages") or []],
                erreur_transcription_notee=bool(p.get("erreur_transcription_notee")),
                variation_phonetique_utilisee=p.get("variation_phonetique_utilisee"),
            )
        )
    session.flush()
    for i, p in enumerate(points, start=1):
        for j, c in enumerate(p.get("citations") or [], start=1):
            session.add(
                AuditStepResultCitation(
                    audit_id=audit_id,
                    step_position=step.position,
                    control_point_index=i,
                    citation_index=j,
                    texte=str(c.get("texte") or ""),
                    minutage=str(c.get("minutage") or ""),
                    minutage_secondes=float(c.get("minutage_secondes") or 0),
                    speaker=str(c.get("speaker") or ""),
                    recording_index=int(c.get("recording_index") or 0) if _is_int(c.get("recording_index")) else 0,
                    chunk_index=int(c.get("chunk_index") or 0) if _is_int(c.get("chunk_index")) else 0,
                    recording_date=str(c.get("recording_date") or "N/A"),
                    recording_time=str(c.get("recording_time") or "N/A"),
                    recording_url=str(c.get("recording_url") or "N/A"),
                )
            )
    session.flush()


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def load_step_outputs(session: Session, audit_id: int,
                      steps: list[AuditStepResult] | None = None) -> dict[int, dict[str, Any]]:
    """Rebuild each stored step as the §3.4 payload (+ ``raw_result``), keyed by stored position.
    ``steps``: the audit's step rows when the caller already loaded them. Control points and
    citations are read as plain column tuples (no ORM instances: a detail read has ~200 of them)."""
    if steps is None:
        steps = list(session.scalars(select(AuditStepResult).where(AuditStepResult.audit_id == audit_id)))
    P, C = AuditStepResultControlPoint, AuditStepResultCitation
    points = session.execute(
        select(P.step_position, P.control_point_index, P.point, P.statut, P.commentaire, P.minutages,
               P.erreur_transcription_notee, P.variation_phonetique_utilisee)
        .where(P.audit_id == audit_id)
        .order_by(P.step_position, P.control_point_index)
    ).all()
    cites = session.execute(
        select(C.step_position, C.control_point_index, C.texte, C.minutage, C.minutage_secondes, C.speaker,
               C.recording_index, C.chunk_index, C.recording_date, C.recording_time, C.recording_url)
        .where(C.audit_id == audit_id)
        .order_by(C.step_position, C.control_point_index, C.citation_index)
    ).all()
    by_point: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for (pos, cpi, texte, minutage, minutage_secondes, speaker, recording_index, chunk_index, recording_date,
         recording_time, recording_url) in cites:
        by_point.setdefault((pos, cpi), []).append(
            {
                "texte": texte,
                "minutage": minutage,
                "minutage_secondes": minutage_secondes,
                "speaker": speaker,
                "recording_index": recording_index,
                "chunk_index": chunk_index,
                "recording_date": recording_date,
                "recording_time": recording_time,
                "recording_url": recording_url,
            }
        )
    pts: dict[int, list[dict[str, Any]]] = {}
    for pos, cpi, point, statut, commentaire, minutages, erreur, variation in points:
        pts.setdefault(pos, []).append(
            {
                "point": point,
                "statut": statut,
                "commentaire": commentaire,
                "citations": by_point.get((pos, cpi), []),
                "minutages": list(minutages),
                "erreur_transcription_notee": erreur,
                "variation_phonetique_utilisee": variation,
            }
        )
    out: dict[int, dict[str, Any]] = {}
    for s in steps:
        out[s.step_position] = {
            "traite": s.traite,
            "conforme": s.conforme,
            "minutages": list(s.minutages),
            "score": s.score,
            "points_controle": pts.get(s.step_position, []),
            "mots_cles_trouves": list(s.mots_cles_trouves),
            "commentaire_global": s.commentaire_global,
            "niveau_conformite": s.niveau_conformite,
            "erreurs_transcription_tolerees": s.erreurs_transcription_tolerees,
            "raw_result": s.raw_result or {},
            "total_tokens": s.total_tokens,
        }
    return out


def fail_audit(session: Session, audit: Audit, message: str) -> None:
    """``failed`` with its error and completion time only (spec 03 §2.6)."""
    audit.status = "failed"
    audit.error_message = message[:2000]
    audit.completed_at = now_utc()
    rd = dict(audit.result_data or {})
    rd["status"] = "failed"
    audit.result_data = rd


def running_audits_for_run(session: Session, fiche_cache_id: int, dagster_run_ids: list[str]) -> list[Audit]:
    return list(
        session.scalars(
            select(Audit)
            .where(
                Audit.fiche_cache_id == fiche_cache_id,
                Audit.status == "running",
                Audit.dagster_run_id.in_(dagster_run_ids),
            )
            .order_by(Audit.id)
        )
    )


def as_decimal(v: Any) -> Decimal:
    return v if isinstance(v, Decimal) else Decimal(str(v))


def _num(v: Any) -> str | None:
    """NUMERIC(5,2) in its shortest string form ("87.5"), spec 04 §0."""
    if v is None:
        return None
    d = as_decimal(v).normalize()
    s = format(d, "f")
    return s


NIVEAUX = ("PENDING", "EXCELLENT", "BON", "ACCEPTABLE", "INSUFFISANT", "REJET")
STATUSES = ("pending", "running", "completed", "failed")
CONFORMES = ("CONFORME", "NON_CONFORME", "PARTIEL")


def coerce_niveau(v: Any) -> str:
    """Unknown stored values are coerced on read (spec 04 §4.1)."""
    return v if v in NIVEAUX else "INSUFFISANT"


def coerce_status(v: Any) -> str:
    return v if v in STATUSES else "failed"


def coerce_conforme(v: Any) -> str:
    return v if v in CONFORMES else "NON_CONFORME"


def audit_object(a: Audit) -> dict[str, Any]:
    """The Audit object of spec 04 §4.1 (camelCase, string ids)."""
    return {
        "id": str(a.id),
        "ficheCacheId": str(a.fiche_cache_id),
        "auditConfigId": str(a.audit_config_id),
        "trackingId": a.tracking_id,
        "dagsterRunId": a.dagster_run_id,
        "automationScheduleId": str(a.automation_schedule_id) if a.automation_schedule_id else None,
        "automationRunId": str(a.automation_run_id) if a.automation_run_id else None,
        "triggerSource": a.trigger_source,
        "triggerUserId": a.trigger_user_id,
        "notes": a.notes,
        "deletedAt": iso(a.deleted_at),
        "overallScore": _num(a.overall_score),
        "scorePercentage": _num(a.score_percentage),
        "niveau": coerce_niveau(a.niveau),
        "isCompliant": a.is_compliant,
        "criticalPassed": a.critical_passed,
        "criticalTotal": a.critical_total,
        "status": coerce_status(a.status),
        "startedAt": iso(a.started_at),
        "completedAt": iso(a.completed_at),
        "durationMs": a.duration_ms,
        "errorMessage": a.error_message,
        "totalTokens": a.total_tokens,
        "successfulSteps": a.successful_steps,
        "failedSteps": a.failed_steps,
        "recordingsCount": a.recordings_count,
        "timelineChunks": a.timeline_chunks,
        "resultData": a.result_data,
        "version": a.version,
        "isLatest": a.is_latest,
        "createdAt": iso(a.created_at),
        "updatedAt": iso(a.updated_at),
    }


def _step_trails(session: Session, audit_id: int,
                 rows: dict[int, AuditStepResult] | None = None) -> dict[int, dict[str, list[dict[str, Any]]]]:
    """The review/rerun trails of each step (spec 04 §3.4), from :mod:`db.trails` when present."""
    try:
        from auditflow_dagster.db.trails import step_trails
    except ImportError:  # trails module not deployed: empty trails
        return {}
    return step_trails(session, audit_id,
                       None if rows is None else [(r.step_position, r.raw_result) for r in rows.values()])


def _step_payloads(session: Session, a: Audit, rows: dict[int, AuditStepResult],
                   outputs: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """One latest-view payload per step row (spec 04 §4.2 step 2, with the §4.2 step 3 Deviation:
    a row without control points is synthesized from its columns with ``points_controle: []``)."""
    trails = _step_trails(session, a.id, rows)
    payloads: dict[int, dict[str, Any]] = {}
    for pos in sorted(rows):
        r, out = rows[pos], outputs[pos]
        raw = r.raw_result or {}
        if isinstance(raw.get("points_controle"), list):  # legacy row: raw as is
            payload = dict(raw)
        else:
            payload = {k: v for k, v in out.items() if k not in ("raw_result", "total_tokens")}
            payload["conforme"] = coerce_conforme(payload.get("conforme"))
            payload["step_metadata"] = raw.get("step_metadata") or {
                "position": r.step_position, "name": r.step_name, "severity": r.severity_level,
                "is_critical": r.is_critical, "weight": r.weight,
            }
            payload["usage"] = raw.get("usage") or {"total_tokens": r.total_tokens}
        trail = trails.get(pos) or {}
        payload["human_review"] = list(trail.get("human_review") or payload.get("human_review") or [])
        payload["rerun_history"] = list(trail.get("rerun_history") or payload.get("rerun_history") or [])
        payloads[pos] = payload
    return payloads


def latest_view(session: Session, a: Audit) -> Any:
    """``resultData`` as the *latest view* (spec 04 §4.2): stored steps replaced by the rows."""
    result_data = a.result_data
    if not isinstance(result_data, dict) or not isinstance(result_data.get("audit"), dict) \
            or not isinstance(result_data["audit"].get("results"), dict):
        return result_data
    steps = list(session.scalars(select(AuditStepResult).where(AuditStepResult.audit_id == a.id)))
    rows = {r.step_position: r for r in steps}
    return _latest_view(result_data, _step_payloads(session, a, rows, load_step_outputs(session, a.id, steps)), rows)


def _compliance_from_rows(rows: dict[int, AuditStepResult]) -> dict[str, Any]:
    """The compliance block recomputed from the stored step rows (spec 04 §1.2): reruns and
    reviews rewrite rows and the summary columns, so the copy frozen in ``result_data`` goes stale."""
    from auditflow_dagster.core.scoring import StepScoreInput, compute_compliance

    return compute_compliance([
        StepScoreInput(position=r.step_position, weight=r.weight, is_critical=r.is_critical, score=r.score,
                       conforme=r.conforme) for r in rows.values()
    ]).as_result_dict()


def _latest_view(result_data: Any, payloads: dict[int, dict[str, Any]],
                 rows: dict[int, AuditStepResult] | None = None) -> Any:
    if not isinstance(result_data, dict) or not isinstance(result_data.get("audit"), dict) \
            or not isinstance(result_data["audit"].get("results"), dict):
        return result_data
    results = dict(result_data["audit"]["results"])
    audit_part = dict(result_data["audit"])
    if rows and isinstance(audit_part.get("compliance"), dict):  # Deviation of §1.2: overlay on read
        fresh = _compliance_from_rows(rows)
        audit_part["compliance"] = {**audit_part["compliance"], **fresh}
        if isinstance(results.get("compliance"), dict):
            results["compliance"] = {**results["compliance"], **fresh}
    stored = results.get("steps")
    if not isinstance(stored, list) or not stored:
        results["steps"] = [payloads[p] for p in sorted(payloads)]
    else:
        steps = list(stored)
        for pos, payload in sorted(payloads.items()):
            idx = next((i for i, st in enumerate(steps) if isinstance(st, dict)
                        and isinstance(st.get("step_metadata"), dict) and st["step_metadata"].get("position") == pos), None)
            if idx is None and 0 <= pos - 1 < len(steps):
                idx = pos - 1
            if idx is not None:
                steps[idx] = payload
        results["steps"] = steps
    return {**result_data, "audit": {**audit_part, "results": results}}


def audit_detail(session: Session, audit_id: int) -> dict[str, Any] | None:
    """``GET /api/audits/{id}`` (spec 04 §4.2): object + fiche + step results + latest view."""
    from auditflow_dagster.db.models import (
        AuditConfig,
        FicheCache,
        FicheCacheInformation,
    )

    # the audit, its fiche, the fiche's information groupe and its config in one statement; the
    # step rows once (outputs, row fields and trails all read them)
    head = session.execute(
        select(Audit, FicheCache, FicheCacheInformation.groupe, AuditConfig)
        .outerjoin(FicheCache, FicheCache.id == Audit.fiche_cache_id)
        .outerjoin(FicheCacheInformation, FicheCacheInformation.fiche_cache_id == Audit.fiche_cache_id)
        .outerjoin(AuditConfig, AuditConfig.id == Audit.audit_config_id)
        .where(Audit.id == audit_id)
    ).first()
    if head is None:
        return None
    a, fiche, info_groupe, cfg = head
    steps = list(session.scalars(select(AuditStepResult).where(AuditStepResult.audit_id == a.id)))
    outputs = load_step_outputs(session, a.id, steps)
    rows = {r.step_position: r for r in steps}
    payloads = _step_payloads(session, a, rows, outputs)
    step_results = []
    for pos in sorted(rows):
        r, out = rows[pos], outputs[pos]
        step_results.append(
            {
                "id": str(r.id),
                "auditId": str(a.id),
                "stepPosition": r.step_position,
                "stepName": r.step_name,
                "severityLevel": r.severity_level,
                "isCritical": r.is_critical,
                "weight": r.weight,
                "traite": r.traite,
                "conforme": coerce_conforme(r.conforme),
                "score": r.score,
                "niveauConformite": r.niveau_conformite,
                "commentaireGlobal": r.commentaire_global,
                "motsClesTrouves": list(r.mots_cles_trouves),
                "minutages": list(r.minutages),
                "erreursTranscriptionTolerees": r.erreurs_transcription_tolerees,
                "totalCitations": r.total_citations,
                "totalTokens": r.total_tokens,
                "rawResult": r.raw_result or {},
                "controlPoints": [
                    {"controlPointIndex": i, **{k: v for k, v in p.items()}}
                    for i, p in enumerate(out["points_controle"], start=1)
                ],
                "createdAt": iso(r.created_at),
                "updatedAt": iso(r.updated_at),
            }
        )
    result_data = _latest_view(a.result_data, payloads, rows)
    detail = audit_object(a)
    detail["resultData"] = result_data
    detail["auditConfig"] = {"id": str(cfg.id), "name": cfg.name, "description": cfg.description} if cfg else None
    detail["automationSchedule"] = None
    detail["automationRun"] = None
    detail["ficheCache"] = {
        "ficheId": fiche.fiche_id,
        "groupe": info_groupe or fiche.groupe,
        "agenceNom": fiche.agence_nom,
        "prospectNom": fiche.prospect_nom,
        "prospectPrenom": fiche.prospect_prenom,
        "prospectEmail": fiche.prospect_email,
        "prospectTel": fiche.prospect_tel,
    } if fiche else None
    detail["stepResults"] = step_results
    return detail
