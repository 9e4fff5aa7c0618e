"""Batch audits (spec 04 §5) end to end without Redis: ``POST /api/audits/batch`` against a fake
Dagster GraphQL (one ``launchPartitionBackfill`` per batch), the audits materialized in process
with each batch's run config, and the ``audit_batches_progress`` sensor counting each batch's own
audits (by tracking id) — a 40-fiche batch with 5 duplicates and an overlapping second batch."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pytest
from dagster import build_sensor_context, materialize
from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.testclient import TestClient

from api.app import create_app
from auditflow_dagster.assets.audits import audit_step_results, audits
from auditflow_dagster.assets.fiches import fiche_details
from auditflow_dagster.assets.sales import sales_list
from auditflow_dagster.assets.transcripts import transcripts
from auditflow_dagster.db import batches as batch_db
from auditflow_dagster.db.configs import ensure_bundled_config
from auditflow_dagster.db.models import Audit, AuditBatch, AuditBatchItem, Event
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.resources.crm import CrmResource
from auditflow_dagster.resources.database import DatabaseResource
from auditflow_dagster.resources.llm import LlmResource
from auditflow_dagster.resources.stt import SttResource
from auditflow_dagster.sample import generator
from auditflow_dagster.sensors.batches import audit_batches_progress
from tests.fakes.server import free_port_refusing, serve_app
from tests.integration.test_transcription_api import FakeDagster

DAY = "2026-03-20"
CHAIN = [fiche_details, transcripts, audit_step_results, audits]


class FakeDagsterWithBackfills(FakeDagster):
    """The transcription tests' fake, plus ``launchPartitionBackfill`` (recorded)."""

    def __init__(self) -> None:
        self.backfills: list[dict[str, Any]] = []
        self._bf_lock = threading.Lock()
        super().__init__()

    async def graphql(self, request: Request) -> Any:
        body = await request.json()
        if "launchPartitionBackfill" not in body["query"]:
            return await super().graphql(request)
        params = body["variables"]["params"]
        backfill_id = uuid.uuid4().hex[:8]
        with self._bf_lock:
            self.backfills.append({
                "id": backfill_id,
                "partitions": params["partitionNames"],
                "assets": [a["path"] for a in params["assetSelection"]],
                "tags": {t["key"]: t["value"] for t in params["tags"]},
                "title": params.get("title"),
                "run_config": json.loads(params["runConfigData"]),
            })
        return JSONResponse({"data": {"launchPartitionBackfill": {
            "__typename": "LaunchBackfillSuccess", "backfillId": backfill_id}}})


@pytest.fixture()
def fake():
    f = FakeDagsterWithBackfills()
    with serve_app(f.app) as url:
        f.url = f"{url}/graphql"
        yield f


@pytest.fixture()
def client(db, fake):
    with TestClient(create_app(dagster_url=fake.url), raise_server_exceptions=False) as c:
        yield c


def _resources() -> dict:
    return {"crm": CrmResource(mode="sample"), "stt": SttResource(mode="sample"),
            "llm": LlmResource(mode="offline"), "db": DatabaseResource()}


@pytest.fixture()
def config_id(db) -> int:
    with session_scope() as s:
        return ensure_bundled_config(s)


@pytest.fixture()
def day(config_id, dagster_instance) -> list[str]:
    assert materialize([sales_list], partition_key=DAY, instance=dagster_instance, resources=_resources()).success
    keys = list(dagster_instance.get_dynamic_partitions("fiches"))
    assert len(keys) == 40
    return keys


def _run_batch(instance, backfill: dict[str, Any]) -> None:
    """What the backfill's runs do: the chain over the batch's (contiguous) partitions, its run config."""
    parts = backfill["partitions"]
    tags = {"dagster/asset_partition_range_start": parts[0], "dagster/asset_partition_range_end": parts[-1]}
    assert materialize(CHAIN, instance=instance, resources=_resources(), tags=tags,
                       run_config=backfill["run_config"]).success


def _sensor(instance) -> str:
    return audit_batches_progress(build_sensor_context(instance=instance)).skip_message


def _events(batch_id: str, name: str) -> list[dict[str, Any]]:
    with session_scope() as s:
        rows = s.scalars(select(Event).where(Event.name == name, Event.channels.any(f"job-{batch_id}"))
                         .order_by(Event.id)).all()
        for e in rows:
            assert "global" in e.channels
        return [e.payload for e in rows]


def _failures(fiches: list[str]) -> int:
    return sum(1 for f in fiches if not generator.expected_audit(f)["auditable"])


def test_two_overlapping_batches_count_only_their_own_audits(client, fake, day, config_id, dagster_instance):
    first_ids = day[:5] + day + day[10:15][::-1]  # 5 duplicates up front, 5 more at the end
    assert len(first_ids) == 50
    r1 = client.post("/api/audits/batch", json={"fiche_ids": first_ids, "useRlm": False, "user_id": "u-1"})
    assert r1.status_code == 200, r1.text
    b1 = r1.json()
    assert b1["fiche_ids"] == day and b1["audit_config_id"] == config_id
    assert b1["message"] == "Batch audit queued for 40 fiches"
    assert b1["batch_id"].startswith("batch-") and b1["batch_id"].split("-")[2] == "40"
    second = day[25:40]
    b2 = client.post("/api/audits/batch", json={"fiche_ids": second, "audit_config_id": str(config_id),
                                                "use_rlm": False}).json()
    assert b2["success"] and b2["fiche_ids"] == second and b2["batch_id"] != b1["batch_id"]

    # ONE backfill per batch, over the batch's fiche partitions, carrying its own tracking ids
    assert len(fake.backfills) == 2 and fake.launches == []
    bf1, bf2 = fake.backfills
    assert b1["event_ids"] == [bf1["id"]] and b2["event_ids"] == [bf2["id"]]
    assert bf1["partitions"] == day and bf2["partitions"] == second
    assert bf1["assets"] == [["fiche_details"], ["transcripts"], ["audit_step_results"], ["audits"]]
    assert bf1["tags"]["auditflow/batch_id"] == b1["batch_id"] and bf1["tags"]["auditflow/trigger"] == "batch"
    cfg1 = bf1["run_config"]["ops"]["audit_step_results"]["config"]
    assert cfg1["trigger_source"] == "batch" and cfg1["audit_config_ids"] == [config_id] and cfg1["use_rlm"] is False
    assert cfg1["trigger_user_id"] == "u-1" and cfg1["skip_if_audited"] is False
    assert set(cfg1["audit_tracking_ids"]) == set(day)
    assert bf1["run_config"]["ops"]["fiche_details"]["config"]["audit_tracking_ids"] == cfg1["audit_tracking_ids"]
    cfg2 = bf2["run_config"]["ops"]["audit_step_results"]["config"]
    assert set(cfg2["audit_tracking_ids"]) == set(second)
    assert not set(cfg1["audit_tracking_ids"].values()) & set(cfg2["audit_tracking_ids"].values())
    assert set(day) <= set(fake.partitions)  # partitions re-registered before the backfill
    with session_scope() as s:
        items = {b: s.scalar(select(func.count()).select_from(AuditBatchItem).where(AuditBatchItem.batch_id == b))
                 for b in (b1["batch_id"], b2["batch_id"])}
    assert items == {b1["batch_id"]: 40, b2["batch_id"]: 15}
    for b, total in ((b1, 40), (b2, 15)):
        assert _events(b["batch_id"], "batch.progress") == [{"batch_id": b["batch_id"], "operation_type": "audit",
                                                            "total": total, "completed": 0, "failed": 0,
                                                            "progress_percentage": 0}]

    # the second batch's audits run first: only batch 2 moves, though they share fiches and config
    assert "running=2" in _sensor(dagster_instance)
    _run_batch(dagster_instance, bf2)
    _sensor(dagster_instance)
    s2 = client.get(f"/api/audits/batch/{b2['batch_id']}").json()["data"]
    s1 = client.get(f"/api/audits/batch/{b1['batch_id']}").json()["data"]
    assert (s2["status"], s2["total"], s2["completed"], s2["failed"]) == ("completed", 15, 15, _failures(second))
    assert (s1["status"], s1["total"], s1["completed"], s1["failed"]) == ("running", 40, 0, 0)
    assert all(i["status"] == "pending" and i["audit_id"] is None for i in s1["items"])
    progress2 = _events(b2["batch_id"], "batch.progress")
    assert len(progress2) == 1 + 15 and [p["completed"] for p in progress2] == list(range(16))
    assert progress2[-1]["progress_percentage"] == 100 and progress2[-1]["failed"] == _failures(second)
    [done2] = _events(b2["batch_id"], "batch.completed")
    assert done2["total"] == 15 and done2["completed"] == 15 and done2["failed"] == _failures(second)
    assert done2["operation_type"] == "audit" and done2["duration_ms"] >= 0

    # then the first batch: it completes with exactly its own 40; batch 2 is untouched
    _run_batch(dagster_instance, bf1)
    assert "finalized=1" in _sensor(dagster_instance)
    s1 = client.get(f"/api/audits/batch/{b1['batch_id']}").json()["data"]
    assert (s1["status"], s1["total"], s1["completed"], s1["failed"]) == ("completed", 40, 40, _failures(day))
    assert s1["succeeded"] == 40 - _failures(day) and s1["progress_percentage"] == 100
    assert [i["fiche_id"] for i in s1["items"]] == day
    with session_scope() as s:
        own = dict(s.execute(select(Audit.tracking_id, Audit.id)).all())
        assert s.scalar(select(func.count()).select_from(Audit)) == 55  # 40 + 15, each batch its own audits
        assert set(s.scalars(select(Audit.trigger_source))) == {"batch"}
    assert {i["audit_id"] for i in s1["items"]} == {str(own[t]) for t in cfg1["audit_tracking_ids"].values()}
    [done1] = _events(b1["batch_id"], "batch.completed")
    assert (done1["total"], done1["completed"], done1["failed"]) == (40, 40, _failures(day))
    assert len(_events(b1["batch_id"], "batch.progress")) == 41

    # idempotent: more ticks publish nothing more, and the finished batches are left alone
    assert "running=0" in _sensor(dagster_instance)
    with session_scope() as s:
        assert batch_db.refresh_batch(s, b1["batch_id"]) is None
    assert len(_events(b1["batch_id"], "batch.completed")) == 1 and len(_events(b2["batch_id"], "batch.completed")) == 1
    assert len(_events(b2["batch_id"], "batch.progress")) == 16
    s2_again = client.get(f"/api/audits/batch/{b2['batch_id']}").json()["data"]
    assert (s2_again["completed"], s2_again["failed"]) == (15, _failures(second))


def test_stale_batch_expires_and_lost_items_fail(client, fake, day, config_id, dagster_instance):
    b = client.post("/api/audits/batch", json={"fiche_ids": day[:3]}).json()
    assert b["audit_config_id"] == config_id  # default: the newest active config
    with session_scope() as s:
        batch = s.get(AuditBatch, b["batch_id"])
        batch.started_at = batch.started_at.replace(year=batch.started_at.year - 1)
    assert "finalized=1" in _sensor(dagster_instance)
    status = client.get(f"/api/audits/batch/{b['batch_id']}").json()["data"]
    assert (status["status"], status["completed"], status["failed"]) == ("expired", 3, 3)
    assert {i["status"] for i in status["items"]} == {"expired"}
    [done] = _events(b["batch_id"], "batch.completed")
    assert done["failed"] == 3
    # the backfill ended without ever creating an audit: those items fail (no TTL wait)
    b2 = client.post("/api/audits/batch", json={"fiche_ids": day[3:5]}).json()
    with session_scope() as s:
        result = batch_db.refresh_batch(s, b2["batch_id"], runs_done=True)
    assert result["finalized"] and (result["succeeded"], result["failed"]) == (0, 2)


def test_default_config_from_env(client, fake, day, config_id, monkeypatch):
    monkeypatch.setenv("DEFAULT_AUDIT_CONFIG_ID", str(config_id + 100))
    r = client.post("/api/audits/batch", json={"fiche_ids": day[:1]})
    assert r.status_code == 404 and r.json()["success"] is False
    monkeypatch.setenv("DEFAULT_AUDIT_CONFIG_ID", "not-a-number")  # malformed → the default rule
    assert client.post("/api/audits/batch", json={"fiche_ids": day[:1]}).json()["audit_config_id"] == config_id
    monkeypatch.setenv("DEFAULT_AUDIT_CONFIG_ID", str(config_id))
    assert client.post("/api/audits/batch", json={"fiche_ids": day[:1], "use_rlm": True}).json()["audit_config_id"] == config_id
    assert fake.backfills[-1]["run_config"]["ops"]["audit_step_results"]["config"]["use_rlm"] is True


@pytest.mark.parametrize("body", [
    {}, {"fiche_ids": []}, {"fiche_ids": "900000001"}, {"fiche_ids": [""]}, {"fiche_ids": ["  "]},
    {"fiche_ids": [900000001]}, {"fiche_ids": ["12a"]}, {"fiche_ids": [None]},
    {"fiche_ids": ["1"], "audit_config_id": 0}, {"fiche_ids": ["1"], "audit_config_id": "x"},
    {"fiche_ids": ["1"], "audit_config_id": True}, {"fiche_ids": ["1"], "use_rlm": "yes"},
    {"fiche_ids": ["1"], "user_id": {"a": 1}},
])
def test_invalid_input_is_400(client, fake, body):
    r = client.post("/api/audits/batch", json=body)
    assert r.status_code == 400
    assert r.json()["success"] is False and r.json()["error"] == "Invalid batch audit input"
    assert r.json()["code"] == "VALIDATION_ERROR"
    assert fake.backfills == []


def test_unknown_config_bad_json_dagster_down_and_unknown_batch(client, fake, config_id):
    r = client.post("/api/audits/batch", json={"fiche_ids": ["1"], "audit_config_id": config_id + 50})
    assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"
    r = client.post("/api/audits/batch", content=b"{x", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "INVALID_JSON"
    assert client.get("/api/audits/batch/nope").status_code == 400
    r = client.get("/api/audits/batch/batch-1-2-abc")
    assert r.status_code == 404 and r.json()["success"] is False
    with TestClient(create_app(dagster_url=free_port_refusing() + "/graphql"), raise_server_exceptions=False) as c:
        r = c.post("/api/audits/batch", json={"fiche_ids": ["900000001"]})
        assert r.status_code == 503 and r.json()["code"] == "SERVICE_UNAVAILABLE"
    with session_scope() as s:  # a batch that could not launch leaves nothing behind
        assert s.scalar(select(func.count()).select_from(AuditBatch)) == 0


def test_batches_whose_request_died_before_recording_the_backfill(config_id, dagster_instance):
    """``POST /api/audits/batch`` writes the rows, launches, then records the backfill id; an API
    replica killed in between (tests/e2e/test_crash_safety.py) leaves a running batch without a
    backfill, which would wait the 6 h TTL. After the launch grace, the sensor records the backfill
    Dagster took (found by its ``auditflow/batch_id`` tag), or drops a batch nothing was launched
    for, as the route drops one whose launch failed."""
    import datetime as dt
    import time

    from dagster import AssetKey
    from dagster._core.execution.backfill import PartitionBackfill

    from auditflow_dagster.db.clock import now_utc
    from auditflow_dagster.definitions import defs
    from auditflow_dagster.sensors.batches import LAUNCH_GRACE, settle_unlaunched

    fiches = [generator.fiche_id_for(dt.date.fromisoformat(DAY), i) for i in range(2)]
    dagster_instance.add_dynamic_partitions("fiches", fiches)
    with session_scope() as s:
        launched, _ = batch_db.create_batch(s, fiche_ids=fiches, audit_config_id=config_id, use_rlm=False, user_id=None)
        never, _ = batch_db.create_batch(s, fiche_ids=fiches, audit_config_id=config_id, use_rlm=False, user_id=None)
        recent, _ = batch_db.create_batch(s, fiche_ids=fiches, audit_config_id=config_id, use_rlm=False, user_id=None)
        launched, never, recent = launched.id, never.id, recent.id
        for batch_id in (launched, never):
            s.get(AuditBatch, batch_id).started_at = now_utc() - LAUNCH_GRACE - dt.timedelta(seconds=1)
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id="bfdied01", asset_graph=defs.resolve_asset_graph(), partition_names=fiches,
        asset_selection=[AssetKey("fiche_details")], backfill_timestamp=time.time(),
        tags={"auditflow/batch_id": launched, "auditflow/trigger": "batch"}, dynamic_partitions_store=dagster_instance,
        all_partitions=False, title=launched, description=None, run_config=None)
    dagster_instance.add_backfill(backfill)

    assert settle_unlaunched(dagster_instance) == {"adopted": 1, "dropped": 1}
    with session_scope() as s:
        assert s.get(AuditBatch, launched).backfill_id == "bfdied01"  # progress goes on as usual
        assert s.get(AuditBatch, never) is None
        assert s.scalar(select(func.count()).select_from(AuditBatchItem).where(AuditBatchItem.batch_id == never)) == 0
        assert s.get(AuditBatch, recent).backfill_id is None  # within the grace: its request may be live
    assert [e["batch_id"] for e in _events(launched, "batch.progress")] == [launched]
    assert settle_unlaunched(dagster_instance) == {"adopted": 0, "dropped": 0}
    assert "unlaunched adopted=0, dropped=0" in _sensor(dagster_instance)
