"""The audit export's read (issue 10 §2): one streamed query, one :data:`~auditflow_dagster.core.export.Record`
per control point.

**Same audits as the list.** The audits are chosen by :func:`auditflow_dagster.db.audit_reads.audit_filters`
over the list's join (:func:`~auditflow_dagster.db.audit_reads._base_from`), from a
:class:`~auditflow_dagster.db.audit_reads.ListParams`: the sales-day range, the other filters and
the caller's read scope (``scope_*``, filled by :func:`api.auth.scope_list_params`) apply exactly as
they do to ``GET /api/audits``; there is no second scope rule here.

**Same values as the detail.** Reviews and reruns write the effective verdict into the step and
control-point rows themselves (:mod:`auditflow_dagster.db.step_edits`), and the audit detail shows
those rows (``stepResults``); the export reads the same rows with the same read-time coercions
(:func:`~auditflow_dagster.db.audits.coerce_status` …, ``_num``, ``iso``). A human step override in
force is the ``raw_result.human_override`` marker (:func:`~auditflow_dagster.db.step_edits.override_in_force`),
its reviewer and time come from the review row it names; the latest control-point review comes from
the review trail. A legacy step whose points live only in ``raw_result.points_controle`` (not yet
normalized) is expanded from there, as the detail's latest view does.

**Bounded memory.** The query runs on a server-side cursor (``stream_results``) and rows are fetched
``chunk_rows`` at a time, in a deterministic order: sales day, fiche id, audit id, step position,
control-point index. Nothing accumulates here; the caller writes each record out as it comes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Select, Text, and_, case, cast, func, select, true
from sqlalchemy.orm import Session

from auditflow_dagster.core.export import Record
from auditflow_dagster.db.audit_reads import ListParams, _base_from, audit_filters
from auditflow_dagster.db.audits import (
    _num,
    coerce_conforme,
    coerce_niveau,
    coerce_status,
)
from auditflow_dagster.db.clock import iso
from auditflow_dagster.db.models import (
    Audit,
    AuditConfig,
    AuditStepResult,
    AuditStepResultCitation,
    AuditStepResultControlPoint,
    AuditStepResultHumanReview,
    FicheCache,
    FicheCacheInformation,
)
from auditflow_dagster.db.step_edits import OVERRIDE_KEY

#: Rows fetched per round trip of the server-side cursor.
CHUNK_ROWS = 2000


def export_statement(p: ListParams) -> Select[Any]:
    """The export query: the list's audits (filters and scope of ``p``; its paging and sort are
    ignored) ⟕ their step rows ⟕ control-point rows, with citation counts and review columns."""
    step, cp = AuditStepResult, AuditStepResultControlPoint
    marker = step.raw_result[OVERRIDE_KEY]
    in_force = func.jsonb_typeof(marker) == "object"
    step_review = (
        select(AuditStepResultHumanReview.reviewer, AuditStepResultHumanReview.reviewed_at)
        .where(AuditStepResultHumanReview.audit_id == step.audit_id,
               AuditStepResultHumanReview.step_position == step.step_position,
               in_force,
               cast(AuditStepResultHumanReview.id, Text)
               == marker["review_id"].astext)
        .limit(1)
        .lateral("step_review")
    )
    citations = (
        select(func.count().label("n"))
        .where(AuditStepResultCitation.audit_id == cp.audit_id,
               AuditStepResultCitation.step_position == cp.step_position,
               AuditStepResultCitation.control_point_index == cp.control_point_index)
        .lateral("citations")
    )
    point_review = (
        select(AuditStepResultHumanReview.reviewer, AuditStepResultHumanReview.reviewed_at)
        .where(AuditStepResultHumanReview.audit_id == cp.audit_id,
               AuditStepResultHumanReview.step_position == cp.step_position,
               AuditStepResultHumanReview.kind == "control_point",
               AuditStepResultHumanReview.control_point_index == cp.control_point_index)
        .order_by(AuditStepResultHumanReview.reviewed_at.desc().nulls_last(), AuditStepResultHumanReview.id.desc())
        .limit(1)
        .lateral("point_review")
    )
    legacy_points = case(
        (and_(cp.audit_id.is_(None), func.jsonb_typeof(step.raw_result["points_controle"]) == "array"),
         step.raw_result["points_controle"]),
        else_=None,
    )
    stmt = _base_from(select(
        FicheCache.sales_date, FicheCache.fiche_id, FicheCacheInformation.groupe.label("info_groupe"),
        FicheCache.groupe.label("fiche_groupe"), FicheCacheInformation.attribution_user_nom,
        Audit.id.label("audit_id"), Audit.audit_config_id, AuditConfig.name.label("config_name"), Audit.status,
        Audit.score_percentage, Audit.niveau, Audit.is_compliant, Audit.is_latest, Audit.completed_at,
        step.step_position, step.step_name, step.weight, step.is_critical, step.conforme, step.score,
        step.niveau_conformite, case((in_force, True), else_=False).label("override_in_force"),
        step_review.c.reviewer.label("step_reviewer"), step_review.c.reviewed_at.label("step_reviewed_at"),
        cp.control_point_index, cp.point, cp.statut, citations.c.n.label("citations"),
        point_review.c.reviewer.label("point_reviewer"), point_review.c.reviewed_at.label("point_reviewed_at"),
        legacy_points.label("legacy_points"),
    ))
    stmt = (stmt
            .outerjoin(step, step.audit_id == Audit.id)
            .outerjoin(step_review, true())
            .outerjoin(cp, and_(cp.audit_id == step.audit_id, cp.step_position == step.step_position))
            .outerjoin(citations, true())
            .outerjoin(point_review, true()))
    return stmt.where(*audit_filters(p)).order_by(
        FicheCache.sales_date, FicheCache.fiche_id, Audit.id, step.step_position, cp.control_point_index)


def _legacy(points: Any) -> Iterator[tuple[int, Any, Any, int]]:
    """(index, text, statut, citations) of a legacy ``points_controle`` array, 1-based like the rows."""
    for i, p in enumerate(points, start=1):
        if isinstance(p, dict):
            cites = p.get("citations")
            yield i, p.get("point"), p.get("statut"), len(cites) if isinstance(cites, list) else 0


def iter_export_records(session: Session, p: ListParams, *, chunk_rows: int = CHUNK_ROWS) -> Iterator[Record]:
    """Every export row of ``p``'s audits, streamed (``chunk_rows`` per fetch), in file order."""
    stmt = export_statement(p).execution_options(stream_results=True, yield_per=chunk_rows)
    result = session.connection().execute(stmt)  # Core rows: no ORM result layer for plain columns
    try:
        for r in result:
            yield from _records_of(r)
    finally:
        result.close()  # also when the caller stops early: the server-side cursor is closed now


def _records_of(r: Any) -> Iterator[Record]:
    """The export rows of one result row (several for a legacy step's points). The row is unpacked
    by position (in :func:`export_statement`'s select order): ~1M rows per month make attribute
    lookups by name a visible cost."""
    (sales_date, fiche_id, info_groupe, fiche_groupe, advisor, audit_id, config_id, config_name, status, score,
     niveau, is_compliant, is_latest, completed_at, position, step_name, weight, is_critical, conforme, step_score,
     step_niveau, override, step_reviewer, step_reviewed_at, index, point, statut, citations, point_reviewer,
     point_reviewed_at, legacy_points) = r
    audit_part = (sales_date, fiche_id, info_groupe or fiche_groupe, advisor, audit_id, config_id, config_name,
                  coerce_status(status), _num(score), coerce_niveau(niveau), is_compliant, is_latest, iso(completed_at))
    if position is None:  # an audit without any stored step: one row
        yield audit_part + _NO_STEP
        return
    step_part = (position, step_name, weight, is_critical, coerce_conforme(conforme), step_score, step_niveau, override,
                 step_reviewer, iso(step_reviewed_at))
    if index is not None:
        yield audit_part + step_part + (index, point, statut, citations, point_reviewer, iso(point_reviewed_at))
        return
    legacy = list(_legacy(legacy_points or []))
    if not legacy:  # a step without control points: one row
        yield audit_part + step_part + _NO_POINT
    for legacy_index, text, legacy_statut, n in legacy:
        yield audit_part + step_part + (legacy_index, text, legacy_statut, n, None, None)


_NO_POINT = (None,) * 6
_NO_STEP = (None,) * 10 + _NO_POINT
