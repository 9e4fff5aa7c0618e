"""Asset checks: the stored audit summary must equal what the stored step rows say (spec 03 §6:
"recompute from stored rows"). A mismatch means a writer bypassed the finalizer."""


from decimal import Decimal

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    asset_check,
)
from sqlalchemy import select

from auditflow_dagster.assets.audits import audits
from auditflow_dagster.core.scoring import StepScoreInput, compute_compliance
from auditflow_dagster.db.models import Audit, AuditSnapshot, AuditStepResult
from auditflow_dagster.resources.database import DatabaseResource


@asset_check(asset=audits, blocking=False, description="Audit summaries recomputed from step rows match the stored ones.")
def audit_summary_matches_rows(context: AssetCheckExecutionContext, db: DatabaseResource) -> AssetCheckResult:
    root = context.run.root_run_id or context.run.run_id
    mismatches: list[str] = []
    checked = 0
    with db.session() as s:
        for audit in s.scalars(select(Audit).where(Audit.dagster_run_id == root, Audit.status == "completed")):
            snap = s.get(AuditSnapshot, audit.id)
            rows = {r.step_position: r for r in s.scalars(select(AuditStepResult).where(AuditStepResult.audit_id == audit.id))}
            steps = snap.config.get("steps", []) if snap else []
            c = compute_compliance([
                StepScoreInput(position=st["position"], weight=st["weight"], is_critical=st["is_critical"],
                               score=rows[st["position"]].score if st["position"] in rows else None,
                               conforme=rows[st["position"]].conforme if st["position"] in rows else None)
                for st in steps
            ])
            checked += 1
            if (Decimal(str(audit.score_percentage)) != c.score_percentage or audit.niveau != c.niveau
                    or audit.critical_passed != c.critical_passed):
                mismatches.append(f"audit {audit.id}: stored {audit.score_percentage}/{audit.niveau}, rows say {c.score_percentage}/{c.niveau}")
    return AssetCheckResult(
        passed=not mismatches,
        severity=AssetCheckSeverity.ERROR,
        metadata={"audits_checked": checked, "mismatches": len(mismatches), "details": "\n".join(mismatches[:20]) or "none"},
    )
