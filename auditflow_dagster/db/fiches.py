"""Fiche cache reads and writes (spec 01 §2).

Writers follow the rules that protect data: a sales-list write never damages a full-details row
(§2.4), a details write replaces sections in one transaction and never overwrites a known
``sales_date`` (§2.3), recordings are upserted without ever blanking a URL (spec 02 §1.4). The read
path rebuilds the legacy CRM shape (§2.5) from the normalized rows plus the ``raw_data`` remainder.
The payload ⇄ rows mapping (and its documented canonicalizations) lives in
:mod:`auditflow_dagster.core.fiche_sections`; this module only moves those row dicts in and out.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from auditflow_dagster.core import fiche_sections as fs
from auditflow_dagster.core.recordings import enrich_recording
from auditflow_dagster.db.clock import iso, now_utc
from auditflow_dagster.db.models import (
    SECTION_MODELS,
    Audit,
    FicheCache,
    FicheCacheInformation,
    FicheCacheMailDevis,
    Recording,
)

_ONE_TO_ONE_TABLES = (*fs.ONE_TO_ONE_SECTIONS.values(), "fiche_cache_mail_devis")
_LIST_TABLES = [t for t in fs.SECTION_TABLES if t not in _ONE_TO_ONE_TABLES]
_BOOKKEEPING = {"id", "created_at", "updated_at"}


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
                session.execute(  # mirrored into the information row when there is one (§2.4)
                    update(FicheCacheInformation)
                    .where(FicheCacheInformation.fiche_cache_id == row.id)
                    .values(cle=item["cle"])
                )
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


# --------------------------------------------------------------------------------------------
# Normalized sections: rows in and out (spec 01 §2.2, §2.3)
# --------------------------------------------------------------------------------------------


def _values(row: dict[str, Any], fk: str, parent_id: int) -> dict[str, Any]:
    return {**{k: v for k, v in row.items() if k != "children"}, fk: parent_id}


def _insert_level(session: Session, table: str, rows: list[tuple[int, dict[str, Any]]]) -> None:
    """Insert rows of one table (``(parent id, row)`` pairs) in one statement, then their children."""
    if not rows:
        return
    model = SECTION_MODELS[table]
    fk = fs.PARENT_FK[table][1]
    values = [_values(r, fk, pid) for pid, r in rows]
    child_tables = fs.CHILD_TABLES.get(table, [])
    if not child_tables:
        session.execute(insert(model), values)
        return
    ids = session.execute(insert(model).returning(model.id, sort_by_parameter_order=True), values).scalars().all()
    for ct in child_tables:
        _insert_level(session, ct, [(rid, c) for rid, (_, r) in zip(ids, rows, strict=True)
                                    for c in (r.get("children") or {}).get(ct, [])])


def _upsert_one(session: Session, table: str, fiche_cache_id: int, row: dict[str, Any]) -> int:
    model = SECTION_MODELS[table]
    values = {**_values(row, "fiche_cache_id", fiche_cache_id), "updated_at": now_utc()}
    stmt = pg_insert(model).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["fiche_cache_id"],
        set_={k: stmt.excluded[k] for k in values if k != "fiche_cache_id"},
    ).returning(model.id)
    row_id = session.execute(stmt).scalar_one()
    for ct in fs.CHILD_TABLES.get(table, []):
        child = SECTION_MODELS[ct]
        session.execute(delete(child).where(getattr(child, fs.PARENT_FK[ct][1]) == row_id))
        _insert_level(session, ct, [(row_id, c) for c in (row.get("children") or {}).get(ct, [])])
    return row_id


def replace_sections(session: Session, fiche_cache_id: int, normalized: dict[str, Any]) -> None:
    """1:1 sections upserted (deleted when null), lists deleted + reinserted; the mail-devis tables
    only when the payload had the ``mail_devis`` key (object → replace, anything else → delete)."""
    sections = normalized["sections"]
    for table in _ONE_TO_ONE_TABLES:
        if table not in sections:  # mail_devis key absent: keep what is stored
            continue
        model = SECTION_MODELS[table]
        if sections[table] is None:
            session.execute(delete(model).where(model.fiche_cache_id == fiche_cache_id))
        else:
            _upsert_one(session, table, fiche_cache_id, sections[table])
    for table in _LIST_TABLES:
        model = SECTION_MODELS[table]
        session.execute(delete(model).where(model.fiche_cache_id == fiche_cache_id))
        _insert_level(session, table, [(fiche_cache_id, r) for r in sections.get(table) or []])


def _level_sql(table: str, parent_ref: str, depth: int) -> str:
    """A ``jsonb_agg`` sub-select of ``table``'s rows under ``parent_ref``, children nested under
    ``"children"`` — the core row-dict shape, ordered like the write (index column, then id)."""
    a = f"t{depth}"
    fk = fs.PARENT_FK[table][1]
    index = fs.INDEX_COLUMN.get(table)
    order = f"{a}.{index}, {a}.id" if index else f"{a}.id"
    row = f"(to_jsonb({a}) - 'id' - 'created_at' - 'updated_at' - '{fk}')"
    children = fs.CHILD_TABLES.get(table, [])
    if children:
        kids = ", ".join(f"'{c}', {_level_sql(c, f'{a}.id', depth + 1)}" for c in children)
        row = f"({row} || jsonb_build_object('children', jsonb_build_object({kids})))"
    return (f"(SELECT coalesce(jsonb_agg({row} ORDER BY {order}), '[]'::jsonb) "
            f"FROM {table} {a} WHERE {a}.{fk} = {parent_ref})")


#: Every section of one fiche in ONE statement (with and without the mail devis). The read path
#: used to issue a SELECT per table and child level (18–25 statements, ~5 ms of ORM overhead per
#: read at 100k fiches, bench/fiche_reads.py); Postgres builds the nested rows in ~1 ms.
_SECTIONS_SQL = {
    md: text("SELECT " + ", ".join(
        f"{_level_sql(t, ':id', 0)} AS {t}" for t in fs.SECTION_TABLES if md or t != "fiche_cache_mail_devis"))
    for md in (False, True)
}


def load_sections(session: Session, fiche_cache_id: int, *, include_mail_devis: bool = True) -> dict[str, Any]:
    """Every stored section of a fiche as core row dicts (1:1 tables: a row or ``None``)."""
    res = session.execute(_SECTIONS_SQL[include_mail_devis], {"id": fiche_cache_id}).mappings().one()
    return {t: ((v[0] if v else None) if t in _ONE_TO_ONE_TABLES else v) for t, v in res.items()}


def _fiche_columns(row: FicheCache) -> dict[str, Any]:
    return {"fiche_id": row.fiche_id, "cle": row.cle, "details_success": row.details_success,
            "details_message": row.details_message, "raw_data": row.raw_data or {}}


# --------------------------------------------------------------------------------------------
# Full-details write, not-found marker, read path
# --------------------------------------------------------------------------------------------


def write_full_details(
    session: Session,
    fiche_id: str,
    payload: dict[str, Any],
    *,
    ttl_hours: int,
    sales_date: str | None = None,
    last_revalidated_at: dt.datetime | None = None,
) -> FicheCache:
    """Store a full-details answer: row + every section + recordings, in the caller's transaction
    (spec 01 §2.3). ``raw_data`` keeps only what the sections cannot hold (normally ``{}``), plus
    the ``{"mail_devis": null}`` marker; a payload without the ``mail_devis`` key keeps what is
    stored for it."""
    information = payload.get("information")
    if not isinstance(information, dict):
        raise ValueError(f"fiche {fiche_id}: details without information section")
    now = now_utc()
    normalized = fs.normalize_details(payload, fiche_id)
    f = normalized["fiche"]
    recordings = payload.get("recordings") if isinstance(payload.get("recordings"), list) else []
    row = get_row(session, fiche_id)
    raw_data = dict(f["raw_data"])
    if row is not None and not normalized["has_mail_devis"] and not is_sales_list_only(row):
        if "mail_devis" in (row.raw_data or {}):  # null marker (or a legacy stored object)
            raw_data["mail_devis"] = row.raw_data["mail_devis"]
    day = (
        (row.sales_date if row is not None else None)  # never overwrite a known sales date
        or sales_date
        or sales_date_from_french(information.get("date_insertion"))
    )
    fields = dict(
        groupe=f["groupe"],
        agence_nom=f["agence_nom"],
        prospect_nom=f["prospect_nom"],
        prospect_prenom=f["prospect_prenom"],
        prospect_email=f["prospect_email"],
        prospect_tel=f["prospect_tel"],
        cle=f["cle"] or (row.cle if row is not None else None),
        details_success=f["details_success"],
        details_message=f["details_message"],
        raw_data=raw_data,
        has_recordings=bool(recordings),
        recordings_count=len(recordings),
        fetched_at=now,
        expires_at=now + dt.timedelta(hours=ttl_hours),
        sales_date=day,
    )
    if last_revalidated_at is not None:
        fields["last_revalidated_at"] = last_revalidated_at
    if row is None:
        row = FicheCache(fiche_id=fiche_id, **fields)
        session.add(row)
    else:
        for k, v in fields.items():
            setattr(row, k, v)
    session.flush()
    replace_sections(session, row.id, normalized)
    upsert_recordings(session, row.id, recordings)
    session.flush()
    return row


def write_not_found_marker(session: Session, fiche_id: str, *, ttl_ms: int) -> FicheCache:
    """CRM 404 (spec 01 §2.7): ``details_success=false``, ``details_message="NOT_FOUND"``,
    ``expires_at`` = now + not-found TTL. A new row gets ``raw_data={}`` and 0 recordings; an
    existing row keeps its data and only gets the flags and timestamps."""
    now = now_utc()
    row = get_row(session, fiche_id)
    flags = dict(details_success=False, details_message="NOT_FOUND", fetched_at=now,
                 expires_at=now + dt.timedelta(milliseconds=ttl_ms))
    if row is None:
        row = FicheCache(fiche_id=fiche_id, raw_data={}, has_recordings=False, recordings_count=0, **flags)
        session.add(row)
    else:
        for k, v in flags.items():
            setattr(row, k, v)
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


def _recordings_view(session: Session, fiche_cache_id: int) -> list[dict[str, Any]]:
    recs = sorted(
        recordings_of(session, fiche_cache_id),
        key=lambda r: (r.start_time is not None, r.start_time or dt.datetime.min),
        reverse=True,
    )
    return [
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


def read_fiche_details(
    session: Session, row: FicheCache, include_mail_devis: bool = False, *, sections: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Rebuild the CRM-shaped details of a cached fiche (spec 01 §2.5): sections from their rows,
    the ``raw_data`` remainder on top, recordings from their rows (newest first). ``mail_devis``
    only when asked (and then only if stored: rows, or the ``null`` marker)."""
    if sections is None:
        sections = load_sections(session, row.id, include_mail_devis=include_mail_devis)
    data = fs.rebuild_details(_fiche_columns(row), sections, include_mail_devis=include_mail_devis)
    recordings = _recordings_view(session, row.id)
    out: dict[str, Any] = {}
    for k, v in data.items():
        if k == "raw_sections" and "recordings" not in out:
            out["recordings"] = recordings
        out[k] = v
    out.setdefault("recordings", recordings)
    return out


def details_ready(session: Session, row: FicheCache) -> bool:
    """"Full details ready" (spec 01 §2.6): not list-only, success, information with a fiche_id."""
    if is_sales_list_only(row) or row.details_success is not True:
        return False
    return session.scalar(
        select(func.count()).select_from(FicheCacheInformation).where(FicheCacheInformation.fiche_cache_id == row.id)
    ) == 1


def has_mail_devis(session: Session, row: FicheCache) -> bool:
    """A rebuilt payload with ``include_mail_devis`` would carry the key (rows or the null marker)."""
    if "mail_devis" in (row.raw_data or {}):
        return True
    return session.scalar(
        select(func.count()).select_from(FicheCacheMailDevis).where(FicheCacheMailDevis.fiche_cache_id == row.id)
    ) > 0


def recordings_need_heal(session: Session, row: FicheCache) -> bool:
    """Self-heal triggers of §2.6: recordings counted but no rows, or a blank recording URL."""
    n, blank = session.execute(
        select(func.count(), func.count().filter(Recording.recording_url == "")).where(Recording.fiche_cache_id == row.id)
    ).one()
    return ((row.recordings_count or 0) > 0 and n == 0) or blank > 0


def cached_details(session: Session, fiche_id: str, *, include_mail_devis: bool = False) -> tuple[str, dict[str, Any] | None]:
    """What ``GET /api/fiches/{id}`` can serve from the cache (spec 01 §2.6, §2.7).

    States: ``missing`` (no row), ``not_found`` (marker within its TTL → 404), ``not_ready``
    (list-only, expired marker, or no usable details: must fetch, no fallback), ``needs_mail_devis``
    (asked for it, none stored: refetch, data is the fallback), ``expired`` (refetch, data is the
    fallback) and ``fresh`` (serve data).
    """
    row = get_row(session, fiche_id)
    if row is None:
        return "missing", None
    now = now_utc()
    if is_not_found_marker(row):
        return ("not_found" if row.expires_at > now else "not_ready"), None
    if is_sales_list_only(row) or row.details_success is not True:
        return "not_ready", None
    sections = load_sections(session, row.id, include_mail_devis=include_mail_devis)
    if sections["fiche_cache_information"] is None:  # the "full details ready" rule, without a count
        return "not_ready", None
    data = read_fiche_details(session, row, include_mail_devis=include_mail_devis, sections=sections)
    if row.expires_at <= now:
        return "expired", data
    if include_mail_devis and "mail_devis" not in data:
        return "needs_mail_devis", data
    return "fresh", data


def renormalize_row(session: Session, row: FicheCache) -> bool:
    """Rewrite a stored fiche's sections from its own rebuilt payload (no CRM call, timestamps,
    envelope and recordings untouched). Returns whether anything changed."""
    if is_sales_list_only(row) or session.scalar(
        select(func.count()).select_from(FicheCacheInformation).where(FicheCacheInformation.fiche_cache_id == row.id)
    ) == 0:
        return False
    sections = load_sections(session, row.id, include_mail_devis=True)
    payload = fs.rebuild_details(_fiche_columns(row), sections, include_mail_devis=True)
    normalized = fs.normalize_details(payload, row.fiche_id)
    new_raw = normalized["fiche"]["raw_data"]
    if not normalized["has_mail_devis"]:
        normalized["sections"].pop("fiche_cache_mail_devis", None)
        sections.pop("fiche_cache_mail_devis", None)
    if fs.json_equal(new_raw, row.raw_data or {}) and fs.json_equal(normalized["sections"], sections):
        return False
    row.raw_data = new_raw
    replace_sections(session, row.id, normalized)
    session.flush()
    return True


def section_stats(session: Session, fiche_cache_id: int) -> dict[str, tuple[int, int]]:
    """Per table: (row count, JSON size in bytes of those rows) for one fiche, children included."""
    stats: dict[str, list[int]] = {t: [0, 0] for t in fs.FIELDS}

    def walk(table: str, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            stats[table][0] += 1
            stats[table][1] += len(json.dumps({k: v for k, v in r.items() if k != "children"}, ensure_ascii=False, default=str).encode())
            for ct, crow in (r.get("children") or {}).items():
                walk(ct, crow)

    for table, v in load_sections(session, fiche_cache_id, include_mail_devis=True).items():
        walk(table, [v] if isinstance(v, dict) else (v or []))
    return {t: (n, b) for t, (n, b) in stats.items()}


def status_by_date(session: Session, day: str) -> list[dict[str, Any]]:
    """Items of ``GET /api/fiches/status/by-date`` (spec 01 §4.1), newest rows first."""
    return status_by_dates(session, [day])


def status_by_dates(session: Session, days: list[str]) -> list[dict[str, Any]]:
    """The by-date items of several days at once, day by day in the given order (newest rows first
    within a day): three statements whatever the number of days, and only the columns shown (no
    ORM rows, no raw data, no transcript text) — a 31-day range is ~1,200 fiches."""
    if not days:
        return []
    rank = {d: i for i, d in enumerate(days)}
    fc = FicheCache
    rows = session.execute(
        select(fc.id, fc.fiche_id, fc.groupe, fc.agence_nom, fc.prospect_nom, fc.prospect_prenom, fc.prospect_email,
               fc.prospect_tel, fc.fetched_at, fc.created_at, fc.sales_date)
        .where(fc.sales_date.in_(days))
        .order_by(fc.created_at.desc(), fc.id.desc())
    ).all()
    if not rows:
        return []
    rows.sort(key=lambda r: rank[r.sales_date])  # stable: keeps newest-first within each day
    ids = [r.id for r in rows]
    recs: dict[int, list[Any]] = {}
    for rec in session.execute(
        select(Recording.id, Recording.fiche_cache_id, Recording.call_id, Recording.has_transcription,
               Recording.transcribed_at, Recording.start_time, Recording.duration_seconds)
        .where(Recording.fiche_cache_id.in_(ids))
    ):
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
