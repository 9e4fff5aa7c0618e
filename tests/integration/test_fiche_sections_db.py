"""Normalized fiche sections on a real PostgreSQL: write → read round trips, mail-devis and
not-found rules, renormalize and inspect (spec 01 §2.2–§2.7)."""

from __future__ import annotations

import datetime as dt

from hypothesis import HealthCheck, given, settings
from sqlalchemy import func, select, text

from auditflow_dagster import inspect_cli
from auditflow_dagster.core import fiche_sections as fs
from auditflow_dagster.db import fiches as fiche_db
from auditflow_dagster.db.clock import now_utc
from auditflow_dagster.db.models import (
    SECTION_MODELS,
    FicheCache,
    FicheCacheDocument,
    FicheCacheMailDevis,
)
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.sample import generator
from tests.unit.test_fiche_sections import canonical, payloads

DAY = dt.date(2026, 3, 11)


def _counts(s) -> dict[str, int]:
    return {t: s.scalar(select(func.count()).select_from(m)) for t, m in SECTION_MODELS.items()}


def _read(fiche_id: str, include_mail_devis: bool = True) -> dict:
    with session_scope() as s:
        return fiche_db.read_fiche_details(s, fiche_db.get_row(s, fiche_id), include_mail_devis=include_mail_devis)


def _without_recordings(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "recordings"}


def test_whole_day_round_trip(db):
    fiches = generator.fiches_for_day(DAY)
    payloads_by_id = {f["id"]: generator.fiche_details_payload(f["id"], include_mail_devis=True) for f in fiches}
    with session_scope() as s:
        for fiche_id, payload in payloads_by_id.items():
            fiche_db.write_full_details(s, fiche_id, payload, ttl_hours=240)
    with session_scope() as s:
        counts = _counts(s)
        rows = {r.fiche_id: r for r in s.scalars(select(FicheCache))}
    assert all(n > 0 for n in counts.values()), counts  # every section table holds rows
    for fiche_id, payload in payloads_by_id.items():
        assert rows[fiche_id].raw_data == ({"mail_devis": None} if payload["mail_devis"] is None else {})
        data = _read(fiche_id)
        assert fs.json_equal(_without_recordings(data), canonical(payload)), fiche_id
        assert {r["call_id"] for r in data["recordings"]} == {r["call_id"] for r in payload["recordings"]}
        starts = [r["start_time"] for r in data["recordings"]]
        assert starts == sorted(starts, reverse=True)
        assert "mail_devis" not in _read(fiche_id, include_mail_devis=False)
    # a second write of the same payloads replaces (no duplicates, same rebuilt shape)
    with session_scope() as s:
        for fiche_id, payload in payloads_by_id.items():
            fiche_db.write_full_details(s, fiche_id, payload, ttl_hours=240)
    with session_scope() as s:
        assert _counts(s) == counts


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(payload=payloads())
def test_generated_payloads_round_trip_through_postgres(db, payload):
    with session_scope() as s:  # the fixture truncates once per test; each example starts empty
        s.execute(text("TRUNCATE fiche_cache RESTART IDENTITY CASCADE"))
    with session_scope() as s:
        fiche_db.write_full_details(s, "900000042", payload, ttl_hours=240)
    data = _read("900000042")
    assert fs.json_equal(_without_recordings(data), canonical(payload))


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(payload=payloads())
def test_generated_payloads_round_trip_through_the_http_api(db, payload):
    """What ``GET /api/fiches/{id}?include_mail_devis=true`` answers is the CRM payload as JSON
    (recordings aside: those are served from their own rows, spec 01 §2.5)."""
    from starlette.testclient import TestClient

    from api.app import create_app

    with session_scope() as s:
        s.execute(text("TRUNCATE fiche_cache RESTART IDENTITY CASCADE"))
    payload = {**payload, "success": True}  # the CRM client turns success:false into an error, never a write
    with session_scope() as s:
        fiche_db.write_full_details(s, "900000043", payload, ttl_hours=240)
    # asking for the mail devis when the CRM sent none triggers a refetch (spec 01 §2.6), so ask only then
    params = {"include_mail_devis": "true"} if "mail_devis" in payload else {}
    with TestClient(create_app(dagster_url="http://127.0.0.1:9/graphql")) as client:
        r = client.get("/api/fiches/900000043", params=params)
    assert r.status_code == 200, r.text
    assert fs.json_equal(_without_recordings(r.json()), canonical(payload))


def test_mail_devis_written_only_when_the_key_is_present(db):
    fiche_id = next(f["id"] for f in generator.fiches_for_day(DAY)
                    if generator.fiche_details_payload(f["id"], True)["mail_devis"] is not None)
    with_md = generator.fiche_details_payload(fiche_id, include_mail_devis=True)
    without = generator.fiche_details_payload(fiche_id, include_mail_devis=False)
    with session_scope() as s:
        fiche_db.write_full_details(s, fiche_id, with_md, ttl_hours=240)
    with session_scope() as s:  # a background fetch (no key) keeps the stored mail devis
        fiche_db.write_full_details(s, fiche_id, without, ttl_hours=240)
    assert fs.json_equal(_read(fiche_id)["mail_devis"], with_md["mail_devis"])
    with session_scope() as s:  # null → rows deleted, marker stored
        fiche_db.write_full_details(s, fiche_id, {**without, "mail_devis": None}, ttl_hours=240)
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(FicheCacheMailDevis)) == 0
        row = fiche_db.get_row(s, fiche_id)
        assert row.raw_data == {"mail_devis": None} and fiche_db.has_mail_devis(s, row)
    with session_scope() as s:  # the marker survives a write without the key
        fiche_db.write_full_details(s, fiche_id, without, ttl_hours=240)
    data = _read(fiche_id)
    assert "mail_devis" in data and data["mail_devis"] is None
    with session_scope() as s:  # object → replaces the marker
        fiche_db.write_full_details(s, fiche_id, with_md, ttl_hours=240)
        row = fiche_db.get_row(s, fiche_id)
        assert row.raw_data == {}
        assert fiche_db.cached_details(s, fiche_id, include_mail_devis=True)[0] == "fresh"


def test_lists_are_replaced_and_sales_date_kept(db):
    fiche_id = generator.fiches_for_day(DAY)[0]["id"]
    payload = generator.fiche_details_payload(fiche_id)
    with session_scope() as s:
        fiche_db.upsert_sales_list(s, [generator.fiches_for_day(DAY)[0]], sales_date="2026-01-01", ttl_hours=240)
        fiche_db.write_full_details(s, fiche_id, payload, ttl_hours=240, sales_date="2026-02-02")
    shorter = {**payload, "documents": payload["documents"][:1], "conjoint": None, "prospect": None}
    with session_scope() as s:
        fiche_db.write_full_details(s, fiche_id, shorter, ttl_hours=240)
        row = fiche_db.get_row(s, fiche_id)
        assert row.sales_date == "2026-01-01"  # never overwritten by details
        assert s.scalar(select(func.count()).select_from(FicheCacheDocument)) == 1
    data = _read(fiche_id)
    assert data["documents"] == payload["documents"][:1]
    assert data["conjoint"] is None and data["prospect"] is None


def test_not_found_marker(db):
    with session_scope() as s:
        row = fiche_db.write_not_found_marker(s, "900000777", ttl_ms=300_000)
        assert (row.details_success, row.details_message, row.raw_data, row.recordings_count) == (False, "NOT_FOUND", {}, 0)
        assert dt.timedelta(seconds=299) < row.expires_at - now_utc() <= dt.timedelta(seconds=300)
        assert fiche_db.is_not_found_marker(row) and not fiche_db.details_ready(s, row)
        assert fiche_db.cached_details(s, "900000777")[0] == "not_found"
    fiche_id = generator.fiches_for_day(DAY)[1]["id"]
    payload = generator.fiche_details_payload(fiche_id)
    with session_scope() as s:
        fiche_db.write_full_details(s, fiche_id, payload, ttl_hours=240)
    with session_scope() as s:  # an existing row keeps its data, only flags and timestamps change
        row = fiche_db.write_not_found_marker(s, fiche_id, ttl_ms=60_000)
        assert row.recordings_count == len(payload["recordings"]) and row.groupe == payload["information"]["groupe"]
        assert fiche_db.cached_details(s, fiche_id)[0] == "not_found"
        row.expires_at = now_utc() - dt.timedelta(seconds=1)
    with session_scope() as s:
        assert fiche_db.cached_details(s, fiche_id)[0] == "not_ready"  # expired marker → refetch
        assert fs.json_equal(fiche_db.read_fiche_details(s, fiche_db.get_row(s, fiche_id))["information"],
                             payload["information"])


def test_renormalize_moves_legacy_raw_data_into_tables_and_resumes(db, capsys):
    fiches = generator.fiches_for_day(DAY)[:5]
    ids = sorted(f["id"] for f in fiches)
    expected = {}
    with session_scope() as s:
        for fiche_id in ids:
            payload = generator.fiche_details_payload(fiche_id, include_mail_devis=True)
            expected[fiche_id] = _without_recordings(canonical(payload))
            row = fiche_db.write_full_details(s, fiche_id, payload, ttl_hours=240)
            # simulate the previous writer: only information + prospect normalized, rest in raw_data
            for table, model in SECTION_MODELS.items():
                if table not in ("fiche_cache_information", "fiche_cache_etiquettes", "fiche_cache_prospects") \
                        and fs.PARENT_FK[table][0] == "fiche_cache":
                    s.execute(model.__table__.delete().where(model.fiche_cache_id == row.id))
            row.raw_data = {k: v for k, v in payload.items()
                            if k not in ("success", "message", "cle", "recordings", "information", "prospect")}
        fiche_db.upsert_sales_list(s, [f for f in generator.fiches_for_day(DAY)[5:6]], sales_date=None, ttl_hours=240)
        before = {r.fiche_id: (r.fetched_at, r.expires_at) for r in s.scalars(select(FicheCache))}
    for fiche_id in ids:  # the legacy rows already read back complete
        assert fs.json_equal(_without_recordings(_read(fiche_id)), expected[fiche_id])
    first = inspect_cli.renormalize(batch_size=2, resume_after=None)
    assert first["processed"] == 6 and first["changed"] == 5 and first["batches"] == 3
    assert first["last_fiche_id"] == max([*ids, generator.fiches_for_day(DAY)[5]["id"]])
    assert "renormalize: batch 1: 2 fiches" in capsys.readouterr().out
    with session_scope() as s:
        for r in s.scalars(select(FicheCache)):
            assert (r.fetched_at, r.expires_at) == before[r.fiche_id]
            if r.fiche_id in expected:
                assert r.raw_data in ({}, {"mail_devis": None})
        assert all(n > 0 for t, n in _counts(s).items() if t != "fiche_cache_reclamations")
    for fiche_id in ids:
        assert fs.json_equal(_without_recordings(_read(fiche_id)), expected[fiche_id])
    again = inspect_cli.renormalize(batch_size=100, resume_after=ids[1])  # resumable, idempotent
    assert again["processed"] == 4 and again["changed"] == 0


def test_inspect_fiche_report(db):
    fiche_id = next(f["id"] for f in generator.fiches_for_day(DAY) if f["recordings"])
    assert "not cached" in inspect_cli.inspect_fiche(fiche_id) and ": missing →" in inspect_cli.inspect_fiche(fiche_id)
    payload = generator.fiche_details_payload(fiche_id, include_mail_devis=True)
    with session_scope() as s:
        fiche_db.write_full_details(s, fiche_id, payload, ttl_hours=240)
    report = inspect_cli.inspect_fiche(fiche_id, show_payload=True)
    assert "kind: full details" in report
    docs = next(line for line in report.splitlines() if line.strip().startswith("fiche_cache_documents "))
    assert int(docs.split()[1]) == len(payload["documents"]) and int(docs.split()[2]) > 0
    assert f"API GET /api/fiches/{fiche_id}?include_mail_devis=true: fresh → 200" in report
    assert f"recordings: {len(payload['recordings'])} rows (0 without URL)" in report
    assert '"information": {' in report
    with session_scope() as s:
        fiche_db.write_not_found_marker(s, "900000999", ttl_ms=300_000)
    assert ": not_found → 404" in inspect_cli.inspect_fiche("900000999", include_mail_devis=False)


def test_cli_has_both_commands():
    from click.testing import CliRunner

    from auditflow_dagster.cli import auditflow

    assert auditflow.commands["inspect-fiche"] is inspect_cli.inspect_fiche_cmd
    assert auditflow.commands["renormalize"] is inspect_cli.renormalize_cmd
    ctx = inspect_cli.inspect_fiche_cmd.make_context("inspect-fiche", ["123", "--payload"])
    assert ctx.params == {"fiche_id": "123", "payload": True, "no_mail_devis": False}
    ctx = inspect_cli.renormalize_cmd.make_context("renormalize", ["--batch-size", "50", "--resume-after", "9"])
    assert ctx.params == {"batch_size": 50, "resume_after": "9"}
    assert CliRunner().invoke(auditflow, ["renormalize", "--batch-size", "0"]).exit_code == 2
