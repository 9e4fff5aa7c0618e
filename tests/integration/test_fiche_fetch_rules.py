"""The single-fiche fetch rules of spec 01 §2.6/§2.7 in the ``fiche_details`` asset (TTL,
force-refresh cooldown, not-found marker, 404 with recordings, self-heal), and
``GET /api/fiches/{id}`` on top of them (the Dagster launch replaced by an in-process materialize)."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from dagster import materialize
from sqlalchemy import update
from starlette.testclient import TestClient

from api.app import create_app
from auditflow_dagster.assets.fiches import fiche_details
from auditflow_dagster.db import fiches as fiche_db
from auditflow_dagster.db.clock import now_utc
from auditflow_dagster.db.models import FicheCache, Recording
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.resources.crm import CrmNotFound, CrmResource, SampleCrmClient
from auditflow_dagster.resources.database import DatabaseResource
from auditflow_dagster.sample import generator
from auditflow_dagster.settings import get_settings

DAY = dt.date(2026, 3, 12)
UNKNOWN = "900000000999"  # decodes to no synthetic fiche: the sample CRM answers 404
RESOURCES = {"crm": CrmResource(mode="sample"), "db": DatabaseResource()}


@pytest.fixture()
def crm(monkeypatch):
    """Records every details call; fiche ids added to ``crm.missing`` answer 404."""

    class Spy:
        calls: list[tuple[str, bool]] = []
        missing: set[str] = set()

    spy = Spy()
    spy.calls, spy.missing = [], set()
    original = SampleCrmClient.fiche_details

    async def fiche_details_spy(self, fiche_id, include_mail_devis=False):
        spy.calls.append((fiche_id, include_mail_devis))
        if fiche_id in spy.missing:
            raise CrmNotFound("CRM gateway GET /fiches/by-id failed: status=404", path="/fiches/by-id/")
        return await original(self, fiche_id, include_mail_devis)

    monkeypatch.setattr(SampleCrmClient, "fiche_details", fiche_details_spy)
    return spy


def _run(instance, fiche_id: str, **config) -> str:
    if fiche_id not in instance.get_dynamic_partitions("fiches"):
        instance.add_dynamic_partitions("fiches", [fiche_id])
    result = materialize([fiche_details], partition_key=fiche_id, instance=instance, resources=RESOURCES,
                         run_config={"ops": {"fiche_details": {"config": config}}}, raise_on_error=False)
    assert result.success
    meta = result.asset_materializations_for_node("fiche_details")[0].metadata
    return next(k for k in ("fetched", "cached", "not_found", "failed") if k in meta)


def _age(fiche_id: str, *, fetched_ms_ago: int = 0, expired: bool = False) -> None:
    with session_scope() as s:
        values = {"fetched_at": now_utc() - dt.timedelta(milliseconds=fetched_ms_ago)}
        if expired:
            values["expires_at"] = now_utc() - dt.timedelta(seconds=1)
        s.execute(update(FicheCache).where(FicheCache.fiche_id == fiche_id).values(**values))


def _fiche_with_recordings() -> str:
    return next(f["id"] for f in generator.fiches_for_day(DAY) if f["recordings"])


def test_ttl_cooldown_and_self_heal(db, dagster_instance, crm):
    fid = _fiche_with_recordings()
    cooldown = get_settings().fiche_force_refresh_cooldown_ms
    assert cooldown > 0
    assert _run(dagster_instance, fid) == "fetched" and len(crm.calls) == 1
    assert _run(dagster_instance, fid) == "cached" and len(crm.calls) == 1
    # force_refresh inside the cooldown of an unexpired row: the cache answers
    assert _run(dagster_instance, fid, force_refresh=True) == "cached" and len(crm.calls) == 1
    _age(fid, fetched_ms_ago=cooldown + 1000)
    assert _run(dagster_instance, fid, force_refresh=True) == "fetched" and len(crm.calls) == 2
    # the API's explicit refresh ignores the cooldown
    assert _run(dagster_instance, fid, force_refresh=True, bypass_cooldown=True) == "fetched" and len(crm.calls) == 3
    # expired → fetch, even inside the cooldown window
    _age(fid, expired=True)
    assert _run(dagster_instance, fid) == "fetched" and len(crm.calls) == 4
    # self-heal: a blank recording URL
    with session_scope() as s:
        s.execute(update(Recording).values(recording_url=""))
    assert _run(dagster_instance, fid) == "fetched" and len(crm.calls) == 5
    assert _run(dagster_instance, fid) == "cached" and len(crm.calls) == 5
    # self-heal: a sales-list write cannot downgrade, but a list-only row is always fetched
    other = next(f for f in generator.fiches_for_day(DAY) if f["id"] != fid)
    with session_scope() as s:
        fiche_db.upsert_sales_list(s, [other], sales_date=DAY.isoformat(), ttl_hours=240)
    assert _run(dagster_instance, other["id"]) == "fetched"
    # include_mail_devis on a row without it → fetch asking for it; then it is stored
    assert _run(dagster_instance, fid, include_mail_devis=True) == "fetched"
    assert crm.calls[-1] == (fid, True)
    n = len(crm.calls)
    assert _run(dagster_instance, fid, include_mail_devis=True) == "cached" and len(crm.calls) == n
    assert [md for _, md in crm.calls].count(True) == 1  # background fetches never ask for it


def test_not_found_marker_rules(db, dagster_instance, crm):
    settings = get_settings()
    assert _run(dagster_instance, UNKNOWN) == "not_found" and len(crm.calls) == 1
    with session_scope() as s:
        row = fiche_db.get_row(s, UNKNOWN)
        assert fiche_db.is_not_found_marker(row) and row.raw_data == {} and row.recordings_count == 0
        ttl = row.expires_at - row.fetched_at
    assert ttl == dt.timedelta(milliseconds=settings.fiche_not_found_ttl_ms)
    # unexpired marker: terminal not-found without a CRM call, force_refresh inside the cooldown too
    assert _run(dagster_instance, UNKNOWN) == "not_found" and len(crm.calls) == 1
    assert _run(dagster_instance, UNKNOWN, force_refresh=True) == "not_found" and len(crm.calls) == 1
    # effective force (cooldown elapsed) or an expired marker → ask the CRM again
    _age(UNKNOWN, fetched_ms_ago=settings.fiche_force_refresh_cooldown_ms + 1000)
    assert _run(dagster_instance, UNKNOWN, force_refresh=True) == "not_found" and len(crm.calls) == 2
    _age(UNKNOWN, expired=True)
    assert _run(dagster_instance, UNKNOWN) == "not_found" and len(crm.calls) == 3


def test_404_keeps_a_cache_with_recordings(db, dagster_instance, crm):
    settings = get_settings()
    with_recs = _fiche_with_recordings()
    without = next(f["id"] for f in generator.fiches_for_day(DAY) if not f["recordings"])
    for fid in (with_recs, without):
        assert _run(dagster_instance, fid) == "fetched"
        crm.missing.add(fid)
        _age(fid, fetched_ms_ago=settings.fiche_force_refresh_cooldown_ms + 1000)
    assert _run(dagster_instance, with_recs, force_refresh=True) == "cached"
    with session_scope() as s:
        row = fiche_db.get_row(s, with_recs)
        assert row.details_success is True and fiche_db.details_ready(s, row)
    # no recordings: the 404 becomes a marker, the stored data stays
    assert _run(dagster_instance, without, force_refresh=True) == "not_found"
    with session_scope() as s:
        row = fiche_db.get_row(s, without)
        assert fiche_db.is_not_found_marker(row) and row.groupe is not None
        assert fiche_db.read_fiche_details(s, row)["information"]["fiche_id"] == without


# ------------------------------------------------------------------------------------------------
# GET /api/fiches/{fiche_id}
# ------------------------------------------------------------------------------------------------


class InProcessDagster:
    """Stands in for the GraphQL client: ``fetch_fiche`` runs as an in-process materialize."""

    def __init__(self, instance) -> None:
        self.instance = instance
        self.launched: list[tuple[str, dict, dict]] = []
        self.fail = False
        self._status: dict[str, str] = {}

    async def add_fiche_partition(self, fiche_id: str) -> None:
        if fiche_id not in self.instance.get_dynamic_partitions("fiches"):
            self.instance.add_dynamic_partitions("fiches", [fiche_id])

    async def launch_job(self, job_name: str, *, run_config: dict, tags: dict) -> str:
        self.launched.append((job_name, run_config, tags))
        if self.fail:
            self._status["x"] = "FAILURE"
            return "x"
        result = await asyncio.to_thread(
            materialize, [fiche_details], partition_key=tags["dagster/partition"], instance=self.instance,
            resources=RESOURCES, run_config=run_config, raise_on_error=False)
        self._status[result.run_id] = "SUCCESS" if result.success else "FAILURE"
        return result.run_id

    async def run_status(self, run_id: str) -> str:
        return self._status[run_id]

    async def aclose(self) -> None:
        return None


@pytest.fixture()
def api(db, dagster_instance):
    with TestClient(create_app(dagster_url="http://127.0.0.1:9/graphql"), raise_server_exceptions=False) as c:
        c.app.state.dagster = InProcessDagster(dagster_instance)
        yield c, c.app.state.dagster


def test_api_fiche_detail_rules(api, crm):
    client, dagster = api
    r = client.get("/api/fiches/12ab")
    assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND" and not dagster.launched
    fid = _fiche_with_recordings()
    # no row → fetch through fetch_fiche, with the run_config shape the job expects
    r = client.get(f"/api/fiches/{fid}")
    assert r.status_code == 200 and r.json()["information"]["fiche_id"] == fid and "mail_devis" not in r.json()
    job, run_config, tags = dagster.launched[-1]
    assert job == "fetch_fiche" and tags["dagster/partition"] == fid
    assert run_config == {"ops": {"fiche_details": {"config": {
        "force_refresh": True, "bypass_cooldown": True, "include_mail_devis": False}}}}
    # fresh → served from the cache
    assert client.get(f"/api/fiches/{fid}").status_code == 200 and len(dagster.launched) == 1
    # include_mail_devis must be exactly "true"
    assert "mail_devis" not in client.get(f"/api/fiches/{fid}?include_mail_devis=TRUE").json()
    assert len(dagster.launched) == 1
    r = client.get(f"/api/fiches/{fid}?include_mail_devis=true")
    assert r.status_code == 200 and "mail_devis" in r.json()
    assert dagster.launched[-1][1]["ops"]["fiche_details"]["config"]["include_mail_devis"] is True
    assert crm.calls[-1] == (fid, True)
    assert "mail_devis" in client.get(f"/api/fiches/{fid}?include_mail_devis=true").json()
    assert len(dagster.launched) == 2  # stored now (object or null marker): no refetch loop
    # refresh=true always fetches (the cooldown does not apply)
    n = len(crm.calls)
    assert client.get(f"/api/fiches/{fid}?refresh=true").status_code == 200 and len(crm.calls) == n + 1
    # expired → refetch; if the refetch fails the stale cache is served
    _age(fid, expired=True)
    dagster.fail = True
    r = client.get(f"/api/fiches/{fid}")
    assert r.status_code == 200 and r.json()["information"]["fiche_id"] == fid and len(dagster.launched) == 4


def test_api_marker_and_list_only_rows(api, crm):
    client, dagster = api
    r = client.get(f"/api/fiches/{UNKNOWN}")
    assert r.status_code == 404 and len(dagster.launched) == 1 and len(crm.calls) == 1
    # marker within its TTL: 404 straight from the cache, never a hollow 200
    r = client.get(f"/api/fiches/{UNKNOWN}")
    assert r.status_code == 404 and r.json()["success"] is False and len(dagster.launched) == 1
    # expired marker → refetch
    _age(UNKNOWN, expired=True)
    assert client.get(f"/api/fiches/{UNKNOWN}").status_code == 404 and len(crm.calls) == 2
    # a list-only row is never served as details: fetch, and no fallback when that fails
    item = generator.fiches_for_day(DAY)[2]
    assert item["id"] != UNKNOWN
    with session_scope() as s:
        fiche_db.upsert_sales_list(s, [item], sales_date=DAY.isoformat(), ttl_hours=240)
    dagster.fail = True
    r = client.get(f"/api/fiches/{item['id']}")
    assert r.status_code == 502 and r.json()["code"] == "EXTERNAL_API_ERROR"
    dagster.fail = False
    r = client.get(f"/api/fiches/{item['id']}")
    assert r.status_code == 200 and r.json()["information"]["fiche_id"] == item["id"]
    assert "_salesListOnly" not in r.json()
