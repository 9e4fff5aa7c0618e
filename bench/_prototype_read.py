"""Evidence for a suggested fix, NOT production code: the detail read in 3 statements instead of 21.

``fiche_db.cached_details`` issues one SELECT per section table and per child level (18 for a
fiche without mail devis) plus ``get_row``, ``details_ready`` and the recordings: 21 statements,
each paying SQLAlchemy statement construction, cache-key generation and result processing.
This prototype keeps ``get_row`` and ``_recordings_view`` as they are and fetches every section,
children nested, in ONE statement (a ``jsonb_agg`` sub-select per table, generated from
``core.fiche_sections`` metadata, same ordering as ``_load_level``), then calls the same
``fs.rebuild_details``. The benchmark checks that its output equals ``cached_details`` for every
sampled fiche before reporting its timing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from auditflow_dagster.core import fiche_sections as fs
from auditflow_dagster.db import fiches as fiche_db

_ONE_TO_ONE = {*fs.ONE_TO_ONE_SECTIONS.values(), "fiche_cache_mail_devis"}


def _level(table: str, parent_ref: str, depth: int) -> str:
    a = f"t{depth}"
    fk = fs.PARENT_FK[table][1]
    index = fs.INDEX_COLUMN.get(table)
    order = f"{a}.{index}, {a}.id" if index else f"{a}.id"
    row = f"(to_jsonb({a}) - 'id' - 'created_at' - 'updated_at' - '{fk}')"
    children = fs.CHILD_TABLES.get(table, [])
    if children:
        kids = ", ".join(f"'{c}', {_level(c, f'{a}.id', depth + 1)}" for c in children)
        row = f"({row} || jsonb_build_object('children', jsonb_build_object({kids})))"
    return f"(SELECT coalesce(jsonb_agg({row} ORDER BY {order}), '[]'::jsonb) FROM {table} {a} WHERE {a}.{fk} = {parent_ref})"


def _sections_sql(include_mail_devis: bool) -> str:
    tables = [t for t in fs.SECTION_TABLES if include_mail_devis or t != "fiche_cache_mail_devis"]
    return "SELECT " + ", ".join(f"{_level(t, ':id', 0)} AS {t}" for t in tables)


SQL = {md: text(_sections_sql(md)) for md in (False, True)}


def cached_details_3(session: Session, fiche_id: str, *, include_mail_devis: bool = False) -> tuple[str, dict[str, Any] | None]:
    """Same contract as ``fiche_db.cached_details``."""
    row = fiche_db.get_row(session, fiche_id)
    if row is None:
        return "missing", None
    now = fiche_db.now_utc()
    if fiche_db.is_not_found_marker(row):
        return ("not_found" if row.expires_at > now else "not_ready"), None
    if fiche_db.is_sales_list_only(row) or row.details_success is not True:
        return "not_ready", None
    res = session.execute(SQL[include_mail_devis], {"id": row.id}).mappings().one()
    sections = {t: ((v[0] if v else None) if t in _ONE_TO_ONE else v) for t, v in res.items()}
    if sections["fiche_cache_information"] is None:
        return "not_ready", None
    data = fs.rebuild_details(fiche_db._fiche_columns(row), sections, include_mail_devis=include_mail_devis)
    recordings = fiche_db._recordings_view(session, row.id)
    out: dict[str, Any] = {}
    for k, v in data.items():
        if k == "raw_sections" and "recordings" not in out:
            out["recordings"] = recordings
        out[k] = v
    out.setdefault("recordings", recordings)
    if row.expires_at <= now:
        return "expired", out
    if include_mail_devis and "mail_devis" not in out:
        return "needs_mail_devis", out
    return "fresh", out
