"""The audit finalizer (spec 03 §2.2, §2.6, §6): evidence gating, scoring and the summary of one
running audit, from its stored step rows and its frozen snapshot only.

One function serves the ``audits`` asset and the watchdog sensor, so an audit whose run died is
finalized by exactly the same rules as one whose run finished: a configured step without a row
becomes the fallback result (score 0, ``NON_CONFORME``, ``traite=false``), and "all steps failed"
ends the audit ``failed``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from auditflow_dagster.core import privacy
from auditflow_dagster.core.audit_config import AuditConfigSpec
from auditflow_dagster.core.finalize import finalize_audit
from auditflow_dagster.db import audits as audit_db
from auditflow_dagster.db.clock import iso, now_utc
from auditflow_dagster.db.events import emit
from auditflow_dagster.db.models import Audit, FicheCache, Recording
from auditflow_dagster.settings import get_settings


def event_base(audit: Audit, fiche_id: str, run_id: str | None) -> dict[str, Any]:
    """The fields every ``audit.*`` event carries (spec 03 §7)."""
    return {
        "audit_id": audit.tracking_id,
        "audit_db_id": str(audit.id),
        "fiche_id": fiche_id,
        "event_id": run_id,
        "approach": {"use_rlm": audit.use_rlm, "transcript_mode": "tools" if audit.use_rlm else "prompt"},
    }


def finalize_running_audit(s: Session, audit: Audit, row: FicheCache, run_id: str | None) -> dict[str, Any]:
    """Finalize ``audit`` if it is still ``running`` (row-locked: single flight per audit)."""
    settings = get_settings()
    fiche_id = row.fiche_id
    s.refresh(audit, with_for_update=True)
    base = event_base(audit, fiche_id, run_id)
    if audit.status != "running":
        return {"fiche_id": fiche_id, "audit_id": audit.id, "status": audit.status}
    snapshot = audit_db.get_snapshot(s, audit.id)
    if snapshot is None:  # died before its snapshot: nothing was analysed
        audit_db.fail_audit(s, audit, "audit run ended before the analysis started")
        emit(s, "audit.failed", {**base, "status": "failed", "error": audit.error_message, "failed_phase": "timeline",
                                 "failed_at": iso(now_utc())})
        return {"fiche_id": fiche_id, "audit_id": audit.id, "status": "failed"}
    spec = AuditConfigSpec.model_validate({k: v for k, v in snapshot.config.items() if k != "id"})
    stored = audit_db.load_step_outputs(s, audit.id)
    # gated against the snapshot: with AUDITFLOW_REDACT_PII the redacted text the LLM saw ("[IBAN]" quotes hold)
    fin = finalize_audit(spec, stored, snapshot.timeline, gating_enabled=settings.audit_evidence_gating,
                         min_quote_chars=settings.audit_evidence_min_quote_chars)
    steps_by_pos = {st.position: st for st in spec.steps}
    total_tokens = sum(int(v.get("total_tokens") or 0) for v in stored.values())
    for pos, payload in fin.steps.items():
        prev = stored.get(pos) or {}
        failed = pos in fin.technically_failed
        raw_meta = ((prev.get("raw_result") or {}).get("step_metadata") or {})
        audit_db.upsert_step_result(
            s, audit.id, steps_by_pos[pos], payload, usage=(prev.get("raw_result") or {}).get("usage") or {},
            failed=failed, error=raw_meta.get("error") or fin.replaced.get(pos),
            model=(prev.get("raw_result") or {}).get("model"))
    if fin.all_failed:
        audit_db.fail_audit(s, audit, "all steps failed")
        emit(s, "audit.failed", {**base, "status": "failed", "error": "all steps failed", "failed_phase": "analysis",
                                 "failed_at": iso(now_utc()),
                                 "partial_results": {"completed_steps": len(fin.steps), "total_steps": len(fin.steps),
                                                     "failed_steps": len(fin.steps)}})
        return {"fiche_id": fiche_id, "audit_id": audit.id, "status": "failed"}
    c = fin.compliance
    completed_at = now_utc()
    failed_steps = sum(1 for p in fin.steps.values() if not p.get("traite"))
    audit_db.apply_compliance(audit, c)
    audit.status = "completed"
    audit.completed_at = completed_at
    audit.duration_ms = int((completed_at - audit.started_at).total_seconds() * 1000)
    audit.total_tokens = total_tokens
    audit.successful_steps = len(fin.steps) - failed_steps
    audit.failed_steps = failed_steps
    approach = {"use_rlm": audit.use_rlm, "transcript_mode": "tools" if audit.use_rlm else "prompt"}
    compliance = c.as_result_dict()
    personal_data = privacy.personal_data_metadata(snapshot.timeline)  # only for a redacted snapshot
    audit.result_data = {
        "audit_db_id": str(audit.id),
        "audit_tracking_id": audit.tracking_id,
        "audit": {
            "config": {"id": str(audit.audit_config_id), "name": spec.name, "description": spec.description},
            "config_snapshot": snapshot.config,
            "fiche": {"fiche_id": fiche_id, "prospect_name": " ".join(
                x for x in (row.prospect_prenom, row.prospect_nom) if x), "groupe": row.groupe},
            "results": {"compliance": compliance, "approach": approach},
            "compliance": compliance,
            "approach": approach,
        },
        "statistics": {
            "recordings_count": audit.recordings_count,
            "transcriptions_count": s.scalar(select(func.count()).select_from(Recording).where(
                Recording.fiche_cache_id == row.id, Recording.has_transcription.is_(True))),
            "timeline_chunks": audit.timeline_chunks,
            "successful_steps": audit.successful_steps,
            "failed_steps": failed_steps,
            "total_time_seconds": 0,
            "total_tokens": total_tokens,
        },
        "metadata": {
            "started_at": iso(audit.started_at),
            "completed_at": iso(completed_at),
            "duration_ms": audit.duration_ms,
            "approach": approach,
            "evidence_gating": fin.gating.as_dict(),
            "replaced_steps": {str(k): v for k, v in fin.replaced.items()},
            **({"personal_data": personal_data} if personal_data is not None else {}),
        },
    }
    scores = {"overall_score": c.overall_score_label(), "score_percentage": c.percentage_label(),
              "niveau": c.niveau, "is_compliant": c.is_compliant,
              "critical_issues": f"{c.critical_passed}/{c.critical_total}"}
    emit(s, "audit.compliance_calculated", {**base, "status": "calculated", **scores})
    emit(s, "audit.completed", {**base, "status": "completed", **scores,
                                "successful_steps": audit.successful_steps, "failed_steps": failed_steps,
                                "total_tokens": total_tokens, "duration_seconds": round(audit.duration_ms / 1000),
                                "completed_at": iso(completed_at)})
    return {"fiche_id": fiche_id, "audit_id": audit.id, "status": "completed", "score": float(c.score_percentage),
            "niveau": c.niveau, "critical": f"{c.critical_passed}/{c.critical_total}",
            "gating_removed": fin.gating.removed_citations, "replaced_steps": sorted(fin.replaced),
            "tokens": total_tokens,
            "steps": [(p, spec_step.name, fin.steps[p]["score"], spec_step.weight, fin.steps[p]["conforme"])
                      for p, spec_step in sorted(steps_by_pos.items())]}
