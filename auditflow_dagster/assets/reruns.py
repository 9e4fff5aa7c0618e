"""``audit_step_reruns[fiche]``: re-analyse one step, or one control point of a step, of a finished
audit (spec 04 §1, §2), as a Dagster run on the audit's fiche partition (job ``rerun_audit_step``).

How it differs from the legacy job, on purpose:

* it reads the audit's **frozen snapshot** (config, timeline, product) — the same one the audit was
  analysed and gated against — so step positions, control-point indices and citation
  ``recording_index``/``chunk_index`` stay stable even if the config or the fiche's recordings
  changed since (legacy re-read the current config and rebuilt the timeline);
* citations are enriched from that timeline, then gated exactly like the finalizer
  (``AUDIT_EVIDENCE_GATING``, ``AUDIT_EVIDENCE_MIN_QUOTE_CHARS``);
* with ``AUDITFLOW_REDACT_PII`` the snapshot is the redacted LLM view (facts section included in
  the prompt); a snapshot frozen before redaction is redacted for this rerun's prompt and gating, so
  no personal data leaves either (:mod:`auditflow_dagster.core.privacy`);
* a failed analysis fails the run (never a fallback written over a good result) and, on the last
  attempt, publishes ``audit.step_failed {status:"rerun_failed"}`` so the UI spinner stops;
* ``rerun_id`` is derived from the run's *root* id, so the op retry (1) and a re-execution share it:
  a rerun already persisted is never analysed (billed) again;
* inner per-step events of the legacy analyzer are not emitted.

The writes live in :mod:`auditflow_dagster.db.step_edits` (one transaction, audit row locked).
"""

import logging
from typing import Any

from dagster import (
    AssetExecutionContext,
    Config,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    asset,
    define_asset_job,
    in_process_executor,
)

from auditflow_dagster.assets.audits import audits
from auditflow_dagster.assets.runtime import in_tx, run_async
from auditflow_dagster.core import privacy
from auditflow_dagster.core.audit_config import AuditConfigSpec, AuditStepSpec
from auditflow_dagster.core.evidence import enrich_citations, gate_step, norm
from auditflow_dagster.core.product_context import ProductInfo
from auditflow_dagster.core.prompts import build_step_prompt
from auditflow_dagster.core.timeline import excerpt_text, timeline_text
from auditflow_dagster.db import audits as audit_db
from auditflow_dagster.db import step_edits
from auditflow_dagster.db.clock import iso, now_utc
from auditflow_dagster.db.events import emit, emit_best_effort
from auditflow_dagster.db.locks import global_slot
from auditflow_dagster.db.models import Audit, FicheCache
from auditflow_dagster.partitions import fiches_partitions
from auditflow_dagster.resources.database import DatabaseResource
from auditflow_dagster.resources.llm import LlmResource
from auditflow_dagster.settings import get_settings

log = logging.getLogger(__name__)

MAX_RETRIES = 1  # spec 04 §1: legacy 1 retry, 10 min
MAX_RUNTIME_SECONDS = 600
MAX_PROMPT_CHARS = 5000
PREVIOUS_COMMENT_CHARS = 1200
RERUN_JOB_NAME = "rerun_audit_step"


class RerunConfig(Config):
    """What to rerun. ``control_point_index`` (1-based) set → a control-point rerun (spec 04 §2)."""

    audit_id: int
    step_position: int
    control_point_index: int | None = None
    custom_prompt: str | None = None
    #: end a human step override in force and apply the rerun's verdict (db/step_edits docstring)
    replace_human_review: bool = False


class RerunFailed(Exception):
    """The rerun cannot be done (missing audit/step/point, empty analysis)."""


def rerun_id_for(cfg: RerunConfig, event_id: str) -> str:
    if cfg.control_point_index is not None:
        return f"rerun-{cfg.audit_id}-{cfg.step_position}-cp-{cfg.control_point_index}-{event_id}"
    return f"rerun-{cfg.audit_id}-{cfg.step_position}-{event_id}"


def user_instructions(prompt: str | None) -> str | None:
    text = (prompt or "").strip()[:MAX_PROMPT_CHARS]
    return f"Instructions de l'utilisateur pour cette ré-analyse :\n{text}" if text else None


def control_point_instructions(step: AuditStepSpec, index: int, previous: dict[str, Any] | None,
                               prompt: str | None) -> str:
    """Spec 04 §2 step 4: the targeted sub-step heading, the previous result, the user prompt."""
    text = step.control_points[index - 1]
    parts = [f"RÉ-ANALYSE CIBLÉE D'UN SOUS-POINT ({index}/{len(step.control_points)}) : {text}",
             "Analyse uniquement ce point de contrôle."]
    if previous is not None:
        comment = str(previous.get("commentaire") or "")[:PREVIOUS_COMMENT_CHARS]
        parts.append("Résultat précédent :\n"
                     f"- statut : {previous.get('statut')}\n"
                     f"- citations : {len(previous.get('citations') or [])}\n"
                     f"- minutages : {', '.join(previous.get('minutages') or []) or '(aucun)'}\n"
                     f"- commentaire : {comment}")
    user = (prompt or "").strip()[:MAX_PROMPT_CHARS]
    if user:
        parts.append(f"INSTRUCTIONS PRIORITAIRES DE L'UTILISATEUR :\n{user}")
    return "\n\n".join(parts)


def pick_point(points: list[dict[str, Any]], text: str) -> dict[str, Any] | None:
    """Spec 04 §2 step 5: the single point, else the first whose normalized text matches, else the first."""
    points = [p for p in points if isinstance(p, dict)]
    if not points:
        return None
    if len(points) == 1:
        return points[0]
    return next((p for p in points if norm(str(p.get("point") or "")) == norm(text)), points[0])


def _gate(payload: dict[str, Any], weight: int, timeline: list[dict[str, Any]]) -> dict[str, Any]:
    settings = get_settings()
    out = enrich_citations(payload, timeline)  # legacy skipped this (spec 04 §1 step 7 deviation)
    if settings.audit_evidence_gating:
        out, _ = gate_step(out, weight, timeline, settings.audit_evidence_min_quote_chars)
    return out


def execute_rerun(cfg: RerunConfig, *, auditor: Any, event_id: str, fiche_id: str | None = None,
                  final_attempt: bool = True, close_auditor: bool = False) -> dict[str, Any]:
    """The whole rerun for one request (also callable without Dagster: tests, scripts).

    Returns ``{"status": "applied"|"already_applied", "rerun_id", ...}``; raises on failure after
    publishing ``audit.step_failed`` when ``final_attempt``.
    """
    rerun_id = rerun_id_for(cfg, event_id)
    scope = "control_point" if cfg.control_point_index is not None else "step"
    audit_key = str(cfg.audit_id)
    corr: dict[str, Any] = {"rerun_id": rerun_id, "audit_id": audit_key, "audit_db_id": audit_key,
                            "step_position": cfg.step_position, "event_id": event_id}
    if scope == "control_point":
        corr.update(rerun_scope="control_point", control_point_index=cfg.control_point_index)

    async def main() -> dict[str, Any]:
        def begin(s) -> bool:
            """Idempotency check and the start event, committed on their own (a later failure must
            not roll the start event back: the failure event refers to it)."""
            if step_edits.rerun_already_applied(s, rerun_id):
                return False
            audit = s.get(Audit, cfg.audit_id)
            fiche = s.get(FicheCache, audit.fiche_cache_id) if audit is not None else None
            if fiche is not None:
                corr["fiche_id"] = fiche.fiche_id
            if audit is not None:
                corr["audit_tracking_id"] = audit.tracking_id
            emit(s, "audit.step_started", {**corr, "started_at": iso(now_utc()), "status": "rerunning"})
            return True

        def load(s) -> dict[str, Any]:
            audit = s.get(Audit, cfg.audit_id)
            if audit is None:
                raise RerunFailed(f"Audit {cfg.audit_id} not found")
            if fiche_id is not None and corr.get("fiche_id") not in (None, fiche_id):
                raise RerunFailed(f"Audit {cfg.audit_id} belongs to fiche {corr['fiche_id']}, not {fiche_id}")
            if audit.status not in step_edits.EDITABLE_STATUSES:
                raise RerunFailed(f"Audit {cfg.audit_id} is {audit.status}")
            snap = audit_db.get_snapshot(s, audit.id)
            if snap is None:
                raise RerunFailed(f"Audit {cfg.audit_id} has no snapshot (it was never analysed)")
            if step_edits.step_row(s, audit.id, cfg.step_position) is None:
                raise RerunFailed(f"Step {cfg.step_position} of audit {cfg.audit_id} has no stored result")
            previous = None
            if cfg.control_point_index is not None:
                spec = AuditConfigSpec.model_validate({k: v for k, v in snap.config.items() if k != "id"})
                step = next((st for st in spec.steps if st.position == cfg.step_position), None)
                if step is not None and 1 <= cfg.control_point_index <= len(step.control_points):
                    previous = step_edits.previous_point(s, audit.id, cfg.step_position, cfg.control_point_index,
                                                         step.control_points[cfg.control_point_index - 1])
            return {"config": snap.config, "timeline": snap.timeline, "timeline_text": snap.timeline_text,
                    "excerpts": snap.step_excerpts or {}, "product": snap.product_info, "previous": previous}

        try:
            if not await in_tx(begin):
                return {"status": "already_applied", "rerun_id": rerun_id}
            return await analyze_and_persist(await in_tx(load))
        finally:
            close = getattr(auditor, "aclose", None) if close_auditor else None
            if close is not None:
                await close()

    async def analyze_and_persist(ctx: dict[str, Any]) -> dict[str, Any]:
        spec = AuditConfigSpec.model_validate({k: v for k, v in ctx["config"].items() if k != "id"})
        step = next((st for st in spec.steps if st.position == cfg.step_position), None)
        if step is None:
            raise RerunFailed(f"Step {cfg.step_position} is not in the audit's config")
        product = ProductInfo.model_validate(ctx["product"]) if ctx["product"] else None
        block = ctx["excerpts"].get(str(step.position)) or ctx["timeline_text"]
        timeline = ctx["timeline"]
        settings = get_settings()
        if settings.redact_pii and not privacy.is_redacted(timeline):
            # frozen before redaction (or with it off): redacted now; this rerun is gated against that view
            timeline = privacy.llm_view(timeline)
            block = (excerpt_text(timeline, step, settings.audit_step_timeline_max_chunks)
                     if ctx["excerpts"].get(str(step.position)) else timeline_text(timeline))
        if cfg.control_point_index is None:
            target, extra = step, user_instructions(cfg.custom_prompt)
        else:
            i = cfg.control_point_index
            if not 1 <= i <= len(step.control_points):
                raise RerunFailed(f"Control point {i} is out of range (step {step.position} has "
                                  f"{len(step.control_points)})")
            target = step.model_copy(update={"control_points": [step.control_points[i - 1]]})
            extra = control_point_instructions(step, i, ctx["previous"], cfg.custom_prompt)
        # always prompt mode, even for a use_rlm audit (spec 04 §1 step 6)
        prompt = build_step_prompt(spec, target, block, total_steps=len(spec.steps), extra_instructions=extra,
                                   product=product, facts=privacy.facts_section(timeline))
        async with global_slot("llm", settings.llm_concurrency):
            call = await auditor.analyze_step(prompt=prompt, config=spec, step=target,
                                              timeline=privacy.tools_view(timeline))
        gated = _gate(call.output, step.weight, timeline)
        custom = (cfg.custom_prompt or "").strip()[:MAX_PROMPT_CHARS] or None
        if cfg.control_point_index is None:
            outcome = await in_tx(lambda s: _persist_step(s, step, gated, call, rerun_id, event_id, custom, corr))
        else:
            text = step.control_points[cfg.control_point_index - 1]
            point = pick_point(gated.get("points_controle") or [], text)
            if point is None:
                raise RerunFailed("The analysis returned no control point")
            outcome = await in_tx(lambda s: _persist_point(s, point, text, rerun_id, event_id, custom, corr))
        return outcome

    def _persist_step(s, step, gated, call, rerun_id, event_id, custom, corr) -> dict[str, Any]:
        out = step_edits.persist_step_rerun(
            s, audit_id=cfg.audit_id, step=step, gated=gated, raw_score=call.output.get("score"),
            raw_conforme=call.output.get("conforme"), usage=call.usage, model=call.model, rerun_id=rerun_id,
            event_id=event_id, custom_prompt=custom, replace_human_review=cfg.replace_human_review)
        if not out.applied:
            return {"status": "already_applied", "rerun_id": rerun_id}
        ev = out.event
        emit(s, "audit.step_completed", {**corr, "original": ev["original"], "rerun": ev["rerun"],
                                         "comparison": ev["comparison"], "human_override_kept": ev["human_override_kept"],
                                         "completed_at": iso(now_utc()), "status": "rerun_completed"})
        emit(s, "audit/step-rerun-completed", {
            "audit_id": corr["audit_id"], "step_position": cfg.step_position,
            "original_score": ev["comparison"]["originalScore"], "new_score": ev["comparison"]["newScore"],
            "score_changed": ev["comparison"]["scoreChanged"], "conforme_changed": ev["comparison"]["conformeChanged"]})
        return {"status": "applied", "rerun_id": rerun_id, "comparison": ev["comparison"], "stored": ev["stored"],
                "human_override_kept": ev["human_override_kept"], "score_percentage": str(out.summary.score_percentage),
                "niveau": out.summary.niveau, "tokens": int(call.usage.get("total_tokens", 0))}

    def _persist_point(s, point, text, rerun_id, event_id, custom, corr) -> dict[str, Any]:
        out = step_edits.persist_control_point_rerun(
            s, audit_id=cfg.audit_id, position=cfg.step_position, index=cfg.control_point_index, point_text=text,
            new_point=point, rerun_id=rerun_id, event_id=event_id, custom_prompt=custom,
            replace_human_review=cfg.replace_human_review)
        if not out.applied:
            return {"status": "already_applied", "rerun_id": rerun_id}
        ev = out.event
        emit(s, "audit.step_completed", {**corr, "original": ev["original"], "rerun": ev["rerun"],
                                         "comparison": ev["comparison"], "human_override_kept": ev["human_override_kept"],
                                         "completed_at": iso(now_utc()), "status": "rerun_completed"})
        emit(s, "audit/step-control-point-rerun-completed", {
            "audit_id": corr["audit_id"], "step_position": cfg.step_position,
            "control_point_index": cfg.control_point_index, "statut_changed": ev["comparison"]["statutChanged"],
            "citations_changed": ev["comparison"]["citationsChanged"]})
        return {"status": "applied", "rerun_id": rerun_id, "comparison": ev["comparison"], "stored": ev["stored"],
                "human_override_kept": ev["human_override_kept"], "score_percentage": str(out.summary.score_percentage),
                "niveau": out.summary.niveau}

    try:
        return run_async(main)
    except Exception as exc:
        if final_attempt:
            error = (str(exc) or exc.__class__.__name__)[:500]
            emit_best_effort("audit.step_failed", {**corr, "error": error, "failed_at": iso(now_utc()),
                                                   "status": "rerun_failed"})
        raise


@asset(
    partitions_def=fiches_partitions,
    deps=[audits],
    retry_policy=RetryPolicy(max_retries=MAX_RETRIES),
    group_name="audits",
    kinds={"python", "postgres", "openai"},
    description="Reruns of one audit step or control point (frozen snapshot, gated, trail row, summary recomputed).",
)
def audit_step_reruns(context: AssetExecutionContext, config: RerunConfig, llm: LlmResource,
                      db: DatabaseResource) -> MaterializeResult:
    del db  # sessions come from the same settings (in_tx); declared so the UI shows the dependency
    event_id = context.run.root_run_id or context.run_id
    final = context.retry_number >= MAX_RETRIES
    result = execute_rerun(config, auditor=llm.client(), event_id=event_id, fiche_id=context.partition_key,
                           final_attempt=final, close_auditor=True)
    metadata: dict[str, Any] = {
        "audit_id": config.audit_id,
        "step_position": config.step_position,
        "scope": "control_point" if config.control_point_index is not None else "step",
        "rerun_id": result["rerun_id"],
        "outcome": result["status"],
    }
    if config.control_point_index is not None:
        metadata["control_point_index"] = config.control_point_index
    if result["status"] == "applied":
        metadata.update(comparison=MetadataValue.json(result["comparison"]), stored=MetadataValue.json(result["stored"]),
                        human_override_kept=result["human_override_kept"],
                        audit_score_percentage=result["score_percentage"], audit_niveau=result["niveau"])
    return MaterializeResult(metadata=metadata)


#: One rerun per run, on the audit's fiche partition. The API tags runs with
#: ``auditflow/rerun_audit_id`` so a deployment can serialize reruns per audit with a run-coordinator
#: tag concurrency limit (``applyLimitPerUniqueValue``); the audit row lock serializes the writes anyway.
rerun_audit_step_job = define_asset_job(
    RERUN_JOB_NAME,
    selection=[audit_step_reruns],
    partitions_def=fiches_partitions,
    executor_def=in_process_executor,
    tags={"dagster/max_runtime": str(MAX_RUNTIME_SECONDS), "auditflow/kind": "rerun"},
    description="Rerun one step (or one control point) of a finished audit of the run's fiche.",
)
