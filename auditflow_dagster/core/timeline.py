"""Transcript chunking and the audit timeline (spec 02 §3.3, §3.4, §4; spec 03 §2.3).

Why this is pure and exact: citations are addressed as ``(recording_index, chunk_index)`` and
evidence gating re-reads the very same chunks, so the chunking, the kept-recording indices and the
text shown to the LLM form one contract. Any drift (another chunk size, a different order, a
reformatted number) would make correct quotes fail gating. Text layout follows the legacy
character for character, including JavaScript number formatting.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any

from auditflow_dagster.core.audit_config import AuditStepSpec
from auditflow_dagster.core.evidence import norm

__all__ = [
    "TIMELINE_CHUNK_SIZE",
    "build_timeline",
    "chunk_words",
    "excerpt_text",
    "js_number",
    "minutage",
    "synthetic_words",
    "timeline_text",
]

TIMELINE_CHUNK_SIZE = 10
"""Messages (speaker turns) per chunk. A constant, not a setting: stored chunk indices depend on it."""

EXCERPT_MIN_CHUNKS = 10
EXCERPT_MAX_TERMS = 40
EXCERPT_MIN_TERM_CHARS = 4

_B = "\u2550" * 79  # ═
_E = "=" * 80
_CHUNK_RULE = "\u2500\u2500\u2500"  # ───

FULL_TITLE = "CHRONOLOGIE COMPLÈTE DE LA CONVERSATION"
FULL_FOOTER = "FIN DE LA CHRONOLOGIE"
EXCERPT_TITLE = "EXTRAIT PERTINENT DE LA CHRONOLOGIE (pour cette étape)"
EXCERPT_FOOTER = "FIN DE L'EXTRAIT"
EXCERPT_WARNINGS = (
    "⚠️ ATTENTION : ceci est un EXTRAIT de la chronologie, limité aux passages jugés pertinents "
    "pour cette étape ; le reste de la conversation n'est pas affiché.",
    "⚠️ N'invente rien : si la preuve d'un point de contrôle n'apparaît pas dans cet extrait, "
    "marque-le ABSENT (ou PARTIEL si l'élément n'est qu'indirect).",
)


# --------------------------------------------------------------------------------------------- #
# Number formatting
# --------------------------------------------------------------------------------------------- #


def js_number(x: float | int) -> str:
    """Format a number like JavaScript's ``String(x)``.

    Integral values have no ``.0`` (``3``), others use the shortest round-trip digits (``0.12``),
    with JS's switch to exponent notation below 1e-6 and from 1e21. The legacy prompts printed
    timestamps this way and the LLM is told to read them back, so the format is part of the contract.
    """
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, int):
        return str(x)
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "0"  # also -0, like JS
    sign = "-" if x < 0 else ""
    _, digit_tuple, exponent = Decimal(repr(abs(x))).as_tuple()
    digits = "".join(map(str, digit_tuple))
    stripped = digits.rstrip("0")
    exponent += len(digits) - len(stripped)  # type: ignore[operator]
    digits = stripped or "0"
    k = len(digits)
    n = exponent + k  # position of the decimal point relative to the first digit
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = f"{digits[:n]}.{digits[n:]}"
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        mantissa = digits[0] + (f".{digits[1:]}" if k > 1 else "")
        body = f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + body


def minutage(seconds: float) -> str:
    """``MM:SS`` from seconds: floored, zero-padded, minutes not capped at 99 (``100:05``).

    Negative or non-finite inputs give ``00:00`` (a timestamp cannot be before the call start).
    """
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        return "00:00"
    if not math.isfinite(value) or value < 0:
        return "00:00"
    total = math.floor(value)
    return f"{total // 60:02d}:{total % 60:02d}"


# --------------------------------------------------------------------------------------------- #
# Chunking
# --------------------------------------------------------------------------------------------- #


def _num(value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    return value if math.isfinite(value) else 0


def chunk_words(words: list[dict]) -> list[dict]:
    """Group word tokens into messages and messages into chunks (spec 02 §3.3, must be identical).

    * ``spacing`` tokens are skipped; ``word`` and ``audio_event`` tokens are kept;
    * speaker = ``speaker_id`` or ``"unknown"``; consecutive tokens of one speaker form a message
      (tokens joined by single spaces, start = first token start, end = last token end);
    * every :data:`TIMELINE_CHUNK_SIZE` messages form a chunk (0-based dense ``chunk_index``).

    PROPOSED fix applied: the first message starts at its first token's start even when that token
    has no speaker (legacy left it at 0). Chunk indices are unaffected.
    """
    messages: list[dict[str, Any]] = []
    for w in words or []:
        if not isinstance(w, dict) or w.get("type") == "spacing":
            continue
        speaker = w.get("speaker_id") or "unknown"
        text = w.get("text")
        text = text if isinstance(text, str) else ""
        if messages and messages[-1]["speaker"] == speaker:
            msg = messages[-1]
            msg["tokens"].append(text)
            msg["end"] = _num(w.get("end"))
        else:
            messages.append(
                {"speaker": speaker, "tokens": [text], "start": _num(w.get("start")), "end": _num(w.get("end"))}
            )

    chunks: list[dict[str, Any]] = []
    for index, offset in enumerate(range(0, len(messages), TIMELINE_CHUNK_SIZE)):
        group = messages[offset : offset + TIMELINE_CHUNK_SIZE]
        speakers: list[str] = []
        for m in group:
            if m["speaker"] not in speakers:
                speakers.append(m["speaker"])
        chunks.append(
            {
                "chunk_index": index,
                "start_timestamp": group[0]["start"],
                "end_timestamp": group[-1]["end"],
                "message_count": len(group),
                "speakers": speakers,
                "full_text": "\n".join(f"{m['speaker']}: {' '.join(m['tokens'])}" for m in group),
            }
        )
    return chunks


def synthetic_words(text: str, duration_seconds: int | None) -> list[dict]:
    """Invent word timings for text-only legacy rows (spec 02 §3.4).

    Only for backfill index parity: timings are spread evenly over the duration and the speaker
    alternation (10 words ``speaker_0``, 10 words ``speaker_1``…) is made up. ``round(n/2)`` is
    JavaScript's half-up ``Math.round``.
    """
    tokens = (text or "").split()
    n = len(tokens)
    if n == 0:
        return []
    if isinstance(duration_seconds, (int, float)) and not isinstance(duration_seconds, bool) and duration_seconds > 0:
        dur: float = duration_seconds
    else:
        dur = max(1, (n + 1) // 2)  # == floor(n/2 + 0.5)
    w = max(0.05, dur / n)
    return [
        {
            "text": tok,
            "start": i * w,
            "end": (i + 1) * w,
            "type": "word",
            "speaker_id": "speaker_0" if i % 20 < 10 else "speaker_1",
        }
        for i, tok in enumerate(tokens)
    ]


# --------------------------------------------------------------------------------------------- #
# Timeline build
# --------------------------------------------------------------------------------------------- #


def _iso(value: Any) -> str:
    """JS ``toISOString()`` form (``2025-01-15T09:30:12.123Z``); naive datetimes are UTC."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    if isinstance(value, str):
        return value
    return ""


def _normalize_chunk(chunk: dict[str, Any], position: int) -> dict[str, Any]:
    ci = chunk.get("chunk_index")
    return {
        "chunk_index": ci if isinstance(ci, int) and not isinstance(ci, bool) else position,
        "start_timestamp": _num(chunk.get("start_timestamp")),
        "end_timestamp": _num(chunk.get("end_timestamp")),
        "message_count": chunk.get("message_count") or 0,
        "speakers": list(chunk.get("speakers") or []),
        "full_text": chunk.get("full_text") or "",
    }


def _legacy_words(data: Any) -> list[dict[str, Any]]:
    """Words of a legacy ``transcription_data`` payload; a missing ``type`` means ``word``."""
    if not isinstance(data, dict) or not isinstance(data.get("words"), list):
        return []
    return [{**w, "type": w.get("type") or "word"} for w in data["words"] if isinstance(w, dict)]


def build_timeline(recordings: list[dict]) -> list[dict]:
    """Build the run timeline from recordings already in canonical order (spec 02 §4).

    A recording is kept only if it is transcribed **and** has a URL (the UI must be able to play what
    is cited). Chunks come from the stored rows; failing that from legacy word JSON, failing that
    from synthetic words over the text; a recording with none of these is skipped.
    ``recording_index`` is the 0-based position among the kept recordings — it is what citations
    carry, hence the timeline is frozen in the audit snapshot.
    """
    out: list[dict[str, Any]] = []
    for rec in recordings or []:
        url = rec.get("recording_url") or ""
        if not rec.get("has_transcription") or not (isinstance(url, str) and url.strip()):
            continue
        stored = [c for c in (rec.get("chunks") or []) if isinstance(c, dict)]
        if stored:
            chunks = sorted((_normalize_chunk(c, i) for i, c in enumerate(stored)), key=lambda c: c["chunk_index"])
        else:
            chunks = chunk_words(_legacy_words(rec.get("transcription_data")))
            if not chunks:
                chunks = chunk_words(synthetic_words(rec.get("transcription_text") or "", rec.get("duration_seconds")))
        if not chunks:
            continue
        duration = rec.get("duration_seconds")
        out.append(
            {
                "recording_index": len(out),
                "call_id": str(rec.get("call_id") or ""),
                "start_time": _iso(rec.get("start_time")),
                "duration_seconds": duration if isinstance(duration, (int, float)) and not isinstance(duration, bool) else 0,
                "recording_url": url,
                "recording_date": rec.get("recording_date") or "",
                "recording_time": rec.get("recording_time") or "",
                "from_number": rec.get("from_number") or "",
                "to_number": rec.get("to_number") or "",
                "total_chunks": len(chunks),
                "chunks": chunks,
            }
        )
    return out


# --------------------------------------------------------------------------------------------- #
# Text layout
# --------------------------------------------------------------------------------------------- #


def _recording_block(rec: dict[str, Any], chunks: list[dict[str, Any]]) -> str:
    parts = [
        f"\n{_E}\n",
        f"Enregistrement #{rec['recording_index'] + 1}\n",
        f"Date: {rec.get('recording_date') or 'N/A'}\n",
        f"Heure: {rec.get('recording_time') or 'N/A'}\n",
        f"Call ID: {rec.get('call_id')}\n",
        f"De: {rec.get('from_number') or 'N/A'} → Vers: {rec.get('to_number') or 'N/A'}\n",
        f"Durée: {js_number(rec.get('duration_seconds') or 0)}s\n",
        f"Total Chunks: {rec.get('total_chunks', len(rec.get('chunks') or []))}\n",
        f"{_E}\n\n",
    ]
    for c in chunks:
        parts.append(
            f"\n{_CHUNK_RULE} Chunk {c['chunk_index'] + 1} {_CHUNK_RULE}\n"
            f"Temps: {js_number(c['start_timestamp'])}s - {js_number(c['end_timestamp'])}s\n"
            f"Speakers: {', '.join(c.get('speakers') or [])}\n"
            "\n"
            "Conversation:\n"
            f"{c.get('full_text') or ''}\n"
        )
    return "".join(parts)


def timeline_text(timeline: list[dict]) -> str:
    """The full timeline as shown to the LLM in prompt mode (spec 02 §4 layout, never truncated).

    Labels are 1-based (``Enregistrement #1``, ``Chunk 1``) and times are seconds; the prompt rules
    tell the model to subtract 1 and convert to ``MM:SS`` itself.
    """
    parts = [f"{_B}\n{FULL_TITLE}\n{_B}\n\n"]
    for rec in timeline:
        parts.append(_recording_block(rec, rec.get("chunks") or []))
    parts.append(f"\n{_E}\n{FULL_FOOTER}\n{_E}\n\n")
    return "".join(parts)


def _excerpt_terms(step: AuditStepSpec) -> list[str]:
    terms: list[str] = []
    for raw in [step.name, *step.keywords, *step.control_points]:
        t = norm(raw)
        if len(t) >= EXCERPT_MIN_TERM_CHARS and t not in terms:
            terms.append(t)
    return terms[:EXCERPT_MAX_TERMS]


def _select_excerpt(timeline: list[dict], step: AuditStepSpec, max_chunks: int) -> dict[int, set[int]]:
    """``{list position of recording: {positions of selected chunks}}``."""
    terms = _excerpt_terms(step)
    scored: list[tuple[int, int, int]] = []  # (score, rec pos, chunk pos), in timeline order
    for rp, rec in enumerate(timeline):
        for cp, chunk in enumerate(rec.get("chunks") or []):
            text = norm(chunk.get("full_text") or "")
            score = sum(1 for t in terms if t in text)
            if score > 0:
                scored.append((score, rp, cp))
    selected: dict[int, set[int]] = {}
    if scored:
        # Stable sort: ties keep timeline order (earlier recording, earlier chunk first).
        top = sorted(scored, key=lambda s: -s[0])[: max(EXCERPT_MIN_CHUNKS, max_chunks)]
        for _, rp, cp in top:
            n = len(timeline[rp].get("chunks") or [])
            for neighbour in (cp - 1, cp, cp + 1):
                if 0 <= neighbour < n:
                    selected.setdefault(rp, set()).add(neighbour)
    else:
        for rp, rec in enumerate(timeline):
            n = len(rec.get("chunks") or [])
            if n:
                selected[rp] = set(range(min(2, n)))
    return selected


def excerpt_text(timeline: list[dict], step: AuditStepSpec, max_chunks: int = 40) -> str:
    """Per-step excerpt for ``verifyProductInfo`` steps (spec 03 §2.3, spec 02 §4 excerpt mode).

    Product steps run against long calls where the relevant passage is short; sending only the
    chunks that mention the step's name/keywords/control points (top ``max_chunks``, at least 10,
    plus ±1 neighbour for context) keeps the prompt focused. When nothing matches, the first two
    chunks of each recording are sent so the model still sees the call opening. The header warns
    the model that this is an excerpt and that missing proof means ABSENT/PARTIEL.
    """
    selected = _select_excerpt(timeline, step, max_chunks)
    parts = [f"{_B}\n{EXCERPT_TITLE}\n{_B}\n"]
    parts.extend(f"{line}\n" for line in EXCERPT_WARNINGS)
    parts.append("\n")
    for rp, rec in enumerate(timeline):
        picks = selected.get(rp)
        if not picks:
            continue
        chunks = rec.get("chunks") or []
        parts.append(_recording_block(rec, [chunks[i] for i in sorted(picks)]))
    parts.append(f"\n{_E}\n{EXCERPT_FOOTER}\n{_E}\n\n")
    return "".join(parts)
