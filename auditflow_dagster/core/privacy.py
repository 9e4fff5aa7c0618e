"""What the LLM sees of a transcript when personal data is redacted (issue 11 §1, §2).

The glue between :mod:`auditflow_dagster.core.redaction` (the detectors) and the places a transcript
leaves for the LLM: the audit snapshot (prompt-mode text and excerpts, tools-mode tool results,
evidence gating, reruns) and the chat context. Pure (no settings, no DB): callers decide whether
``AUDITFLOW_REDACT_PII`` is on.

Why the audit snapshot stores the *redacted* timeline: the snapshot is the one text every step, the
finalizer's evidence gating, reruns and the audit chat read. Freezing the LLM view there makes
"gating compares quotes against the text the LLM saw" true by construction (a quote such as
``« c'est [IBAN] »`` is valid) and keeps citation addresses unchanged (redaction never moves
recordings or chunks). The stored transcript (recordings and chunk tables) keeps the original.

What was said survives as data, not text: each chunk of a redacted view carries ``pii_spoken``
(``[{"kind", "speaker"}]``, from :func:`~auditflow_dagster.core.redaction.spoken_facts` on the
original text) and each recording ``pii_redacted: true``. The facts of the audit are rebuilt from
there (:func:`stored_facts`) for the prompt's facts section, the audit's result metadata and the
chat, so "bank details must not be read back aloud" stays decidable without the digits. The transcript
tools and timeline layout read only their own fields, so these keys never reach the model as such.

``recording_url`` stays original in the snapshot (citations take it from there so the UI can play
the audio), but its file name carries the caller's and callee's numbers
(``…-HHhMM-<from>-<to>.mp3``): :func:`tools_view` masks them in the copy handed to the analyzer,
the only place the URL is shown to the model (tools results; the LLM's copy is overwritten at
finalization anyway).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from auditflow_dagster.core.redaction import (
    PLACEHOLDERS,
    SpokenFact,
    facts_text,
    redact,
    redact_timeline,
    spoken_facts,
)
from auditflow_dagster.core.timeline import minutage

__all__ = [
    "REDACTED_KEY",
    "SPOKEN_KEY",
    "facts_section",
    "is_redacted",
    "llm_view",
    "personal_data_metadata",
    "redact_chat_items",
    "redact_fiche_facts",
    "stored_facts",
    "tools_view",
]

REDACTED_KEY = "pii_redacted"
"""Set to ``True`` on every recording of a redacted view."""
SPOKEN_KEY = "pii_spoken"
"""On every chunk of a redacted view: ``[{"kind": "IBAN", "speaker": "speaker_1"}, …]`` in text order."""

#: A phone number in a recording file name or URL: 9 digits or more in a row (national 10, +33 11).
_URL_PHONE = re.compile(r"\+?\d{9,}")


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def is_redacted(timeline: Any) -> bool:
    """True for a view built by :func:`llm_view` (a snapshot frozen with redaction on)."""
    return isinstance(timeline, list) and any(
        isinstance(rec, Mapping) and rec.get(REDACTED_KEY) is True for rec in timeline
    )


def llm_view(timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The redacted copy of a timeline, with what was spoken recorded per chunk.

    Chunk texts and the ``from_number``/``to_number`` headers go through
    :func:`~auditflow_dagster.core.redaction.redact_timeline`; indices, speakers and timestamps are
    unchanged. The facts are computed on the *original* text (they cannot be recovered from
    placeholders). On a view already redacted the facts are kept and only the redaction is re-applied
    (idempotent; it masks header numbers filled in since, e.g. from file names by the chat).
    """
    if is_redacted(timeline):
        return redact_timeline(timeline)
    facts = spoken_facts(timeline)
    by_chunk: dict[tuple[int, int], list[dict[str, str]]] = {}
    for f in facts:
        by_chunk.setdefault((f.recording_index, f.chunk_index), []).append({"kind": f.kind, "speaker": f.speaker})
    out = redact_timeline(timeline)
    for rpos, rec in enumerate(out):
        if not isinstance(rec, dict):
            continue
        ri = _int(rec.get("recording_index"), rpos)
        rec[REDACTED_KEY] = True
        for cpos, chunk in enumerate(rec.get("chunks") or []):
            if isinstance(chunk, dict):
                chunk[SPOKEN_KEY] = by_chunk.get((ri, _int(chunk.get("chunk_index"), cpos)), [])
    return out


def stored_facts(timeline: list[dict[str, Any]]) -> list[SpokenFact]:
    """The spoken facts recorded in a redacted view, in timeline order (== ``spoken_facts`` of the
    original). Empty for a timeline that is not a redacted view."""
    facts: list[SpokenFact] = []
    if not is_redacted(timeline):
        return facts
    for rpos, rec in enumerate(timeline):
        if not isinstance(rec, Mapping):
            continue
        ri = _int(rec.get("recording_index"), rpos)
        for cpos, chunk in enumerate(rec.get("chunks") or []):
            if not isinstance(chunk, Mapping):
                continue
            ci = _int(chunk.get("chunk_index"), cpos)
            when = minutage(chunk.get("start_timestamp") or 0)
            for said in chunk.get(SPOKEN_KEY) or []:
                if isinstance(said, Mapping) and isinstance(said.get("kind"), str):
                    facts.append(SpokenFact(said["kind"], str(said.get("speaker") or "unknown"), ri, ci, when))
    return facts


def facts_section(timeline: list[dict[str, Any]]) -> str | None:
    """The prompt's facts section for a redacted view; ``None`` otherwise (prompt unchanged)."""
    return facts_text(stored_facts(timeline)) if is_redacted(timeline) else None


def personal_data_metadata(timeline: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``result_data.metadata.personal_data`` of an audit whose snapshot is a redacted view:
    ``{"redacted": true, "spoken": [{kind, speaker, recording_index, chunk_index, minutage}]}``
    (kinds and places only, never a value); ``None`` otherwise."""
    if not is_redacted(timeline):
        return None
    return {"redacted": True, "spoken": [asdict(f) for f in stored_facts(timeline)]}


def tools_view(timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The timeline handed to the analyzer: for a redacted view, a copy whose ``recording_url``
    has its phone numbers (runs of 9+ digits) replaced by ``[TEL]``; any other timeline as is."""
    if not is_redacted(timeline):
        return timeline
    out = copy.copy(timeline)
    for i, rec in enumerate(out):
        if isinstance(rec, Mapping) and isinstance(rec.get("recording_url"), str):
            out[i] = {**rec, "recording_url": _URL_PHONE.sub(PLACEHOLDERS["TEL"], rec["recording_url"])}
    return out


def redact_fiche_facts(fiche: Mapping[str, Any]) -> dict[str, Any]:
    """The chat's fiche facts with the prospect's e-mail and phone replaced by their placeholders
    (kept empty when empty: "N/A" in the context)."""
    out = dict(fiche)
    for key, kind in (("prospect_email", "EMAIL"), ("prospect_tel", "TEL")):
        value = out.get(key)
        if value is not None and str(value).strip():
            out[key] = PLACEHOLDERS[kind]
    return out


def redact_chat_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat input items (stored window + new message) with their text redacted."""
    return [{**item, "content": redact(item["content"]).text} if isinstance(item.get("content"), str) else dict(item)
            for item in items]
