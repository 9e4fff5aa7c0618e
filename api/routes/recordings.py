"""``GET /api/recordings/{fiche_id}`` (spec 02 §1.5, spec 06 §4.3): the fiche's recording rows,
camelCase, in canonical order (``start_time ASC NULLS LAST, id ASC``).

PROPOSED fix kept: an uncached fiche is a 404 (legacy: 500 ``Fiche <id> not found in cache``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.common import DIGITS, authorize, db_call
from api.errors import ApiError, not_found, validation_error
from auditflow_dagster.db import fiches as fiche_db
from auditflow_dagster.db.clock import iso
from auditflow_dagster.db.models import FicheCache, Recording


def fiche_id_param(request: Request) -> str:
    fiche_id = request.path_params["fiche_id"]
    if not DIGITS.match(fiche_id):
        raise validation_error("Invalid fiche_id: digits expected")
    return fiche_id


def cached_row(session: Any, fiche_id: str) -> FicheCache | None:
    """The fiche's cache row; a CRM not-found marker counts as not cached."""
    row = fiche_db.get_row(session, fiche_id)
    return None if row is None or fiche_db.is_not_found_marker(row) else row


def not_cached(fiche_id: str) -> ApiError:
    return not_found(f"Fiche {fiche_id} not found in cache")


def recording_row(r: Recording) -> dict[str, Any]:
    """A full DB row with camelCase keys; BigInt ids as strings, instants ISO with ms and ``Z``."""
    return {
        "id": str(r.id),
        "ficheCacheId": str(r.fiche_cache_id),
        "callId": r.call_id,
        "recordingUrl": r.recording_url,
        "recordingDate": r.recording_date,
        "recordingTime": r.recording_time,
        "fromNumber": r.from_number,
        "toNumber": r.to_number,
        "uuid": r.uuid,
        "direction": r.direction,
        "answered": r.answered,
        "startTime": iso(r.start_time),
        "durationSeconds": r.duration_seconds,
        "transcriptionId": r.transcription_id,
        "transcriptionText": r.transcription_text,
        "transcriptionData": r.transcription_data,
        "transcriptionLanguageCode": r.transcription_language_code,
        "transcriptionLanguageProbability": r.transcription_language_probability,
        "hasTranscription": r.has_transcription,
        "transcribedAt": iso(r.transcribed_at),
        "createdAt": iso(r.created_at),
        "updatedAt": iso(r.updated_at),
    }


async def list_recordings(request: Request) -> JSONResponse:
    await authorize(request, "recordings.read")
    fiche_id = fiche_id_param(request)
    await authorize(request, "recordings.read", [fiche_id], missing=not_cached(fiche_id))

    def read(s) -> list[dict[str, Any]] | None:
        row = cached_row(s, fiche_id)
        return None if row is None else [recording_row(r) for r in fiche_db.recordings_of(s, row.id)]

    rows = await db_call(read)
    if rows is None:
        raise not_cached(fiche_id)
    return JSONResponse({"success": True, "data": rows, "count": len(rows)})


routes = [Route("/api/recordings/{fiche_id}", list_recordings, methods=["GET"])]
