"""Recordings and transcription routes (spec 02 §1.5, §5.6; spec 06 §4.3).

Launches go to a fake Dagster GraphQL endpoint on a real socket (the queries of
``api.dagster_client``); reads run against data materialized with the offline twins.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import uuid
from typing import Any

import pytest
from dagster import materialize
from sqlalchemy import delete, select, update
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from api.app import create_app
from auditflow_dagster.assets.audits import audit_step_results, audits
from auditflow_dagster.assets.fiches import fiche_details
from auditflow_dagster.assets.sales import sales_list
from auditflow_dagster.assets.transcripts import transcripts
from auditflow_dagster.core import privacy
from auditflow_dagster.core.timeline import build_timeline, timeline_text
from auditflow_dagster.db import fiches as fiche_db
from auditflow_dagster.db.audits import get_snapshot
from auditflow_dagster.db.configs import ensure_bundled_config
from auditflow_dagster.db.events import emit
from auditflow_dagster.db.models import (
    Audit,
    FicheCache,
    Recording,
    RecordingTranscriptionChunk,
    TranscriptionRequest,
)
from auditflow_dagster.db.recordings import timeline_input
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.resources.crm import CrmResource
from auditflow_dagster.resources.database import DatabaseResource
from auditflow_dagster.resources.llm import LlmResource
from auditflow_dagster.resources.stt import SttResource
from auditflow_dagster.sample import generator
from tests.fakes.server import free_port_refusing, serve_app

DAY = "2026-03-16"
JOBS = ("audit_fiche", "fetch_fiche", "transcribe_fiche", "sales_day", "automation_run_job")
RUN_CONFIG = {"ops": {"fiche_details": {"config": {"force_refresh": True}}}}


# --------------------------------------------------------------------------------------------- #
# Fake Dagster GraphQL
# --------------------------------------------------------------------------------------------- #


class FakeDagster:
    """Answers the three operations the API sends to launch a run; records what it was asked."""

    def __init__(self) -> None:
        self.launches: list[dict[str, Any]] = []
        self.partitions: list[str] = []
        self.fail_launch = False
        self.launch_delay = 0.0
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/graphql", self.graphql, methods=["POST"])])

    async def graphql(self, request: Request) -> Any:
        body = await request.json()
        query, variables = body["query"], body.get("variables") or {}
        if query.strip() == "query { version }":
            return JSONResponse({"data": {"version": "1.13.27"}})
        if "workspaceOrError" in query:
            return JSONResponse({"data": {"workspaceOrError": {"__typename": "Workspace", "locationEntries": [
                {"name": "auditflow", "locationOrLoadError": {
                    "__typename": "RepositoryLocation", "name": "auditflow",
                    "repositories": [{"name": "__repository__", "jobs": [{"name": j} for j in JOBS]}]}}]}}})
        if "addDynamicPartition" in query:
            assert variables["name"] == "fiches"
            assert variables["sel"] == {"repositoryLocationName": "auditflow", "repositoryName": "__repository__"}
            with self._lock:
                self.partitions.append(variables["key"])
            return JSONResponse({"data": {"addDynamicPartition": {
                "__typename": "AddDynamicPartitionSuccess", "partitionKey": variables["key"]}}})
        if "launchRun" in query:
            if self.launch_delay:
                await asyncio.sleep(self.launch_delay)
            if self.fail_launch:
                return PlainTextResponse("daemon down", status_code=502)
            params = variables["params"]
            run_id = str(uuid.uuid4())
            with self._lock:
                self.launches.append({
                    "job": params["selector"]["jobName"],
                    "selector": params["selector"],
                    "run_config": json.loads(params["runConfigData"]),
                    "tags": {t["key"]: t["value"] for t in params["executionMetadata"]["tags"]},
                    "run_id": run_id,
                })
            return JSONResponse({"data": {"launchRun": {"__typename": "LaunchRunSuccess", "run": {"runId": run_id}}}})
        return JSONResponse({"errors": [{"message": "unexpected query"}]})


@pytest.fixture()
def fake_dagster():
    fake = FakeDagster()
    with serve_app(fake.app) as url:
        fake.url = f"{url}/graphql"
        yield fake


@pytest.fixture()
def client(db, fake_dagster):
    with TestClient(create_app(dagster_url=fake_dagster.url), raise_server_exceptions=False) as c:
        yield c


def _resources() -> dict:
    return {"crm": CrmResource(mode="sample"), "stt": SttResource(mode="sample"),
            "llm": LlmResource(mode="offline"), "db": DatabaseResource()}


@pytest.fixture()
def transcribed(db, dagster_instance) -> dict[str, Any]:
    """A fiche with 2+ recordings, its details cached and every recording transcribed."""
    instance = dagster_instance
    assert materialize([sales_list], partition_key=DAY, instance=instance, resources=_resources()).success
    fiche_id = next(f for f in instance.get_dynamic_partitions("fiches")
                    if len(generator.recordings_for_fiche(f)) >= 2 and generator.expected_audit(f)["auditable"])
    result = materialize([fiche_details, transcripts], partition_key=fiche_id, instance=instance, resources=_resources())
    assert result.success
    return {"fiche_id": fiche_id, "run_id": result.run_id, "instance": instance}


def _row(fiche_id: str) -> FicheCache:
    with session_scope() as s:
        return fiche_db.get_row(s, fiche_id)


def _assert_validation(r, status: int = 400, code: str = "VALIDATION_ERROR") -> dict[str, Any]:
    body = r.json()
    assert r.status_code == status, body
    assert body["success"] is False and isinstance(body["error"], str) and body["code"] == code
    return body


# --------------------------------------------------------------------------------------------- #
# POST /api/transcriptions/{fiche_id}
# --------------------------------------------------------------------------------------------- #


@pytest.mark.parametrize("query, priority", [("", "normal"), ("?priority=high", "high"), ("?priority=low", "low"),
                                             ("?priority=urgent", "normal"), ("?priority=HIGH", "normal")])
def test_single_launch_job_partition_config_and_tags(client, fake_dagster, query, priority):
    r = client.post(f"/api/transcriptions/900000123{query}")
    assert r.status_code == 200, r.json()
    [launch] = fake_dagster.launches
    assert r.json() == {"success": True, "message": "Transcription job queued", "fiche_id": "900000123",
                        "event_id": launch["run_id"]}
    assert launch["job"] == "transcribe_fiche"
    assert launch["selector"] == {"repositoryLocationName": "auditflow", "repositoryName": "__repository__",
                                  "jobName": "transcribe_fiche"}
    assert launch["run_config"] == RUN_CONFIG
    assert launch["tags"] == {"dagster/partition": "900000123", "auditflow/trigger": "api",
                              "auditflow/priority": priority}
    assert fake_dagster.partitions == ["900000123"]


def test_single_launch_has_no_dedup_and_non_digit_ids_are_not_routes(client, fake_dagster):
    first = client.post("/api/transcriptions/900000124").json()["event_id"]
    second = client.post("/api/transcriptions/900000124").json()["event_id"]
    assert first != second and len(fake_dagster.launches) == 2
    r = client.post("/api/transcriptions/12ab")
    assert _assert_validation(r, 404, "NOT_FOUND")["error"] == "Route with ID '/api/transcriptions/12ab' not found"
    assert len(fake_dagster.launches) == 2


def test_single_launch_dagster_unreachable_is_503(db):
    with TestClient(create_app(dagster_url=free_port_refusing() + "/graphql"), raise_server_exceptions=False) as c:
        body = _assert_validation(c.post("/api/transcriptions/900000125"), 503, "SERVICE_UNAVAILABLE")
        assert body["error"].startswith("Pipeline unavailable")


# --------------------------------------------------------------------------------------------- #
# POST /api/transcriptions/batch
# --------------------------------------------------------------------------------------------- #


@pytest.mark.parametrize("body, error", [
    ({}, "Invalid request - fiche_ids array required"),
    ({"fiche_ids": "900000001"}, "Invalid request - fiche_ids array required"),
    ({"fiche_ids": None}, "Invalid request - fiche_ids array required"),
    ({"fiche_ids": []}, None),
    ({"fiche_ids": ["12a"]}, None),
    ({"fiche_ids": [""]}, None),
    ({"fiche_ids": ["900000001", True]}, None),
    ({"fiche_ids": [{"id": "1"}]}, None),
    ({"fiche_ids": [-4]}, None),
    ({"fiche_ids": [str(900000000 + i) for i in range(501)]}, None),
    ({"fiche_ids": ["900000001"], "priority": "urgent"}, None),
    ({"fiche_ids": ["900000001"], "priority": 1}, None),
])
def test_batch_validation_400(client, fake_dagster, body, error):
    b = _assert_validation(client.post("/api/transcriptions/batch", json=body))
    if error:
        assert b["error"] == error
    assert fake_dagster.launches == []
    with session_scope() as s:
        assert s.scalar(select(TranscriptionRequest)) is None


def test_batch_invalid_json_and_non_object(client):
    r = client.post("/api/transcriptions/batch", content=b"{nope", headers={"content-type": "application/json"})
    _assert_validation(r, 400, "INVALID_JSON")
    _assert_validation(client.post("/api/transcriptions/batch", json=["900000001"]))


def test_batch_launches_each_fiche_once_per_day(client, fake_dagster):
    ids = ["900000201", "900000202", "900000203"]
    r = client.post("/api/transcriptions/batch", json={"fiche_ids": [*ids, ids[0]], "priority": "low"})
    assert r.status_code == 200, r.json()
    body = r.json()
    assert body["success"] is True and body["message"] == "3 transcription jobs queued"
    assert body["fiche_ids"] == ids
    assert len(fake_dagster.launches) == 3
    by_fiche = {launch["tags"]["dagster/partition"]: launch for launch in fake_dagster.launches}
    assert body["event_ids"] == [by_fiche[f]["run_id"] for f in ids]
    today = dt.datetime.now(dt.UTC).date().isoformat()
    for f in ids:
        launch = by_fiche[f]
        assert launch["job"] == "transcribe_fiche" and launch["run_config"] == RUN_CONFIG
        assert launch["tags"] == {"dagster/partition": f, "auditflow/trigger": "api", "auditflow/priority": "low",
                                  "auditflow/dedup_key": f"transcribe-{f}-{today}"}
    with session_scope() as s:
        rows = {r.dedup_key: r for r in s.scalars(select(TranscriptionRequest))}
    assert {k: (r.fiche_id, r.run_id, r.priority) for k, r in rows.items()} == {
        f"transcribe-{f}-{today}": (f, by_fiche[f]["run_id"], "low") for f in ids}

    # same-day resubmit (other order, one new fiche): launches only the new one
    again = client.post("/api/transcriptions/batch", json={"fiche_ids": [ids[2], "900000204", ids[0]]}).json()
    assert len(fake_dagster.launches) == 4
    assert again["message"] == "3 transcription jobs queued"
    assert again["event_ids"] == [by_fiche[ids[2]]["run_id"], fake_dagster.launches[3]["run_id"],
                                  by_fiche[ids[0]]["run_id"]]
    assert fake_dagster.launches[3]["tags"]["auditflow/priority"] == "normal"

    # a claim from yesterday does not dedup today
    with session_scope() as s:
        s.execute(delete(TranscriptionRequest).where(TranscriptionRequest.fiche_id == ids[1]))
        s.add(TranscriptionRequest(dedup_key=f"transcribe-{ids[1]}-2000-01-01", fiche_id=ids[1], run_id="old",
                                   created_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=8)))
    third = client.post("/api/transcriptions/batch", json={"fiche_ids": [ids[1]]}).json()
    assert len(fake_dagster.launches) == 5 and third["event_ids"] == [fake_dagster.launches[4]["run_id"]]
    with session_scope() as s:  # claims older than a week are pruned on the way
        assert s.get(TranscriptionRequest, f"transcribe-{ids[1]}-2000-01-01") is None


def test_concurrent_batches_on_two_replicas_launch_each_fiche_once(db, fake_dagster):
    fake_dagster.launch_delay = 0.2  # widen the race window
    ids = [str(900000300 + i) for i in range(6)]
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    with TestClient(create_app(dagster_url=fake_dagster.url)) as a, \
            TestClient(create_app(dagster_url=fake_dagster.url)) as b:
        barrier = threading.Barrier(4)

        def submit(c: TestClient, order: list[str]) -> None:
            try:
                barrier.wait()
                r = c.post("/api/transcriptions/batch", json={"fiche_ids": order})
                assert r.status_code == 200, r.text
                results.append(r.json())
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=submit, args=args) for args in
                   [(a, ids), (b, ids[::-1]), (a, ids[::2] + ids[1::2]), (b, ids[1::2] + ids[::2])]]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert errors == []
    assert sorted(launch["tags"]["dagster/partition"] for launch in fake_dagster.launches) == ids
    run_of = {launch["tags"]["dagster/partition"]: launch["run_id"] for launch in fake_dagster.launches}
    assert len(results) == 4
    for body in results:
        assert body["event_ids"] == [run_of[f] for f in body["fiche_ids"]]


def test_failed_launch_releases_the_claim_and_a_retry_launches(client, fake_dagster):
    fake_dagster.fail_launch = True
    body = _assert_validation(client.post("/api/transcriptions/batch", json={"fiche_ids": ["900000401", "900000402"]}),
                              503, "SERVICE_UNAVAILABLE")
    assert body["error"].startswith("Pipeline unavailable")
    with session_scope() as s:
        assert s.scalars(select(TranscriptionRequest)).all() == []  # no claim left without a run
    fake_dagster.fail_launch = False
    ok = client.post("/api/transcriptions/batch", json={"fiche_ids": ["900000401", "900000402"]}).json()
    assert ok["success"] is True and len(fake_dagster.launches) == 2
    assert ok["event_ids"] == [launch["run_id"] for launch in sorted(
        fake_dagster.launches, key=lambda x: x["tags"]["dagster/partition"])]


def test_batch_dagster_unreachable_is_503_and_leaves_no_claim(db):
    with TestClient(create_app(dagster_url=free_port_refusing() + "/graphql"), raise_server_exceptions=False) as c:
        _assert_validation(c.post("/api/transcriptions/batch", json={"fiche_ids": ["900000501"]}),
                           503, "SERVICE_UNAVAILABLE")
    with session_scope() as s:
        assert s.scalars(select(TranscriptionRequest)).all() == []


def test_stale_claim_without_a_run_is_taken_over(client, fake_dagster):
    today = dt.datetime.now(dt.UTC).date().isoformat()
    with session_scope() as s:  # a claimant that died between claim and launch, long ago
        s.add(TranscriptionRequest(dedup_key=f"transcribe-900000601-{today}", fiche_id="900000601",
                                   created_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)))
    body = client.post("/api/transcriptions/batch", json={"fiche_ids": ["900000601"]}).json()
    assert len(fake_dagster.launches) == 1 and body["event_ids"] == [fake_dagster.launches[0]["run_id"]]


# --------------------------------------------------------------------------------------------- #
# Reads: 400 / 404
# --------------------------------------------------------------------------------------------- #


@pytest.mark.parametrize("path", ["/api/recordings/12x", "/api/transcriptions/12x/status",
                                  "/api/transcriptions/12x/timeline", "/api/transcriptions/12x/logs",
                                  "/api/transcriptions/12x/recordings/1"])
def test_reads_reject_non_digit_fiche_ids(client, path):
    _assert_validation(client.get(path))


@pytest.mark.parametrize("path", ["/api/recordings/900000999", "/api/transcriptions/900000999/status",
                                  "/api/transcriptions/900000999/timeline"])
def test_uncached_fiche_is_404_not_500(client, path):
    body = _assert_validation(client.get(path), 404, "NOT_FOUND")
    assert body["error"] == "Fiche 900000999 not found in cache"


def test_recording_of_uncached_fiche_is_recording_not_found(client):
    body = _assert_validation(client.get("/api/transcriptions/900000999/recordings/123"), 404, "NOT_FOUND")
    assert body["error"] == "Recording not found"


@pytest.mark.parametrize("query", ["since=yesterday", "until=2026-13-01", "since=", "limit=0", "limit=1001",
                                   "limit=x", "offset=-1", "offset=1.5", "level=warn", "limit=1&limit=2"])
def test_logs_validation(client, query):
    _assert_validation(client.get(f"/api/transcriptions/900000001/logs?{query}"))


# --------------------------------------------------------------------------------------------- #
# Reads after real materializations
# --------------------------------------------------------------------------------------------- #


def test_recordings_rows_camelcase_canonical_order(client, transcribed):
    fiche_id = transcribed["fiche_id"]
    body = client.get(f"/api/recordings/{fiche_id}").json()
    row = _row(fiche_id)
    with session_scope() as s:
        recs = fiche_db.recordings_of(s, row.id)
        expected_ids = [str(r.id) for r in recs]
    assert body["success"] is True and body["count"] == len(recs) >= 2
    assert [r["id"] for r in body["data"]] == expected_ids
    starts = [r["startTime"] for r in body["data"]]
    assert [s for s in starts if s] == sorted(s for s in starts if s)
    first = body["data"][0]
    assert set(first) == {
        "id", "ficheCacheId", "callId", "recordingUrl", "recordingDate", "recordingTime", "fromNumber", "toNumber",
        "uuid", "direction", "answered", "startTime", "durationSeconds", "transcriptionId", "transcriptionText",
        "transcriptionData", "transcriptionLanguageCode", "transcriptionLanguageProbability", "hasTranscription",
        "transcribedAt", "createdAt", "updatedAt"}
    assert first["ficheCacheId"] == str(row.id) and isinstance(first["callId"], str)
    assert first["hasTranscription"] is True and first["transcriptionText"]
    for key in ("startTime", "transcribedAt", "createdAt", "updatedAt"):
        assert first[key].endswith("Z") and len(first[key]) == 24, first[key]
    assert {r["callId"] for r in body["data"]} == {r["call_id"] for r in generator.recordings_for_fiche(fiche_id)}


def test_status_counts_and_missing_url(client, transcribed):
    fiche_id = transcribed["fiche_id"]
    data = client.get(f"/api/transcriptions/{fiche_id}/status").json()["data"]
    n = len(generator.recordings_for_fiche(fiche_id))
    assert data["ficheId"] == fiche_id
    assert (data["total"], data["transcribed"], data["pending"], data["percentage"], data["missingUrl"]) == (n, n, 0, 100, 0)
    rec = data["recordings"][0]
    assert set(rec) == {"callId", "hasTranscription", "transcriptionId", "transcribedAt", "recordingDate",
                        "recordingTime", "durationSeconds"}
    assert rec["hasTranscription"] is True and rec["transcriptionId"]
    assert len(rec["recordingDate"]) == 10 and rec["recordingDate"][2] == "/" and len(rec["recordingTime"]) == 5
    # one recording loses its transcript and another its URL
    row = _row(fiche_id)
    with session_scope() as s:
        recs = fiche_db.recordings_of(s, row.id)
        s.execute(update(Recording).where(Recording.id == recs[0].id).values(has_transcription=False))
        s.execute(update(Recording).where(Recording.id == recs[1].id).values(recording_url="", has_transcription=False))
    data = client.get(f"/api/transcriptions/{fiche_id}/status").json()["data"]
    assert (data["total"], data["transcribed"], data["pending"], data["missingUrl"]) == (n, n - 2, 2, 1)
    assert data["percentage"] == round(100 * (n - 2) / n)


def test_status_of_a_fiche_without_recordings(client, db, dagster_instance):
    assert materialize([sales_list], partition_key=DAY, instance=dagster_instance, resources=_resources()).success
    with session_scope() as s:
        fiche_id = s.scalar(select(FicheCache.fiche_id).order_by(FicheCache.id))
        s.execute(delete(Recording).where(Recording.fiche_cache_id == select(FicheCache.id).where(
            FicheCache.fiche_id == fiche_id).scalar_subquery()))
    data = client.get(f"/api/transcriptions/{fiche_id}/status").json()["data"]
    assert (data["total"], data["transcribed"], data["pending"], data["percentage"], data["recordings"]) == (0, 0, 0, 0, [])
    assert client.get(f"/api/recordings/{fiche_id}").json() == {"success": True, "data": [], "count": 0}


def test_recording_transcription_shapes_and_three_404s(client, transcribed):
    fiche_id = transcribed["fiche_id"]
    row = _row(fiche_id)
    with session_scope() as s:
        recs = fiche_db.recordings_of(s, row.id)
        first, second, third = recs[0], recs[1], recs[-1]
    url = f"/api/transcriptions/{fiche_id}/recordings"
    data = client.get(f"{url}/{first.call_id}").json()["data"]
    assert data == {
        "call_id": first.call_id, "recording_url": first.recording_url, "duration_seconds": first.duration_seconds,
        "transcription_id": first.transcription_id, "has_transcription": True,
        "transcription": {"text": first.transcription_text, "language_code": first.transcription_language_code or "fr",
                          **({"language_probability": first.transcription_language_probability}
                             if first.transcription_language_probability is not None else {}),
                          "words": []},
    }
    # a legacy row still carrying its word JSON gets it back as stored
    legacy = {"text": "Bonjour madame.", "language_code": "fra", "words": [
        {"text": "Bonjour", "start": 0.1, "end": 0.5, "type": "word", "speaker_id": "speaker_0"}]}
    with session_scope() as s:
        s.execute(update(Recording).where(Recording.id == second.id).values(transcription_data=legacy))
    assert client.get(f"{url}/{second.call_id}").json()["data"]["transcription"] == legacy
    # no text and no words, but chunks: the chunk texts stand in; no language column → "fr"
    with session_scope() as s:
        s.execute(update(Recording).where(Recording.id == third.id).values(
            transcription_text=None, transcription_data=None, transcription_language_code=None,
            transcription_language_probability=None))
        chunk_texts = s.scalars(select(RecordingTranscriptionChunk.full_text).where(
            RecordingTranscriptionChunk.recording_id == third.id).order_by(RecordingTranscriptionChunk.chunk_index)).all()
    assert client.get(f"{url}/{third.call_id}").json()["data"]["transcription"] == {
        "text": "\n".join(chunk_texts), "language_code": "fr", "words": []}
    # nothing stored at all → the third 404
    with session_scope() as s:
        s.execute(delete(RecordingTranscriptionChunk).where(RecordingTranscriptionChunk.recording_id == third.id))
    assert _assert_validation(client.get(f"{url}/{third.call_id}"), 404, "NOT_FOUND")["error"] == \
        "Transcription data not found in DB"
    with session_scope() as s:
        s.execute(update(Recording).where(Recording.id == first.id).values(has_transcription=False))
    assert _assert_validation(client.get(f"{url}/{first.call_id}"), 404, "NOT_FOUND")["error"] == \
        "No transcription available for this recording"
    assert _assert_validation(client.get(f"{url}/999"), 404, "NOT_FOUND")["error"] == "Recording not found"


def test_timeline_is_the_audit_engine_timeline(client, transcribed):
    fiche_id, instance = transcribed["fiche_id"], transcribed["instance"]
    body = client.get(f"/api/transcriptions/{fiche_id}/timeline").json()
    assert body["success"] is True and body["data"]["ficheId"] == fiche_id
    row = _row(fiche_id)
    with session_scope() as s:
        expected = build_timeline(timeline_input(s, row.id))
    assert body["data"]["recordings"] == expected and len(expected) >= 2
    assert body["data"]["text"] == timeline_text(expected)
    assert body["data"]["text"].count("Enregistrement #") == len(expected)
    # and it is what an audit of this fiche freezes in its snapshot — as the LLM sees it: redacted
    # (AUDITFLOW_REDACT_PII, default on; the stored transcript served above keeps the original)
    with session_scope() as s:
        ensure_bundled_config(s)
    assert materialize([fiche_details, transcripts, audit_step_results, audits], partition_key=fiche_id,
                       instance=instance, resources=_resources()).success
    with session_scope() as s:
        audit_id = s.scalar(select(Audit.id).where(Audit.fiche_cache_id == row.id))
        snap = get_snapshot(s, audit_id)
        frozen = privacy.llm_view(body["data"]["recordings"])
        assert snap.timeline == frozen and snap.timeline_text == timeline_text(frozen)
    # a recording without a URL drops out, the indices close up
    with session_scope() as s:
        first = fiche_db.recordings_of(s, row.id)[0]
        s.execute(update(Recording).where(Recording.id == first.id).values(recording_url=""))
    again = client.get(f"/api/transcriptions/{fiche_id}/timeline").json()["data"]["recordings"]
    assert [r["call_id"] for r in again] == [r["call_id"] for r in expected[1:]]
    assert [r["recording_index"] for r in again] == list(range(len(expected) - 1))


def test_logs_are_the_fiche_transcription_events(client, transcribed):
    fiche_id, run_id = transcribed["fiche_id"], transcribed["run_id"]
    with session_scope() as s:  # another run's failure, another fiche, a non-transcription event
        emit(s, "transcription.recording_failed", {"fiche_id": fiche_id, "call_id": "1", "error": "boom",
                                                   "status": "failed", "run_id": "other-run"})
        emit(s, "transcription.started", {"fiche_id": "900000777", "status": "started", "run_id": run_id})
        emit(s, "audit.started", {"fiche_id": fiche_id, "audit_id": "audit-x", "status": "started"})
    url = f"/api/transcriptions/{fiche_id}/logs"
    body = client.get(url).json()
    assert body["success"] is True and body["limit"] == 200 and body["offset"] == 0 and "trace_id" not in body
    events = [e["event"] for e in body["data"]]
    assert body["count"] == len(events)
    assert events[0] == "transcription.status_check" and events[1] == "transcription.started"
    assert "transcription.completed" in events and events[-1] == "transcription.recording_failed"
    assert all(e.startswith("transcription.") for e in events)
    assert [int(e["id"]) for e in body["data"]] == sorted(int(e["id"]) for e in body["data"])
    item = body["data"][0]
    assert set(item) == {"id", "event", "level", "payload", "createdAt"}
    assert item["level"] == "info" and item["payload"]["fiche_id"] == fiche_id and item["createdAt"].endswith("Z")

    mine = client.get(f"{url}?run_id={run_id}").json()["data"]
    assert [e["event"] for e in mine] == events[:-1] and all(e["payload"]["run_id"] == run_id for e in mine)
    traced = client.get(f"{url}?trace_id=other-run").json()
    assert traced["trace_id"] == "other-run" and [e["event"] for e in traced["data"]] == ["transcription.recording_failed"]
    errors = client.get(f"{url}?level=error").json()["data"]
    assert [(e["event"], e["level"]) for e in errors] == [("transcription.recording_failed", "error")]
    infos = client.get(f"{url}?level=info").json()["data"]
    assert len(infos) == len(events) - 1 and {e["level"] for e in infos} == {"info"}

    page = client.get(f"{url}?limit=2&offset=1").json()
    assert (page["limit"], page["offset"], page["count"]) == (2, 1, 2)
    assert [e["id"] for e in page["data"]] == [e["id"] for e in body["data"][1:3]]
    assert client.get(f"{url}?until=2000-01-01").json()["data"] == []
    assert client.get(f"{url}?since=2999-01-01T00:00:00Z").json()["data"] == []
    since = body["data"][0]["createdAt"]
    assert len(client.get(f"{url}?since={since}&until=2999-01-01T00:00:00%2B02:00").json()["data"]) == len(events)
    assert len(client.get(f"{url}?since={since}&until=2999-01-01T00:00:00+02:00").json()["data"]) == len(events)
    later = (dt.datetime.fromisoformat(since.replace("Z", "")) + dt.timedelta(hours=2)).isoformat()
    assert client.get(f"{url}?since={later}+02:00").json()["count"] == len(events)  # same instant as `since`
    # logs of a fiche never cached are simply empty
    assert client.get("/api/transcriptions/900000888/logs").json()["data"] == []


def test_openapi_documents_the_new_routes(client):
    paths = client.get("/api/openapi.json").json()["paths"]
    assert set(paths["/api/transcriptions/{fiche_id}"]) == {"post"}
    for p in ("/api/recordings/{fiche_id}", "/api/transcriptions/{fiche_id}/status",
              "/api/transcriptions/{fiche_id}/recordings/{call_id}", "/api/transcriptions/{fiche_id}/logs",
              "/api/transcriptions/{fiche_id}/timeline"):
        assert "get" in paths[p]
    assert "post" in paths["/api/transcriptions/batch"]
