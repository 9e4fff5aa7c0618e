"""Offline keyword auditor: generic contract + exactness on the synthetic calls."""

from __future__ import annotations

import json
from datetime import date

import pytest

from auditflow_dagster.core.audit_config import config_from_legacy_json
from auditflow_dagster.core.audit_output import StepAnalysis
from auditflow_dagster.core.evidence import gate_step, norm
from auditflow_dagster.core.scoring import (
    derived_step_score,
    niveau_for,
    step_ratio,
    verdict_for_ratio,
)
from auditflow_dagster.core.timeline import build_timeline, chunk_words
from auditflow_dagster.sample import generator as g
from auditflow_dagster.sample import offline_auditor as oa
from tests.conftest import SHARED_FIXTURES as FIXTURES  # noqa: E402

DAYS = [date(2025, 4, 7), date(2025, 6, 14), date(2025, 11, 30)]


def timeline_for(fiche_id: str) -> list[dict]:
    """Timeline exactly as the pipeline builds it: STT words → chunks → build_timeline."""
    recs = []
    for rec in g.recordings_for_fiche(fiche_id):
        words = g.transcript_for_recording_url(rec["recording_url"])["words"]
        name = rec["recording_url"].split("?")[0].rsplit("/", 1)[-1]
        parts = name[37:].split("-")  # DD-MM-YY-HHhMM-from-to.mp3
        recs.append(
            {
                **rec,
                "has_transcription": True,
                "chunks": chunk_words(words),
                "recording_date": f"{parts[0]}/{parts[1]}/20{parts[2]}",
                "recording_time": parts[3].replace("h", ":"),
            }
        )
    return build_timeline(recs)


def _simple_timeline(lines: list[str], *, chunk_size: int = 10) -> list[dict]:
    chunks = []
    for k in range(0, len(lines), chunk_size):
        part = lines[k : k + chunk_size]
        chunks.append(
            {
                "chunk_index": k // chunk_size,
                "start_timestamp": 65.5 * (k // chunk_size),
                "end_timestamp": 65.5 * (k // chunk_size) + 60,
                "message_count": len(part),
                "speakers": sorted({ln.split(":")[0] for ln in part}),
                "full_text": "\n".join(part),
            }
        )
    return [
        {
            "recording_index": 0,
            "call_id": "1234567890123456789",
            "start_time": "",
            "duration_seconds": 300,
            "recording_url": "https://rec.example.invalid/a.mp3",
            "recording_date": "02/01/2025",
            "recording_time": "10:15",
            "from_number": "",
            "to_number": "",
            "total_chunks": len(chunks),
            "chunks": chunks,
        }
    ]


def _cfg(points: list[str], *, weight: int = 6, keywords: list[str] | None = None):
    return config_from_legacy_json(
        {
            "name": "t",
            "auditSteps": [
                {
                    "position": 1,
                    "name": "Étape",
                    "prompt": "p",
                    "controlPoints": points,
                    "keywords": keywords or [],
                    "severityLevel": "HIGH",
                    "weight": weight,
                }
            ],
        }
    )


# ---------------------------------------------------------------------------------------------
# The key property
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("day", DAYS)
def test_statuses_equal_ground_truth_and_survive_gating(day):
    cfg = g.load_checklist()
    seen = set()
    for index in range(40):
        fid = g.fiche_id_for(day, index)
        truth = g.ground_truth(fid)
        timeline = timeline_for(fid)
        for step in cfg.steps:
            out = oa.audit_step(cfg, step, timeline)
            StepAnalysis.model_validate(out)
            assert [p["point"] for p in out["points_controle"]] == step.control_points
            for i, point in enumerate(out["points_controle"], start=1):
                expected = truth[(step.position, i)]
                assert point["statut"] == expected["statut"], (fid, step.position, i)
                seen.add(point["statut"])
                if expected["statut"] == "ABSENT":
                    assert point["citations"] == []
                    continue
                (cit,) = point["citations"]
                assert (cit["recording_index"], cit["chunk_index"]) == (expected["recording_index"], expected["chunk_index"])
                assert cit["texte"] == expected["text"]
                assert cit["speaker"] == "speaker_0"
                rec = timeline[cit["recording_index"]]
                assert rec["call_id"] == expected["call_id"]
                chunk = rec["chunks"][cit["chunk_index"]]
                assert cit["minutage_secondes"] == chunk["start_timestamp"]
                assert cit["minutage"] == oa.mmss(chunk["start_timestamp"])
                assert cit["recording_date"] == rec["recording_date"] and cit["recording_url"] == rec["recording_url"]
            gated, stats = gate_step(out, step.weight, timeline)
            assert gated == out, (fid, step.position)
            assert stats.removed_citations == 0 and stats.downgraded_control_points == 0
    assert seen == {"PRESENT", "PARTIEL", "ABSENT"}


def test_step_scores_equal_expected_audit():
    cfg = g.load_checklist()
    day = DAYS[0]
    for index in range(0, 40, 3):
        fid = g.fiche_id_for(day, index)
        exp = g.expected_audit(fid)
        timeline = timeline_for(fid)
        for step, exp_step in zip(cfg.steps, exp["steps"]):
            out = oa.audit_step(cfg, step, timeline)
            assert (out["score"], out["conforme"], out["niveau_conformite"]) == (
                exp_step["score"],
                exp_step["conforme"],
                exp_step["niveau_conformite"],
            )


def test_scripted_sentences_only_match_their_own_control_point():
    """The design invariant behind exactness: no cross-talk between scripted lines."""
    cfg = g.load_checklist()
    terms = {(s.position, i): oa.control_point_terms(p) for s in cfg.steps for i, p in enumerate(s.control_points, 1)}
    assert all(len(t) >= 2 for t in terms.values())
    contexts = [g._context(g._base(g.fiche_id_for(DAYS[0], k))) for k in range(12)]
    neutral = [
        *g.CLIENT_REPLIES, *g.ADVISOR_PREFIXES, *g.ADVISOR_FILLERS, *g.CLIENT_FILLERS, *g.OPENINGS_FIRST,
        *g.OPENINGS_NEXT, *g.CLIENT_OPENINGS, *g.CLOSINGS_LAST, *g.CLOSINGS_MID, *g.CLIENT_CLOSINGS, *g.AUDIO_EVENTS,
    ]
    for key, script in g.SCRIPTS.items():
        neutral.extend(script.get("reply", []))
    neutral.extend(sentence for _, sentence in g.PII_SENTENCES.values())  # appended to client replies
    for ctx in contexts:
        for key, script in g.SCRIPTS.items():
            for kind, want in (("ok", "PRESENT"), ("partial", "PARTIEL")):
                for template in script[kind]:
                    sentence = template.format(**ctx)
                    assert len(oa.split_sentences(sentence)) == 1, sentence
                    assert len(norm(sentence)) >= oa.MIN_QUOTE_CHARS
                    for other, t in terms.items():
                        got = oa.classify_sentence(t, sentence)[0]
                        assert got == (want if other == key else "ABSENT"), (sentence, other)
        for template in neutral:
            text = template.format(**ctx)
            for other, t in terms.items():
                assert oa.classify_sentence(t, text)[0] == "ABSENT", (text, other)


# ---------------------------------------------------------------------------------------------
# Generic behaviour
# ---------------------------------------------------------------------------------------------


def test_generic_rules_on_a_hand_made_timeline():
    cfg = _cfg(["Numéro ORIAS communiqué", "Annonce du délai de carence", "Droit de renonciation de 14 jours"], keywords=["ORIAS", "carence", "Bloctel"])
    timeline = _simple_timeline(
        [
            "speaker_1: Bonjour.",
            "speaker_0: Bonjour madame. Mon numéro ORIAS est le 12 345 678.",
            "speaker_1: D'accord.",
        ]
        + [f"speaker_{k % 2}: phrase neutre numéro {k}." for k in range(12)]
        + ["speaker_0: Pour la carence, il y a un délai, je crois."]
    )
    out = oa.audit_step(cfg, cfg.steps[0], timeline)
    StepAnalysis.model_validate(out)
    p1, p2, p3 = out["points_controle"]
    assert p1["statut"] == "PRESENT"
    assert p1["citations"][0]["texte"] == "Mon numéro ORIAS est le 12 345 678."
    assert p1["citations"][0]["chunk_index"] == 0 and p1["citations"][0]["minutage"] == "00:00"
    assert p2["statut"] == "PARTIEL"  # hedged
    assert p2["citations"][0]["chunk_index"] == 1 and p2["citations"][0]["minutage"] == "01:05"
    assert p2["citations"][0]["minutage_secondes"] == 65.5
    assert p3["statut"] == "ABSENT" and p3["citations"] == [] and p3["minutages"] == []
    ratio = step_ratio(["PRESENT", "PARTIEL", "ABSENT"])
    assert out["score"] == derived_step_score(ratio, 6) == 3
    assert out["conforme"] == verdict_for_ratio(ratio) == "PARTIEL"
    assert out["niveau_conformite"] == niveau_for("PARTIEL", ratio)
    assert out["traite"] is True
    assert out["minutages"] == ["00:00", "01:05"]
    assert out["mots_cles_trouves"] == ["ORIAS", "carence"]
    assert gate_step(out, 6, timeline)[0] == out


def test_best_evidence_wins_and_short_sentences_quote_the_whole_line():
    cfg = _cfg(["IBAN et BIC"], weight=4)
    timeline = _simple_timeline(["speaker_0: Votre IBAN, plus tard peut-être.", "speaker_1: Oui.", "speaker_0: IBAN, BIC."])
    out = oa.audit_step(cfg, cfg.steps[0], timeline)
    (p,) = out["points_controle"]
    assert p["statut"] == "PRESENT"
    assert p["citations"][0]["texte"] == "speaker_0: IBAN, BIC."  # "iban bic" alone is < 12 chars
    assert out["score"] == 4 and out["conforme"] == "CONFORME" and out["niveau_conformite"] == "EXCELLENT"
    assert gate_step(out, 4, timeline)[0] == out


def test_empty_timeline_gives_a_valid_all_absent_step():
    cfg = g.load_checklist()
    for step in cfg.steps:
        out = oa.audit_step(cfg, step, [])
        StepAnalysis.model_validate(out)
        assert out["traite"] is False and out["score"] == 0
        assert out["conforme"] == "NON_CONFORME" and out["niveau_conformite"] == "INSUFFISANT"
        assert all(p["statut"] == "ABSENT" for p in out["points_controle"])
        assert out["mots_cles_trouves"] == []


def test_control_point_terms_drop_meta_words():
    assert oa.control_point_terms("Numéro ORIAS communiqué") == ["numero", "orias"]
    assert oa.control_point_terms("Le conseiller vérifie l'ancienneté de l'ancien contrat") == ["anciennete", "contrat"]
    assert oa.control_point_terms("Droit de renonciation de 14 jours") == ["droit", "renonciation", "14", "jours"]
    assert oa.control_point_terms("Finalité du traitement des données personnelles")[2] == "donnees"
    assert oa.is_hedged("C'est environ 50 euros") and not oa.is_hedged("C'est 50 euros")
    assert oa.term_matches("renonciation", "renoncez") and not oa.term_matches("renonciation", "renoncer"[:5])
    assert oa.term_matches("nom", "noms") and not oa.term_matches("nom", "nombre")
    assert oa.term_matches("14", "14") and not oa.term_matches("14", "140")
    assert oa.coverage(["droit", "renonciation", "14", "jours"], "Un droit de renoncer sous 14 jours.") == 1.0
    assert oa.coverage(["nom", "cabinet"], "Le nombre de cabinets") == 0.5


@pytest.mark.skipif(not (FIXTURES / "audit_config_18_points.json").exists(), reason="shared fixtures not available")
@pytest.mark.parametrize("name", ["audit_config_18_points.json", "audit_config_with_verification_example.json"])
def test_generic_on_real_world_configs(name):
    cfg = config_from_legacy_json(json.loads((FIXTURES / name).read_text(encoding="utf-8")))
    fid = next(g.fiche_id_for(DAYS[1], k) for k in range(40) if len(g.recordings_for_fiche(g.fiche_id_for(DAYS[1], k))) >= 2)
    timeline = timeline_for(fid)
    statuses = set()
    for step in cfg.steps:
        out = oa.audit_step(cfg, step, timeline)
        StepAnalysis.model_validate(out)
        assert len(out["points_controle"]) == len(step.control_points)
        assert 0 <= out["score"] <= step.weight
        statuses.update(p["statut"] for p in out["points_controle"])
        gated, stats = gate_step(out, step.weight, timeline)
        assert gated == out and stats.removed_citations == 0
    assert "ABSENT" in statuses and statuses & {"PRESENT", "PARTIEL"}


def test_deterministic():
    cfg = g.load_checklist()
    fid = g.fiche_id_for(DAYS[2], 5)
    a = [oa.audit_step(cfg, s, timeline_for(fid)) for s in cfg.steps]
    b = [oa.audit_step(cfg, s, timeline_for(fid)) for s in cfg.steps]
    assert a == b
    assert oa.OFFLINE_MODEL == "offline-keyword"
