"""Chat about an audit or a fiche (spec 04 §6): context, citation markers, offline responder.

Pure functions only (no DB, no network). The model answers in French prose with inline markers
``[CITATION:{...}]`` (flat JSON) that the API strips from the streamed text and returns, validated
against the timeline, as one ``{"citations": [...]}`` event at the end.

Markers arrive split across stream deltas (legacy leaked such halves to the client), so
:class:`MarkerSplitter` buffers output from ``[CITATION:`` until ``}]``: whatever the chunking, the
visible text and the markers are those of :func:`split_markers` on the whole text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from auditflow_dagster.core.evidence import invalid_citations, norm
from auditflow_dagster.core.timeline import js_number, minutage, timeline_text

__all__ = [
    "CHAT_WINDOW",
    "MARKER_CLOSE",
    "MARKER_OPEN",
    "MarkerSplitter",
    "audit_context",
    "fiche_context",
    "fill_from_filenames",
    "input_items",
    "offline_reply",
    "split_markers",
    "strip_markers",
    "valid_citations",
]

CHAT_WINDOW = 50
"""Messages of the conversation sent back to the model (and returned by the history routes)."""

MARKER_OPEN = "[CITATION:"
MARKER_CLOSE = "}]"
MARKER_MAX_CHARS = 4000
"""A ``[CITATION:`` not closed within this many characters is plain text (bounds the buffering)."""

CITATION_KEYS = (
    "texte", "minutage", "minutage_secondes", "speaker", "recording_index", "chunk_index",
    "recording_date", "recording_time", "recording_url",
)

# --------------------------------------------------------------------------------------------- #
# Markers
# --------------------------------------------------------------------------------------------- #


def _held_prefix(buf: str, start: int) -> int:
    """Length of the longest proper prefix of MARKER_OPEN that ``buf[start:]`` ends with."""
    for k in range(min(len(MARKER_OPEN) - 1, len(buf) - start), 0, -1):
        if buf.endswith(MARKER_OPEN[:k]):
            return k
    return 0


def _scan(buf: str, final: bool) -> tuple[str, list[str], str]:
    """``(visible text, marker bodies, unread rest)``; ``final`` = no more input will come.

    A marker body is the JSON object between ``[CITATION:`` and the first ``}]`` after it (the
    ``}`` included). Without ``final`` the rest holds back anything that may still become a marker.
    """
    out: list[str] = []
    markers: list[str] = []
    pos = 0
    while True:
        i = buf.find(MARKER_OPEN, pos)
        if i == -1:
            end = len(buf) if final else len(buf) - _held_prefix(buf, pos)
            out.append(buf[pos:end])
            pos = end
            break
        out.append(buf[pos:i])
        j = buf.find(MARKER_CLOSE, i + len(MARKER_OPEN), i + MARKER_MAX_CHARS)
        if j != -1:
            markers.append(buf[i + len(MARKER_OPEN): j + 1])
            pos = j + len(MARKER_CLOSE)
            continue
        if final or len(buf) - i >= MARKER_MAX_CHARS:
            out.append(buf[i])  # never closed in time: the "[" is text, look again after it
            pos = i + 1
            continue
        pos = i
        break
    return "".join(out), markers, buf[pos:]


def split_markers(text: str) -> tuple[str, list[str]]:
    """The visible text of a whole answer and its marker bodies (raw JSON strings)."""
    visible, markers, _ = _scan(text or "", True)
    return visible, markers


def strip_markers(text: str) -> str:
    return split_markers(text)[0]


@dataclass
class MarkerSplitter:
    """Incremental :func:`split_markers`: ``feed`` each delta, emit what it returns, ``close`` at
    the end. ``markers`` collects the marker bodies; ``text`` the whole visible text."""

    markers: list[str] = field(default_factory=list)
    _buf: str = ""
    _visible: list[str] = field(default_factory=list)

    def _take(self, final: bool) -> str:
        visible, markers, self._buf = _scan(self._buf, final)
        self.markers.extend(markers)
        self._visible.append(visible)
        return visible

    def feed(self, delta: str) -> str:
        self._buf += delta or ""
        return self._take(False)

    def close(self) -> str:
        return self._take(True)

    @property
    def text(self) -> str:
        return "".join(self._visible)


# --------------------------------------------------------------------------------------------- #
# Citations
# --------------------------------------------------------------------------------------------- #


def _recordings(timeline: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for pos, rec in enumerate(timeline or []):
        idx = rec.get("recording_index")
        out.setdefault(idx if isinstance(idx, int) and not isinstance(idx, bool) else pos, rec)
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def valid_citations(markers: list[str], timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Parse marker bodies and keep a citation only when its recording exists, its ``chunk_index``
    is an integer of that recording and its normalised quote is a substring of the chunk's text.
    ``recording_url/date/time`` are then taken from the timeline (``"N/A"`` when empty)."""
    recs = _recordings(timeline)
    kept: list[dict[str, Any]] = []
    for body in markers:
        try:
            raw = json.loads(body)
        except (TypeError, ValueError):
            continue
        if not isinstance(raw, dict) or not _is_int(raw.get("recording_index")) or not _is_int(raw.get("chunk_index")):
            continue
        rec = recs.get(raw["recording_index"])
        if rec is None or not 0 <= raw["chunk_index"] < len(rec.get("chunks") or []):
            continue
        if invalid_citations([raw], timeline, 1):
            continue
        citation = {k: raw.get(k) for k in CITATION_KEYS}
        for key in ("recording_date", "recording_time", "recording_url"):
            value = rec.get(key)
            citation[key] = value if isinstance(value, str) and value else "N/A"
        kept.append(citation)
    return kept


# --------------------------------------------------------------------------------------------- #
# Context
# --------------------------------------------------------------------------------------------- #

_CHAT_FILENAME = re.compile(r"(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})-(?P<hh>\d{2})(?P<mi>\d{2})(?P<ss>\d{2})"
                            r"-(?P<from>[^-/?#]+)-(?P<to>[^-/?#.]+)\.[A-Za-z0-9]+$")


def fill_from_filenames(timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of the recordings whose missing date, time and numbers are read from a file name
    ``YYYYMMDD-HHMMSS-from-to.ext`` (date ``DD/MM/YYYY``, time ``HH:MM``)."""
    out = []
    for rec in timeline or []:
        rec = dict(rec)
        url = rec.get("recording_url") or ""
        name = re.split(r"[?#]", url, maxsplit=1)[0].rsplit("/", 1)[-1] if isinstance(url, str) else ""
        m = _CHAT_FILENAME.search(name)
        if m:
            g = m.groupdict()
            rec["recording_date"] = rec.get("recording_date") or f"{g['d']}/{g['m']}/{g['y']}"
            rec["recording_time"] = rec.get("recording_time") or f"{g['hh']}:{g['mi']}"
            rec["from_number"] = rec.get("from_number") or g["from"]
            rec["to_number"] = rec.get("to_number") or g["to"]
        out.append(rec)
    return out


def _v(value: Any, default: str = "N/A") -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, bool):
        return "oui" if value else "non"
    return str(value)


CITATION_RULES = """\
CITATIONS
Quand une affirmation s'appuie sur la transcription, ajoute juste après un marqueur sur une seule ligne :
[CITATION:{"texte": "...", "minutage": "MM:SS", "minutage_secondes": 0, "speaker": "speaker_0", \
"recording_index": 0, "chunk_index": 0, "recording_date": "JJ/MM/AAAA", "recording_time": "HH:MM", \
"recording_url": "..."}]
- texte : un passage recopié mot pour mot d'UN SEUL chunk (sans le préfixe « speaker_X: ») ;
- recording_index = X − 1 pour « Enregistrement #X » ; chunk_index = Y − 1 pour « Chunk Y » ;
- minutage_secondes = la première valeur de la ligne « Temps: » du chunk, minutage = ces secondes en MM:SS ;
- speaker = le locuteur tel qu'écrit ; recording_date, recording_time = « Date: » et « Heure: » de l'enregistrement ;
- le marqueur est un objet JSON plat valide, sans retour à la ligne ; il n'est pas montré tel quel à l'utilisateur.

RÈGLES
1. Réponds uniquement à partir des informations ci-dessus (fiche, audit(s), chronologie). N'invente rien.
2. Si l'information n'apparaît pas, dis-le clairement (« cela n'apparaît pas dans les enregistrements ») \
au lieu de supposer.
3. Ne fabrique jamais de citation : une citation dont le texte n'est pas dans le chunk indiqué est rejetée.
4. Distingue ce qui est dit dans l'appel de tes propres déductions.
5. Réponds en français, de façon concise et structurée.
"""


def _timeline_block(timeline: list[dict[str, Any]], facts: str | None = None) -> str:
    """The timeline text, then the facts section of a redacted timeline (when given)."""
    if not timeline:
        text = "CHRONOLOGIE\nAucun enregistrement transcrit n'est disponible pour cette fiche.\n"
    else:
        text = timeline_text(timeline)
    return f"{text}{facts.strip()}\n" if facts and facts.strip() else text


def _prospect(fiche: dict[str, Any]) -> str:
    name = " ".join(p for p in (fiche.get("prospect_prenom"), fiche.get("prospect_nom")) if p)
    return name or "N/A"


def audit_context(
    *, fiche: dict[str, Any], recordings: dict[str, int], audit: dict[str, Any],
    steps: list[dict[str, Any]], timeline: list[dict[str, Any]], facts: str | None = None,
) -> str:
    """System context of an audit chat: analyst persona, fiche, audit summary, one line per step,
    the full timeline (then ``facts``, the spoken personal data of a redacted timeline) and the
    citation/anti-hallucination rules."""
    lines = [
        "Tu es un analyste qualité qui aide à comprendre l'audit de conformité d'un appel de vente. "
        "Tu expliques les résultats de l'audit et tu t'appuies sur la transcription des appels.",
        "",
        "FICHE",
        f"- Fiche : {_v(fiche.get('fiche_id'))}",
        f"- Prospect : {_prospect(fiche)}",
        f"- Groupe : {_v(fiche.get('groupe'))}",
        f"- Enregistrements : {recordings.get('total', 0)} (dont {recordings.get('transcribed', 0)} transcrits)",
        "",
        "AUDIT",
        f"- Configuration : {_v(audit.get('config_name'))}",
        f"- Score : {_v(audit.get('score_percentage'))}%",
        f"- Niveau : {_v(audit.get('niveau'))}",
        f"- Conforme : {_v(audit.get('is_compliant'))}",
        f"- Points critiques : {audit.get('critical_passed', 0)}/{audit.get('critical_total', 0)}",
        f"- Étapes réussies / en échec : {audit.get('successful_steps', 0)} / {audit.get('failed_steps', 0)}",
        f"- Tokens : {audit.get('total_tokens', 0)}",
        "",
        "ÉTAPES",
    ]
    if steps:
        lines.extend(
            f"- Étape {s.get('position')} « {_v(s.get('name'))} » : {_v(s.get('conforme'))}, "
            f"score {s.get('score', 0)}/{s.get('weight', 0)}"
            for s in steps
        )
    else:
        lines.append("- Aucun résultat d'étape enregistré.")
    return "\n".join(lines) + "\n\n" + _timeline_block(timeline, facts) + "\n" + CITATION_RULES


def fiche_context(
    *, fiche: dict[str, Any], recordings: dict[str, Any], audits: list[dict[str, Any]],
    timeline: list[dict[str, Any]], facts: str | None = None,
) -> str:
    """System context of a fiche chat: prospect, recording totals, the timeline (then ``facts``, as
    for an audit chat) and every audit of the fiche (newest first; soft-deleted audits are left out
    by the caller)."""
    minutes = js_number(round(float(recordings.get("seconds", 0) or 0) / 60, 1))
    lines = [
        "Tu es un assistant qui aide un conseiller qualité à analyser un dossier client (fiche) "
        "à partir des appels enregistrés et des audits déjà réalisés.",
        "",
        "PROSPECT",
        f"- Fiche : {_v(fiche.get('fiche_id'))}",
        f"- Nom : {_prospect(fiche)}",
        f"- Email : {_v(fiche.get('prospect_email'))}",
        f"- Téléphone : {_v(fiche.get('prospect_tel'))}",
        f"- Groupe : {_v(fiche.get('groupe'))}",
        "",
        "ENREGISTREMENTS",
        f"- Total : {recordings.get('total', 0)} (dont {recordings.get('transcribed', 0)} transcrits), "
        f"{minutes} minutes",
        "",
        "AUDITS (du plus récent au plus ancien)",
    ]
    if audits:
        lines.extend(
            f"- {_v(a.get('config_name'))} : score {_v(a.get('score_percentage'))}%, niveau {_v(a.get('niveau'))}, "
            f"date {_v(a.get('date'))}, conforme {_v(a.get('is_compliant'))}, "
            f"points critiques {a.get('critical_passed', 0)}/{a.get('critical_total', 0)}"
            for a in audits
        )
    else:
        lines.append("- Aucun audit.")
    return "\n".join(lines) + "\n\n" + _timeline_block(timeline, facts) + "\n" + CITATION_RULES


def input_items(window: list[dict[str, Any]], message: str) -> list[dict[str, str]]:
    """Responses API ``input``: the stored window (user/assistant turns, oldest first) then the new
    message."""
    items = [{"role": m["role"], "content": m["content"]} for m in window if m.get("role") in ("user", "assistant")]
    items.append({"role": "user", "content": message})
    return items


# --------------------------------------------------------------------------------------------- #
# Offline responder (AUDITFLOW_LLM=offline)
# --------------------------------------------------------------------------------------------- #

_MIN_TERM = 4
_QUOTE_WORDS = 24


def _terms(question: str) -> list[str]:
    seen: list[str] = []
    for t in norm(question).split():
        if len(t) >= _MIN_TERM and t not in seen:
            seen.append(t)
    return seen


def offline_reply(question: str, timeline: list[dict[str, Any]], summary: str | None = None) -> str:
    """A deterministic answer from the context: the line of the timeline that shares the most words
    (≥ 4 letters) with the question, quoted with a valid citation marker. Ties go to the earliest."""
    terms = _terms(question)
    best: tuple[int, dict[str, Any], dict[str, Any], str] | None = None
    for rec in timeline or []:
        for chunk in rec.get("chunks") or []:
            for line in (chunk.get("full_text") or "").split("\n"):
                speaker, _, said = line.partition(": ")
                if not said:
                    speaker, said = "", line
                words = set(norm(said).split())
                score = sum(1 for t in terms if t in words)
                if score and (best is None or score > best[0]):
                    best = (score, rec, chunk, f"{speaker}\x00{said}")
    head = f"{summary}\n\n" if summary else ""
    if best is None:
        return head + ("Je n'ai trouvé aucun passage des enregistrements qui corresponde à votre question ; "
                       "cela n'apparaît pas dans la transcription disponible.")
    _, rec, chunk, packed = best
    speaker, said = packed.split("\x00", 1)
    quote = " ".join(said.split()[:_QUOTE_WORDS])
    seconds = chunk.get("start_timestamp") or 0
    marker = {
        "texte": quote, "minutage": minutage(seconds), "minutage_secondes": seconds, "speaker": speaker or "unknown",
        "recording_index": rec.get("recording_index", 0), "chunk_index": chunk.get("chunk_index", 0),
        "recording_date": rec.get("recording_date") or "N/A", "recording_time": rec.get("recording_time") or "N/A",
        "recording_url": rec.get("recording_url") or "N/A",
    }
    return (
        f"{head}Le passage le plus proche de votre question se trouve dans l'enregistrement "
        f"#{int(rec.get('recording_index', 0)) + 1} (chunk {int(chunk.get('chunk_index', 0)) + 1}, "
        f"vers {minutage(seconds)}) : {speaker or 'le locuteur'} dit « {quote} » "
        f"[CITATION:{json.dumps(marker, ensure_ascii=False)}]"
        "\n\n(Réponse générée hors ligne, sans modèle de langage.)"
    )
