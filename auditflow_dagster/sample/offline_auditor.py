"""Deterministic keyword auditor: the offline stand-in for the per-step LLM call (spec 03 §3).

It is **generic** — it works from any checklist's control-point texts — and it is **exact** on the
synthetic calls of :mod:`auditflow_dagster.sample.generator` for the bundled ``checklist.json``
(that data is written against these rules; the unit tests hold both sides together).

How a control point is judged
-----------------------------
1. *Terms* of the point = the distinct tokens of ``norm(point)`` (spec 03 §4.1) that are not French
   stop-words nor audit "meta" words (``mentionné``, ``vérifié``, ``client`` …), of at least 3
   characters (any length for numbers). A term matches a transcript token when they are equal
   (terms ≤ 4 characters, also a plural ``s``), or when the token starts with the term's first six
   characters (numbers: exact only).
2. Every sentence of every chunk line (``speaker_X: text``) is scored: *coverage* = matched terms /
   terms; a sentence is *hedged* if it contains a vagueness marker (``je crois``, ``environ``,
   ``normalement`` …).
3. Best sentence (highest rank, then coverage, then earliest) decides:
   ``PRESENT`` if coverage ≥ 0.75 and not hedged; ``PARTIEL`` if coverage ≥ 0.40; else ``ABSENT``.
4. ``PRESENT``/``PARTIEL`` carry one citation: the sentence verbatim (or the whole
   ``speaker: text`` line when the sentence is shorter than the evidence-gating minimum), with the
   chunk's 0-based coordinates, ``minutage`` = chunk start as ``MM:SS``.

The step score, verdict and level are derived from the statuses with the same formulas as evidence
gating (spec 03 §4.4), so gating never changes what this auditor returns.
The caller reports ``model="offline-keyword"``.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any, Iterable

from auditflow_dagster.core.audit_config import AuditConfigSpec, AuditStepSpec
from auditflow_dagster.core.evidence import norm as _evidence_norm
from auditflow_dagster.core.scoring import (
    derived_step_score,
    niveau_for,
    step_ratio,
    verdict_for_ratio,
)

OFFLINE_MODEL = "offline-keyword"

PRESENT_COVERAGE = 0.75
PARTIAL_COVERAGE = 0.40
MIN_QUOTE_CHARS = 12
STEM_CHARS = 6

@functools.lru_cache(maxsize=16384)
def norm(s: str) -> str:
    """Spec 03 §4.1 normalisation — the evidence-gating one, so quotes and matching agree (memoised:
    every step of an audit re-reads the same transcript)."""
    return _evidence_norm(s)


# Short French function words (normalised, accents stripped) and audit meta-vocabulary that
# describes the *act of checking* rather than what is said on the phone.
STOPWORDS = frozenset(
    """
    les des une uns pour par sur sous dans avec sans est sont son ses leur leurs aux que qui quoi
    dont cette ces cet votre vos notre nos mon mes ton tes elle elles ils nous vous lui tout tous
    toute toutes plus moins tres bien etc ainsi entre aussi comme mais donc car peu fait faire etre
    avoir cas lors chez via non oui pas the and ete sera seront fois tant ceci cela celui celle
    quel quelle quels quelles avant apres selon afin lequel laquelle auquel duquel meme autre autres
    dit dire doit doivent peut peuvent sont ete
    """.split()
)
META_STEMS = (
    "mentio", "commun", "annonc", "verifi", "confir", "propos", "presen", "expliq", "indiqu",
    "demand", "realis", "effect", "recuei", "precis", "rappel", "obtenu", "evoqu",
    "aborde", "claire", "explic", "transm", "detail", "laisse", "client", "consei", "respec",
    "correc", "approp", "adapte", "signal",
)
META_WORDS = frozenset({"donne", "donnes", "donnez", "pose", "posee", "posees", "poses", "fait", "faite"})

HEDGES = (
    "je crois", "je pense", "je suppose", "il me semble", "normalement", "peut etre", "a peu pres",
    "environ", "en gros", "je ne sais plus", "je ne sais pas", "on verra", "plus tard",
    "en principe", "sauf erreur", "si je ne me trompe",
)

_LINE = re.compile(r"^([^:\n]{1,64}):\s?(.*)$")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?…])\s+")


def _is_meta(token: str) -> bool:
    if token in META_WORDS:
        return True
    return any(token.startswith(stem) for stem in META_STEMS)


def control_point_terms(point: str) -> list[str]:
    """Distinct significant terms of a control-point text, in order of appearance.

    Terms sharing a stem (``ancienneté`` / ``ancien``) count once.
    """
    terms: list[str] = []
    keys: set[str] = set()
    for tok in norm(point).split():
        if tok.isdigit():
            pass
        elif len(tok) < 3 or tok in STOPWORDS or _is_meta(tok):
            continue
        key = _term_key(tok)
        if key not in keys:
            keys.add(key)
            terms.append(tok)
    return terms


def _term_key(term: str) -> str:
    return term if term.isdigit() or len(term) <= 4 else term[:STEM_CHARS]


def term_matches(term: str, token: str) -> bool:
    if term.isdigit():
        return token == term
    if len(term) <= 4:
        return token == term or token == term + "s"
    return token.startswith(term[:STEM_CHARS])


@functools.lru_cache(maxsize=16384)
def _tokens(text: str) -> "_Tokens":
    return _Tokens(text)


class _Tokens:
    """Pre-normalised sentence: token set and prefix sets for fast term matching."""

    __slots__ = ("tokens", "p5", "p6", "hedged")

    def __init__(self, text: str) -> None:
        normalized = norm(text)
        toks = normalized.split()
        self.tokens = set(toks)
        self.p5 = {t[:5] for t in toks}
        self.p6 = {t[:STEM_CHARS] for t in toks if len(t) >= STEM_CHARS}
        padded = f" {normalized} "
        self.hedged = any(f" {h} " in padded for h in HEDGES)

    def has(self, term: str) -> bool:
        if term.isdigit():
            return term in self.tokens
        if len(term) <= 4:
            return term in self.tokens or term + "s" in self.tokens
        if len(term) == 5:
            return term in self.p5
        return term[:STEM_CHARS] in self.p6


def _coverage(terms: list[str], toks: _Tokens) -> float:
    if not terms:
        return 0.0
    return sum(1 for t in terms if toks.has(t)) / len(terms)


def coverage(terms: list[str], text: str) -> float:
    """Share of ``terms`` found in ``text`` (0 when there are no terms)."""
    return _coverage(terms, _Tokens(text))


def is_hedged(text: str) -> bool:
    return _Tokens(text).hedged


def _classify(terms: list[str], toks: _Tokens) -> tuple[str, float]:
    cov = _coverage(terms, toks)
    if cov >= PRESENT_COVERAGE and not toks.hedged:
        return "PRESENT", cov
    if cov >= PARTIAL_COVERAGE:
        return "PARTIEL", cov
    return "ABSENT", cov


def classify_sentence(terms: list[str], sentence: str) -> tuple[str, float]:
    """``("PRESENT"|"PARTIEL"|"ABSENT", coverage)`` of one sentence for one control point."""
    return _classify(terms, _Tokens(sentence))


def split_sentences(text: str) -> list[str]:
    return [s for s in (p.strip() for p in _SENTENCE_SPLIT.split(text or "")) if s]


def parse_line(line: str) -> tuple[str, str]:
    """``"speaker_0: Bonjour"`` → ``("speaker_0", "Bonjour")``; unlabeled lines → ``"unknown"``."""
    m = _LINE.match(line)
    if m and " " not in m.group(1).strip():
        return m.group(1).strip(), m.group(2)
    return "unknown", line


def mmss(seconds: float) -> str:
    s = max(0, int(math.floor(float(seconds or 0))))
    return f"{s // 60:02d}:{s % 60:02d}"


# ---------------------------------------------------------------------------------------------
# The auditor
# ---------------------------------------------------------------------------------------------

_RANK = {"PRESENT": 2, "PARTIEL": 1, "ABSENT": 0}


def _iter_sentences(timeline: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for rec_pos, rec in enumerate(timeline or []):
        rec_index = rec.get("recording_index", rec_pos)
        for chunk in rec.get("chunks") or []:
            full_text = chunk.get("full_text") or ""
            for line in full_text.split("\n"):
                if not line.strip():
                    continue
                speaker, text = parse_line(line)
                for sentence in split_sentences(text):
                    yield {
                        "recording": rec,
                        "recording_index": int(rec_index),
                        "chunk": chunk,
                        "speaker": speaker,
                        "line": line,
                        "sentence": sentence,
                        "tokens": _tokens(sentence),
                    }


def _citation(hit: dict[str, Any]) -> dict[str, Any]:
    rec = hit["recording"]
    chunk = hit["chunk"]
    quote = hit["sentence"]
    if len(norm(quote)) < MIN_QUOTE_CHARS:
        quote = hit["line"].strip()
    start = float(chunk.get("start_timestamp") or 0.0)
    return {
        "texte": quote,
        "minutage": mmss(start),
        "minutage_secondes": start,
        "speaker": hit["speaker"],
        "recording_index": hit["recording_index"],
        "chunk_index": int(chunk.get("chunk_index", 0)),
        "recording_date": str(rec.get("recording_date") or ""),
        "recording_time": str(rec.get("recording_time") or ""),
        "recording_url": str(rec.get("recording_url") or "") or "N/A",
    }


def judge_control_point(point: str, sentences: list[dict[str, Any]]) -> tuple[str, dict[str, Any] | None]:
    """Best evidence for one control point over pre-split sentences: ``(statut, hit|None)``."""
    terms = control_point_terms(point)
    best: tuple[int, float] | None = None
    best_hit: dict[str, Any] | None = None
    best_statut = "ABSENT"
    if not terms:
        return "ABSENT", None
    for hit in sentences:
        statut, cov = _classify(terms, hit["tokens"])
        if statut == "ABSENT":
            continue
        key = (_RANK[statut], cov)
        if best is None or key > best:
            best, best_hit, best_statut = key, hit, statut
    return best_statut, best_hit


def keywords_found(keywords: list[str], timeline: list[dict[str, Any]]) -> list[str]:
    texts = [f" {norm(c.get('full_text') or '')} " for r in timeline or [] for c in r.get("chunks") or []]
    found: list[str] = []
    for kw in keywords:
        k = norm(kw)
        if k and any(f" {k} " in t for t in texts) and kw not in found:
            found.append(kw)
    return found


def audit_step(config: AuditConfigSpec, step: AuditStepSpec, timeline: list[dict[str, Any]]) -> dict[str, Any]:
    """Judge one step against a timeline; returns a :class:`StepAnalysis`-valid dict."""
    del config  # the verdict depends on the step only; kept for the analyzer contract
    sentences = list(_iter_sentences(timeline))
    points: list[dict[str, Any]] = []
    for point in step.control_points:
        statut, hit = judge_control_point(point, sentences)
        citations = [_citation(hit)] if hit is not None else []
        if statut == "PRESENT":
            commentaire = f"Point traité : « {hit['sentence']} »."  # type: ignore[index]
        elif statut == "PARTIEL":
            commentaire = f"Point abordé de façon incomplète ou approximative : « {hit['sentence']} »."  # type: ignore[index]
        else:
            commentaire = "Aucune mention de ce point n'a été trouvée dans la transcription."
        points.append(
            {
                "point": point,
                "statut": statut,
                "commentaire": commentaire,
                "citations": citations,
                "minutages": [c["minutage"] for c in citations],
                "erreur_transcription_notee": False,
                "variation_phonetique_utilisee": None,
            }
        )

    statuts = [p["statut"] for p in points]
    ratio = step_ratio(statuts)
    score = derived_step_score(ratio, step.weight)
    conforme = verdict_for_ratio(ratio)
    niveau = niveau_for(conforme, ratio)
    minutages: list[str] = []
    for p in points:
        for m in p["minutages"]:
            if m not in minutages:
                minutages.append(m)
    n_present = statuts.count("PRESENT")
    n_partiel = statuts.count("PARTIEL")
    n_absent = statuts.count("ABSENT")
    return {
        "traite": (n_present + n_partiel) > 0,
        "conforme": conforme,
        "minutages": minutages,
        "score": score,
        "points_controle": points,
        "mots_cles_trouves": keywords_found(step.keywords, timeline),
        "commentaire_global": (
            f"Analyse automatique par mots-clés ({OFFLINE_MODEL}) de l'étape « {step.name} » : "
            f"{n_present} point(s) présent(s), {n_partiel} partiel(s), {n_absent} absent(s) "
            f"sur {len(points)}."
        ),
        "niveau_conformite": niveau,
        "erreurs_transcription_tolerees": 0,
    }
