"""The audit finalizer's rules (spec 03 §2.2, §4, §6, §8) as one pure function.

Given the checklist snapshot, the stored step outputs and the frozen timeline, decide the final
(gated) verdict of every step and the audit summary. Missing steps and steps without control points
become fallbacks (the watchdog rule: an audit never stays ``running`` because one step died).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from auditflow_dagster.core.audit_config import AuditConfigSpec
from auditflow_dagster.core.evidence import GatingStats, enrich_citations, gate_step
from auditflow_dagster.core.prompts import fallback_step_output
from auditflow_dagster.core.scoring import (
    Compliance,
    StepScoreInput,
    compute_compliance,
)


@dataclass
class FinalizedAudit:
    steps: dict[int, dict[str, Any]]  # position -> final §3.4 payload
    replaced: dict[int, str] = field(default_factory=dict)  # position -> why a fallback was written
    technically_failed: set[int] = field(default_factory=set)  # fallbacks (no usable LLM answer)
    gating: GatingStats = field(default_factory=GatingStats)
    compliance: Compliance | None = None

    @property
    def all_failed(self) -> bool:
        return bool(self.steps) and len(self.technically_failed) == len(self.steps)


_PAYLOAD_KEYS = (
    "traite", "conforme", "minutages", "score", "points_controle", "mots_cles_trouves",
    "commentaire_global", "niveau_conformite", "erreurs_transcription_tolerees",
)


def finalize_audit(
    config: AuditConfigSpec,
    stored: dict[int, dict[str, Any]],
    timeline: list[dict[str, Any]],
    *,
    gating_enabled: bool = True,
    min_quote_chars: int = 12,
) -> FinalizedAudit:
    """Final step payloads + summary. ``stored`` maps stored positions to payloads whose
    ``raw_result.step_metadata.failed`` marks a fallback written by the worker."""
    result = FinalizedAudit(steps={})
    for step in config.steps:
        row = stored.get(step.position)
        if row is None:
            payload = fallback_step_output(step, "step result missing (worker did not finish)")
            result.replaced[step.position] = "missing"
            result.technically_failed.add(step.position)
        elif not row.get("points_controle"):
            payload = fallback_step_output(step, "no control points in the analysis")
            result.replaced[step.position] = "no_control_points"
            result.technically_failed.add(step.position)
        else:
            payload = {k: copy.deepcopy(row[k]) for k in _PAYLOAD_KEYS if k in row}
            meta = (row.get("raw_result") or {}).get("step_metadata") or {}
            if meta.get("failed"):
                result.technically_failed.add(step.position)
        payload = enrich_citations(payload, timeline)
        if gating_enabled and step.position not in result.technically_failed:
            payload, stats = gate_step(payload, step.weight, timeline, min_quote_chars)
            result.gating = result.gating + stats
        result.steps[step.position] = payload
    result.compliance = compute_compliance(
        [
            StepScoreInput(
                position=s.position,
                weight=s.weight,
                is_critical=s.is_critical,
                score=result.steps[s.position].get("score"),
                conforme=result.steps[s.position].get("conforme"),
            )
            for s in config.steps
        ]
    )
    return result
