"""Fast, faithful population of the fiche cache for benchmarks.

Why not the write path itself
-----------------------------
Measured on the 2-core bench machine against its local PostgreSQL 15: ``write_full_details`` costs
~17.5 ms per fiche in its own transaction, plus ~3.3 ms for the ``upsert_sales_list`` that precedes
it in production and ~1.5 ms to generate the payload, i.e. ~37 minutes for 100,000 fiches. Too
slow for a benchmark setup, so this module bulk-loads the *end state* of the production path.

What it writes
--------------
For every day (``per_day`` fiches, ids ``generator.fiche_id_for(day, i)``, 40 per day like the
synthetic CRM) exactly the rows that production leaves behind after the day's ``sales_list`` run
(``upsert_sales_list`` + the ``fiche_sales_days`` marker that makes the day count as cached for
``by-date-range``) followed by one ``fiche_details`` run per fiche (``write_full_details``):

* ``fiche_cache``: columns computed as ``write_full_details`` does over a list-only row (sales date
  of the list, ``cle`` from the details or else the list, ``raw_data`` = the normalized remainder,
  ``recordings_count`` = details recordings, ``last_revalidated_at`` set by the list);
* every ``fiche_cache_*`` section row from :func:`core.fiche_sections.normalize_details` — the same
  pure function the write path uses — with the same parent/child links, the same per-table id order
  and the same JSONB ``None`` → ``'null'`` encoding SQLAlchemy applies;
* ``recordings`` merged like ``upsert_recordings`` (list first, then details, never blanking);
* one ``fiche_sales_days`` row per day.

A share of the fiches (``mail_devis_share``, default 10 %) is written as if it had been read once
with ``include_mail_devis=true`` (payload with ``mail_devis``), the rest without — the default read.

How
---
Worker processes (one per core) generate + normalize a batch of days, take contiguous id blocks
per table from shared counters, and ``COPY`` the rows into the indexed tables (so index shapes are
those of row-by-row inserts), one transaction per batch. Sequences are then moved past the loaded
ids and the tables are ``VACUUM (ANALYZE)``d (what autovacuum would do after such a load).

Checked, not assumed
--------------------
:func:`verify_against_write_path` takes a sample of loaded fiches, re-creates them through the real
``upsert_sales_list`` + ``write_full_details`` inside a transaction that is rolled back, and
compares every column (as text, so JSON ``null`` ≠ SQL ``NULL``) of every table, plus the rebuilt
read payload. The bench refuses to run when they differ.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import multiprocessing as mp
import os
import random
import sys
import time
from collections import defaultdict
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy.dialects.postgresql import JSONB

from auditflow_dagster.core import fiche_sections as fs
from auditflow_dagster.core.recordings import enrich_recording
from auditflow_dagster.db.models import (
    SECTION_MODELS,
    FicheCache,
    FicheSalesDay,
    Recording,
)
from auditflow_dagster.sample import generator as gen

ONE_TO_ONE = {*fs.ONE_TO_ONE_SECTIONS.values(), "fiche_cache_mail_devis"}
MODELS: dict[str, Any] = {"fiche_cache": FicheCache, **SECTION_MODELS, "recordings": Recording}
PARENT: dict[str, tuple[str, str] | None] = {
    "fiche_cache": None, **fs.PARENT_FK, "recordings": ("fiche_cache", "fiche_cache_id")}


def _topological() -> list[str]:
    order: list[str] = []

    def visit(t: str) -> None:
        if t in order:
            return
        p = PARENT[t]
        if p:
            visit(p[0])
        order.append(t)

    for t in PARENT:
        visit(t)
    return order


TABLE_ORDER = _topological()
JSONB_COLS = {t: {c.name for c in m.__table__.columns if isinstance(c.type, JSONB)} for t, m in MODELS.items()}
HAS_UPDATED = {t for t, m in MODELS.items() if "updated_at" in m.__table__.columns}
REC_TEXT = ("recording_url", "recording_date", "recording_time", "from_number", "to_number", "uuid", "direction")


def has_mail_devis(fiche_id: str, share: float) -> bool:
    """Deterministic choice of the fiches stored with their mail devis."""
    return int(hashlib.blake2b(fiche_id.encode(), digest_size=8).hexdigest(), 16) % 10_000 < round(share * 10_000)


def day_plan(n_fiches: int, per_day: int, last_day: dt.date) -> list[tuple[dt.date, int]]:
    """``(day, count)`` oldest first, ``per_day`` fiches a day ending on ``last_day`` (the oldest
    day takes the remainder)."""
    full, rest = divmod(n_fiches, per_day)
    days = [per_day] * full + ([rest] if rest else [])
    days.reverse()  # the partial day (if any) is the oldest
    first = last_day - dt.timedelta(days=len(days) - 1)
    return [(first + dt.timedelta(days=k), c) for k, c in enumerate(days)]


# --------------------------------------------------------------------------------------------
# Rows of one fiche (pure; mirrors upsert_sales_list → write_full_details on a fresh database)
# --------------------------------------------------------------------------------------------


class Batch:
    """Rows per table as ``(parent local id, values)``; a row's local id is its list index."""

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[int | None, dict[str, Any]]]] = defaultdict(list)

    def add(self, table: str, parent: int | None, values: dict[str, Any]) -> int:
        lst = self.rows[table]
        lst.append((parent, values))
        return len(lst) - 1


def _add_section_row(batch: Batch, table: str, parent: int, row: dict[str, Any], now: dt.datetime) -> None:
    values = {k: v for k, v in row.items() if k != "children"}
    values["created_at"] = now
    if table in HAS_UPDATED:
        values["updated_at"] = now
    lid = batch.add(table, parent, values)
    for child in fs.CHILD_TABLES.get(table, []):
        for c in (row.get("children") or {}).get(child, []):
            _add_section_row(batch, child, lid, c, now)


def _merge_recordings(list_recs: list[Any], detail_recs: list[Any]) -> list[dict[str, Any]]:
    """``upsert_recordings`` applied to the list's recordings, then to the details' ones."""
    merged: dict[str, dict[str, Any]] = {}
    for raw in [*list_recs, *detail_recs]:
        if not isinstance(raw, dict):
            continue
        rec = enrich_recording(raw)
        if rec is None:
            continue
        new = {
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
        }
        old = merged.get(new["call_id"])
        if old is None:
            merged[new["call_id"]] = new
            continue
        for k in REC_TEXT:
            old[k] = new[k] if new[k] not in (None, "") else old[k]
        for k in ("answered", "start_time", "duration_seconds"):
            old[k] = new[k] if new[k] is not None else old[k]
    return list(merged.values())


def add_fiche(batch: Batch, item: dict[str, Any], payload: dict[str, Any], day: str, now: dt.datetime,
              ttl_hours: int) -> None:
    fiche_id = str(item["id"])
    normalized = fs.normalize_details(payload, fiche_id)
    f = normalized["fiche"]
    recordings = payload.get("recordings") if isinstance(payload.get("recordings"), list) else []
    lid = batch.add("fiche_cache", None, {
        "fiche_id": fiche_id,
        "groupe": f["groupe"],
        "agence_nom": f["agence_nom"],
        "prospect_nom": f["prospect_nom"],
        "prospect_prenom": f["prospect_prenom"],
        "prospect_email": f["prospect_email"],
        "prospect_tel": f["prospect_tel"],
        "sales_date": day,
        "cle": f["cle"] or item.get("cle") or None,
        "details_success": f["details_success"],
        "details_message": f["details_message"],
        "raw_data": dict(f["raw_data"]),
        "has_recordings": bool(recordings),
        "recordings_count": len(recordings),
        "fetched_at": now,
        "expires_at": now + dt.timedelta(hours=ttl_hours),
        "last_revalidated_at": now,
        "created_at": now,
        "updated_at": now,
    })
    sections = normalized["sections"]
    for table in fs.SECTION_TABLES:
        if table not in sections:  # mail devis not in the payload
            continue
        v = sections[table]
        rows = ([v] if v is not None else []) if table in ONE_TO_ONE else (v or [])
        for r in rows:
            _add_section_row(batch, table, lid, r, now)
    for rec in _merge_recordings(item.get("recordings") or [], recordings):
        batch.add("recordings", lid, {**rec, "created_at": now, "updated_at": now})


# --------------------------------------------------------------------------------------------
# Worker processes: build a batch of days, take id blocks, COPY
# --------------------------------------------------------------------------------------------

_W: dict[str, Any] = {}


def _init_worker(url: str, counters: Any, lock: Any, ttl_hours: int, share: float) -> None:
    _W.update(conn=psycopg.connect(url), counters=counters, lock=lock, ttl=ttl_hours, share=share)


def _copy_batch(conn: psycopg.Connection, batch: Batch, bases: dict[str, int]) -> None:
    with conn.cursor() as cur:
        for table in TABLE_ORDER:
            rows = batch.rows.get(table)
            if not rows:
                continue
            parent = PARENT[table]
            jcols = JSONB_COLS[table]
            groups: dict[tuple[str, ...], list[tuple[int, int | None, dict[str, Any]]]] = defaultdict(list)
            for lid, (pid, values) in enumerate(rows):
                groups[tuple(values)].append((lid, pid, values))
            for keys, members in groups.items():
                cols = ["id", *([parent[1]] if parent else []), *keys]
                sql = f'COPY "{table}" ({", ".join(cols)}) FROM STDIN'
                base, pbase = bases[table], bases[parent[0]] if parent else 0
                with cur.copy(sql) as cp:
                    for lid, pid, values in members:
                        out: list[Any] = [base + lid + 1]
                        if parent:
                            out.append(pbase + pid + 1)
                        out.extend(Jsonb(values[k]) if k in jcols else values[k] for k in keys)
                        cp.write_row(out)


def _load_days(days: list[tuple[str, int]]) -> int:
    conn, ttl, share = _W["conn"], _W["ttl"], _W["share"]
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    batch = Batch()
    markers = []
    for key, count in days:
        items = gen.fiches_for_day(dt.date.fromisoformat(key), count)
        for item in items:
            fid = item["id"]
            payload = gen.fiche_details_payload(fid, include_mail_devis=has_mail_devis(fid, share))
            add_fiche(batch, item, payload, key, now, ttl)
        markers.append((key, now, len(items), len(items)))
    with _W["lock"]:
        bases = {}
        for i, table in enumerate(TABLE_ORDER):
            bases[table] = _W["counters"][i]
            _W["counters"][i] += len(batch.rows.get(table, ()))
    _copy_batch(conn, batch, bases)
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO fiche_sales_days (sales_date, fetched_at, crm_count, cached_count, last_error) "
            "VALUES (%s, %s, %s, %s, NULL)", markers)
    conn.commit()
    return len(batch.rows["fiche_cache"])


def populate(url: str, plan: list[tuple[dt.date, int]], *, ttl_hours: int, mail_devis_share: float = 0.1,
             workers: int | None = None, days_per_batch: int = 10, progress: bool = True) -> dict[str, Any]:
    """Load ``plan`` into the (empty, migrated) database at ``url``; returns timings and sizes."""
    url = url.replace("postgresql+psycopg://", "postgresql://")
    workers = workers or os.cpu_count() or 1
    t0 = time.perf_counter()
    ctx = mp.get_context("fork")
    counters = ctx.Array("q", len(TABLE_ORDER), lock=False)
    lock = ctx.Lock()
    batches = [[(d.isoformat(), c) for d, c in plan[i:i + days_per_batch]] for i in range(0, len(plan), days_per_batch)]
    total = sum(c for _, c in plan)
    done = 0
    next_report = 0.1
    with ctx.Pool(workers, initializer=_init_worker, initargs=(url, counters, lock, ttl_hours, mail_devis_share)) as pool:
        for n in pool.imap_unordered(_load_days, batches):
            done += n
            if progress and done >= next_report * total:
                print(f"  populate: {done:,}/{total:,} fiches ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
                next_report += 0.1
        pool.close()
        pool.join()
    t_load = time.perf_counter() - t0
    with psycopg.connect(url, autocommit=True) as conn:
        for table in TABLE_ORDER:
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), GREATEST((SELECT max(id) FROM \"{table}\"), 1))")
        t1 = time.perf_counter()
        conn.execute("VACUUM (ANALYZE)")
        t_vacuum = time.perf_counter() - t1
        sizes = {t: n for t, n in conn.execute(
            "SELECT relname, n_live_tup FROM pg_stat_user_tables WHERE relname = ANY(%s)", (TABLE_ORDER,))}
        db_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return {"fiches": total, "days": len(plan), "load_s": t_load, "vacuum_analyze_s": t_vacuum,
            "total_s": time.perf_counter() - t0, "rows": sizes, "db_bytes": db_bytes, "workers": workers}


# --------------------------------------------------------------------------------------------
# Verification against the real write path (rolled back)
# --------------------------------------------------------------------------------------------

_SKIP = {"id", "created_at", "updated_at"}
_SKIP_FICHE = _SKIP | {"fetched_at", "expires_at", "last_revalidated_at"}


def _snapshot_sql(table: str) -> str:
    cols = [c.name for c in MODELS[table].__table__.columns]
    fk = PARENT[table][1] if PARENT[table] else None
    skip = _SKIP_FICHE if table == "fiche_cache" else _SKIP | {fk}
    select_cols = [f't0."{c}"::text' for c in cols if c not in skip]
    if table == "fiche_cache":
        select_cols.append("(t0.expires_at - t0.fetched_at)::text")
    joins, alias, t, i = [], "t0", table, 0
    while PARENT[t] is not None:
        ptable, pfk = PARENT[t]
        i += 1
        joins.append(f'JOIN "{ptable}" t{i} ON {alias}."{pfk}" = t{i}.id')
        alias, t = f"t{i}", ptable
    fiche_alias = alias
    return (f'SELECT {fiche_alias}.fiche_id, {", ".join(select_cols)} FROM "{table}" t0 {" ".join(joins)} '
            f"WHERE {fiche_alias}.fiche_id = ANY(:ids)")


def _snapshot(session: Any, ids: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    from sqlalchemy import text

    out = {t: sorted(tuple(r) for r in session.execute(text(_snapshot_sql(t)), {"ids": ids}))
           for t in TABLE_ORDER}
    out["fiche_sales_days"] = sorted(tuple(r) for r in session.execute(text(
        "SELECT d.sales_date, d.crm_count::text, d.cached_count::text, d.last_error FROM fiche_sales_days d "
        "WHERE d.sales_date IN (SELECT sales_date FROM fiche_cache WHERE fiche_id = ANY(:ids))"), {"ids": ids}))
    return out


def verify_against_write_path(fiche_ids: list[str], *, ttl_hours: int, mail_devis_share: float) -> dict[str, Any]:
    """Re-create ``fiche_ids`` (whole days are not needed) with the production functions inside a
    rolled-back transaction and compare all rows. Returns ``{"ok": bool, "fiches": n, "diffs": [...]}``."""
    from sqlalchemy import delete, select
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.orm import Session

    from auditflow_dagster.db import fiches as fiche_db
    from auditflow_dagster.db.clock import now_utc
    from auditflow_dagster.db.session import get_engine

    diffs: list[str] = []
    with Session(get_engine()) as s:
        by_day: dict[str, list[str]] = defaultdict(list)
        for fid, day in s.execute(select(FicheCache.fiche_id, FicheCache.sales_date).where(FicheCache.fiche_id.in_(fiche_ids))):
            by_day[day].append(fid)
        bulk = _snapshot(s, fiche_ids)
        bulk_read = {fid: fiche_db.cached_details(s, fid, include_mail_devis=has_mail_devis(fid, mail_devis_share))
                     for fid in fiche_ids}
        s.execute(delete(FicheCache).where(FicheCache.fiche_id.in_(fiche_ids)))
        s.execute(delete(FicheSalesDay).where(FicheSalesDay.sales_date.in_(list(by_day))))
        for day, ids in by_day.items():  # the sales_list run of the day …
            wanted = set(ids)
            last_index = max(int(f[-3:]) for f in ids)
            all_items = gen.fiches_for_day(dt.date.fromisoformat(day), last_index + 1)
            items = [it for it in all_items if it["id"] in wanted]
            written = fiche_db.upsert_sales_list(s, items, sales_date=day, ttl_hours=ttl_hours)
            # production's marker counts the whole day's CRM list, as the bulk marker does
            s.execute(pg_insert(FicheSalesDay).values(
                sales_date=day, crm_count=bulk_day_count(bulk, day), cached_count=bulk_day_count(bulk, day),
                fetched_at=now_utc(), last_error=None))
            for fid in written:  # … then one fiche_details run per fiche
                payload = gen.fiche_details_payload(fid, include_mail_devis=has_mail_devis(fid, mail_devis_share))
                fiche_db.write_full_details(s, fid, payload, ttl_hours=ttl_hours)
        s.flush()
        real = _snapshot(s, fiche_ids)
        real_read = {fid: fiche_db.cached_details(s, fid, include_mail_devis=has_mail_devis(fid, mail_devis_share))
                     for fid in fiche_ids}
        s.rollback()
    for table in bulk:
        if bulk[table] != real[table]:
            b, r = set(bulk[table]), set(real[table])
            diffs.append(f"{table}: {len(bulk[table])} bulk rows vs {len(real[table])} write-path rows; "
                         f"only bulk e.g. {sorted(b - r)[:1]}, only write path e.g. {sorted(r - b)[:1]}")
    for fid in fiche_ids:
        if not fs.json_equal(bulk_read[fid][1], real_read[fid][1]) or bulk_read[fid][0] != real_read[fid][0]:
            diffs.append(f"read of {fid}: bulk {bulk_read[fid][0]} vs write path {real_read[fid][0]} differ")
    rows = sum(len(v) for v in real.values())
    return {"ok": not diffs, "fiches": len(fiche_ids), "rows_compared": rows,
            "with_mail_devis": sum(1 for f in fiche_ids if has_mail_devis(f, mail_devis_share)), "diffs": diffs}


def bulk_day_count(snapshot: dict[str, list[tuple[Any, ...]]], day: str) -> int:
    for row in snapshot["fiche_sales_days"]:
        if row[0] == day:
            return int(row[1])
    return 0


# --------------------------------------------------------------------------------------------
# Finished audits (benches that read audits, e.g. bench/export.py)
# --------------------------------------------------------------------------------------------
#
# What: for each day of a plan, ``count`` fiches with their list-level rows only (``fiche_cache``
# and the ``fiche_cache_information`` columns audit readers join: groupe, attribution) — the
# sections above are not needed by audit reads, and the synthetic CRM has details for 40 fiches a
# day only — and one completed audit per fiche of an audit config: every step row, control point
# and citation exactly as ``db.audits.upsert_step_result`` writes them for a step output (the same
# output dict, see :func:`audit_step_outputs`), the summary columns from ``core.scoring``, and a
# share of human reviews (a step override in force: review row + ``raw_result.human_override``
# marker; control-point review rows). :func:`verify_audit_against_write_path` re-writes one audit
# through ``upsert_step_result`` (rolled back) and compares what the export reads.

GROUPES = ["Azur Énergie", "Bretagne Santé", "Côte d'Opale", "Île-de-France Nord", "Lyon Part-Dieu", "Méditerranée",
           "Normandie", "Occitanie"]
_FIRST = ["Zoé", "Élodie", "Jérôme", "Hélène", "François", "Maël", "Chloé", "Loïc", "Anaïs", "Noël", "Inès", "Cédric"]
_LAST = ["Lefèvre", "Marchand", "Dupré", "Béranger", "Nguyen", "Müller", "Da Silva", "Leroy", "Gaël-Martin", "Roché"]


def _advisor(i: int) -> tuple[str, str]:
    return f"u{1000 + i}", f"{_FIRST[i % len(_FIRST)]} {_LAST[(i // len(_FIRST)) % len(_LAST)]}"


def audit_step_outputs(fiche_id: str, steps: list[Any]) -> list[dict[str, Any]]:
    """The step outputs (``upsert_step_result``'s ``output``) of the bench audit of ``fiche_id``:
    deterministic, statuts drawn per control point, 0–2 citations each, verdict and score derived
    from the statuts as the engine derives them."""
    from auditflow_dagster.core.scoring import (
        derived_step_score,
        niveau_for,
        step_ratio,
        verdict_for_ratio,
    )

    rnd = random.Random(fiche_id)
    outs = []
    for st in steps:
        points = []
        for j, text in enumerate(st.control_points):
            statut = rnd.choices(["PRESENT", "ABSENT", "PARTIEL", "NON_APPLICABLE"], [6, 2, 2, 1])[0]
            cites = [{"texte": f"« {text[:40]} », c'est bien ce que je vous confirme, extrait {k}",
                      "minutage": f"{(j * 7 + k) % 60:02d}:{(j * 13 + k * 5) % 60:02d}",
                      "minutage_secondes": float((j * 7 + k) % 60 * 60 + (j * 13 + k * 5) % 60), "speaker": "conseiller",
                      "recording_index": 0, "chunk_index": j + k}
                     for k in range(rnd.randint(0, 2) if statut != "ABSENT" else 0)]
            points.append({"point": text, "statut": statut, "commentaire": f"Point {j + 1} : {statut.lower()} dans l'appel.",
                           "citations": cites, "minutages": [c["minutage"] for c in cites]})
        ratio = step_ratio([p["statut"] for p in points])
        conforme = verdict_for_ratio(ratio)
        outs.append({"traite": True, "conforme": conforme, "score": derived_step_score(ratio, st.weight),
                     "niveau_conformite": niveau_for(conforme, ratio),
                     "commentaire_global": f"Étape {st.position} analysée : {conforme}.",
                     "mots_cles_trouves": [], "minutages": sorted({c["minutage"] for p in points for c in p["citations"]}),
                     "erreurs_transcription_tolerees": 0, "points_controle": points})
    return outs


AUDIT_TABLES = ("audits", "audit_step_results", "audit_step_result_control_points", "audit_step_result_citations",
                "audit_step_result_human_reviews")
_FICHE_COLS = ["id", "fiche_id", "groupe", "sales_date", "details_success", "raw_data", "has_recordings",
               "recordings_count", "fetched_at", "expires_at", "created_at", "updated_at"]
_INFO_COLS = ["id", "fiche_cache_id", "groupe", "attribution_user_id", "attribution_user_nom", "extra", "created_at",
              "updated_at"]
_AUDIT_COLS = ["id", "fiche_cache_id", "audit_config_id", "tracking_id", "trigger_source", "use_rlm", "overall_score",
               "score_percentage", "niveau", "is_compliant", "critical_passed", "critical_total", "status",
               "started_at", "completed_at", "duration_ms", "total_tokens", "successful_steps", "failed_steps",
               "recordings_count", "timeline_chunks", "result_data", "version", "is_latest", "created_at",
               "updated_at"]
_STEP_COLS = ["id", "audit_id", "step_position", "step_name", "severity_level", "is_critical", "weight", "traite",
              "conforme", "score", "niveau_conformite", "commentaire_global", "mots_cles_trouves", "minutages",
              "erreurs_transcription_tolerees", "total_citations", "total_tokens", "raw_result", "created_at",
              "updated_at"]
_CP_COLS = ["id", "audit_id", "step_position", "control_point_index", "point", "statut", "commentaire", "minutages",
            "erreur_transcription_notee", "variation_phonetique_utilisee", "created_at", "updated_at"]
_CITE_COLS = ["id", "audit_id", "step_position", "control_point_index", "citation_index", "texte", "minutage",
              "minutage_secondes", "speaker", "recording_index", "chunk_index", "recording_date", "recording_time",
              "recording_url", "created_at"]
_REVIEW_COLS = ["id", "audit_id", "step_position", "reviewed_at", "reviewer", "reason", "kind", "control_point_index",
                "point", "previous_traite", "previous_conforme", "previous_score", "previous_niveau_conformite",
                "override_traite", "override_conforme", "override_score", "override_niveau_conformite",
                "previous_statut", "previous_commentaire", "override_statut", "override_commentaire", "created_at"]
_AUDIT_TABLES = tuple(zip(AUDIT_TABLES, (_AUDIT_COLS, _STEP_COLS, _CP_COLS, _CITE_COLS, _REVIEW_COLS), strict=True))


def add_audit_rows(rows: dict[str, list[list[Any]]], nid: Any, *, aid: int, fid: int, fiche_id: str, config_id: int,
                   steps: list[Any], started: dt.datetime, now: dt.datetime, rnd: random.Random, review_share: float,
                   result_data: Any, trigger_source: str = "automation", recordings_count: int = 2,
                   timeline_chunks: int = 40) -> None:
    """The rows of one completed audit ``aid`` of fiche row ``fid`` (lists in :data:`_AUDIT_TABLES`
    column order, ids from ``nid(kind)``): every step row, control point and citation exactly as
    ``db.audits.upsert_step_result`` writes the step outputs of :func:`audit_step_outputs`, a share
    ``review_share`` of human reviews (step overrides in force, control-point trail rows), the
    summary columns from ``core.scoring`` and ``result_data(compliance)`` as the stored JSON."""
    from auditflow_dagster.core.scoring import StepScoreInput, compute_compliance
    from auditflow_dagster.db.clock import iso

    outs = audit_step_outputs(fiche_id, steps)
    final: list[StepScoreInput] = []
    for st, out in zip(steps, outs, strict=True):
        verdict = {k: out[k] for k in ("traite", "conforme", "score", "niveau_conformite")}
        raw: dict[str, Any] = {
            "step_metadata": {"position": st.position, "name": st.name, "severity": st.severity_level,
                              "is_critical": st.is_critical, "weight": st.weight},
            "usage": {"prompt_tokens": 3000, "completion_tokens": 400, "total_tokens": 3400},
            "model": "bench"}
        if rnd.random() < review_share:  # a human step override in force
            rid = nid("review")
            over = {"traite": True, "conforme": "NON_CONFORME" if out["conforme"] != "NON_CONFORME" else "CONFORME",
                    "score": 0 if out["conforme"] != "NON_CONFORME" else st.weight,
                    "niveau_conformite": "INSUFFISANT"}
            at = started + dt.timedelta(days=1)
            rows["audit_step_result_human_reviews"].append([
                rid, aid, st.position, at, "qa@exemple.fr", "bench", "step", None, None, out["traite"],
                out["conforme"], out["score"], out["niveau_conformite"], over["traite"], over["conforme"],
                over["score"], over["niveau_conformite"], None, None, None, None, at])
            raw["human_override"] = {**over, "review_id": str(rid), "reviewed_at": iso(at)}
            verdict = over
        points = out["points_controle"]
        rows["audit_step_results"].append([
            nid("step"), aid, st.position, st.name, st.severity_level, st.is_critical, st.weight,
            verdict["traite"], verdict["conforme"], verdict["score"], verdict["niveau_conformite"],
            out["commentaire_global"], [str(x) for x in out["mots_cles_trouves"]], [str(x) for x in out["minutages"]],
            int(out["erreurs_transcription_tolerees"]), sum(len(p["citations"]) for p in points), 3400,
            Jsonb(raw), now, now])
        final.append(StepScoreInput(position=st.position, weight=st.weight, is_critical=st.is_critical,
                                    score=verdict["score"], conforme=verdict["conforme"]))
        for j, p in enumerate(points, start=1):
            rows["audit_step_result_control_points"].append([
                nid("cp"), aid, st.position, j, p["point"], p["statut"], p["commentaire"], p["minutages"],
                False, None, now, now])
            if rnd.random() < review_share:  # a control-point review (trail row)
                at = started + dt.timedelta(days=1, minutes=j)
                rows["audit_step_result_human_reviews"].append([
                    nid("review"), aid, st.position, at, "relecteur", None, "control_point", j, p["point"],
                    out["traite"], out["conforme"], out["score"], out["niveau_conformite"], None, None, None,
                    None, p["statut"], p["commentaire"], p["statut"], "confirmé à l'écoute", at])
            for k, c in enumerate(p["citations"], start=1):
                rows["audit_step_result_citations"].append([
                    nid("cite"), aid, st.position, j, k, c["texte"], c["minutage"], c["minutage_secondes"],
                    c["speaker"], c["recording_index"], c["chunk_index"], "N/A", "N/A", "N/A", now])
    c = compute_compliance(final)
    rows["audits"].append([
        aid, fid, config_id, f"audit-{fiche_id}-{config_id}-{int(started.timestamp() * 1000)}", trigger_source,
        False, c.score_percentage, c.score_percentage, c.niveau, c.is_compliant, c.critical_passed,
        c.critical_total, "completed", started, started + dt.timedelta(minutes=4), 240_000, 3400 * len(steps),
        len(steps), 0, recordings_count, timeline_chunks, Jsonb(result_data(c)), 1, True, started, now])


def populate_audits(url: str, plan: list[tuple[dt.date, int]], config_id: int, *, review_share: float = 0.01,
                    progress: bool = True) -> dict[str, Any]:
    """Load ``plan``'s fiches and one completed audit each (config ``config_id``, all its steps) into
    the migrated database at ``url``; returns row counts and timings."""
    from auditflow_dagster.db.configs import load_config
    from auditflow_dagster.db.session import session_scope

    url = url.replace("postgresql+psycopg://", "postgresql://")
    with session_scope() as s:
        config_row, spec = load_config(s, config_id)
        config_name, steps = config_row.name, spec.steps
    t0 = time.perf_counter()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    counts = defaultdict(int)
    rnd = random.Random(20261031)
    ids = {"fiche": 0, "info": 0, "audit": 0, "step": 0, "cp": 0, "cite": 0, "review": 0}

    def nid(k: str) -> int:
        ids[k] += 1
        return ids[k]

    with psycopg.connect(url) as conn, conn.cursor() as cur:
        for day_index, (day, count) in enumerate(plan):
            rows: dict[str, list[list[Any]]] = defaultdict(list)
            for i in range(count):
                fiche_id = gen.fiche_id_for(day, i)
                fid = nid("fiche")
                groupe = GROUPES[(i + day_index) % len(GROUPES)]
                user_id, user_nom = _advisor((i * 7 + day_index) % 120)
                rows["fiche_cache"].append([fid, fiche_id, groupe, day.isoformat(), True, Jsonb({}), True, 2, now,
                                            now + dt.timedelta(days=3650), now, now])
                rows["fiche_cache_information"].append([nid("info"), fid, groupe, user_id, user_nom, Jsonb({}), now, now])
                aid = nid("audit")
                started = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(6)) + dt.timedelta(seconds=7 * i)
                add_audit_rows(rows, nid, aid=aid, fid=fid, fiche_id=fiche_id, config_id=config_id, steps=steps,
                               started=started, now=now, rnd=rnd, review_share=review_share,
                               result_data=lambda c: {"audit": {"config": {"id": str(config_id), "name": config_name}}})
            for table, cols in (("fiche_cache", _FICHE_COLS), ("fiche_cache_information", _INFO_COLS),
                                *_AUDIT_TABLES):
                if not rows[table]:
                    continue
                with cur.copy(f'COPY "{table}" ({", ".join(cols)}) FROM STDIN') as cp:
                    for r in rows[table]:
                        cp.write_row(r)
                counts[table] += len(rows[table])
            conn.commit()
            if progress:
                print(f"  populate audits: day {day_index + 1}/{len(plan)} ({time.perf_counter() - t0:.0f} s)",
                      file=sys.stderr, flush=True)
    t_load = time.perf_counter() - t0
    with psycopg.connect(url, autocommit=True) as conn:
        for table in counts:
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                         f"GREATEST((SELECT max(id) FROM \"{table}\"), 1))")
        t1 = time.perf_counter()
        conn.execute("VACUUM (ANALYZE)")
        t_vacuum = time.perf_counter() - t1
        db_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return {"rows": dict(counts), "load_s": t_load, "vacuum_analyze_s": t_vacuum, "total_s": time.perf_counter() - t0,
            "db_bytes": db_bytes, "steps_per_audit": len(steps),
            "control_points_per_audit": sum(len(st.control_points) for st in steps)}


# --------------------------------------------------------------------------------------------
# Finalized audits of cached fiches (bench/reads.py: GET /api/audits/{id} at scale)
# --------------------------------------------------------------------------------------------
#
# What: one completed audit per fiche already in ``fiche_cache`` (e.g. loaded by :func:`populate`),
# rows as :func:`add_audit_rows` writes them and ``result_data`` as the finalizer
# (``db.finalizer.finalize_running_audit``) stores it — the frozen config snapshot, the compliance
# block, statistics and metadata — so a detail read decodes and re-encodes what production does.
# :func:`verify_audit_details` re-creates sampled audits through the real write path
# (``create_audit`` → ``write_snapshot`` → ``upsert_step_result`` × steps → the finalizer, rolled
# back) and compares ``audit_detail`` of both.


def finalized_result_data(*, audit_id: int, tracking_id: str, config_id: int, spec: Any, snapshot_config: dict[str, Any],
                          fiche_id: str, prospect_prenom: str | None, prospect_nom: str | None, groupe: str | None,
                          compliance: Any, started: dt.datetime, completed: dt.datetime, recordings_count: int,
                          timeline_chunks: int, steps: int, total_tokens: int, transcriptions_count: int = 0,
                          use_rlm: bool = False) -> dict[str, Any]:
    """``audits.result_data`` exactly as ``finalize_running_audit`` builds it for a completed audit
    whose steps all succeeded (no replaced step, evidence gating as with gating off: zero counts)."""
    from auditflow_dagster.core.evidence import GatingStats
    from auditflow_dagster.db.clock import iso

    approach = {"use_rlm": use_rlm, "transcript_mode": "tools" if use_rlm else "prompt"}
    block = compliance.as_result_dict()
    duration_ms = int((completed - started).total_seconds() * 1000)
    return {
        "audit_db_id": str(audit_id),
        "audit_tracking_id": tracking_id,
        "audit": {
            "config": {"id": str(config_id), "name": spec.name, "description": spec.description},
            "config_snapshot": snapshot_config,
            "fiche": {"fiche_id": fiche_id, "prospect_name": " ".join(x for x in (prospect_prenom, prospect_nom) if x),
                      "groupe": groupe},
            "results": {"compliance": block, "approach": approach},
            "compliance": block,
            "approach": approach,
        },
        "statistics": {
            "recordings_count": recordings_count, "transcriptions_count": transcriptions_count,
            "timeline_chunks": timeline_chunks, "successful_steps": steps, "failed_steps": 0,
            "total_time_seconds": 0, "total_tokens": total_tokens,
        },
        "metadata": {
            "started_at": iso(started), "completed_at": iso(completed), "duration_ms": duration_ms,
            "approach": approach, "evidence_gating": GatingStats().as_dict(), "replaced_steps": {},
        },
    }


_AW: dict[str, Any] = {}


def _init_audit_worker(url: str, counters: Any, lock: Any, config_id: int, spec: Any, review_share: float,
                       now: dt.datetime) -> None:
    _AW.update(conn=psycopg.connect(url), counters=counters, lock=lock, config_id=config_id, spec=spec,
               snapshot={"id": config_id, **spec.model_dump(mode="json")}, review_share=review_share, now=now)


def _load_audits(batch: tuple[int, list[tuple[Any, ...]]]) -> int:
    """One batch of fiches → their audits, COPYed in one transaction (ids: audit = fiche row's
    position in the load order, others from contiguous blocks of the shared counters)."""
    index, fiches = batch
    conn, spec, config_id, now = _AW["conn"], _AW["spec"], _AW["config_id"], _AW["now"]
    steps = spec.steps
    rows: dict[str, list[list[Any]]] = defaultdict(list)
    local = {"step": 0, "cp": 0, "cite": 0, "review": 0}

    def nid(k: str) -> int:
        local[k] += 1
        return local[k]

    rnd = random.Random(20261127 + index)
    for aid, fid, fiche_id, sales_date, groupe, prenom, nom, recordings in fiches:
        day = dt.date.fromisoformat(sales_date)
        started = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(6)) + dt.timedelta(seconds=7 * (aid % 40))
        completed = started + dt.timedelta(minutes=4)
        tracking = f"audit-{fiche_id}-{config_id}-{int(started.timestamp() * 1000)}"
        n_rec = recordings or 0

        def result_data(c: Any, aid: int = aid, tracking: str = tracking, fiche_id: str = fiche_id, groupe: Any = groupe,
                        prenom: Any = prenom, nom: Any = nom, started: dt.datetime = started,
                        completed: dt.datetime = completed, n_rec: int = n_rec) -> dict[str, Any]:
            return finalized_result_data(audit_id=aid, tracking_id=tracking, config_id=config_id, spec=spec,
                                         snapshot_config=_AW["snapshot"], fiche_id=fiche_id, prospect_prenom=prenom,
                                         prospect_nom=nom, groupe=groupe, compliance=c, started=started,
                                         completed=completed, recordings_count=n_rec, timeline_chunks=40,
                                         steps=len(steps), total_tokens=3400 * len(steps))

        add_audit_rows(rows, nid, aid=aid, fid=fid, fiche_id=fiche_id, config_id=config_id, steps=steps, started=started,
                       now=now, rnd=rnd, review_share=_AW["review_share"], result_data=result_data,
                       recordings_count=n_rec, timeline_chunks=40)
    kinds = {"audit_step_results": "step", "audit_step_result_control_points": "cp",
             "audit_step_result_citations": "cite", "audit_step_result_human_reviews": "review"}
    with _AW["lock"]:
        bases = {}
        for i, (table, kind) in enumerate(kinds.items()):
            bases[table] = _AW["counters"][i]
            _AW["counters"][i] += local[kind]
    with conn.cursor() as cur:
        for table, cols in _AUDIT_TABLES:
            base = bases.get(table, 0)
            if not rows[table]:
                continue
            with cur.copy(f'COPY "{table}" ({", ".join(cols)}) FROM STDIN') as cp:
                for r in rows[table]:
                    if base:
                        r[0] += base
                    cp.write_row(r)
    conn.commit()
    return len(rows["audits"])


def populate_audits_for_fiches(url: str, config_id: int, *, limit: int | None = None, workers: int | None = None,
                               review_share: float = 0.01, batch_size: int = 250, progress: bool = True) -> dict[str, Any]:
    """One completed, finalized audit of config ``config_id`` for each of the first ``limit`` fiches
    of ``fiche_cache`` (by id), into a database without audits; returns row counts and timings."""
    from auditflow_dagster.db.configs import load_config
    from auditflow_dagster.db.session import session_scope

    url = url.replace("postgresql+psycopg://", "postgresql://")
    with session_scope() as s:
        _, spec = load_config(s, config_id)
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT count(*) FROM audits").fetchone()[0]:
            raise RuntimeError("populate_audits_for_fiches needs a database without audits")
        fiches = conn.execute(
            "SELECT id, fiche_id, sales_date, groupe, prospect_prenom, prospect_nom, recordings_count FROM fiche_cache "
            "ORDER BY id LIMIT %s", (limit,)).fetchall()
    work = [(k + 1, *f) for k, f in enumerate(fiches)]  # audit id k+1 for the k-th fiche
    batches = [(i // batch_size, work[i:i + batch_size]) for i in range(0, len(work), batch_size)]
    workers = workers or os.cpu_count() or 1
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    t0 = time.perf_counter()
    ctx = mp.get_context("fork")
    counters = ctx.Array("q", 4, lock=False)
    lock = ctx.Lock()
    done, next_report = 0, 0.1
    with ctx.Pool(workers, initializer=_init_audit_worker,
                  initargs=(url, counters, lock, config_id, spec, review_share, now)) as pool:
        for n in pool.imap_unordered(_load_audits, batches):
            done += n
            if progress and done >= next_report * len(work):
                print(f"  populate audits: {done:,}/{len(work):,} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr,
                      flush=True)
                next_report += 0.1
        pool.close()
        pool.join()
    t_load = time.perf_counter() - t0
    with psycopg.connect(url, autocommit=True) as conn:
        for table in AUDIT_TABLES:
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                         f"GREATEST((SELECT max(id) FROM \"{table}\"), 1))")
        t1 = time.perf_counter()
        conn.execute("VACUUM (ANALYZE)")
        t_vacuum = time.perf_counter() - t1
        sizes = {t: n for t, n in conn.execute(
            "SELECT relname, n_live_tup FROM pg_stat_user_tables WHERE relname = ANY(%s)", (list(AUDIT_TABLES),))}
        db_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return {"audits": len(work), "rows": sizes, "load_s": t_load, "vacuum_analyze_s": t_vacuum,
            "total_s": time.perf_counter() - t0, "db_bytes": db_bytes, "workers": workers}


_VOLATILE = {"id", "auditId", "trackingId", "dagsterRunId", "createdAt", "updatedAt", "startedAt", "completedAt",
             "durationMs", "version", "isLatest", "audit_db_id", "audit_tracking_id", "started_at", "completed_at",
             "duration_ms"}


def _stable(v: Any) -> Any:
    """``audit_detail`` output without what differs between two audits of the same content (ids,
    tracking id, instants, durations, version/latest flags)."""
    if isinstance(v, dict):
        return {k: _stable(x) for k, x in v.items() if k not in _VOLATILE}
    if isinstance(v, list):
        return [_stable(x) for x in v]
    return v


def _leaf_diffs(a: Any, b: Any, path: str = "") -> list[str]:
    """``path: bulk value vs write-path value`` for every differing leaf."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in _leaf_diffs(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _leaf_diffs(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: bulk {str(a)[:200]} vs write path {str(b)[:200]}"]


def verify_audit_details(audit_ids: list[int], *, limit: int | None = None) -> dict[str, Any]:
    """For each bulk-loaded audit (without reviews): the same audit written by the real write path
    — ``create_audit`` (same fiche, config, trigger), ``write_snapshot`` (the config as the asset
    freezes it; empty timeline), ``upsert_step_result`` for every step with the same step outputs,
    then ``finalize_running_audit`` with evidence gating off (the synthetic quotes are in no
    transcript) — in a transaction that is rolled back; ``audit_detail`` of both must be equal
    but for ids, tracking id, instants and durations. Audits with reviews are skipped (a review is
    a later write); at most ``limit`` audits are checked."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from auditflow_dagster.db import audits as audit_db
    from auditflow_dagster.db.configs import load_config
    from auditflow_dagster.db.finalizer import finalize_running_audit
    from auditflow_dagster.db.models import Audit, AuditStepResultHumanReview
    from auditflow_dagster.db.session import get_engine
    from auditflow_dagster.settings import get_settings

    saved = os.environ.get("AUDIT_EVIDENCE_GATING")
    os.environ["AUDIT_EVIDENCE_GATING"] = "false"
    get_settings.cache_clear()
    diffs: list[str] = []
    checked = 0
    try:
        for aid in audit_ids:
            if limit is not None and checked >= limit:
                break
            with Session(get_engine()) as s:
                if s.scalar(select(AuditStepResultHumanReview.id).where(AuditStepResultHumanReview.audit_id == aid).limit(1)):
                    continue
                bulk = audit_db.audit_detail(s, aid)
                a = s.get(Audit, aid)
                fiche = s.get(FicheCache, a.fiche_cache_id)
                _, spec = load_config(s, a.audit_config_id)
                new, _ = audit_db.create_audit(s, fiche_cache_id=fiche.id, audit_config_id=a.audit_config_id,
                                               tracking_id=f"{a.tracking_id}-verify", dagster_run_id=None,
                                               trigger_source=a.trigger_source)
                audit_db.write_snapshot(s, new.id, config={"id": a.audit_config_id, **spec.model_dump(mode="json")},
                                        timeline=[], timeline_text="", step_excerpts={})
                new.recordings_count, new.timeline_chunks = a.recordings_count, a.timeline_chunks
                for st, out in zip(spec.steps, audit_step_outputs(fiche.fiche_id, spec.steps), strict=True):
                    audit_db.upsert_step_result(s, new.id, st, out, usage={"prompt_tokens": 3000, "completion_tokens": 400,
                                                                           "total_tokens": 3400}, model="bench")
                s.flush()
                finalize_running_audit(s, new, fiche, None)
                s.flush()
                real = audit_db.audit_detail(s, new.id)
                s.rollback()
            checked += 1
            diffs += [f"audit {aid}: {d}" for d in _leaf_diffs(_stable(bulk), _stable(real))[:10]]
    finally:
        if saved is None:
            os.environ.pop("AUDIT_EVIDENCE_GATING", None)
        else:
            os.environ["AUDIT_EVIDENCE_GATING"] = saved
        get_settings.cache_clear()
    return {"ok": not diffs and checked > 0, "audits": checked, "diffs": diffs}


def verify_audit_against_write_path(audit_id: int) -> dict[str, Any]:
    """Re-write one bulk-loaded audit without reviews through ``db.audits.upsert_step_result`` (same
    step outputs) inside a rolled-back transaction, and compare the export's records of it before and
    after. Returns ``{"ok": bool, "records": n, "diffs": [...]}``."""
    from sqlalchemy import delete
    from sqlalchemy.orm import Session

    from auditflow_dagster.db import audits as audit_db
    from auditflow_dagster.db.audit_reads import ListParams
    from auditflow_dagster.db.configs import load_config
    from auditflow_dagster.db.exports import iter_export_records
    from auditflow_dagster.db.models import Audit, AuditStepResult
    from auditflow_dagster.db.session import get_engine

    with Session(get_engine()) as s:
        audit = s.get(Audit, audit_id)
        fiche = s.get(FicheCache, audit.fiche_cache_id)
        params = ListParams(fiche_ids=[fiche.fiche_id])
        bulk = list(iter_export_records(s, params))
        steps = load_config(s, audit.audit_config_id)[1].steps
        s.execute(delete(AuditStepResult).where(AuditStepResult.audit_id == audit_id))
        for st, out in zip(steps, audit_step_outputs(fiche.fiche_id, steps), strict=True):
            audit_db.upsert_step_result(s, audit_id, st, out, usage={"prompt_tokens": 3000, "completion_tokens": 400,
                                                                     "total_tokens": 3400}, model="bench")
        s.flush()
        real = list(iter_export_records(s, params))
        s.rollback()
    diffs = [f"record {i}: bulk {b} vs write path {r}" for i, (b, r) in enumerate(zip(bulk, real)) if b != r]
    if len(bulk) != len(real):
        diffs.append(f"{len(bulk)} bulk records vs {len(real)} write-path records")
    return {"ok": not diffs, "records": len(bulk), "diffs": diffs}
