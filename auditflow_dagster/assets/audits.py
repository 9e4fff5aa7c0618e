"""``audit_step_results[fiche]`` and ``audits[fiche]``: the audit engine (spec 03 §2).

``audit_step_results`` creates (or, on a retry, finds) each audit row, freezes its snapshot
(config + timeline + excerpts; with ``AUDITFLOW_REDACT_PII`` the redacted LLM view and what was
spoken, :mod:`auditflow_dagster.core.privacy`) and fans the steps out with bounded asyncio concurrency under the
global LLM cap; each step is stored the moment it finishes and a stored step is never recomputed.
``audits`` is the finalizer: evidence gating, scoring and the summary, from the stored rows only.
"""


import asyncio
import time
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from sqlalchemy import func, select

from auditflow_dagster.assets.automation_gate import AutomationGate
from auditflow_dagster.assets.runtime import (
    bounded_gather,
    in_tx,
    markdown_table,
    run_async,
)
from auditflow_dagster.assets.transcripts import transcripts
from auditflow_dagster.core import privacy
from auditflow_dagster.core.audit_config import AuditConfigSpec, AuditStepSpec
from auditflow_dagster.core.product_context import (
    ProductInfo,
    find_product,
    resolve_lookup,
)
from auditflow_dagster.core.prompts import (
    build_step_prompt,
    build_tools_system_prompt,
    build_tools_user_prompt,
    fallback_step_output,
)
from auditflow_dagster.core.timeline import build_timeline, excerpt_text, timeline_text
from auditflow_dagster.core.transcript_tools import transcript_mode
from auditflow_dagster.db import audits as audit_db
from auditflow_dagster.db import fiches as fiche_db
from auditflow_dagster.db.clock import iso, now_utc
from auditflow_dagster.db.configs import (
    automatic_config_ids,
    ensure_bundled_config,
    load_config,
)
from auditflow_dagster.db.events import emit
from auditflow_dagster.db.finalizer import finalize_running_audit
from auditflow_dagster.db.locks import global_slot
from auditflow_dagster.db.models import Audit, AuditStepResult
from auditflow_dagster.db.recordings import timeline_input
from auditflow_dagster.partitions import fiches_partitions
from auditflow_dagster.resources.database import DatabaseResource
from auditflow_dagster.resources.llm import LlmResource
from auditflow_dagster.settings import get_settings


class AuditRunConfig(Config):
    """What to audit. Defaults are the daily pipeline's: every automatic config, skipping fiches
    that already have a completed audit for it. The API sets a config id and a tracking id."""

    audit_config_ids: list[int] = []
    audit_tracking_ids: dict[str, str] = {}
    use_rlm: bool = False
    trigger_source: str = "batch"
    trigger_user_id: str | None = None
    skip_if_audited: bool = True
    automation_schedule_id: int | None = None
    automation_run_id: int | None = None


def root_run_id(context: AssetExecutionContext) -> str:
    """Retries (re-executions) share the root run id, so they find the audits their parent began."""
    return context.run.root_run_id or context.run_id


def _approach(audit: Audit, timeline: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``{use_rlm, transcript_mode}`` (spec 03 §2.6, §5): tools mode needs a non-empty timeline, else the
    steps silently run in prompt mode. Before the timeline is known, the request decides."""
    mode = ("tools" if audit.use_rlm else "prompt") if timeline is None else transcript_mode(audit.use_rlm, timeline)
    return {"use_rlm": audit.use_rlm, "transcript_mode": mode}


def _base(audit: Audit, fiche_id: str, run_id: str, timeline: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "audit_id": audit.tracking_id,
        "audit_db_id": str(audit.id),
        "fiche_id": fiche_id,
        "event_id": run_id,
        "approach": _approach(audit, timeline),
    }


@dataclass
class StepOutcome:
    position: int
    ok: bool
    tokens: int
    skipped: bool = False


@asset(
    partitions_def=fiches_partitions,
    deps=[transcripts],
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=50),
    group_name="audits",
    kinds={"python", "postgres", "openai"},
    description="Per-step LLM analysis of each fiche's calls against the checklist, stored step by step.",
)
def audit_step_results(
    context: AssetExecutionContext, config: AuditRunConfig, llm: LlmResource, db: DatabaseResource
) -> MaterializeResult:
    settings = get_settings()
    run_id = context.run_id
    root = root_run_id(context)
    keys = AutomationGate(context.run.tags).audit_keys(list(context.partition_keys))
    auditor = llm.client()
    model = llm.model_name

    with db.session() as s:
        config_ids = list(config.audit_config_ids) or automatic_config_ids(s) or [ensure_bundled_config(s)]
    configs: dict[int, AuditConfigSpec] = {}
    with db.session() as s:
        for cid in config_ids:
            loaded = load_config(s, cid)
            if loaded is None:
                raise ValueError(f"audit config {cid} not found")
            configs[cid] = loaded[1]

    async def audit_one(fiche_id: str, config_id: int) -> dict[str, Any]:
        spec = configs[config_id]
        tracking = config.audit_tracking_ids.get(fiche_id) or f"audit-{fiche_id}-{config_id}-{int(time.time() * 1000)}"

        def prepare(s) -> tuple[str, Audit | None]:
            row = fiche_db.get_row(s, fiche_id)
            if row is None:
                emit(s, "audit.failed", {"audit_id": tracking, "fiche_id": fiche_id, "error": f"Fiche {fiche_id} not cached",
                                         "failed_phase": "fiche_not_found", "failed_at": iso(now_utc()),
                                         "status": "failed", "event_id": run_id})
                return "no_fiche", None
            existing = (
                audit_db.get_by_tracking_id(s, tracking) if fiche_id in config.audit_tracking_ids else
                s.scalar(select(Audit).where(Audit.fiche_cache_id == row.id, Audit.audit_config_id == config_id,
                                             Audit.dagster_run_id == root).order_by(Audit.id.desc()))
            )
            if existing is not None and existing.status != "running":
                return "already_final", existing
            if existing is None and config.automation_run_id is not None:
                # a retry attempt of an automation run reuses what an earlier attempt completed:
                # an LLM call is never billed twice for the same run, fiche and config
                existing = s.scalar(select(Audit).where(
                    Audit.fiche_cache_id == row.id, Audit.audit_config_id == config_id,
                    Audit.automation_run_id == config.automation_run_id, Audit.status == "completed"))
                if existing is not None:
                    return "already_final", existing
            if existing is None and config.skip_if_audited and fiche_id not in config.audit_tracking_ids:
                done = s.scalar(select(func.count()).select_from(Audit).where(
                    Audit.fiche_cache_id == row.id, Audit.audit_config_id == config_id, Audit.status == "completed",
                    Audit.deleted_at.is_(None)))
                if done:
                    return "already_audited", None
            if not spec.steps:
                emit(s, "audit.failed", {"audit_id": tracking, "fiche_id": fiche_id, "status": "failed",
                                         "error": "audit config has no steps", "failed_phase": "config",
                                         "failed_at": iso(now_utc()), "event_id": run_id})
                return "zero_steps", None
            recs = fiche_db.recordings_of(s, row.id)
            transcribed = sum(1 for r in recs if r.has_transcription)
            emit(s, "audit.transcription_check", {"audit_id": tracking, "fiche_id": fiche_id, "status": "checked",
                                                  "total_recordings": len(recs), "transcribed": transcribed,
                                                  "needs_transcription": len(recs) - transcribed, "event_id": run_id})
            emit(s, "audit.config_loaded", {"audit_id": tracking, "fiche_id": fiche_id, "status": "loaded",
                                            "config_id": str(config_id), "config_name": spec.name,
                                            "steps_count": len(spec.steps), "event_id": run_id})
            audit, created = audit_db.create_audit(
                s, fiche_cache_id=row.id, audit_config_id=config_id, tracking_id=existing.tracking_id if existing else tracking,
                dagster_run_id=root, trigger_source=config.trigger_source, trigger_user_id=config.trigger_user_id,
                use_rlm=config.use_rlm, automation_schedule_id=config.automation_schedule_id,
                automation_run_id=config.automation_run_id)
            if not created and audit.dagster_run_id != root:
                # a new run resuming this audit (same tracking id after the first run died) adopts it,
                # so its own finalizer — not the dead run's — completes it
                audit.dagster_run_id = root
            base = _base(audit, fiche_id, run_id)
            if created:
                emit(s, "audit.started", {**base, "status": "started", "audit_config_id": str(config_id),
                                          "audit_config_name": spec.name, "total_steps": len(spec.steps),
                                          "started_at": iso(audit.started_at)})
            if not fiche_db.details_ready(s, row):
                audit_db.fail_audit(s, audit, f"Fiche {fiche_id} details unavailable")
                emit(s, "audit.failed", {**base, "status": "failed", "error": audit.error_message,
                                         "failed_phase": "fiche_not_found", "failed_at": iso(now_utc())})
                return "failed", audit
            snap = audit_db.get_snapshot(s, audit.id)
            if snap is None:
                timeline = build_timeline(timeline_input(s, row.id))
                if not timeline:
                    reason = ("no recordings" if not recs else
                              f"no transcriptions ({transcribed}/{len(recs)})" if transcribed < len(recs) else "timeline empty")
                    audit_db.fail_audit(s, audit, f"No usable transcript: {reason}")
                    emit(s, "audit.failed", {**base, "status": "failed", "error": audit.error_message,
                                             "failed_phase": "missing_transcription",
                                             "failed_at": iso(now_utc())})
                    return "failed", audit
                if settings.redact_pii:  # the snapshot freezes what the LLM sees (core/privacy.py)
                    timeline = privacy.llm_view(timeline)
                excerpts = {
                    str(st.position): excerpt_text(timeline, st, settings.audit_step_timeline_max_chunks)
                    for st in spec.steps if st.verify_product_info and settings.audit_step_timeline_excerpt
                }
                product = None
                if any(st.verify_product_info for st in spec.steps):  # product link, best effort (§2.1 step 4)
                    product = find_product(resolve_lookup(settings.product_lookup),
                                           fiche_db.read_fiche_details(s, row))
                snap = audit_db.write_snapshot(
                    s, audit.id, config={"id": config_id, **spec.model_dump(mode="json")}, timeline=timeline,
                    timeline_text=timeline_text(timeline), step_excerpts=excerpts,
                    product_info=product.model_dump(mode="json") if product else None)
                audit.recordings_count = len(timeline)
                audit.timeline_chunks = sum(len(r["chunks"]) for r in timeline)
                emit(s, "audit.timeline_generated", {**base, "status": "generated", "recordings_count": len(timeline),
                                                     "total_chunks": audit.timeline_chunks})
                emit(s, "audit.progress", {**base, "status": "in_progress", "completed_steps": 0,
                                           "total_steps": len(spec.steps), "failed_steps": 0,
                                           "current_phase": "timeline", "progress_percentage": 0})
            emit(s, "audit.analysis_started", {**base, "status": "analyzing", "total_steps": len(spec.steps), "model": model})
            return "ready", audit

        state, audit = await in_tx(prepare)
        if state != "ready" or audit is None:
            return {"fiche_id": fiche_id, "config_id": config_id, "state": state,
                    "audit_id": audit.id if audit else None, "steps": []}
        snapshot = await in_tx(lambda s: audit_db.get_snapshot(s, audit.id))
        snap_spec = AuditConfigSpec.model_validate({k: v for k, v in snapshot.config.items() if k != "id"})
        timeline = snapshot.timeline
        done = await in_tx(audit_db.done_positions, audit.id)
        base = _base(audit, fiche_id, run_id, timeline)
        mode = base["approach"]["transcript_mode"]
        tools_system = build_tools_system_prompt(snap_spec) if mode == "tools" else None
        facts = privacy.facts_section(timeline)  # None unless the snapshot is redacted
        llm_timeline = privacy.tools_view(timeline)
        product = ProductInfo.model_validate(snapshot.product_info) if snapshot.product_info else None
        total = len(snap_spec.steps)
        step_sem = asyncio.Semaphore(settings.audit_step_per_audit_concurrency)

        async def step(st: AuditStepSpec) -> StepOutcome:
            if st.position in done:
                return StepOutcome(st.position, True, 0, skipped=True)  # never bill a stored step twice
            async with step_sem:
                await in_tx(lambda s: emit(s, "audit.step_started", {
                    **base, "status": "processing", "step_position": st.position, "step_name": st.name,
                    "total_steps": total, "step_weight": st.weight, "is_critical": st.is_critical}))
                if mode == "tools":  # the model searches the same frozen timeline gating reads (§5)
                    prompt = build_tools_user_prompt(snap_spec, st, total_steps=total, product=product, facts=facts)
                    extra: dict[str, Any] = {"system_prompt": tools_system, "transcript_mode": "tools"}
                else:
                    block = snapshot.step_excerpts.get(str(st.position)) or snapshot.timeline_text
                    prompt = build_step_prompt(snap_spec, st, block, total_steps=total, product=product, facts=facts)
                    extra = {}
                error: str | None = None
                try:
                    async with global_slot("llm", settings.llm_concurrency):
                        call = await auditor.analyze_step(prompt=prompt, config=snap_spec, step=st,
                                                          timeline=llm_timeline, **extra)
                    output, usage, used_model = call.output, call.usage, call.model
                except Exception as exc:  # noqa: BLE001 - any analyzer failure becomes the fallback (§8)
                    error = str(exc)[:500] or exc.__class__.__name__
                    output, usage, used_model = fallback_step_output(st, error), {}, model

                def store(s) -> None:
                    audit_db.lock_audit_steps(s, audit.id)
                    audit_db.upsert_step_result(s, audit.id, st, output, usage=usage, failed=error is not None,
                                                error=error, model=used_model)
                    if error is None:
                        emit(s, "audit.step_completed", {
                            **base, "status": "completed", "step_position": st.position, "step_name": st.name,
                            "score": output["score"], "max_score": st.weight, "conforme": output["conforme"] == "CONFORME",
                            "total_citations": sum(len(p["citations"]) for p in output["points_controle"]),
                            "tokens_used": int(usage.get("total_tokens", 0))})
                    else:
                        emit(s, "audit.step_failed", {**base, "status": "failed", "step_position": st.position,
                                                      "step_name": st.name, "error": error})
                    rows = s.execute(select(func.count(), func.count().filter(AuditStepResult.traite.is_(False)))
                                     .where(AuditStepResult.audit_id == audit.id)).one()
                    emit(s, "audit.progress", {**base, "status": "in_progress", "completed_steps": rows[0],
                                               "total_steps": total, "failed_steps": rows[1], "current_phase": "analysis",
                                               "progress_percentage": min(100, round(100 * rows[0] / total)) if total else 0})

                await in_tx(store)
                return StepOutcome(st.position, error is None, int(usage.get("total_tokens", 0)))

        outcomes = await asyncio.gather(*(step(st) for st in snap_spec.steps))
        return {"fiche_id": fiche_id, "config_id": config_id, "state": "analyzed", "audit_id": audit.id,
                "steps": outcomes}

    async def main() -> list[dict[str, Any]]:
        pairs = [(f, c) for f in keys for c in config_ids]
        try:
            return await bounded_gather(settings.fiche_concurrency, pairs, lambda p: audit_one(*p))
        finally:
            close = getattr(auditor, "aclose", None)
            if close is not None:
                await close()

    results = run_async(main)
    analyzed = [r for r in results if r["state"] == "analyzed"]
    calls = sum(1 for r in analyzed for o in r["steps"] if not o.skipped)
    failed_steps = sum(1 for r in analyzed for o in r["steps"] if not o.ok)
    states: dict[str, int] = {}
    for r in results:
        states[r["state"]] = states.get(r["state"], 0) + 1
    return MaterializeResult(
        metadata={
            "fiches": len(keys),
            "audits_analyzed": len(analyzed),
            "llm_calls": calls,
            "steps_reused": sum(1 for r in analyzed for o in r["steps"] if o.skipped),
            "steps_failed": failed_steps,
            "tokens": sum(o.tokens for r in analyzed for o in r["steps"]),
            "model": model,
            "outcomes": MetadataValue.json(states),
        }
    )


@asset(
    partitions_def=fiches_partitions,
    deps=[audit_step_results],
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=50),
    group_name="audits",
    kinds={"python", "postgres"},
    description="Finalized audits: evidence gating, step and audit scores, niveau and critical result.",
)
def audits(context: AssetExecutionContext, db: DatabaseResource) -> MaterializeResult:
    settings = get_settings()
    root = root_run_id(context)
    keys = list(context.partition_keys)

    async def finalize_fiche(fiche_id: str) -> list[dict[str, Any]]:
        def work(s) -> list[dict[str, Any]]:
            row = fiche_db.get_row(s, fiche_id)
            if row is None:
                return []
            out = []
            for audit in audit_db.running_audits_for_run(s, row.id, [root]):
                out.append(finalize_running_audit(s, audit, row, context.run_id))
            return out

        return await in_tx(work)

    results = [r for rs in run_async(lambda: bounded_gather(settings.fiche_concurrency, keys, finalize_fiche)) for r in rs]
    AutomationGate(context.run.tags).after_audits(keys)
    done = [r for r in results if r["status"] == "completed"]
    niveaux: dict[str, int] = {}
    for r in done:
        niveaux[r["niveau"]] = niveaux.get(r["niveau"], 0) + 1
    metadata: dict[str, Any] = {
        "audits_completed": len(done),
        "audits_failed": sum(1 for r in results if r["status"] == "failed"),
        "niveau_counts": MetadataValue.json(niveaux),
        "mean_score": round(sum(r["score"] for r in done) / len(done), 2) if done else 0.0,
        "total_tokens": sum(r["tokens"] for r in done),
        "audits": MetadataValue.md(markdown_table(
            ["fiche", "audit", "score %", "niveau", "critical passed", "citations removed", "tokens"],
            [[r["fiche_id"], r["audit_id"], r["score"], r["niveau"], r["critical"], r["gating_removed"], r["tokens"]]
             for r in done[:200]],
        ) if done else "no audit finalized in this run"),
    }
    if len(done) == 1:
        metadata["score"] = done[0]["score"]
        metadata["niveau"] = done[0]["niveau"]
        metadata["critical_passed"] = done[0]["critical"]
        metadata["steps"] = MetadataValue.md(markdown_table(
            ["#", "step", "score", "max", "verdict"], [list(t) for t in done[0]["steps"]]))
    return MaterializeResult(metadata=metadata)
