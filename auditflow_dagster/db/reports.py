"""Compliance report rows (issue 10): what a report aggregates, and the report tables.

**Which audits.** A sales day's report covers the fiches whose ``fiche_cache.sales_date`` is that
day and, per fiche × audit config, the most recent *completed*, not deleted audit (a newer audit
still running or failed does not hide the last completed verdict). Groupe: the information
section's, else the sales list's (the effective groupe API-key scopes use too); advisor: the
information section's ``attribution_user_nom``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Integer, and_, cast, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from auditflow_dagster.core.reports import DayActivity
from auditflow_dagster.db.clock import iso, now_utc
from auditflow_dagster.db.models import (
    Audit,
    AuditStepResult,
    AuditStepResultControlPoint,
    DailyComplianceReport,
    FicheCache,
    FicheCacheInformation,
    WeeklyComplianceReport,
)

SECTIONS: tuple[str, ...] = ("totals", "niveau_counts", "score_distribution", "per_groupe", "per_advisor",
                             "critical_steps", "control_points", "top_missed_points", "gating")
GATING_KEYS: tuple[str, ...] = ("total_citations", "removed_citations", "downgraded_control_points",
                                "steps_score_reduced", "steps_conforme_adjusted")


def day_audit_ids(s: Session, day: str) -> list[int]:
    """Ids of the audits a day's report covers (see the module docstring), in id order."""
    latest = (
        select(Audit.id)
        .join(FicheCache, FicheCache.id == Audit.fiche_cache_id)
        .where(FicheCache.sales_date == day, Audit.status == "completed", Audit.deleted_at.is_(None))
        .distinct(Audit.fiche_cache_id, Audit.audit_config_id)
        .order_by(Audit.fiche_cache_id, Audit.audit_config_id, Audit.completed_at.desc().nulls_last(), Audit.id.desc())
    )
    return sorted(s.scalars(latest))


def _gating(name: str) -> Any:
    return cast(func.coalesce(Audit.result_data["metadata"]["evidence_gating"][name].astext, "0"), Integer)


def day_rows(s: Session, day: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(audits, steps, points) rows of :mod:`auditflow_dagster.core.reports` for ``day``."""
    ids = day_audit_ids(s, day)
    if not ids:
        return [], [], []
    audits = [dict(r._mapping) for r in s.execute(
        select(Audit.id.label("audit_id"), FicheCache.fiche_id,
               func.coalesce(FicheCacheInformation.groupe, FicheCache.groupe).label("groupe"),
               FicheCacheInformation.attribution_user_nom.label("advisor"),
               Audit.score_percentage.label("score"), Audit.niveau, Audit.is_compliant, Audit.critical_passed,
               Audit.critical_total, *(_gating(k).label(k) for k in GATING_KEYS))
        .join(FicheCache, FicheCache.id == Audit.fiche_cache_id)
        .outerjoin(FicheCacheInformation, FicheCacheInformation.fiche_cache_id == FicheCache.id)
        .where(Audit.id.in_(ids)).order_by(Audit.id))]
    steps = [dict(r._mapping) for r in s.execute(
        select(AuditStepResult.audit_id, AuditStepResult.step_position, AuditStepResult.step_name,
               AuditStepResult.is_critical, AuditStepResult.conforme)
        .where(AuditStepResult.audit_id.in_(ids))
        .order_by(AuditStepResult.audit_id, AuditStepResult.step_position))]
    points = [dict(r._mapping) for r in s.execute(
        select(AuditStepResultControlPoint.audit_id, AuditStepResultControlPoint.step_position,
               AuditStepResult.step_name, AuditStepResultControlPoint.control_point_index,
               AuditStepResultControlPoint.point, AuditStepResultControlPoint.statut)
        .join(AuditStepResult, and_(AuditStepResult.audit_id == AuditStepResultControlPoint.audit_id,
                                    AuditStepResult.step_position == AuditStepResultControlPoint.step_position))
        .where(AuditStepResultControlPoint.audit_id.in_(ids))
        .order_by(AuditStepResultControlPoint.audit_id, AuditStepResultControlPoint.step_position,
                  AuditStepResultControlPoint.control_point_index))]
    return audits, steps, points


def _values(report: dict[str, Any], run_id: str | None, generated_at: dt.datetime | None) -> dict[str, Any]:
    totals = report["totals"]
    return {"generated_at": generated_at or now_utc(), "dagster_run_id": run_id, "audits_count": int(totals["audits"]),
            "mean_score": totals["mean_score"], "compliant_rate": totals["compliant_rate"],
            **{k: report[k] for k in SECTIONS}}


def upsert_daily(s: Session, day: str, report: dict[str, Any], run_id: str | None = None,
                 generated_at: dt.datetime | None = None) -> None:
    """Store a day's report. ``generated_at``: when its rows were read (default now) — the report
    trigger compares it with the audits' ``updated_at``."""
    values = _values(report, run_id, generated_at)
    stmt = pg_insert(DailyComplianceReport).values(day=day, **values)
    s.execute(stmt.on_conflict_do_update(index_elements=["day"], set_=values))


def upsert_weekly(s: Session, week: str, week_start: str, days: list[str], report: dict[str, Any],
                  run_id: str | None = None, generated_at: dt.datetime | None = None) -> None:
    values = {**_values(report, run_id, generated_at), "week_start": week_start, "days": days}
    stmt = pg_insert(WeeklyComplianceReport).values(week=week, **values)
    s.execute(stmt.on_conflict_do_update(index_elements=["week"], set_=values))


def _report_of(row: DailyComplianceReport | WeeklyComplianceReport) -> dict[str, Any]:
    return {k: getattr(row, k) for k in SECTIONS}


def daily_reports(s: Session, days: list[str]) -> dict[str, dict[str, Any]]:
    """``{day: report sections}`` of the stored daily reports among ``days``."""
    rows = s.scalars(select(DailyComplianceReport).where(DailyComplianceReport.day.in_(days))
                     .order_by(DailyComplianceReport.day))
    return {r.day: _report_of(r) for r in rows}


def daily_view(s: Session, day: str) -> dict[str, Any] | None:
    """The API shape of a stored daily report, None when it was never materialized."""
    row = s.get(DailyComplianceReport, day)
    if row is None:
        return None
    return {"day": row.day, "generatedAt": iso(row.generated_at), "dagsterRunId": row.dagster_run_id,
            **_report_of(row)}


def weekly_view(s: Session, week: str) -> dict[str, Any] | None:
    row = s.get(WeeklyComplianceReport, week)
    if row is None:
        return None
    return {"week": row.week, "weekStart": row.week_start, "days": list(row.days),
            "generatedAt": iso(row.generated_at), "dagsterRunId": row.dagster_run_id, **_report_of(row)}



# --------------------------------------------------------------------------------------------- #
# What the report trigger reads
# --------------------------------------------------------------------------------------------- #


def audit_activity(s: Session, since: dt.datetime) -> list[DayActivity]:
    """Per sales day with an audit changed since ``since``: the last change and whether an audit
    of that day is still pending or running (``ix_audits_updated_at`` bounds the scan)."""
    rows = s.execute(text("""
        SELECT f.sales_date AS day, max(a.updated_at) AS last_change,
               bool_or(a.status IN ('pending', 'running')) AS busy
        FROM audits a JOIN fiche_cache f ON f.id = a.fiche_cache_id
        WHERE a.updated_at >= :since AND f.sales_date IS NOT NULL
        GROUP BY f.sales_date"""), {"since": since}).all()
    return [DayActivity(day=r.day, last_change=r.last_change, busy=bool(r.busy)) for r in rows]


def daily_generated(s: Session, days: list[str] | None = None, *, since: dt.datetime | None = None) -> dict[str, dt.datetime]:
    """``{day: generated_at}`` of stored daily reports, among ``days`` and/or generated since ``since``."""
    q = select(DailyComplianceReport.day, DailyComplianceReport.generated_at)
    if days is not None:
        q = q.where(DailyComplianceReport.day.in_(days))
    if since is not None:
        q = q.where(DailyComplianceReport.generated_at >= since)
    return {d: at for d, at in s.execute(q)}


def weekly_generated(s: Session, mondays: list[str]) -> dict[str, dt.datetime]:
    """``{monday: generated_at}`` of stored weekly roll-ups whose week starts on one of ``mondays``."""
    q = select(WeeklyComplianceReport.week_start, WeeklyComplianceReport.generated_at).where(
        WeeklyComplianceReport.week_start.in_(mondays))
    return {d: at for d, at in s.execute(q)}
