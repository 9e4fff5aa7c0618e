"""Deterministic evidence gating of LLM step analyses (spec 03 §4).

Why: the LLM is asked to quote the transcript, but it paraphrases, invents and mis-addresses
quotes. Before a step's verdict counts, every citation is checked against the frozen run timeline;
a control point whose proof does not survive becomes ABSENT, and the step score/verdict can only
be *lowered* to what the surviving evidence supports. Gating never raises the LLM's judgement and
never raises an exception: a malformed payload is cleaned up, not rejected (the finalizer must
always be able to complete an audit).

The step-level formulas live in :mod:`auditflow_dagster.core.scoring` (single implementation).
"""

from __future__ import annotations

import copy
import math
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any

from auditflow_dagster.core.audit_output import CONFORME_ORDER
from auditflow_dagster.core.scoring import (
    derived_step_score,
    niveau_for,
    step_ratio,
    verdict_for_ratio,
)

__all__ = ["GatingStats", "enrich_citations", "gate_step", "norm", "DEFAULT_MIN_QUOTE_CHARS"]

DEFAULT_MIN_QUOTE_CHARS = 12

POINT_NOTE = "[Auto-check] no valid citation in the transcript"
STEP_NOTE = "[Auto-check] score lowered for lack of valid evidence"

_NEEDS_PROOF = {"PRESENT", "PARTIEL"}
_NO_PROOF = {"ABSENT", "NON_APPLICABLE"}


def norm(s: str) -> str:
    """Normalise text for quote matching (spec 03 §4.1).

    lowercase → NFD → drop U+0300–U+036F → every maximal run of non-letter/non-number characters
    becomes one space (so ``_`` and ``'`` separate words, unlike ``\\w``) → trim. This makes quotes
    robust to case, accents, punctuation and the ``speaker_1:`` labels, while staying a plain,
    explainable substring test.
    """
    if not isinstance(s, str):
        return ""
    decomposed = unicodedata.normalize("NFD", s.lower())
    out: list[str] = []
    pending_space = False
    for ch in decomposed:
        if "\u0300" <= ch <= "\u036f":
            # Deleted outright: a combining accent must not split "enregistré" into two words.
            continue
        if unicodedata.category(ch)[0] in "LN":
            if pending_space and out:
                out.append(" ")
            pending_space = False
            out.append(ch)
        else:
            pending_space = True
    return "".join(out)


@dataclass
class GatingStats:
    """Counters of what gating changed; legacy discarded them, we store them in result metadata."""

    total_citations: int = 0
    removed_citations: int = 0
    downgraded_control_points: int = 0
    steps_score_reduced: int = 0
    steps_conforme_adjusted: int = 0

    def __add__(self, other: "GatingStats") -> "GatingStats":
        if not isinstance(other, GatingStats):
            return NotImplemented
        return GatingStats(
            total_citations=self.total_citations + other.total_citations,
            removed_citations=self.removed_citations + other.removed_citations,
            downgraded_control_points=self.downgraded_control_points + other.downgraded_control_points,
            steps_score_reduced=self.steps_score_reduced + other.steps_score_reduced,
            steps_conforme_adjusted=self.steps_conforme_adjusted + other.steps_conforme_adjusted,
        )

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


# --------------------------------------------------------------------------------------------- #
# Timeline lookups
# --------------------------------------------------------------------------------------------- #


def _as_index(value: Any) -> int | None:
    """A JSON number naming an index (``2`` or ``2.0``); bools, strings and fractions are not."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _recordings_by_index(timeline: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Map ``recording_index`` → recording (falls back to list position if the key is missing)."""
    out: dict[int, dict[str, Any]] = {}
    for pos, rec in enumerate(timeline or []):
        if not isinstance(rec, dict):
            continue
        idx = _as_index(rec.get("recording_index"))
        out.setdefault(pos if idx is None else idx, rec)
    return out


class _ChunkIndex:
    """Normalised chunk texts of the run timeline, computed lazily once per chunk."""

    def __init__(self, timeline: list[dict[str, Any]]) -> None:
        self._recs = _recordings_by_index(timeline)
        self._cache: dict[tuple[int, int], str | None] = {}

    def normalized(self, rec_idx: int, chunk_idx: int) -> str | None:
        key = (rec_idx, chunk_idx)
        if key not in self._cache:
            text: str | None = None
            rec = self._recs.get(rec_idx)
            if rec is not None:
                for pos, chunk in enumerate(rec.get("chunks") or []):
                    if not isinstance(chunk, dict):
                        continue
                    ci = _as_index(chunk.get("chunk_index"))
                    if (pos if ci is None else ci) == chunk_idx:
                        text = norm(chunk.get("full_text") or "")
                        break
            self._cache[key] = text
        return self._cache[key]


def _citation_is_valid(citation: Any, chunks: _ChunkIndex, min_quote_chars: int) -> bool:
    """Spec 03 §4.2: existing recording+chunk, non-empty normalised quote of sufficient length that
    is a plain substring of the normalised chunk text. Speaker, minutage and dates are not checked."""
    if not isinstance(citation, dict):
        return False
    rec_idx = _as_index(citation.get("recording_index"))
    chunk_idx = _as_index(citation.get("chunk_index"))
    if rec_idx is None or chunk_idx is None:
        return False
    haystack = chunks.normalized(rec_idx, chunk_idx)
    if haystack is None:
        return False
    q = norm(citation.get("texte")) if isinstance(citation.get("texte"), str) else ""
    if not q or len(q) < min_quote_chars:
        return False
    return q in haystack


def invalid_citations(
    citations: list[dict[str, Any]], timeline: list[dict[str, Any]], min_quote_chars: int
) -> list[dict[str, Any]]:
    """The citations that would not survive gating against ``timeline`` (for audits of what is
    stored: a kept citation must always pass, whoever wrote it)."""
    chunks = _ChunkIndex(timeline)
    return [c for c in citations if not _citation_is_valid(c, chunks, min_quote_chars)]


# --------------------------------------------------------------------------------------------- #
# Enrichment
# --------------------------------------------------------------------------------------------- #


def enrich_citations(step_output: dict[str, Any], timeline: list[dict[str, Any]]) -> dict[str, Any]:
    """Return a deep copy whose citations carry the *timeline's* recording date/time/url.

    The LLM copies these from the prompt and gets them wrong; the finalizer overwrites them from the
    recording named by ``recording_index`` so the UI links to the right audio. An unknown recording
    (or an empty field) gives ``"N/A"``. Non-dict entries are left untouched (gating drops them).
    """
    out = copy.deepcopy(step_output) if isinstance(step_output, dict) else {}
    recs = _recordings_by_index(timeline)
    points = out.get("points_controle")
    if not isinstance(points, list):
        return out
    for point in points:
        if not isinstance(point, dict) or not isinstance(point.get("citations"), list):
            continue
        for citation in point["citations"]:
            if not isinstance(citation, dict):
                continue
            idx = _as_index(citation.get("recording_index"))
            rec = recs.get(idx) if idx is not None else None
            for key in ("recording_date", "recording_time", "recording_url"):
                value = rec.get(key) if rec is not None else None
                citation[key] = value if isinstance(value, str) and value else "N/A"
    return out


# --------------------------------------------------------------------------------------------- #
# Gating
# --------------------------------------------------------------------------------------------- #


def _append(text: Any, note: str, sep: str) -> str:
    base = text if isinstance(text, str) else ""
    return f"{base}{sep}{note}" if base.strip() else note


def _distinct_minutages(citations: list[dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    for c in citations:
        m = c.get("minutage")
        if isinstance(m, str) and m and m not in seen:
            seen.append(m)
    return seen


def _as_score(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(0, value)
    if isinstance(value, float) and math.isfinite(value):
        return max(0, math.floor(value))
    return 0


def gate_step(
    step_output: dict[str, Any],
    weight: int,
    timeline: list[dict[str, Any]],
    min_quote_chars: int = DEFAULT_MIN_QUOTE_CHARS,
) -> tuple[dict[str, Any], GatingStats]:
    """Gate one (already enriched) step payload against the run timeline (spec 03 §4.2–§4.4).

    Returns a new payload and the counters. Per control point: invalid citations are dropped,
    ABSENT/NON_APPLICABLE points lose their citations, PRESENT/PARTIEL points left without proof
    become ABSENT with an ``[Auto-check]`` note, and point ``minutages`` are recomputed. Per step:
    the score is lowered to the evidence-derived score when that is lower than ``min(score, W)``,
    and the verdict (+ level) is replaced only when the derived one is stricter. ``min_quote_chars``
    of 0 is honoured (legacy silently turned it into 12).
    """
    stats = GatingStats()
    out: dict[str, Any] = copy.deepcopy(step_output) if isinstance(step_output, dict) else {}
    chunks = _ChunkIndex(timeline)
    min_chars = max(0, int(min_quote_chars)) if isinstance(min_quote_chars, int) else DEFAULT_MIN_QUOTE_CHARS

    raw_points = out.get("points_controle")
    points: list[dict[str, Any]] = [p for p in raw_points if isinstance(p, dict)] if isinstance(raw_points, list) else []
    all_citations: list[dict[str, Any]] = []

    for point in points:
        raw_cits = point.get("citations")
        cits = raw_cits if isinstance(raw_cits, list) else []
        stats.total_citations += len(cits)
        statut = point.get("statut")
        if statut in _NO_PROOF:
            kept: list[dict[str, Any]] = []
        else:
            kept = [c for c in cits if _citation_is_valid(c, chunks, min_chars)]
        stats.removed_citations += len(cits) - len(kept)
        if statut in _NEEDS_PROOF and not kept:
            point["statut"] = "ABSENT"
            point["commentaire"] = _append(point.get("commentaire"), POINT_NOTE, "\n")
            stats.downgraded_control_points += 1
        point["citations"] = kept
        point["minutages"] = _distinct_minutages(kept)
        all_citations.extend(kept)

    out["points_controle"] = points

    w = max(0, weight if isinstance(weight, int) and not isinstance(weight, bool) else 0)
    ratio = step_ratio([p.get("statut") for p in points])  # type: ignore[misc]
    derived = derived_step_score(ratio, w)
    score = _as_score(out.get("score"))
    out["score"] = score
    cap = score if w == 0 else min(score, w)
    if derived < cap:
        out["score"] = derived
        out["commentaire_global"] = _append(out.get("commentaire_global"), STEP_NOTE, "\n\n")
        stats.steps_score_reduced += 1

    verdict = verdict_for_ratio(ratio)
    current = out.get("conforme")
    current_rank = CONFORME_ORDER.get(current) if isinstance(current, str) else None
    # An unreadable LLM verdict is replaced by the derived one (never left invalid).
    if current_rank is None or CONFORME_ORDER[verdict] < current_rank:
        out["conforme"] = verdict
        out["niveau_conformite"] = niveau_for(verdict, ratio)
        stats.steps_conforme_adjusted += 1

    out["minutages"] = _distinct_minutages(all_citations)
    return out, stats
