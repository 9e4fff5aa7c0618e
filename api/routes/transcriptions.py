"""Transcription routes (spec 02 §5.6, spec 06 §4.3).

Launches go through Dagster GraphQL: the fiche partition is registered, then the
``transcribe_fiche`` job (a forced details refresh — recording URLs may be re-signed — then the
transcripts) runs with the priority in its tags. ``event_id(s)`` are the Dagster run ids.

``POST /batch`` launches a fiche at most once per UTC day: the key
``transcribe-<fiche_id>-<YYYY-MM-DD>`` is claimed in ``transcription_requests`` before the launch
(INSERT … ON CONFLICT DO NOTHING), so two batches — on any replica — never launch a fiche twice,
and a repeat returns the run id of the first launch. A failed launch drops its claim (503, and a
retry launches). Reads come from the database: status counts, one recording's transcript, the
fiche's ``transcription.*`` events (the durable workflow log), and the exact audit timeline.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.auth import forbidden, scope_filter
from api.common import DIGITS, authorize, dagster, db_call, json_body, query_single
from api.dagster_client import DagsterUnavailable
from api.errors import ApiError, not_found, validation_error
from api.routes.recordings import cached_row, fiche_id_param, not_cached
from auditflow_dagster.core.timeline import build_timeline, timeline_text
from auditflow_dagster.db import fiches as fiche_db
from auditflow_dagster.db import transcription_requests as claims
from auditflow_dagster.db.clock import iso
from auditflow_dagster.db.models import Event, Recording, RecordingTranscriptionChunk
from auditflow_dagster.db.recordings import timeline_input

JOB = "transcribe_fiche"
PRIORITIES = ("high", "normal", "low")
MAX_BATCH = 500
#: Parallel launches within one batch (each is two GraphQL calls).
BATCH_LAUNCH_CONCURRENCY = 8
#: How long a batch waits for another request that claimed the same fiche and is launching it.
CLAIM_WAIT_SECONDS = 60.0
#: A claim without a run older than this belongs to a dead process and is taken over.
STALE_CLAIM_SECONDS = 300.0
LOG_LIMIT_DEFAULT, LOG_LIMIT_MAX = 200, 1000
_SPACED_OFFSET = re.compile(r"(?<=\d) (\d{2}(?::?\d{2})?)$")


def _unavailable(exc: Exception) -> ApiError:
    return ApiError(503, f"Pipeline unavailable: {exc}", "SERVICE_UNAVAILABLE")


async def _launch(request: Request, fiche_id: str, priority: str, extra_tags: dict[str, str] | None = None) -> str:
    client = dagster(request)
    await client.add_fiche_partition(fiche_id)
    return await client.launch_job(
        JOB,
        run_config={"ops": {"fiche_details": {"config": {"force_refresh": True}}}},
        tags={"dagster/partition": fiche_id, "auditflow/trigger": "api", "auditflow/priority": priority,
              **(extra_tags or {})},
    )


# --------------------------------------------------------------------------------------------- #
# Launches
# --------------------------------------------------------------------------------------------- #


async def transcribe_one(request: Request) -> JSONResponse:
    await authorize(request, "transcriptions.write")
    fiche_id = request.path_params["fiche_id"]
    if not DIGITS.match(fiche_id):  # legacy route regex: digits only
        raise not_found(f"Route with ID '{request.url.path}' not found")
    raw = request.query_params.get("priority")
    priority = raw if raw in ("high", "low") else "normal"  # anything else → normal (spec 02 §5.6)
    await authorize(request, "transcriptions.write", [fiche_id], missing=not_found(f"Fiche {fiche_id} not found"))
    try:
        run_id = await _launch(request, fiche_id, priority)
    except DagsterUnavailable as exc:
        raise _unavailable(exc) from None
    return JSONResponse({"success": True, "message": "Transcription job queued", "fiche_id": fiche_id,
                         "event_id": run_id})


def _batch_input(body: dict[str, Any]) -> tuple[list[str], str]:
    raw = body.get("fiche_ids")
    if not isinstance(raw, list):
        raise validation_error("Invalid request - fiche_ids array required")
    if not raw:
        raise validation_error("Invalid request - fiche_ids must not be empty")
    if len(raw) > MAX_BATCH:
        raise validation_error(f"Invalid request - at most {MAX_BATCH} fiche_ids per batch (got {len(raw)})")
    ids: list[str] = []
    for value in raw:
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            value = str(value)
        if not isinstance(value, str) or not DIGITS.match(value.strip()):
            raise validation_error(f"Invalid request - fiche_ids must be digit strings (got {str(value)[:40]!r})")
        if value.strip() not in ids:  # a fiche named twice is launched once
            ids.append(value.strip())
    priority = body.get("priority")
    if priority is None:
        priority = "normal"
    if priority not in PRIORITIES:
        raise validation_error("Invalid request - priority must be one of high, normal, low")
    return ids, priority


async def _claim_and_launch(request: Request, fiche_id: str, priority: str, day: dt.date) -> str:
    """The run id of this fiche's transcription today: launched here, or by whoever claimed first."""
    key = claims.dedup_key(fiche_id, day)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CLAIM_WAIT_SECONDS
    while True:
        if await db_call(lambda s: claims.claim(s, key, fiche_id, priority)):
            try:
                run_id = await _launch(request, fiche_id, priority, {"auditflow/dedup_key": key})
            except BaseException:
                # never leave a claimed key without a run: a retry must be able to launch
                await asyncio.shield(db_call(lambda s: claims.release(s, key)))
                raise
            await db_call(lambda s: claims.record_run(s, key, run_id))
            return run_id
        exists, run_id = await db_call(lambda s: claims.claimed_run(s, key))
        if run_id:
            return run_id  # same-day repeat: nothing launched
        if not exists:
            continue  # the claimant's launch failed and it let go: claim it ourselves
        if await db_call(lambda s: claims.release_if_stale(s, key, STALE_CLAIM_SECONDS)):
            continue
        if loop.time() > deadline:
            raise ApiError(503, f"Transcription of fiche {fiche_id} is being launched by another request; retry",
                           "SERVICE_UNAVAILABLE")
        await asyncio.sleep(0.1)  # another request is launching it right now


async def transcribe_batch(request: Request) -> JSONResponse:
    await authorize(request, "transcriptions.write")
    body = await json_body(request)
    fiche_ids, priority = _batch_input(body)
    # spec 06 §4.3: 403 unless every fiche is in the caller's scope
    await authorize(request, "transcriptions.write", fiche_ids, out_of_scope=forbidden("Forbidden"))
    day = dt.datetime.now(dt.UTC).date()
    await db_call(claims.prune)
    gate = asyncio.Semaphore(BATCH_LAUNCH_CONCURRENCY)

    async def one(fiche_id: str) -> str:
        async with gate:
            return await _claim_and_launch(request, fiche_id, priority, day)

    results = await asyncio.gather(*(one(f) for f in fiche_ids), return_exceptions=True)
    for result in results:
        if isinstance(result, DagsterUnavailable):
            raise _unavailable(result)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return JSONResponse({"success": True, "message": f"{len(fiche_ids)} transcription jobs queued",
                         "fiche_ids": fiche_ids, "event_ids": list(results)})


# --------------------------------------------------------------------------------------------- #
# Reads
# --------------------------------------------------------------------------------------------- #


async def status(request: Request) -> JSONResponse:
    await authorize(request, "transcriptions.read")
    fiche_id = fiche_id_param(request)
    await authorize(request, "transcriptions.read", [fiche_id], missing=not_cached(fiche_id))

    def read(s) -> dict[str, Any] | None:
        row = cached_row(s, fiche_id)
        if row is None:
            return None
        recs = fiche_db.recordings_of(s, row.id)
        total = len(recs)
        done = sum(1 for r in recs if r.has_transcription)
        return {
            "ficheId": fiche_id,
            "total": total,
            "transcribed": done,
            "pending": total - done,  # failures and missing URLs included
            "percentage": round(100 * done / total) if total else 0,
            "missingUrl": sum(1 for r in recs if not r.recording_url),  # PROPOSED (spec 02 §6)
            "recordings": [
                {
                    "callId": r.call_id,
                    "hasTranscription": r.has_transcription,
                    "transcriptionId": r.transcription_id,
                    "transcribedAt": iso(r.transcribed_at),
                    "recordingDate": r.recording_date,
                    "recordingTime": r.recording_time,
                    "durationSeconds": r.duration_seconds,
                }
                for r in recs
            ],
        }

    data = await db_call(read)
    if data is None:
        raise not_cached(fiche_id)
    return JSONResponse({"success": True, "data": data})


def _transcription_of(s: Any, rec: Recording) -> dict[str, Any] | None:
    """The stored word JSON when it has words (legacy rows), else the text with the language
    columns and ``words: []``. New rows keep no word JSON; when their text is empty, the chunk
    texts stand in. None: nothing stored at all."""
    data = rec.transcription_data
    if isinstance(data, dict) and isinstance(data.get("words"), list) and data["words"]:
        return data
    text = rec.transcription_text
    if not text:
        parts = s.scalars(
            select(RecordingTranscriptionChunk.full_text)
            .where(RecordingTranscriptionChunk.recording_id == rec.id)
            .order_by(RecordingTranscriptionChunk.chunk_index)
        ).all()
        text = "\n".join(p for p in parts if p)
    if not text:
        return None
    out: dict[str, Any] = {"text": text, "language_code": rec.transcription_language_code or "fr"}
    if rec.transcription_language_probability is not None:
        out["language_probability"] = rec.transcription_language_probability
    out["words"] = []
    return out


async def recording_transcription(request: Request) -> JSONResponse:
    await authorize(request, "transcriptions.read")
    fiche_id = fiche_id_param(request)
    call_id = request.path_params["call_id"]
    await authorize(request, "transcriptions.read", [fiche_id], missing=not_found("Recording not found"))

    def read(s) -> tuple[str, dict[str, Any] | None]:
        row = cached_row(s, fiche_id)
        rec = None if row is None else s.scalar(
            select(Recording).where(Recording.fiche_cache_id == row.id, Recording.call_id == call_id))
        if rec is None:
            return "Recording not found", None
        if not rec.has_transcription:
            return "No transcription available for this recording", None
        transcription = _transcription_of(s, rec)
        if transcription is None:
            return "Transcription data not found in DB", None
        return "", {
            "call_id": rec.call_id,
            "recording_url": rec.recording_url,
            "duration_seconds": rec.duration_seconds,
            "transcription_id": rec.transcription_id,
            "transcription": transcription,
            "has_transcription": True,
        }

    error, data = await db_call(read)
    if data is None:
        raise not_found(error)
    return JSONResponse({"success": True, "data": data})


def _instant(value: str | None, name: str) -> dt.datetime | None:
    """ISO-8601 date or instant → naive UTC (how ``events.created_at`` is stored); bad → 400."""
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        try:  # an unencoded "+02:00" arrives as " 02:00"
            parsed = dt.datetime.fromisoformat(_SPACED_OFFSET.sub(r"+\1", value.strip()))
        except ValueError:
            raise validation_error(f"Invalid {name}: ISO-8601 date or date-time expected") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


def _int_query(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = query_single(request, name)
    if raw is None:
        return default
    value = raw.strip()
    if not DIGITS.match(value) or int(value) < low or (high is not None and int(value) > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        raise validation_error(f"Invalid {name}: integer {bounds} expected")
    return int(value)


def _level(name: str) -> str:
    return "error" if name.endswith("failed") else "info"


async def logs(request: Request) -> JSONResponse:
    """The fiche's ``transcription.*`` events, oldest first. ``run_id`` (legacy alias ``trace_id``)
    narrows to one run; ``level`` is ``error`` (``*failed`` events) or ``info`` (the others)."""
    await authorize(request, "transcriptions.read")
    fiche_id = fiche_id_param(request)
    run_id, trace_id = query_single(request, "run_id"), query_single(request, "trace_id")
    run_filter = run_id or trace_id
    level = query_single(request, "level")
    if level is not None and level not in ("info", "error"):
        raise validation_error("Invalid level: info or error expected")
    since = _instant(query_single(request, "since"), "since")
    until = _instant(query_single(request, "until"), "until")
    limit = _int_query(request, "limit", LOG_LIMIT_DEFAULT, 1, LOG_LIMIT_MAX)
    offset = _int_query(request, "offset", 0, 0, None)
    allowed = await scope_filter(request, [fiche_id])
    in_scope = allowed is None or fiche_id in allowed  # out of scope: answered like a fiche without logs

    def read(s) -> list[dict[str, Any]]:
        if not in_scope:
            return []
        q = select(Event).where(Event.channels.contains([f"fiche-{fiche_id}"]), Event.name.like("transcription.%"))
        if run_filter:
            q = q.where(Event.payload["run_id"].astext == run_filter)
        if level == "error":
            q = q.where(Event.name.like("%failed"))
        elif level == "info":
            q = q.where(Event.name.not_like("%failed"))
        if since is not None:
            q = q.where(Event.created_at >= since)
        if until is not None:
            q = q.where(Event.created_at <= until)
        q = q.order_by(Event.id.asc()).limit(limit).offset(offset)  # the outbox id is the order
        return [
            {"id": str(e.id), "event": e.name, "level": _level(e.name), "payload": e.payload,
             "createdAt": iso(e.created_at)}
            for e in s.scalars(q)
        ]

    items = await db_call(read)
    body: dict[str, Any] = {"success": True, "data": items, "count": len(items)}
    if trace_id is not None:
        body["trace_id"] = trace_id
    body.update(limit=limit, offset=offset)
    return JSONResponse(body)


async def timeline(request: Request) -> JSONResponse:
    """The timeline exactly as the audit engine builds it (``build_timeline(timeline_input)``) and
    its prompt-mode text (``timeline_text``)."""
    await authorize(request, "transcriptions.read")
    fiche_id = fiche_id_param(request)
    await authorize(request, "transcriptions.read", [fiche_id], missing=not_cached(fiche_id))

    def read(s) -> list[dict[str, Any]] | None:
        row = cached_row(s, fiche_id)
        return None if row is None else build_timeline(timeline_input(s, row.id))

    recordings = await db_call(read)
    if recordings is None:
        raise not_cached(fiche_id)
    return JSONResponse({"success": True, "data": {"ficheId": fiche_id, "recordings": recordings,
                                                   "text": timeline_text(recordings)}})


routes = [
    Route("/api/transcriptions/batch", transcribe_batch, methods=["POST"]),  # before /{fiche_id}
    Route("/api/transcriptions/{fiche_id}", transcribe_one, methods=["POST"]),
    Route("/api/transcriptions/{fiche_id}/status", status, methods=["GET"]),
    Route("/api/transcriptions/{fiche_id}/recordings/{call_id}", recording_transcription, methods=["GET"]),
    Route("/api/transcriptions/{fiche_id}/logs", logs, methods=["GET"]),
    Route("/api/transcriptions/{fiche_id}/timeline", timeline, methods=["GET"]),
]
