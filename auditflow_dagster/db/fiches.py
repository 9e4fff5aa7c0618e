"""Fiche cache reads and writes (spec 01 §2).

Writers follow the rules that protect data: a sales-list write never damages a full-details row
(§2.4), a details write replaces sections in one transaction and never overwrites a known
``sales_date`` (§2.3), recordings are upserted without ever blanking a URL (spec 02 §1.4). The read
path rebuilds the legacy CRM shape (§2.5) from the normalized rows plus the ``raw_data`` remainder,
so nothing the CRM sent is lost even for sections this version does not normalize yet.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from auditflow_dagster.core.recordings import enrich_recording
from auditflow_dagster.db.clock import iso, now_utc
from auditflow_dagster.db.models import (
    Audit,
    FicheCache,
    FicheCacheEtiquette,
    FicheCacheInformation,
    FicheCacheProspect,
    Recording,
)

_ENVELOPE_KEYS = {"success", "message", "cle", "recordings"}
_NORMALIZED_SECTIONS = {"information", "prospect"}
_INFO_COLUMNS = {c.name for c in FicheCacheInformation.__table__.columns} - {
    "id", "fiche_cache_id", "extra", "created_at", "updated_at"
}
_PROSPECT_COLUMNS = {c.name for c in FicheCacheProspect.__table__.columns} - {
    "id", "fiche_cache_id", "extra", "created_at", "updated_at"
}
_INT_INFO = {"nombre_acces", "niveau_interet", "nombre_ouverture_mails", "nombre_visualisation_pages"}
_INT_PROSPECT = {"civilite", "situation_familiale", "csp"}


def sales_date_from_french(value: str | None) -> str | None:
    """``DD/MM/YYYY[ HH:MM]`` (4-digit year) or ``YYYY-MM-DD…`` → ``YYYY-MM-DD``; else None."""
    if not isinstance(value, str):
        return None
    v = value.strip()
    try:
        if len(v) >= 10 and v[2] == "/" and v[5] == "/":
            return dt.date(int(v[6:10]), int(v[3:5]), int(v[0:2])).isoformat()
        if len(v) >= 10 and v[4] == "-" and v[7] == "-":
            return dt.date(int(v[0:4]), int(v[5:7]), int(v[8:10])).isoformat()
    except ValueError:
        return None
    return None


def _as_int(v: Any) -> int | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


def _split_columns(section: dict[str, Any], columns: set[str], ints: set[str]) -> tuple[dict, dict]:
    known: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for k, v in section.items():
        if k in columns:
            if k in ints:
                known[k] = _as_int(v)
            elif k == "modules":
                known[k] = [str(x) for x in v] if isinstance(v, list) else None
            elif isinstance(v, (dict, list)):
                extra[k] = v
            elif isinstance(v, bool) or v is None:
                known[k] = v
            else:
                known[k] = v if isinstance(v, str) else str(v)
        else:
            extra[k] = v
    return known, extra


def get_row(session: Session, fiche_id: str) -> FicheCache | None:
    return session.scalar(select(FicheCache).where(FicheCache.fiche_id == fiche_id))


def is_sales_list_only(row: FicheCache) -> bool:
    return bool((row.raw_data or {}).get("_salesListOnly"))


def is_not_found_marker(row: FicheCache) -> bool:
    return row.details_success is False and row.details_message == "NOT_FOUND"


def upsert_recordings(session: Session, fiche_cache_id: int, raw_recordings: list[dict[str, Any]]) -> int:
    """Upsert by ``(fiche_cache_id, call_id)``; never blank a URL, never delete (spec 02 §1.4)."""
    count = 0
    for raw in raw_recordings or []:
        if not isinstance(raw, dict):
            continue
        rec = enrich_recording(raw)
        if rec is None:
            continue
        values = {
            "fiche_cache_id": fiche_cache_id,
            "call_id": rec["call_id"],
            "recording_url": rec["recording_url"] or "",
            "recording_date": rec.get("recording_date") or None,
            "recording_time": rec.get("recording_time") or None,
            "from_number": rec.get("from_number") or None,
            "to_number": rec.get("to_number") or None,
            "uuid": rec.get("uuid") or None,
            "direction": rec.get("direction") or None,
            "answered": rec.get("answered") if isinstance(rec.get("answered"), bool) else None,
            "start_time": rec.get("start_time"),
            "duration_seconds": rec.get("duration_seconds"),
            "has_transcription": False,
            "updated_at": now_utc(),
        }
        stmt = pg_insert(Recording).values(**values)
        ex = stmt.excluded
        keep = lambda col: func.coalesce(func.nullif(getattr(ex, col), ""), getattr(Recording, col))  # noqa: E731
        stmt = stmt.on_conflict_do_update(
            index_elements=["fiche_cache_id", "call_id"],
            set_={
                "recording_url": keep("recording_url"),
                "recording_date": keep("recording_date"),
                "recording_time": keep("recording_time"),
                "from_number": keep("from_number"),
                "to_number": keep("to_number"),
                "uuid": keep("uuid"),
                "direction": keep("direction"),
                "answered": func.coalesce(ex.answered, Recording.answered),
                "start_time": func.coalesce(ex.start_time, Recording.start_time),
                "duration_seconds": func.coalesce(ex.duration_seconds, Recording.duration_seconds),
                "updated_at": ex.updated_at,
            },
        )
        session.execute(stmt)
        count += 1
    return count


def upsert_sales_list(
    session: Session, items: list[dict[str, Any]], *, sales_date: str | None, ttl_hours: int
) -> list[str]:
    """Apply a sales-list answer (spec 01 §2.4). Returns the fiche ids written, in CRM order."""
    now = now_utc()
    written: list[str] = []
    for item in items:
        fiche_id = str(item.get("id") or "").strip()
        if not fiche_id:
            continue
        row = get_row(session, fiche_id)
        summary = {
            k: item.get(k)
            for k in ("id", "nom", "prenom", "telephone", "telephone_2", "email", "statut", "date_insertion", "date_modification")
        }
        summary["_salesListOnly"] = True
        day = (
            sales_date
            or (row.sales_date if row else None)
            or sales_date_from_french(item.get("date_insertion"))
            or sales_date_from_french(item.get("date_modification"))
        )
        recordings = item.get("recordings") or []
        if row is None:
            row = FicheCache(
                fiche_id=fiche_id,
                raw_data=summary,
                sales_date=day,
                cle=item.get("cle") or None,
                prospect_nom=item.get("nom"),
                prospect_prenom=item.get("prenom"),
                prospect_email=item.get("email"),
                prospect_tel=item.get("telephone"),
                has_recordings=bool(recordings),
                recordings_count=len(recordings),
                fetched_at=now,
                expires_at=now + dt.timedelta(hours=ttl_hours),
                last_revalidated_at=now,
            )
            session.add(row)
            session.flush()
        else:
            if is_sales_list_only(row):  # never downgrade a full-details row (additive only)
                row.raw_data = summary
                row.fetched_at = now
                row.expires_at = now + dt.timedelta(hours=ttl_hours)
            if item.get("cle"):
                row.cle = item["cle"]
            row.prospect_nom = item.get("nom") or row.prospect_nom
            row.prospect_prenom = item.get("prenom") or row.prospect_prenom
            row.prospect_email = item.get("email") or row.prospect_email
            row.prospect_tel = item.get("telephone") or row.prospect_tel
            row.last_revalidated_at = now
            if row.sales_date is None:
                row.sales_date = day
        upsert_recordings(session, row.id, recordings)
        if recordings:
            n_rows = session.scalar(select(func.count()).where(Recording.fiche_cache_id == row.id)) or 0
            row.recordings_count = max(row.recordings_count or 0, n_rows)
            row.has_recordings = row.recordings_count > 0
        written.append(fiche_id)
    return written


def write_full_details(
    session: Session, fiche_id: str, payload: dict[str, Any], *, ttl_hours: int, sales_date: str | None = None
) -> FicheCache:
    """Store a full-details answer in one transaction (spec 01 §2.3)."""
    information = payload.get("information")
    if not isinstance(information, dict):
        raise ValueError(f"fiche {fiche_id}: details without information section")
    now = now_utc()
    prospect = payload.get("prospect") if isinstance(payload.get("prospect"), dict) else None
    recordings = payload.get("recordings") or []
    remainder = {k: v for k, v in payload.items() if k not in _ENVELOPE_KEYS | _NORMALIZED_SECTIONS}
    row = get_row(session, fiche_id)
    day = sales_date or (row.sales_date if row else None) or sales_date_from_french(information.get("date_insertion"))
    fields = dict(
        groupe=information.get("groupe"),
        agence_nom=information.get("agence_nom"),
        prospect_nom=(prospect or {}).get("nom"),
        prospect_prenom=(prospect or {}).get("prenom"),
        prospect_email=(prospect or {}).get("mail"),
        prospect_tel=(prospect or {}).get("telephone") or (prospect or {}).get("mobile"),
        cle=payload.get("cle") or information.get("cle") or (row.cle if row else None),
        details_success=payload.get("success") if isinstance(payload.get("success"), bool) else True,
        details_message=payload.get("message") if isinstance(payload.get("message"), str) else None,
        raw_data=remainder,
        has_recordings=bool(recordings),
        recordings_count=len(recordings),
        fetched_at=now,
        expires_at=now + dt.timedelta(hours=ttl_hours),
        sales_date=day,
    )
    if row is None:
        row = FicheCache(fiche_id=fiche_id, **fields)
        session.add(row)
        session.flush()
    else:
        for k, v in fields.items():
            setattr(row, k, v)
    info_values, info_extra = _split_columns(
        {k: v for k, v in information.items() if k not in ("fiche_id", "etiquettes")}, _INFO_COLUMNS, _INT_INFO
    )
    session.execute(delete(FicheCacheInformation).where(FicheCacheInformation.fiche_cache_id == row.id))
    session.add(FicheCacheInformation(fiche_cache_id=row.id, extra=info_extra, **info_values))
    session.execute(delete(FicheCacheEtiquette).where(FicheCacheEtiquette.fiche_cache_id == row.id))
    for i, et in enumerate(information.get("etiquettes") or [], start=1):
        if isinstance(et, dict):
            session.add(
                FicheCacheEtiquette(
                    fiche_cache_id=row.id, etiquette_index=i, nom=et.get("nom"), date=et.get("date"), style=et.get("style")
                )
            )
    session.execute(delete(FicheCacheProspect).where(FicheCacheProspect.fiche_cache_id == row.id))
    if prospect is not None:
        p_values, p_extra = _split_columns(prospect, _PROSPECT_COLUMNS, _INT_PROSPECT)
        session.add(FicheCacheProspect(fiche_cache_id=row.id, extra=p_extra, **p_values))
    upsert_recordings(session, row.id, recordings)
    session.flush()
    return row


def recordings_of(session: Session, fiche_cache_id: int) -> list[Recording]:
    """Canonical order: ``start_time ASC NULLS LAST, id ASC`` (spec 02 §1.4)."""
    return list(
        session.scalars(
            select(Recording)
            .where(Recording.fiche_cache_id == fiche_cache_id)
            .order_by(Recording.start_time.asc().nulls_last(), Recording.id.asc())
        )
    )


def _section_dict(obj: Any, extra_attr: str = "extra") -> dict[str, Any]:
    skip = {"id", "fiche_cache_id", "created_at", "updated_at", extra_attr}
    out = {c.name: getattr(obj, c.name) for c in obj.__table__.columns if c.name not in skip}
    out.update(getattr(obj, extra_attr) or {})
    return out


def read_fiche_details(session: Session, row: FicheCache) -> dict[str, Any]:
    """Rebuild the CRM-shaped details of a cached fiche (spec 01 §2.5)."""
    data: dict[str, Any] = {k: v for k, v in (row.raw_data or {}).items() if k != "_salesListOnly"}
    info = session.scalar(select(FicheCacheInformation).where(FicheCacheInformation.fiche_cache_id == row.id))
    if row.cle:
        data["cle"] = row.cle
    if info is not None:
        data["success"] = row.details_success if row.details_success is not None else True
        data["message"] = row.details_message if row.details_message is not None else "OK"
        information = {"fiche_id": row.fiche_id, **_section_dict(info)}
        etiquettes = session.scalars(
            select(FicheCacheEtiquette)
            .where(FicheCacheEtiquette.fiche_cache_id == row.id)
            .order_by(FicheCacheEtiquette.etiquette_index)
        )
        information["etiquettes"] = [{"nom": e.nom, "date": e.date, "style": e.style} for e in etiquettes]
        data["information"] = information
    prospect = session.scalar(select(FicheCacheProspect).where(FicheCacheProspect.fiche_cache_id == row.id))
    data["prospect"] = _section_dict(prospect) if prospect is not None else data.get("prospect")
    for key in ("documents", "commentaires", "mails", "rendez_vous", "alertes", "enfants", "reclamations",
                "autres_contrats", "tarification"):
        data.setdefault(key, [])
    data.setdefault("conjoint", None)
    data.setdefault("elements_souscription", None)
    data.setdefault("raw_sections", {})
    recs = sorted(
        recordings_of(session, row.id),
        key=lambda r: (r.start_time is not None, r.start_time or dt.datetime.min),
        reverse=True,
    )
    data["recordings"] = [
        {
            "call_id": r.call_id,
            "recording_url": r.recording_url,
            "direction": r.direction,
            "answered": r.answered,
            "start_time": iso(r.start_time),
            "duration_seconds": r.duration_seconds,
            "from_number": r.from_number,
            "to_number": r.to_number,
            "transcription": {"conversation": r.transcription_text or ""} if r.has_transcription else None,
        }
        for r in recs
    ]
    return data


def details_ready(session: Session, row: FicheCache) -> bool:
    """"Full details ready" (spec 01 §2.6): not list-only, success, information with a fiche_id."""
    if is_sales_list_only(row) or row.details_success is not True:
        return False
    return session.scalar(
        select(func.count()).select_from(FicheCacheInformation).where(FicheCacheInformation.fiche_cache_id == row.id)
    ) == 1


def status_by_date(session: Session, day: str) -> list[dict[str, Any]]:
    """Items of ``GET /api/fiches/status/by-date`` (spec 01 §4.1), newest rows first."""
    rows = list(
        session.scalars(select(FicheCache).where(FicheCache.sales_date == day).order_by(FicheCache.created_at.desc(), FicheCache.id.desc()))
    )
    if not rows:
        return []
    ids = [r.id for r in rows]
    recs: dict[int, list[Recording]] = {}
    for rec in session.scalars(select(Recording).where(Recording.fiche_cache_id.in_(ids))):
        recs.setdefault(rec.fiche_cache_id, []).append(rec)
    audits: dict[int, list[Audit]] = {}
    for a in session.scalars(
        select(Audit)
        .where(Audit.fiche_cache_id.in_(ids), Audit.is_latest.is_(True), Audit.deleted_at.is_(None))
        .order_by(Audit.created_at.desc(), Audit.id.desc())
    ):
        audits.setdefault(a.fiche_cache_id, []).append(a)
    items = []
    for r in rows:
        rr = sorted(recs.get(r.id, []), key=lambda x: (x.start_time is not None, x.start_time or dt.datetime.min), reverse=True)
        total = len(rr)
        done = sum(1 for x in rr if x.has_transcription)
        last_t = max((x.transcribed_at for x in rr if x.transcribed_at), default=None)
        al = audits.get(r.id, [])
        completed = [a for a in al if a.status == "completed"]
        items.append(
            {
                "ficheId": r.fiche_id,
                "groupe": r.groupe,
                "agenceNom": r.agence_nom,
                "prospectNom": r.prospect_nom,
                "prospectPrenom": r.prospect_prenom,
                "prospectEmail": r.prospect_email,
                "prospectTel": r.prospect_tel,
                "fetchedAt": iso(r.fetched_at),
                "createdAt": iso(r.created_at),
                "transcription": {
                    "total": total,
                    "transcribed": done,
                    "pending": total - done,
                    "percentage": (100.0 * done / total) if total else 0,
                    "isComplete": total > 0 and done == total,
                    "lastTranscribedAt": iso(last_t),
                },
                "audit": {
                    "total": len(al),
                    "completed": len(completed),
                    "pending": sum(1 for a in al if a.status == "pending"),
                    "running": sum(1 for a in al if a.status == "running"),
                    "compliant": sum(1 for a in completed if a.is_compliant),
                    "nonCompliant": sum(1 for a in completed if not a.is_compliant),
                    "averageScore": (
                        sum(float(a.score_percentage) for a in completed) / len(completed) if completed else None
                    ),
                    "latestAudit": audit_summary(al[0]) if al else None,
                    "audits": [audit_summary(a) for a in al],
                },
                "recordings": [
                    {
                        "id": str(x.id),
                        "callId": x.call_id,
                        "hasTranscription": x.has_transcription,
                        "transcribedAt": iso(x.transcribed_at),
                        "startTime": iso(x.start_time),
                        "durationSeconds": x.duration_seconds,
                    }
                    for x in rr
                ],
            }
        )
    return items


def audit_summary(a: Audit) -> dict[str, Any]:
    return {
        "id": str(a.id),
        "auditConfigId": str(a.audit_config_id),
        "overallScore": f"{a.overall_score:.2f}",
        "scorePercentage": f"{a.score_percentage:.2f}",
        "niveau": a.niveau,
        "isCompliant": a.is_compliant,
        "status": a.status,
        "createdAt": iso(a.created_at),
        "completedAt": iso(a.completed_at),
    }
