"""Audit read and maintenance queries (spec 04 §4): the list and its filters, the grouped views,
by-fiche, logs and the soft-delete/PATCH writer.

One filter builder (:func:`audit_filters`) serves the list, grouped-by-fiches and grouped views, so
every filter and the read scope apply the same way everywhere (the spec's Deviation for
grouped-by-fiches). The scope of the caller arrives as :class:`ListParams` ``scope_*`` fields:
adding auth is filling them in, nothing else changes here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Integer,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.orm import Session

from auditflow_dagster.db.audits import (
    audit_detail,
    audit_object,
    coerce_status,
    latest_view,
)
from auditflow_dagster.db.clock import iso, now_utc
from auditflow_dagster.db.models import (
    Audit,
    AuditConfig,
    AutomationRun,
    AutomationSchedule,
    Event,
    FicheCache,
    FicheCacheInformation,
)

SORT_COLUMNS = {
    "created_at": Audit.created_at,
    "completed_at": Audit.completed_at,
    "score_percentage": Audit.score_percentage,
    "duration_ms": Audit.duration_ms,
}
GROUP_BY = ("fiche", "audit_config", "status", "niveau", "automation_schedule", "automation_run", "groupe",
            "created_day", "score_bucket")


@dataclasses.dataclass
class ListParams:
    """Parsed, validated filters of ``GET /api/audits`` (spec 04 §4.1); ``None``/empty = no filter."""

    fiche_ids: list[str] = dataclasses.field(default_factory=list)
    trigger_sources: list[str] = dataclasses.field(default_factory=list)
    groupes: list[str] = dataclasses.field(default_factory=list)
    statuses: list[str] = dataclasses.field(default_factory=list)
    niveaux: list[str] = dataclasses.field(default_factory=list)
    audit_config_ids: list[int] = dataclasses.field(default_factory=list)
    automation_schedule_ids: list[int] = dataclasses.field(default_factory=list)
    automation_run_ids: list[int] = dataclasses.field(default_factory=list)
    is_compliant: bool | None = None
    has_recordings: bool | None = None
    date_from: dt.datetime | None = None
    date_to: dt.datetime | None = None  # exclusive when ``date_to_exclusive``
    date_to_exclusive: bool = False
    groupe_query: str | None = None
    agence_query: str | None = None
    prospect_query: str | None = None
    sales_dates: list[str] = dataclasses.field(default_factory=list)
    sales_date_from: str | None = None
    sales_date_to: str | None = None
    recordings_count_min: int | None = None
    recordings_count_max: int | None = None
    fetched_at_from: dt.datetime | None = None
    fetched_at_to: dt.datetime | None = None
    last_revalidated_from: dt.datetime | None = None
    last_revalidated_to: dt.datetime | None = None
    score_min: Decimal | None = None
    score_max: Decimal | None = None
    duration_min_ms: int | None = None
    duration_max_ms: int | None = None
    tokens_min: int | None = None
    tokens_max: int | None = None
    has_failed_steps: bool | None = None
    q: str | None = None
    latest_only: bool = True
    include_deleted: bool = False
    sort_by: str = "created_at"
    sort_order: str = "desc"
    limit: int = 100
    offset: int = 0
    # read scope (spec 04 §4.1 Scope; None = ALL): GROUP → effective groupe in scope_groupes,
    # SELF → attribution equals scope_attribution. ANDed with every other filter (Deviation).
    scope_groupes: list[str] | None = None
    scope_attribution: str | None = None


def _effective_groupe():
    return func.coalesce(FicheCacheInformation.groupe, FicheCache.groupe)


def _contains(col, needle: str):
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return col.ilike(f"%{escaped}%", escape="\\")


def _base_from(stmt):
    return (stmt.select_from(Audit)
            .join(FicheCache, FicheCache.id == Audit.fiche_cache_id)
            .outerjoin(FicheCacheInformation, FicheCacheInformation.fiche_cache_id == FicheCache.id)
            .outerjoin(AuditConfig, AuditConfig.id == Audit.audit_config_id))


def audit_filters(p: ListParams) -> list[Any]:
    """The WHERE clauses of the list (over Audit ⋈ FicheCache ⟕ information ⟕ config)."""
    w: list[Any] = []
    groupe = _effective_groupe()
    if p.fiche_ids:
        w.append(FicheCache.fiche_id.in_(p.fiche_ids))
    if p.trigger_sources:
        w.append(Audit.trigger_source.in_(p.trigger_sources))
    if p.groupes:
        w.append(groupe.in_(p.groupes))
    if p.statuses:
        w.append(Audit.status.in_(p.statuses))
    if p.niveaux:
        w.append(Audit.niveau.in_(p.niveaux))
    if p.audit_config_ids:
        w.append(Audit.audit_config_id.in_(p.audit_config_ids))
    if p.automation_schedule_ids:
        w.append(Audit.automation_schedule_id.in_(p.automation_schedule_ids))
    if p.automation_run_ids:
        w.append(Audit.automation_run_id.in_(p.automation_run_ids))
    if p.is_compliant is not None:
        w.append(Audit.is_compliant.is_(p.is_compliant))
    if p.has_recordings is not None:
        w.append(FicheCache.has_recordings.is_(p.has_recordings))
    if p.date_from is not None:
        w.append(Audit.created_at >= p.date_from)
    if p.date_to is not None:
        w.append(Audit.created_at < p.date_to if p.date_to_exclusive else Audit.created_at <= p.date_to)
    if p.groupe_query:
        w.append(_contains(groupe, p.groupe_query))
    if p.agence_query:
        w.append(_contains(func.coalesce(FicheCacheInformation.agence_nom, FicheCache.agence_nom), p.agence_query))
    if p.prospect_query:
        w.append(or_(*(_contains(c, p.prospect_query) for c in (
            FicheCache.prospect_nom, FicheCache.prospect_prenom, FicheCache.prospect_email, FicheCache.prospect_tel,
            FicheCache.fiche_id))))
    if p.sales_dates:
        w.append(FicheCache.sales_date.in_(p.sales_dates))
    if p.sales_date_from:
        w.append(FicheCache.sales_date >= p.sales_date_from)
    if p.sales_date_to:
        w.append(FicheCache.sales_date <= p.sales_date_to)
    if p.recordings_count_min is not None:
        w.append(FicheCache.recordings_count >= p.recordings_count_min)
    if p.recordings_count_max is not None:
        w.append(FicheCache.recordings_count <= p.recordings_count_max)
    if p.fetched_at_from is not None:
        w.append(FicheCache.fetched_at >= p.fetched_at_from)
    if p.fetched_at_to is not None:
        w.append(FicheCache.fetched_at <= p.fetched_at_to)
    if p.last_revalidated_from is not None:
        w.append(FicheCache.last_revalidated_at >= p.last_revalidated_from)
    if p.last_revalidated_to is not None:
        w.append(FicheCache.last_revalidated_at <= p.last_revalidated_to)
    if p.score_min is not None:
        w.append(Audit.score_percentage >= p.score_min)
    if p.score_max is not None:
        w.append(Audit.score_percentage <= p.score_max)
    if p.duration_min_ms is not None:
        w.append(Audit.duration_ms >= p.duration_min_ms)
    if p.duration_max_ms is not None:
        w.append(Audit.duration_ms <= p.duration_max_ms)
    if p.tokens_min is not None:
        w.append(Audit.total_tokens >= p.tokens_min)
    if p.tokens_max is not None:
        w.append(Audit.total_tokens <= p.tokens_max)
    if p.has_failed_steps is True:
        w.append(Audit.failed_steps > 0)
    elif p.has_failed_steps is False:
        w.append(or_(Audit.failed_steps == 0, Audit.failed_steps.is_(None)))
    if p.q:
        ors = [_contains(c, p.q) for c in (FicheCache.fiche_id, FicheCache.prospect_nom, FicheCache.prospect_prenom,
                                            AuditConfig.name, Audit.error_message)]
        if p.q.isdigit() and int(p.q) < 2**63:
            ors.append(Audit.id == int(p.q))
        w.append(or_(*ors))
    if p.latest_only:
        w.append(Audit.is_latest.is_(True))
    if not p.include_deleted:
        w.append(Audit.deleted_at.is_(None))
    if p.scope_groupes is not None:
        w.append(groupe.in_(p.scope_groupes) if p.scope_groupes else false())
    if p.scope_attribution is not None:
        w.append(FicheCacheInformation.attribution_user_id == p.scope_attribution)
    return w


def pagination(total: int, limit: int, offset: int) -> dict[str, Any]:
    return {
        "total": total,
        "limit": limit,
        "offset": offset,
        "current_page": offset // limit + 1,
        "total_pages": math.ceil(total / limit) if total else 0,
        "has_next_page": offset + limit < total,
        "has_prev_page": offset > 0,
    }


def _order(p: ListParams) -> list[Any]:
    col = SORT_COLUMNS[p.sort_by]
    if p.sort_order == "asc":
        return [col.asc().nulls_last(), Audit.id.asc()]
    return [col.desc().nulls_last(), Audit.id.desc()]


def _config_ref(cfg: AuditConfig | None) -> dict[str, Any] | None:
    return {"id": str(cfg.id), "name": cfg.name, "description": cfg.description} if cfg else None


def _list_item(a: Audit, fc: FicheCache, info_groupe: str | None, cfg: AuditConfig | None) -> dict[str, Any]:
    item = audit_object(a)
    item["auditConfig"] = _config_ref(cfg)
    item["automationSchedule"] = None  # no automation tables in this deployment
    item["automationRun"] = None
    item["ficheCache"] = {"ficheId": fc.fiche_id, "groupe": info_groupe or fc.groupe,
                          "prospectNom": fc.prospect_nom, "prospectPrenom": fc.prospect_prenom}
    return item


def list_audits(session: Session, p: ListParams) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``GET /api/audits``: items (stored ``resultData`` snapshot) and the rich pagination."""
    where = audit_filters(p)
    total = session.scalar(_base_from(select(func.count(Audit.id))).where(*where)) or 0
    rows = session.execute(
        _base_from(select(Audit, FicheCache, FicheCacheInformation.groupe, AuditConfig))
        .where(*where).order_by(*_order(p)).limit(p.limit).offset(p.offset)
    ).all()
    return [_list_item(a, fc, g, cfg) for a, fc, g, cfg in rows], pagination(total, p.limit, p.offset)


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


def grouped_by_fiches(session: Session, p: ListParams) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``GET /api/audits/grouped-by-fiches``: fiches (newest audit first) paginated in SQL, each with
    its filtered audits and a summary (spec 04 §4.3 Deviation: the list's filters, SQL paging)."""
    where = audit_filters(p)
    latest = func.max(Audit.created_at).label("latest")
    page_q = (_base_from(select(FicheCache.id, latest)).where(*where).group_by(FicheCache.id)
              .order_by(latest.desc(), FicheCache.id.desc()).limit(p.limit).offset(p.offset))
    page = session.execute(page_q).all()
    total = session.scalar(_base_from(select(func.count(func.distinct(FicheCache.id)))).where(*where)) or 0
    ids = [fid for fid, _ in page]
    by_fiche: dict[int, list[tuple]] = {fid: [] for fid in ids}
    if ids:
        rows = session.execute(
            _base_from(select(Audit, FicheCache, FicheCacheInformation.groupe, AuditConfig))
            .where(*where, FicheCache.id.in_(ids)).order_by(Audit.created_at.desc(), Audit.id.desc())
        ).all()
        for row in rows:
            by_fiche[row[1].id].append(row)
    data = []
    for fid in ids:
        rows = by_fiche[fid]
        fc, info_groupe = rows[0][1], rows[0][2]
        scores = [float(a.score_percentage) for a, *_ in rows if a.score_percentage is not None]
        data.append({
            "fiche": {
                "id": str(fc.id), "ficheId": fc.fiche_id, "groupe": info_groupe or fc.groupe,
                "agenceNom": fc.agence_nom, "prospectNom": fc.prospect_nom, "prospectPrenom": fc.prospect_prenom,
                "prospectEmail": fc.prospect_email, "prospectTel": fc.prospect_tel,
                "hasRecordings": fc.has_recordings, "recordingsCount": fc.recordings_count,
                "fetchedAt": iso(fc.fetched_at), "createdAt": iso(fc.created_at), "updatedAt": iso(fc.updated_at),
            },
            "audits": [_list_item(a, f, g, cfg) for a, f, g, cfg in rows],
            "summary": {
                "totalAudits": len(rows),
                "compliantCount": sum(1 for a, *_ in rows if a.is_compliant),
                "averageScore": sum(scores) / len(scores) if scores else None,
                "latestAuditDate": iso(max(a.created_at for a, *_ in rows)),
            },
        })
    return data, pagination(total, p.limit, p.offset)


def _group_key(group_by: str, bucket_size: int):
    if group_by == "fiche":
        return Audit.fiche_cache_id
    if group_by == "audit_config":
        return Audit.audit_config_id
    if group_by == "status":
        return Audit.status
    if group_by == "niveau":
        return Audit.niveau
    if group_by == "automation_schedule":
        return Audit.automation_schedule_id
    if group_by == "automation_run":
        return Audit.automation_run_id
    if group_by == "groupe":
        return func.coalesce(_effective_groupe(), literal("UNKNOWN"))
    if group_by == "created_day":
        return func.to_char(Audit.created_at, "YYYY-MM-DD")
    # score_bucket
    return cast(func.floor(Audit.score_percentage / bucket_size), Integer) * bucket_size


def grouped(session: Session, p: ListParams, group_by: str, bucket_size: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``GET /api/audits/grouped``: counts and score stats per key, sorted by count desc, paged over
    groups. Every grouping runs in SQL (no 20000-row cap, so ``truncated`` is always false)."""
    where = audit_filters(p)
    key = _group_key(group_by, bucket_size).label("key")
    count = func.count(Audit.id).label("count")
    cols = [key, count,
            func.count(Audit.id).filter(Audit.is_compliant.is_(True)),
            func.count(Audit.id).filter(Audit.is_compliant.is_(False)),
            func.avg(Audit.score_percentage), func.min(Audit.score_percentage), func.max(Audit.score_percentage),
            *(func.count(Audit.id).filter(Audit.status == st) for st in ("pending", "running", "completed", "failed"))]
    q = _base_from(select(*cols)).where(*where).group_by(key)
    total = session.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = session.execute(q.order_by(count.desc(), key.asc().nulls_last()).limit(p.limit).offset(p.offset)).all()
    data: list[dict[str, Any]] = []
    for k, n, ok, ko, avg, mn, mx, *statuses in rows:
        if group_by == "score_bucket":
            label = None if k is None else f"{k}-{k + bucket_size}"
        elif group_by == "status":
            label = coerce_status(k)
        else:
            label = None if k is None else str(k)
        item: dict[str, Any] = {
            "key": label, "count": n, "compliantCount": ok, "nonCompliantCount": ko,
            "avgScore": _float(avg), "minScore": _float(mn), "maxScore": _float(mx),
        }
        if group_by != "status":
            item["statusCounts"] = dict(zip(("pending", "running", "completed", "failed"), statuses))
        data.append(item)
    if group_by == "audit_config":
        ids = [int(d["key"]) for d in data if d["key"] is not None]
        cfgs = {c.id: c for c in session.scalars(select(AuditConfig).where(AuditConfig.id.in_(ids)))} if ids else {}
        for d in data:
            d["auditConfig"] = _config_ref(cfgs.get(int(d["key"]))) if d["key"] is not None else None
    elif group_by == "fiche":
        ids = [int(d["key"]) for d in data if d["key"] is not None]
        fiches = {f.id: f for f in session.scalars(select(FicheCache).where(FicheCache.id.in_(ids)))} if ids else {}
        for d in data:
            fc = fiches.get(int(d["key"])) if d["key"] is not None else None
            d["fiche"] = {"id": str(fc.id), "ficheId": fc.fiche_id, "groupe": fc.groupe,
                          "prospectNom": fc.prospect_nom, "prospectPrenom": fc.prospect_prenom} if fc else None
    return data, {"pagination": pagination(total, p.limit, p.offset),
                  "meta": {"group_by": group_by, "bucket_size": bucket_size, "truncated": False}}


def fiche_scope_info(session: Session, fiche_id: str) -> tuple[str | None, str | None] | None:
    """(effective groupe, attribution user id) of a cached fiche, for the scope hook; None if uncached."""
    row = session.execute(
        select(FicheCache.groupe, FicheCacheInformation.groupe, FicheCacheInformation.attribution_user_id)
        .outerjoin(FicheCacheInformation, FicheCacheInformation.fiche_cache_id == FicheCache.id)
        .where(FicheCache.fiche_id == fiche_id)
    ).first()
    return None if row is None else (row[1] or row[0], row[2])


def audits_by_fiche(session: Session, fiche_id: str) -> list[dict[str, Any]]:
    """``GET /api/audits/by-fiche/{fiche_id}``: latest non-deleted audits, newest first, each with
    the latest-view ``resultData`` (no ficheCache, no steps)."""
    audits = session.scalars(
        select(Audit).join(FicheCache, FicheCache.id == Audit.fiche_cache_id)
        .where(FicheCache.fiche_id == fiche_id, Audit.is_latest.is_(True), Audit.deleted_at.is_(None))
        .order_by(Audit.created_at.desc(), Audit.id.desc())
    ).all()
    cfgs = {c.id: c for c in session.scalars(
        select(AuditConfig).where(AuditConfig.id.in_({a.audit_config_id for a in audits})))} if audits else {}
    out = []
    for a in audits:
        item = audit_object(a)
        item["resultData"] = latest_view(session, a)
        item["auditConfig"] = _config_ref(cfgs.get(a.audit_config_id))
        item["automationSchedule"] = None
        item["automationRun"] = None
        out.append(item)
    return out


def _level(name: str) -> str:
    return "error" if name.endswith(".failed") else "info"


def audit_logs(session: Session, audit_id: int, *, level: str | None, since: dt.datetime | None,
               until: dt.datetime | None, limit: int, offset: int) -> list[dict[str, Any]] | None:
    """The audit's chronology (spec 04 §4.3 ``/logs``): its events, indexed by both the DB id and
    the tracking id (spec 06 §7.9), oldest first. ``None`` when the audit does not exist."""
    a = session.get(Audit, audit_id)
    if a is None:
        return None
    channels = [f"audit-{a.id}", f"audit-{a.tracking_id}"]
    level_expr = case((Event.name.like("%.failed"), literal("error")), else_=literal("info"))
    w = [Event.channels.overlap(channels)]
    if level:
        w.append(level_expr == level.lower())
    if since is not None:
        w.append(Event.created_at >= since)
    if until is not None:
        w.append(Event.created_at <= until)
    rows = session.scalars(select(Event).where(and_(*w)).order_by(Event.id).limit(limit).offset(offset))
    return [{
        "id": str(e.id), "workflow": "audit", "traceId": str(a.id), "trackingId": a.tracking_id,
        "level": _level(e.name), "message": e.name, "event": e.name, "data": e.payload,
        "timestamp": iso(e.created_at), "createdAt": iso(e.created_at),
    } for e in rows]


class UnknownLink(ValueError):
    """A PATCH linking an audit to an automation schedule/run that does not exist (400, never a
    foreign-key 500)."""


def update_audit(session: Session, audit_id: int, changes: dict[str, Any]) -> dict[str, Any] | None:
    """PATCH / DELETE (soft delete): write only the given keys, return the detail view; None if missing."""
    a = session.get(Audit, audit_id, with_for_update=True)
    if a is None:
        return None
    for key, model in (("automation_schedule_id", AutomationSchedule), ("automation_run_id", AutomationRun)):
        if changes.get(key) is not None and session.get(model, changes[key]) is None:
            raise UnknownLink(f"Validation error: {key} {changes[key]} does not exist")
    for key, value in changes.items():
        if key == "deleted":
            if value and a.deleted_at is None:
                a.deleted_at = now_utc()
            elif not value:
                a.deleted_at = None
        else:
            setattr(a, key, value)
    a.updated_at = now_utc()
    session.flush()
    return audit_detail(session, audit_id)
