"""Transcript tools for the "tools" analysis mode (``use_rlm``, spec 03 §5).

Why tools: in prompt mode the whole timeline is pasted into every step prompt. In tools mode the
model gets no transcript at all; it *searches* the run timeline and *fetches* the chunks it wants
to read, and may only quote what it fetched. These two functions are that interface.

Why pure and deterministic: the tools read the very timeline frozen in the audit snapshot — the
one evidence gating checks citations against — and the coordinates they hand out
(``recording_index``, ``chunk_index``, ``minutage``) are what the model copies into its citations.
Same timeline + same arguments ⇒ byte-identical JSON (:func:`tool_output_json`), which is also what
lets the tests (and the fake OpenAI server) verify exactly what the model was told.

Nothing here raises on bad model input: :func:`run_tool_call` turns invalid arguments into an
``{"error": …}`` result that is fed back to the model so it can correct itself.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping, Sequence

from auditflow_dagster.core.evidence import _as_index, norm
from auditflow_dagster.core.timeline import minutage

__all__ = [
    "FETCH_TOOL",
    "SEARCH_TOOL",
    "TOOL_NAMES",
    "ToolArgumentError",
    "ToolLimits",
    "TranscriptIndex",
    "clamp_int",
    "get_transcript_chunks",
    "public_recording_url",
    "run_tool_call",
    "search_terms",
    "search_transcript",
    "timeline_has_chunks",
    "tool_definitions",
    "tool_output_json",
    "transcript_mode",
]

SEARCH_TOOL = "searchTranscript"
FETCH_TOOL = "getTranscriptChunks"
TOOL_NAMES = (SEARCH_TOOL, FETCH_TOOL)

# Parameter ranges and defaults (spec 03 §5). A ``null`` argument means "the default".
MAX_RESULTS_DEFAULT, MAX_RESULTS_MIN, MAX_RESULTS_MAX = 25, 1, 50
MIN_TERM_LENGTH_DEFAULT, MIN_TERM_LENGTH_MIN, MIN_TERM_LENGTH_MAX = 3, 2, 8
MAX_SEARCH_TERMS = 40
PREVIEW_CHARS = 450
CHUNK_REFS_MIN, CHUNK_REFS_MAX = 1, 60
NEIGHBORS_DEFAULT, NEIGHBORS_MIN, NEIGHBORS_MAX = 0, 0, 2
MAX_CHARS_DEFAULT, MAX_CHARS_MIN, MAX_CHARS_MAX = 20_000, 1_000, 80_000
MAX_FETCH_DEFAULT, MAX_FETCH_MIN, MAX_FETCH_MAX = 20, 1, 40
MAX_ROUNDS_DEFAULT, MAX_ROUNDS_MIN = 8, 2
ELLIPSIS = "…"

TranscriptMode = Literal["tools", "prompt"]


class ToolArgumentError(ValueError):
    """Arguments the model sent cannot be used; the message is fed back to it as a tool error."""


def clamp_int(value: Any, *, default: int, lo: int, hi: int, name: str = "value") -> int:
    """A tool's numeric parameter: ``None`` ⇒ ``default``; integral numbers are clamped to [lo, hi].

    Clamping (rather than refusing) keeps the conversation going when a model asks for 100 results;
    a non-number is a real mistake and raises :class:`ToolArgumentError`.
    """
    if value is None:
        value = default
    if isinstance(value, bool):
        raise ToolArgumentError(f"{name} must be an integer or null")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ToolArgumentError(f"{name} must be an integer or null")
        value = math.floor(value)
    if not isinstance(value, int):
        raise ToolArgumentError(f"{name} must be an integer or null")
    return max(lo, min(hi, value))


@dataclass(frozen=True)
class ToolLimits:
    """Operator limits (settings ``AUDIT_TOOLS_*``), normalised to the ranges the spec allows.

    ``max_search_results`` and ``max_chunk_chars`` are the values used when the model passes
    ``null``; ``max_chunk_fetch`` is the hard cap on distinct chunks requested in one fetch;
    ``max_rounds`` bounds the model/tool conversation (at least 2: one to call, one to answer).
    """

    max_rounds: int = MAX_ROUNDS_DEFAULT
    max_search_results: int = MAX_RESULTS_DEFAULT
    max_chunk_fetch: int = MAX_FETCH_DEFAULT
    max_chunk_chars: int = MAX_CHARS_DEFAULT

    @classmethod
    def normalized(
        cls,
        *,
        max_rounds: int | None = None,
        max_search_results: int | None = None,
        max_chunk_fetch: int | None = None,
        max_chunk_chars: int | None = None,
    ) -> "ToolLimits":
        return cls(
            max_rounds=max(MAX_ROUNDS_MIN, int(max_rounds if max_rounds is not None else MAX_ROUNDS_DEFAULT)),
            max_search_results=clamp_int(max_search_results, default=MAX_RESULTS_DEFAULT, lo=MAX_RESULTS_MIN,
                                         hi=MAX_RESULTS_MAX, name="max_search_results"),
            max_chunk_fetch=clamp_int(max_chunk_fetch, default=MAX_FETCH_DEFAULT, lo=MAX_FETCH_MIN,
                                      hi=MAX_FETCH_MAX, name="max_chunk_fetch"),
            max_chunk_chars=clamp_int(max_chunk_chars, default=MAX_CHARS_DEFAULT, lo=MAX_CHARS_MIN,
                                      hi=MAX_CHARS_MAX, name="max_chunk_chars"),
        )


# --------------------------------------------------------------------------------------------- #
# The timeline as the tools see it
# --------------------------------------------------------------------------------------------- #


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    return value if math.isfinite(value) else 0


def public_recording_url(url: Any) -> str:
    """The recording URL without query string or fragment, ``N/A`` when missing.

    Recording URLs may be signed; the token must not leave for the LLM provider (the same rule as
    for events, spec 06 §1.4). Citations' ``recording_url`` is overwritten at finalization anyway.
    """
    if not isinstance(url, str) or not url.strip():
        return "N/A"
    return url.strip().split("?", 1)[0].split("#", 1)[0] or "N/A"


@dataclass(frozen=True)
class _Entry:
    recording_index: int
    chunk_index: int
    recording: Mapping[str, Any]
    chunk: Mapping[str, Any]


class TranscriptIndex:
    """The chunks of one run timeline, addressed exactly as evidence gating addresses them.

    ``recording_index``/``chunk_index`` come from the timeline dicts (falling back to list positions
    when absent, like gating). Normalised texts are computed lazily once, so a step's many searches
    do not re-normalise the whole transcript.
    """

    def __init__(self, timeline: Sequence[Mapping[str, Any]] | None) -> None:
        entries: dict[tuple[int, int], _Entry] = {}
        recordings: set[int] = set()
        for rpos, rec in enumerate(timeline or []):
            if not isinstance(rec, Mapping):
                continue
            ri = _as_index(rec.get("recording_index"))
            ri = rpos if ri is None else ri
            recordings.add(ri)
            for cpos, chunk in enumerate(rec.get("chunks") or []):
                if not isinstance(chunk, Mapping):
                    continue
                ci = _as_index(chunk.get("chunk_index"))
                ci = cpos if ci is None else ci
                entries.setdefault((ri, ci), _Entry(ri, ci, rec, chunk))
        self._entries = entries
        self._order = sorted(entries)
        self.total_recordings = len(recordings)
        self.total_chunks = len(entries)
        self._norm: dict[tuple[int, int], str] = {}

    def keys(self) -> list[tuple[int, int]]:
        """All chunk coordinates, sorted by recording then chunk."""
        return list(self._order)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def entry(self, key: tuple[int, int]) -> _Entry:
        return self._entries[key]

    def normalized_text(self, key: tuple[int, int]) -> str:
        if key not in self._norm:
            self._norm[key] = norm(_text(self._entries[key].chunk))
        return self._norm[key]


def _text(chunk: Mapping[str, Any]) -> str:
    t = chunk.get("full_text")
    return t if isinstance(t, str) else ""


def _index(timeline: Sequence[Mapping[str, Any]] | TranscriptIndex | None) -> TranscriptIndex:
    return timeline if isinstance(timeline, TranscriptIndex) else TranscriptIndex(timeline)


def timeline_has_chunks(timeline: Sequence[Mapping[str, Any]] | None) -> bool:
    """True when the timeline has at least one chunk the tools could return."""
    return any(
        isinstance(rec, Mapping) and any(isinstance(c, Mapping) for c in (rec.get("chunks") or []))
        for rec in timeline or []
    )


def transcript_mode(use_rlm: bool, timeline: Sequence[Mapping[str, Any]] | None) -> TranscriptMode:
    """Tools mode needs a non-empty structured timeline; otherwise prompt mode, silently (§5)."""
    return "tools" if use_rlm and timeline_has_chunks(timeline) else "prompt"


def _metadata(entry: _Entry) -> dict[str, Any]:
    rec, chunk = entry.recording, entry.chunk
    start = _number(chunk.get("start_timestamp"))
    speakers = chunk.get("speakers")
    return {
        "recording_index": entry.recording_index,
        "chunk_index": entry.chunk_index,
        "minutage_secondes": start,
        "minutage": minutage(start),
        "start_timestamp": start,
        "end_timestamp": _number(chunk.get("end_timestamp")),
        "speakers": [str(s) for s in speakers] if isinstance(speakers, (list, tuple)) else [],
        "recording_date": str(rec.get("recording_date") or "") or "N/A",
        "recording_time": str(rec.get("recording_time") or "") or "N/A",
        "recording_url": public_recording_url(rec.get("recording_url")),
    }


# --------------------------------------------------------------------------------------------- #
# searchTranscript
# --------------------------------------------------------------------------------------------- #


def search_terms(query: str, min_term_length: int = MIN_TERM_LENGTH_DEFAULT) -> list[str]:
    """Distinct tokens of ``norm(query)`` of at least ``min_term_length`` characters, first 40.

    Tokens, not phrases: the model writes a bag of words (step name, keywords, control points) and
    a chunk is scored by how many of them it contains.
    """
    terms: list[str] = []
    for tok in norm(query if isinstance(query, str) else "").split():
        if len(tok) >= min_term_length and tok not in terms:
            terms.append(tok)
            if len(terms) == MAX_SEARCH_TERMS:
                break
    return terms


def _preview(text: str) -> str:
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + ELLIPSIS


def search_transcript(
    timeline: Sequence[Mapping[str, Any]] | TranscriptIndex | None,
    query: str,
    max_results: int | None = MAX_RESULTS_DEFAULT,
    min_term_length: int | None = MIN_TERM_LENGTH_DEFAULT,
) -> dict[str, Any]:
    """Rank the run's chunks by how many query terms they contain (spec 03 §5, ``searchTranscript``).

    Score = number of terms that are substrings of the normalised chunk text (the same ``norm`` as
    gating, so a hit means a quote can be found there). Only score > 0 is kept, ordered by score
    desc, then recording, then chunk, cut to ``max_results`` (1..50, null ⇒ 25). Each match carries
    the coordinates and times to copy into citations and a 450-character preview (``…`` appended only
    when the text was cut); the model must fetch the chunk before quoting it.
    """
    idx = _index(timeline)
    max_results = clamp_int(max_results, default=MAX_RESULTS_DEFAULT, lo=MAX_RESULTS_MIN, hi=MAX_RESULTS_MAX,
                            name="maxResults")
    min_term_length = clamp_int(min_term_length, default=MIN_TERM_LENGTH_DEFAULT, lo=MIN_TERM_LENGTH_MIN,
                                hi=MIN_TERM_LENGTH_MAX, name="minTermLength")
    q = query if isinstance(query, str) else ""
    terms = search_terms(q, min_term_length)
    result: dict[str, Any] = {
        "query": q,
        "normalizedQuery": norm(q),
        "terms": terms,
        "totalRecordings": idx.total_recordings,
        "totalChunks": idx.total_chunks,
        "matches": [],
        "note": "",
    }
    if not terms:
        result["note"] = (
            f"Aucun terme exploitable : la requête normalisée ne contient aucun mot d'au moins "
            f"{min_term_length} caractères. Reformule la recherche avec des mots du dialogue."
        )
        return result
    scored: list[tuple[int, int, int]] = []
    for key in idx.keys():
        text = idx.normalized_text(key)
        score = sum(1 for t in terms if t in text)
        if score > 0:
            scored.append((-score, key[0], key[1]))
    scored.sort()
    hits = len(scored)
    for neg, ri, ci in scored[:max_results]:
        entry = idx.entry((ri, ci))
        result["matches"].append(
            {**_metadata(entry), "score": -neg, "preview_text": _preview(_text(entry.chunk))}
        )
    if not hits:
        result["note"] = (
            "Aucun chunk ne contient ces termes. Essaie d'autres mots (synonymes, formulations orales, "
            "variantes phonétiques) ; sans preuve, le point est ABSENT."
        )
    else:
        result["note"] = (
            f"{len(result['matches'])} chunk(s) affiché(s) sur {hits} contenant au moins un terme, triés par "
            f"score (nombre de termes présents). Les aperçus sont tronqués : lis le texte complet avec "
            f"{FETCH_TOOL} avant de citer."
        )
    return result


# --------------------------------------------------------------------------------------------- #
# getTranscriptChunks
# --------------------------------------------------------------------------------------------- #


def _ref(value: Any) -> tuple[int, int]:
    """``{"recording_index": r, "chunk_index": c}`` (or an ``(r, c)`` pair) → ``(r, c)``."""
    if isinstance(value, Mapping):
        r, c = _as_index(value.get("recording_index")), _as_index(value.get("chunk_index"))
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        r, c = _as_index(value[0]), _as_index(value[1])
    else:
        r = c = None
    if r is None or c is None:
        raise ToolArgumentError("each chunk reference needs integer recording_index and chunk_index")
    return r, c


def get_transcript_chunks(
    timeline: Sequence[Mapping[str, Any]] | TranscriptIndex | None,
    chunks: Iterable[Any],
    include_neighbors: int | None = NEIGHBORS_DEFAULT,
    max_chars: int | None = MAX_CHARS_DEFAULT,
    max_fetch: int = MAX_FETCH_DEFAULT,
) -> dict[str, Any]:
    """Return the full text of the requested chunks within a character budget (``getTranscriptChunks``).

    References are deduplicated (first occurrence wins), at most 60 are read and only the first
    ``max_fetch`` distinct ones (1..40, default 20) are kept; ``include_neighbors`` (0..2) adds the
    chunks around each of them for context; unknown coordinates are dropped; the result is sorted by
    recording then chunk. Texts are emitted while the ``max_chars`` budget (1000..80000, null ⇒ 20000)
    lasts; the chunk that does not fit is cut with ``…`` (ellipsis included in the budget) and
    nothing after it is returned (``truncated=true``). The sum of returned ``full_text`` lengths
    never exceeds ``max_chars``. Raises :class:`ToolArgumentError` on malformed references.
    """
    idx = _index(timeline)
    neighbors = clamp_int(include_neighbors, default=NEIGHBORS_DEFAULT, lo=NEIGHBORS_MIN, hi=NEIGHBORS_MAX,
                          name="includeNeighbors")
    budget = clamp_int(max_chars, default=MAX_CHARS_DEFAULT, lo=MAX_CHARS_MIN, hi=MAX_CHARS_MAX, name="maxChars")
    cap = clamp_int(max_fetch, default=MAX_FETCH_DEFAULT, lo=MAX_FETCH_MIN, hi=MAX_FETCH_MAX, name="max_fetch")
    if isinstance(chunks, (str, bytes, Mapping)) or chunks is None:
        raise ToolArgumentError("chunks must be an array of {recording_index, chunk_index}")
    raw = list(chunks)[:CHUNK_REFS_MAX]
    refs: list[tuple[int, int]] = []
    for item in raw:
        ref = _ref(item)
        if ref not in refs:
            refs.append(ref)
    requested = len(refs)
    kept = refs[:cap]
    wanted: set[tuple[int, int]] = set()
    for ri, ci in kept:
        for d in range(-neighbors, neighbors + 1):
            wanted.add((ri, ci + d))
    unknown = sum(1 for ref in kept if ref not in idx)
    selected = sorted(k for k in wanted if k in idx)

    out: list[dict[str, Any]] = []
    used = 0
    truncated = False
    for key in selected:
        entry = idx.entry(key)
        text = _text(entry.chunk)
        room = budget - used
        if len(text) <= room:
            out.append({**_metadata(entry), "full_text": text})
            used += len(text)
            continue
        truncated = True
        if room > len(ELLIPSIS):
            out.append({**_metadata(entry), "full_text": text[: room - len(ELLIPSIS)] + ELLIPSIS})
        break

    notes: list[str] = []
    if requested == 0:
        notes.append("Aucun chunk demandé : passe au moins une référence {recording_index, chunk_index}.")
    if requested > cap:
        notes.append(f"{requested} chunks distincts demandés : seuls les {cap} premiers ont été pris en compte.")
    if unknown:
        notes.append(f"{unknown} référence(s) inexistante(s) ignorée(s) (indices 0-based issus de {SEARCH_TOOL}).")
    if truncated:
        notes.append(
            f"Budget de {budget} caractères atteint : le dernier chunk est coupé (…) et les suivants ne sont pas "
            f"renvoyés ; redemande-les séparément si besoin. Ne cite jamais un texte coupé au-delà de « … »."
        )
    notes.append("Cite mot pour mot le full_text d'un seul chunk et recopie ses indices et son minutage.")
    return {
        "requested": requested,
        "returned": len(out),
        "maxChars": budget,
        "truncated": truncated,
        "chunks": out,
        "note": " ".join(notes),
    }


# --------------------------------------------------------------------------------------------- #
# Tool definitions and dispatch
# --------------------------------------------------------------------------------------------- #


def tool_definitions(limits: ToolLimits | None = None) -> list[dict[str, Any]]:
    """The two tools as OpenAI Responses API function tools (strict; optional params are nullable).

    Strict function schemas require every property to be listed in ``required``; "optional" is
    expressed as ``["integer", "null"]`` and ``null`` means the default. Bounds are stated in the
    descriptions and enforced by clamping, not by schema keywords (keeps the schema portable to
    OpenAI-compatible servers with a narrower strict-mode subset).
    """
    lim = limits or ToolLimits()
    return [
        {
            "type": "function",
            "name": SEARCH_TOOL,
            "description": (
                "Recherche des mots dans la transcription de l'audit (tous les enregistrements). Renvoie les chunks "
                "qui contiennent le plus de termes de la requête, avec leurs indices 0-based, leur minutage et un "
                "aperçu de 450 caractères. Les aperçus ne suffisent pas pour citer : lis les chunks avec "
                f"{FETCH_TOOL}."
            ),
            "strict": True,
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {
                        "type": "string",
                        "description": "Mots à chercher (nom de l'étape, mots-clés, termes des points de contrôle).",
                    },
                    "maxResults": {
                        "type": ["integer", "null"],
                        "description": f"Nombre maximal de chunks renvoyés, 1 à {MAX_RESULTS_MAX} "
                                       f"(null = {lim.max_search_results}).",
                    },
                    "minTermLength": {
                        "type": ["integer", "null"],
                        "description": f"Longueur minimale d'un terme, {MIN_TERM_LENGTH_MIN} à {MIN_TERM_LENGTH_MAX} "
                                       f"(null = {MIN_TERM_LENGTH_DEFAULT}).",
                    },
                },
                "required": ["query", "maxResults", "minTermLength"],
                "additionalProperties": False,
            },
        },
        {
            "type": "function",
            "name": FETCH_TOOL,
            "description": (
                "Renvoie le texte complet (full_text) de chunks de la transcription, avec leurs métadonnées de "
                f"citation. Au plus {lim.max_chunk_fetch} chunks distincts par appel (plus les voisins demandés), "
                "dans la limite d'un budget de caractères ; le dernier chunk peut être coupé par « … »."
            ),
            "strict": True,
            "parameters": {
                "type": "object",
                "properties": {
                    "chunks": {
                        "type": "array",
                        "description": f"Chunks à lire (1 à {CHUNK_REFS_MAX} références), indices 0-based.",
                        "items": {
                            "type": "object",
                            "properties": {
                                "recording_index": {"type": "integer"},
                                "chunk_index": {"type": "integer"},
                            },
                            "required": ["recording_index", "chunk_index"],
                            "additionalProperties": False,
                        },
                    },
                    "includeNeighbors": {
                        "type": ["integer", "null"],
                        "description": f"Chunks voisins ajoutés de part et d'autre, {NEIGHBORS_MIN} à {NEIGHBORS_MAX} "
                                       f"(null = {NEIGHBORS_DEFAULT}).",
                    },
                    "maxChars": {
                        "type": ["integer", "null"],
                        "description": f"Budget de caractères du texte renvoyé, {MAX_CHARS_MIN} à {MAX_CHARS_MAX} "
                                       f"(null = {lim.max_chunk_chars}).",
                    },
                },
                "required": ["chunks", "includeNeighbors", "maxChars"],
                "additionalProperties": False,
            },
        },
    ]


def tool_output_json(result: Mapping[str, Any]) -> str:
    """The one serialisation of tool results sent to the model (stable key order, UTF-8 kept)."""
    return json.dumps(result, ensure_ascii=False, separators=(",", ":"))


def _arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        return dict(raw)
    if not isinstance(raw, str):
        raise ToolArgumentError("arguments must be a JSON object")
    try:
        data = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as exc:
        raise ToolArgumentError(f"arguments are not valid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(data, dict):
        raise ToolArgumentError("arguments must be a JSON object")
    return data


def run_tool_call(
    timeline: Sequence[Mapping[str, Any]] | TranscriptIndex | None,
    name: str,
    arguments: Any,
    limits: ToolLimits | None = None,
) -> dict[str, Any]:
    """Execute one model tool call against the run timeline; never raises.

    ``null`` parameters take the operator defaults from ``limits``. Invalid arguments or an unknown
    tool give ``{"error": "..."}``, which is returned to the model as the call's output so it can
    retry — a model mistake must not fail the step.
    """
    lim = limits or ToolLimits()
    try:
        args = _arguments(arguments)
        if name == SEARCH_TOOL:
            query = args.get("query")
            if not isinstance(query, str):
                raise ToolArgumentError("query is required and must be a string")
            max_results = args.get("maxResults")
            return search_transcript(
                timeline,
                query,
                max_results=lim.max_search_results if max_results is None else max_results,
                min_term_length=args.get("minTermLength"),
            )
        if name == FETCH_TOOL:
            if "chunks" not in args or not isinstance(args.get("chunks"), list):
                raise ToolArgumentError("chunks is required and must be an array of {recording_index, chunk_index}")
            max_chars = args.get("maxChars")
            return get_transcript_chunks(
                timeline,
                args["chunks"],
                include_neighbors=args.get("includeNeighbors"),
                max_chars=lim.max_chunk_chars if max_chars is None else max_chars,
                max_fetch=lim.max_chunk_fetch,
            )
        raise ToolArgumentError(f"unknown tool {str(name)[:64]!r}; available: {', '.join(TOOL_NAMES)}")
    except ToolArgumentError as exc:
        return {"error": f"{name}: {exc}"[:500]}
    except Exception as exc:  # noqa: BLE001 - a tool bug must not crash the step; the model sees a generic error
        return {"error": f"{name}: internal tool error ({type(exc).__name__})"[:500]}
