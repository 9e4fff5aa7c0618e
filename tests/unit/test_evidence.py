"""Evidence gating: spec 03 §4 (norm, citation validity, per-point and per-step rules, §4.5 examples)."""

from __future__ import annotations

import copy
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditflow_dagster.core.audit_output import CONFORME_ORDER, StepAnalysis
from auditflow_dagster.core.evidence import (
    GatingStats,
    enrich_citations,
    gate_step,
    norm,
)

CHUNK2 = "speaker_1: Je vous informe que l'appel est enregistré, d'accord ?"


def _chunk(i: int, text: str) -> dict:
    return {"chunk_index": i, "start_timestamp": 10.0 * i, "end_timestamp": 10.0 * i + 9,
            "message_count": 1, "speakers": ["speaker_0"], "full_text": text}


TIMELINE = [
    {
        "recording_index": 0, "call_id": "1234567890123456789", "start_time": "", "duration_seconds": 60,
        "recording_url": "https://cdn.example/a.mp3", "recording_date": "02/01/2025", "recording_time": "10:15",
        "from_number": "", "to_number": "", "total_chunks": 4,
        "chunks": [
            _chunk(0, "speaker_0: Bonjour madame, cabinet Exemple Courtage."),
            _chunk(1, "speaker_1: Oui bonjour.\nspeaker_0: Je vous appelle au sujet de votre mutuelle."),
            _chunk(2, CHUNK2),
            _chunk(3, "speaker_0: Parfait, passons aux garanties hospitalisation."),
        ],
    },
    {
        "recording_index": 1, "call_id": "98765", "start_time": "", "duration_seconds": 30,
        "recording_url": "https://cdn.example/b.mp3", "recording_date": "", "recording_time": "11:00",
        "from_number": "", "to_number": "", "total_chunks": 1,
        "chunks": [_chunk(0, "speaker_1: Vous pouvez vous opposer au démarchage téléphonique.")],
    },
]


def cit(texte: str, rec: int = 0, chunk: int = 2, minutage: str = "00:20", **extra) -> dict:
    return {"texte": texte, "minutage": minutage, "minutage_secondes": 20.0, "speaker": "speaker_1",
            "recording_index": rec, "chunk_index": chunk, "recording_date": "x", "recording_time": "y",
            "recording_url": "z", **extra}


def point(statut: str, citations: list[dict] | None = None, name: str = "p", commentaire: str = "ok") -> dict:
    cits = citations or []
    return {"point": name, "statut": statut, "commentaire": commentaire, "citations": cits,
            "minutages": [c["minutage"] for c in cits if isinstance(c, dict)],
            "erreur_transcription_notee": False, "variation_phonetique_utilisee": None}


def step(score: int, conforme: str, points: list[dict], niveau: str = "EXCELLENT") -> dict:
    return {"traite": True, "conforme": conforme, "minutages": ["99:99"], "score": score, "points_controle": points,
            "mots_cles_trouves": ["enregistré"], "commentaire_global": "LLM comment", "niveau_conformite": niveau,
            "erreurs_transcription_tolerees": 1}


VALID = "l'appel est enregistré"
INVALID = "l'appel sera enregistré"

# --------------------------------------------------------------------------- norm (§4.1)


def test_norm_worked_example():
    assert norm(CHUNK2) == "speaker 1 je vous informe que l appel est enregistre d accord"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("l'appel est enregistré", "l appel est enregistre"),
        ("Enregistré.", "enregistre"),
        ("SPEAKER_1 : je vous informe", "speaker 1 je vous informe"),
        ("  À   ÉTÉ\t\nçà  ", "a ete ca"),
        ("100 % Santé — C2S", "100 sante c2s"),
        ("snake_case", "snake case"),
        ("", ""),
        ("?!…", ""),
    ],
)
def test_norm_cases(raw, expected):
    assert norm(raw) == expected


@given(st.text())
def test_norm_properties(s):
    n = norm(s)
    assert norm(n) == n  # idempotent
    assert n == n.strip() and "  " not in n
    assert all(c == " " or unicodedata.category(c)[0] in "LN" for c in n)
    assert not any("\u0300" <= c <= "\u036f" for c in n)


# --------------------------------------------------------------------------- citation table (§4.5)


@pytest.mark.parametrize(
    ("citation", "valid"),
    [
        (cit("l'appel est enregistré"), True),
        (cit("Enregistré."), False),  # 10 chars < 12
        (cit("l'appel sera enregistré"), False),  # not a substring
        (cit("l'appel est enregistré", chunk=3), False),  # right text, wrong chunk
        (cit("SPEAKER_1 : je vous informe"), True),
        (cit("l'appel est enregistré", rec=5), False),  # recording does not exist
        (cit("l'appel est enregistré", chunk=-1), False),
        (cit("l'appel est enregistré", chunk="2"), False),  # not a number
        (cit("l'appel est enregistré", chunk=2.0), True),  # JSON number 2.0 names chunk 2
        (cit("l'appel est enregistré", chunk=True), False),
        (cit("Bonjour madame, cabinet", chunk=0), True),
        (cit("madame cabinet exemple courtage oui bonjour", chunk=0), False),  # crosses chunks
        (cit("!!! ... ???"), False),  # empty once normalised
    ],
)
def test_citation_validity_table(citation, valid):
    out, stats = gate_step(step(5, "CONFORME", [point("PRESENT", [citation])]), 5, TIMELINE)
    kept = out["points_controle"][0]["citations"]
    assert (len(kept) == 1) is valid
    assert out["points_controle"][0]["statut"] == ("PRESENT" if valid else "ABSENT")
    assert stats.total_citations == 1
    assert stats.removed_citations == (0 if valid else 1)


def test_min_quote_chars_is_honoured_including_zero():
    short = step(5, "CONFORME", [point("PRESENT", [cit("Enregistré.")])])
    assert gate_step(short, 5, TIMELINE, min_quote_chars=0)[0]["points_controle"][0]["statut"] == "PRESENT"
    assert gate_step(short, 5, TIMELINE, min_quote_chars=10)[0]["points_controle"][0]["statut"] == "PRESENT"
    assert gate_step(short, 5, TIMELINE, min_quote_chars=11)[0]["points_controle"][0]["statut"] == "ABSENT"
    empty = step(5, "CONFORME", [point("PRESENT", [cit("...")])])
    assert gate_step(empty, 5, TIMELINE, min_quote_chars=0)[0]["points_controle"][0]["statut"] == "ABSENT"


# --------------------------------------------------------------------------- step examples (§4.5)


def test_example_w8_mixed_points():
    payload = step(8, "CONFORME", [
        point("PRESENT", [cit(VALID)], name="a"),
        point("PRESENT", [cit(INVALID)], name="b", commentaire="LLM says present"),
        point("PARTIEL", [cit("je vous informe que", minutage="00:21")], name="c"),
        point("NON_APPLICABLE", name="d"),
    ])
    out, stats = gate_step(payload, 8, TIMELINE)
    statuts = [p["statut"] for p in out["points_controle"]]
    assert statuts == ["PRESENT", "ABSENT", "PARTIEL", "NON_APPLICABLE"]
    assert out["points_controle"][1]["commentaire"] == "LLM says present\n[Auto-check] no valid citation in the transcript"
    assert out["points_controle"][1]["citations"] == [] and out["points_controle"][1]["minutages"] == []
    assert out["score"] == 4
    assert out["commentaire_global"] == "LLM comment\n\n[Auto-check] score lowered for lack of valid evidence"
    assert out["conforme"] == "PARTIEL"
    assert out["niveau_conformite"] == "ACCEPTABLE"
    assert out["minutages"] == ["00:20", "00:21"]
    assert stats.as_dict() == {"total_citations": 3, "removed_citations": 1, "downgraded_control_points": 1,
                               "steps_score_reduced": 1, "steps_conforme_adjusted": 1}
    StepAnalysis.model_validate(out)


def test_example_w5_score_lowered_verdict_kept():
    payload = step(4, "PARTIEL", [point("PRESENT", [cit(VALID)]), point("PARTIEL", [cit(VALID)]), point("ABSENT")],
                   niveau="ACCEPTABLE")
    out, stats = gate_step(payload, 5, TIMELINE)
    assert out["score"] == 3  # 2.5 rounds half-up to 3, which is < 4
    assert out["conforme"] == "PARTIEL"
    assert out["niveau_conformite"] == "ACCEPTABLE"
    assert "[Auto-check] score lowered" in out["commentaire_global"]
    assert (stats.steps_score_reduced, stats.steps_conforme_adjusted, stats.downgraded_control_points) == (1, 0, 0)


def test_example_w6_five_of_six():
    payload = step(6, "CONFORME", [point("PRESENT", [cit(VALID)]) for _ in range(5)] + [point("ABSENT")])
    out, stats = gate_step(payload, 6, TIMELINE)
    assert out["score"] == 5
    assert out["conforme"] == "PARTIEL"  # 0.833 < 0.85
    assert out["niveau_conformite"] == "ACCEPTABLE"
    assert stats.removed_citations == 0 and stats.steps_conforme_adjusted == 1


# --------------------------------------------------------------------------- other rules


def test_absent_and_non_applicable_lose_citations_without_note():
    payload = step(5, "CONFORME", [point("PRESENT", [cit(VALID)]), point("ABSENT", [cit(VALID)], commentaire="c"),
                                   point("NON_APPLICABLE", [cit(VALID)])])
    out, stats = gate_step(payload, 5, TIMELINE)
    assert [p["citations"] for p in out["points_controle"][1:]] == [[], []]
    assert out["points_controle"][1]["commentaire"] == "c"
    assert out["points_controle"][1]["statut"] == "ABSENT"
    assert stats.removed_citations == 2 and stats.downgraded_control_points == 0


def test_verdict_never_relaxed_and_score_never_raised():
    payload = step(2, "NON_CONFORME", [point("PRESENT", [cit(VALID)])], niveau="INSUFFISANT")
    out, stats = gate_step(payload, 10, TIMELINE)
    assert out["score"] == 2 and out["conforme"] == "NON_CONFORME" and out["niveau_conformite"] == "INSUFFISANT"
    assert stats == GatingStats(total_citations=1)
    assert out["commentaire_global"] == "LLM comment"


def test_bonus_score_above_weight_is_kept_when_evidence_is_full():
    out, _ = gate_step(step(9, "CONFORME", [point("PRESENT", [cit(VALID)])]), 5, TIMELINE)
    assert out["score"] == 9  # derived 5 is not < min(9, 5); capping happens in §6


def test_zero_weight_lowers_any_score_to_zero():
    out, stats = gate_step(step(3, "CONFORME", [point("PRESENT", [cit(VALID)])]), 0, TIMELINE)
    assert out["score"] == 0 and stats.steps_score_reduced == 1


def test_point_minutages_are_distinct_first_seen():
    payload = step(5, "CONFORME", [point("PRESENT", [cit(VALID, minutage="00:25"), cit(VALID, minutage="00:20"),
                                                     cit(VALID, minutage="00:25"), cit(VALID, minutage="")])])
    out, _ = gate_step(payload, 5, TIMELINE)
    assert out["points_controle"][0]["minutages"] == ["00:25", "00:20"]
    assert out["minutages"] == ["00:25", "00:20"]


def test_input_is_not_mutated():
    payload = step(8, "CONFORME", [point("PRESENT", [cit(INVALID)])])
    before = copy.deepcopy(payload)
    gate_step(payload, 8, TIMELINE)
    enrich_citations(payload, TIMELINE)
    assert payload == before


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"points_controle": None, "score": "x", "conforme": 3},
        {"points_controle": ["junk", {"statut": "PRESENT", "citations": "nope"}], "score": -4},
        {"points_controle": [{"statut": "PRESENT", "citations": [None, 3, {"texte": None}]}], "score": 2.7},
    ],
)
def test_malformed_payloads_never_raise(payload):
    out, stats = gate_step(payload, 5, TIMELINE)
    assert isinstance(out["points_controle"], list)
    assert out["conforme"] in CONFORME_ORDER
    assert isinstance(out["score"], int) and out["score"] >= 0
    assert isinstance(stats, GatingStats)


def test_gating_stats_add():
    a = GatingStats(1, 2, 3, 4, 5)
    b = GatingStats(10, 20, 30, 40, 50)
    assert (a + b).as_dict() == {"total_citations": 11, "removed_citations": 22, "downgraded_control_points": 33,
                                 "steps_score_reduced": 44, "steps_conforme_adjusted": 55}
    assert GatingStats() + a == a


# --------------------------------------------------------------------------- enrichment


def test_enrich_citations_overwrites_from_timeline():
    payload = step(5, "CONFORME", [point("PRESENT", [cit(VALID, rec=0), cit("x", rec=1), cit("y", rec=7),
                                                     cit("z", rec="0")])])
    out = enrich_citations(payload, TIMELINE)
    c0, c1, c7, cs = out["points_controle"][0]["citations"]
    assert (c0["recording_date"], c0["recording_time"], c0["recording_url"]) == (
        "02/01/2025", "10:15", "https://cdn.example/a.mp3")
    assert (c1["recording_date"], c1["recording_time"], c1["recording_url"]) == (
        "N/A", "11:00", "https://cdn.example/b.mp3")  # empty date in the timeline → N/A
    assert (c7["recording_date"], c7["recording_time"], c7["recording_url"]) == ("N/A", "N/A", "N/A")
    assert cs["recording_url"] == "N/A"
    assert c0["texte"] == VALID  # nothing else touched


# --------------------------------------------------------------------------- properties

_texts = st.sampled_from([VALID, INVALID, "SPEAKER_1 : je vous informe", "Enregistré.", "Bonjour madame",
                          "opposer au démarchage", "", "passons aux garanties"])
_citation = st.builds(cit, _texts, rec=st.integers(-1, 2), chunk=st.integers(-1, 4),
                      minutage=st.sampled_from(["00:01", "00:20", "01:00", ""]))
_point = st.builds(point, st.sampled_from(["PRESENT", "ABSENT", "PARTIEL", "NON_APPLICABLE"]),
                   st.lists(_citation, max_size=3))
_step = st.builds(step, st.integers(0, 12), st.sampled_from(list(CONFORME_ORDER)), st.lists(_point, min_size=1, max_size=6))


@settings(max_examples=200)
@given(_step, st.integers(0, 10), st.integers(0, 20))
def test_gating_properties(payload, weight, min_chars):
    out, stats = gate_step(payload, weight, TIMELINE, min_chars)
    # Only ever stricter.
    assert out["score"] <= payload["score"]
    assert CONFORME_ORDER[out["conforme"]] <= CONFORME_ORDER[payload["conforme"]]
    # Every surviving citation is a real, long-enough quote; proof-less statuses carry none.
    for p in out["points_controle"]:
        if p["statut"] in ("ABSENT", "NON_APPLICABLE"):
            assert p["citations"] == []
        if p["statut"] in ("PRESENT", "PARTIEL"):
            assert p["citations"]
        for c in p["citations"]:
            q = norm(c["texte"])
            assert q and len(q) >= min_chars
            assert q in norm(TIMELINE[c["recording_index"]]["chunks"][c["chunk_index"]]["full_text"])
    assert stats.total_citations == sum(len(p["citations"]) for p in payload["points_controle"])
    assert stats.removed_citations == stats.total_citations - sum(len(p["citations"]) for p in out["points_controle"])
    StepAnalysis.model_validate(out)
    # Idempotent: gating gated output changes nothing.
    again, stats2 = gate_step(out, weight, TIMELINE, min_chars)
    assert again == out
    assert (stats2.removed_citations, stats2.downgraded_control_points, stats2.steps_score_reduced,
            stats2.steps_conforme_adjusted) == (0, 0, 0, 0)
