"""Transcription storage and the timeline input (spec 02 §3.1, §4).

``store_transcription`` is one transaction per recording: chunks replaced, row flagged — so a paid
transcript is either fully stored or not at all, and a retry finds ``has_transcription`` set.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from auditflow_dagster.core.timeline import chunk_words, synthetic_words
from auditflow_dagster.db.clock import now_utc
from auditflow_dagster.db.fiches import recordings_of
from auditflow_dagster.db.models import Recording, RecordingTranscriptionChunk


def _strip_nul(s: str | None) -> str | None:
    return s.replace("\x00", "") if isinstance(s, str) else s


def store_transcription(
    session: Session,
    recording_id: int,
    *,
    transcription_id: str,
    text: str,
    words: list[dict[str, Any]],
    language_code: str | None,
    language_probability: float | None,
) -> int:
    """Store one recording's transcript; returns the number of chunks written."""
    rec = session.get(Recording, recording_id, with_for_update=True)
    if rec is None:
        raise LookupError(f"recording {recording_id} not found")
    valid = [w for w in words or [] if isinstance(w, dict) and isinstance(w.get("type"), str)]
    if not valid and (text or "").strip():
        valid = synthetic_words(text, rec.duration_seconds)
    chunks = chunk_words(valid)
    if chunks:
        session.execute(delete(RecordingTranscriptionChunk).where(RecordingTranscriptionChunk.recording_id == rec.id))
        session.execute(
            pg_insert(RecordingTranscriptionChunk)
            .values(
                [
                    {
                        "recording_id": rec.id,
                        "chunk_index": c["chunk_index"],
                        "start_timestamp": c["start_timestamp"],
                        "end_timestamp": c["end_timestamp"],
                        "message_count": c["message_count"],
                        "speakers": list(c["speakers"]),
                        "full_text": _strip_nul(c["full_text"]),
                    }
                    for c in chunks
                ]
            )
            .on_conflict_do_nothing()
        )
        rec.transcription_data = None
    rec.transcription_id = transcription_id
    rec.transcription_text = _strip_nul(text) or None
    rec.transcription_language_code = language_code
    rec.transcription_language_probability = language_probability
    rec.has_transcription = True
    rec.transcribed_at = now_utc()
    rec.updated_at = now_utc()
    return len(chunks)


def timeline_input(session: Session, fiche_cache_id: int) -> list[dict[str, Any]]:
    """Recordings in canonical order with their chunks, shaped for ``core.timeline.build_timeline``."""
    recs = recordings_of(session, fiche_cache_id)
    ids = [r.id for r in recs]
    chunks: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    if ids:
        for c in session.scalars(
            select(RecordingTranscriptionChunk)
            .where(RecordingTranscriptionChunk.recording_id.in_(ids))
            .order_by(RecordingTranscriptionChunk.recording_id, RecordingTranscriptionChunk.chunk_index)
        ):
            chunks[c.recording_id].append(
                {
                    "chunk_index": c.chunk_index,
                    "start_timestamp": c.start_timestamp,
                    "end_timestamp": c.end_timestamp,
                    "message_count": c.message_count,
                    "speakers": list(c.speakers),
                    "full_text": c.full_text,
                }
            )
    return [
        {
            "call_id": r.call_id,
            "start_time": r.start_time,
            "duration_seconds": r.duration_seconds,
            "recording_url": r.recording_url,
            "recording_date": r.recording_date,
            "recording_time": r.recording_time,
            "from_number": r.from_number,
            "to_number": r.to_number,
            "has_transcription": r.has_transcription,
            "chunks": chunks[r.id],
            "transcription_data": r.transcription_data if (r.has_transcription and not chunks[r.id]) else None,
            "transcription_text": r.transcription_text,
        }
        for r in recs
    ]
