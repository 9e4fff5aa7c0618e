"""Asset checks on ``audits`` (issue 5): the stored summary equals what the step rows say (spec 03
§6 "recompute from stored rows"), every configured step has a row, every kept citation passes
evidence gating, and every score is within its bounds. A failure means a writer bypassed the
finalizer or the finalizer is wrong; each check lists the offending audits.

Each rule is a plain function over one stored audit (``*_problems``), so it can be run on any
audit — the checks apply them to the audits finalized by the run.
"""


from decimal import Decimal

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    asset_check,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from auditflow_dagster.assets.audits import audits
from auditflow_dagster.core import privacy
from auditflow_dagster.core.evidence import invalid_citations
from auditflow_dagster.core.scoring import StepScoreInput, compute_compliance
from auditflow_dagster.db.models import (
    Audit,
    AuditSnapshot,
    AuditStepResult,
    AuditStepResultCitation,
)
from auditflow_dagster.resources.database import DatabaseResource
from auditflow_dagster.settings import get_settings


def _config_steps(s: Session, audit: Audit) -> list[dict]:
    snap = s.get(AuditSnapshot, audit.id)
    return snap.config.get("steps", []) if snap else []


def _rows(s: Session, audit: Audit) -> dict[int, AuditStepResult]:
    return {r.step_position: r for r in s.scalars(select(AuditStepResult).where(AuditStepResult.audit_id == audit.id))}


def summary_problems(s: Session, audit: Audit) -> list[str]:
    rows = _rows(s, audit)
    c = compute_compliance([
        StepScoreInput(position=st["position"], weight=st["weight"], is_critical=st["is_critical"],
                       score=rows[st["position"]].score if st["position"] in rows else None,
                       conforme=rows[st["position"]].conforme if st["position"] in rows else None)
        for st in _config_steps(s, audit)
    ])
    if (Decimal(str(audit.score_percentage)) != c.score_percentage or audit.niveau != c.niveau
            or audit.critical_passed != c.critical_passed or audit.is_compliant != c.is_compliant):
        return [f"audit {audit.id}: stored {audit.score_percentage}/{audit.niveau}, rows say {c.score_percentage}/{c.niveau}"]
    return []


def step_problems(s: Session, audit: Audit) -> list[str]:
    expected = {st["position"] for st in _config_steps(s, audit)}
    stored = set(_rows(s, audit))
    if expected != stored:
        return [f"audit {audit.id}: missing steps {sorted(expected - stored)}, extra {sorted(stored - expected)}"]
    return []


def citation_problems(s: Session, audit: Audit, min_quote_chars: int) -> tuple[int, list[str]]:
    snap = s.get(AuditSnapshot, audit.id)
    rows = s.scalars(select(AuditStepResultCitation).where(AuditStepResultCitation.audit_id == audit.id)).all()
    cites = [{"texte": r.texte, "recording_index": r.recording_index, "chunk_index": r.chunk_index,
              "_where": f"audit {audit.id} step {r.step_position} point {r.control_point_index} citation {r.citation_index}"}
             for r in rows]
    timeline = snap.timeline if snap else []
    invalid = invalid_citations(cites, timeline, min_quote_chars)
    if invalid and timeline and not privacy.is_redacted(timeline):
        # a rerun of an audit frozen before redaction quotes the redacted text it was shown
        invalid = invalid_citations(invalid, privacy.llm_view(timeline), min_quote_chars)
    return len(rows), [c["_where"] for c in invalid]


def bound_problems(s: Session, audit: Audit) -> list[str]:
    problems = []
    if not (0 <= Decimal(str(audit.score_percentage)) <= 100):
        problems.append(f"audit {audit.id}: score {audit.score_percentage}%")
    if not (0 <= audit.critical_passed <= audit.critical_total):
        problems.append(f"audit {audit.id}: critical {audit.critical_passed}/{audit.critical_total}")
    for r in _rows(s, audit).values():
        if not (0 <= r.score <= max(0, r.weight)):
            problems.append(f"audit {audit.id} step {r.step_position}: score {r.score} of {r.weight}")
    return problems


def _run_audits(s: Session, context: AssetCheckExecutionContext) -> list[Audit]:
    root = context.run.root_run_id or context.run.run_id
    return list(s.scalars(select(Audit).where(Audit.dagster_run_id == root, Audit.status == "completed")))


def _result(checked: int, problems: list[str], **extra: object) -> AssetCheckResult:
    return AssetCheckResult(passed=not problems, severity=AssetCheckSeverity.ERROR,
                            metadata={"audits_checked": checked, "problems": len(problems), **extra,
                                      "details": "\n".join(problems[:20]) or "none"})


@asset_check(asset=audits, blocking=False, description="Audit summaries recomputed from step rows match the stored ones.")
def audit_summary_matches_rows(context: AssetCheckExecutionContext, db: DatabaseResource) -> AssetCheckResult:
    with db.session() as s:
        checked = _run_audits(s, context)
        return _result(len(checked), [p for a in checked for p in summary_problems(s, a)])


@asset_check(asset=audits, blocking=False,
             description="Every step of the audit's frozen config has a stored result row (none lost, none extra).")
def audit_has_every_step(context: AssetCheckExecutionContext, db: DatabaseResource) -> AssetCheckResult:
    with db.session() as s:
        checked = _run_audits(s, context)
        return _result(len(checked), [p for a in checked for p in step_problems(s, a)])


@asset_check(asset=audits, blocking=False,
             description="Every kept citation is a verbatim quote of the chunk it names (evidence gating holds on stored rows).")
def audit_citations_pass_gating(context: AssetCheckExecutionContext, db: DatabaseResource) -> AssetCheckResult:
    settings = get_settings()
    total, problems = 0, []
    with db.session() as s:
        checked = _run_audits(s, context)
        if settings.audit_evidence_gating:
            for a in checked:
                n, bad = citation_problems(s, a, settings.audit_evidence_min_quote_chars)
                total, problems = total + n, problems + bad
    return _result(len(checked), problems, citations_checked=total)


@asset_check(asset=audits, blocking=False,
             description="Scores within bounds: 0 ≤ step score ≤ weight, 0 ≤ audit % ≤ 100, critical passed ≤ critical total.")
def audit_scores_in_bounds(context: AssetCheckExecutionContext, db: DatabaseResource) -> AssetCheckResult:
    with db.session() as s:
        checked = _run_audits(s, context)
        return _result(len(checked), [p for a in checked for p in bound_problems(s, a)])


AUDIT_CHECKS = [audit_summary_matches_rows, audit_has_every_step, audit_citations_pass_gating, audit_scores_in_bounds]
