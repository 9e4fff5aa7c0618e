"""Secrets never leave: after a provider failure that echoes the key and a signed audio URL, no
event, DB row, run event or materialization metadata contains either (DESIGN §3.12)."""

from __future__ import annotations

import json

from dagster import materialize
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from auditflow_dagster.assets.fiches import fiche_details
from auditflow_dagster.assets.transcripts import transcripts
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.resources.crm import CrmResource
from auditflow_dagster.resources.database import DatabaseResource
from auditflow_dagster.resources.stt import SttResource
from auditflow_dagster.sample import generator
from tests.fakes.server import serve_app

KEY = "xi-test-0123456789abcdef0123456789abcdef"
SIG = "sig-SECRET-9f8e7d6c5b4a"


def _leaky_provider() -> Starlette:
    async def audio(request: Request) -> Response:
        return Response(b"ID3" + b"\x00" * 2048, media_type="audio/mpeg")

    async def stt(request: Request) -> JSONResponse:
        await request.body()
        # A hostile/buggy provider echoing the key and the request back in its error body.
        return JSONResponse({"detail": {"message": f"invalid api key {request.headers.get('xi-api-key')}",
                                        "request": str(request.url)}}, status_code=401)

    return Starlette(routes=[Route("/audio/{name}", audio), Route("/v1/speech-to-text", stt, methods=["POST"])])


def test_provider_failure_leaks_no_secret(db, dagster_instance):
    instance = dagster_instance
    fiche_id = next(f["id"] for f in generator.fiches_for_day(generator.parse_fiche_id("920260317000")[0]) if f["recordings"])
    with serve_app(_leaky_provider()) as base:
        instance.add_dynamic_partitions("fiches", [fiche_id])
        assert materialize([fiche_details], partition_key=fiche_id, instance=instance,
                           resources={"crm": CrmResource(mode="sample"), "db": DatabaseResource()}).success
        with session_scope() as s:
            s.execute(text("UPDATE recordings SET recording_url = :u || '/audio/' || call_id || '.mp3?sig=' || :sig"),
                      {"u": base, "sig": SIG})
        result = materialize(
            [transcripts], partition_key=fiche_id, instance=instance,
            resources={"stt": SttResource(mode="elevenlabs", api_key=KEY, base_url=base, max_attempts=2,
                                          backoff_base_seconds=1, backoff_max_seconds=1),
                       "db": DatabaseResource()},
        )
        assert result.success  # a failed recording is reported, the asset does not crash
        run_text = json.dumps([str(e) for e in instance.all_logs(result.run_id)])
    with session_scope() as s:
        events = s.execute(text("SELECT name, payload::text FROM events")).all()
        dump = json.dumps([list(r) for r in events])
        rows = s.execute(text("SELECT row_to_json(r)::text FROM recordings r")).scalars().all()
    failed = [p for n, p in events if n == "transcription.recording_failed"]
    assert failed, "the failure must be reported"
    assert "status=401" in failed[0] and "ELEVENLABS_API_KEY" in failed[0]
    for blob in (dump, run_text):
        assert KEY not in blob
        assert SIG not in blob  # signed URLs are stored as data, never echoed into events or logs
    assert KEY not in "".join(rows)
