"""Fiche cache writers on a real PostgreSQL: the rules that protect stored data."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from auditflow_dagster.db import fiches as fiche_db
from auditflow_dagster.db.models import FicheCache, Recording
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.sample import generator

DAY = dt.date(2026, 3, 10)


def _details(fiche_id: str) -> dict:
    payload = generator.fiche_details_payload(fiche_id, include_mail_devis=False)
    assert payload is not None
    return payload


def test_sales_list_then_details_then_sales_list_keeps_details(db):
    sales = generator.sales_list_payload(DAY, DAY, include_recordings=False)["fiches"]
    fiche_id = sales[0]["id"]
    with session_scope() as s:
        written = fiche_db.upsert_sales_list(s, sales, sales_date=DAY.isoformat(), ttl_hours=240)
        assert written[0] == fiche_id
        row = fiche_db.get_row(s, fiche_id)
        assert fiche_db.is_sales_list_only(row) and not fiche_db.details_ready(s, row)
    with session_scope() as s:
        fiche_db.write_full_details(s, fiche_id, _details(fiche_id), ttl_hours=240)
    with session_scope() as s:
        row = fiche_db.get_row(s, fiche_id)
        before = (row.recordings_count, row.expires_at, row.groupe)
        assert fiche_db.details_ready(s, row)
    # A later list write (no recordings requested) must not downgrade the full-details row.
    with session_scope() as s:
        fiche_db.upsert_sales_list(s, sales, sales_date=None, ttl_hours=240)
    with session_scope() as s:
        row = fiche_db.get_row(s, fiche_id)
        assert not fiche_db.is_sales_list_only(row)
        assert (row.recordings_count, row.expires_at, row.groupe) == before
        assert row.sales_date == DAY.isoformat()
        assert fiche_db.details_ready(s, row)


def test_details_round_trip_rebuilds_crm_shape(db):
    fiche_id = next(f["id"] for f in generator.sales_list_payload(DAY, DAY, True)["fiches"] if f["recordings"])
    payload = _details(fiche_id)
    with session_scope() as s:
        fiche_db.write_full_details(s, fiche_id, payload, ttl_hours=240)
    with session_scope() as s:
        row = fiche_db.get_row(s, fiche_id)
        data = fiche_db.read_fiche_details(s, row)
    assert data["success"] is True
    assert data["information"]["fiche_id"] == fiche_id
    assert data["information"]["groupe"] == payload["information"]["groupe"]
    assert [e["nom"] for e in data["information"]["etiquettes"]] == [e["nom"] for e in payload["information"].get("etiquettes") or []]
    assert data["prospect"]["nom"] == payload["prospect"]["nom"]
    for section in ("documents", "commentaires", "mails", "enfants", "tarification"):
        assert data[section] == (payload.get(section) or []), section
    assert {r["call_id"] for r in data["recordings"]} == {r["call_id"] for r in payload["recordings"]}


def test_recording_upsert_never_blanks_a_url(db):
    fiche_id = next(f["id"] for f in generator.sales_list_payload(DAY, DAY, True)["fiches"] if f["recordings"])
    payload = _details(fiche_id)
    with session_scope() as s:
        row = fiche_db.write_full_details(s, fiche_id, payload, ttl_hours=240)
        cache_id = row.id
    first = payload["recordings"][0]
    blank = {**first, "recording_url": "", "direction": None}
    with session_scope() as s:
        fiche_db.upsert_recordings(s, cache_id, [blank, {**first, "call_id": ""}])
    with session_scope() as s:
        rec = s.scalar(select(Recording).where(Recording.fiche_cache_id == cache_id, Recording.call_id == str(first["call_id"])))
        assert rec.recording_url == first["recording_url"].strip()
        assert rec.direction == first["direction"]
        assert s.scalar(select(Recording).where(Recording.call_id == "")) is None


def test_status_by_date_counts(db):
    sales = generator.sales_list_payload(DAY, DAY, include_recordings=True)["fiches"]
    with session_scope() as s:
        fiche_db.upsert_sales_list(s, sales, sales_date=DAY.isoformat(), ttl_hours=240)
    with session_scope() as s:
        items = fiche_db.status_by_date(s, DAY.isoformat())
        total_rows = s.scalar(select(FicheCache).where(FicheCache.sales_date == DAY.isoformat()).limit(1))
    assert total_rows is not None
    assert len(items) == len(sales)
    by_id = {i["ficheId"]: i for i in items}
    for f in sales:
        item = by_id[f["id"]]
        assert item["transcription"]["total"] == len(f["recordings"])
        assert item["transcription"]["transcribed"] == 0
        assert item["transcription"]["isComplete"] is False
        assert item["audit"]["total"] == 0
