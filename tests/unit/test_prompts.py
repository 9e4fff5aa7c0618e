"""Step prompt structure (spec 03 §3.2) and the failed-step fallback (§8)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditflow_dagster.core.audit_config import AuditConfigSpec, AuditStepSpec
from auditflow_dagster.core.audit_output import StepAnalysis
from auditflow_dagster.core.prompts import build_step_prompt, fallback_step_output

TIMELINE_BLOCK = "<<TIMELINE BLOCK>>\nEnregistrement #1\n─── Chunk 1 ───\nTemps: 12.4s - 20s"


def make_step(**kw) -> AuditStepSpec:
    base = {"position": 2, "name": "Annonce de l'enregistrement", "description": "Le conseiller annonce l'enregistrement.",
            "prompt": "Vérifie que l'appel est annoncé comme enregistré.",
            "controlPoints": ["Enregistrement annoncé", "Droit d'opposition rappelé"],
            "keywords": ["enregistré", "opposition"], "severityLevel": "CRITICAL", "isCritical": True, "weight": 8}
    base.update(kw)
    return AuditStepSpec.model_validate(base)


def make_config(system_prompt: str | None = "Tu es un auditeur qualité.", steps=None) -> AuditConfigSpec:
    return AuditConfigSpec.model_validate({"name": "Conformité", "systemPrompt": system_prompt,
                                           "steps": [s.model_dump(by_alias=True) for s in (steps or [make_step()])]})


def _positions(prompt: str, *needles: str) -> list[int]:
    positions = [prompt.find(n) for n in needles]
    assert all(p >= 0 for p in positions), [n for n, p in zip(needles, positions, strict=True) if p < 0]
    return positions


def test_sections_are_in_spec_order():
    step = make_step()
    prompt = build_step_prompt(make_config(), step, TIMELINE_BLOCK, total_steps=7, extra_instructions="Sois bref.")
    order = _positions(
        prompt,
        "Tu es un auditeur qualité.",  # 1 system prompt
        "<<TIMELINE BLOCK>>",  # 2 timeline
        "ÉTAPE 2/7 : Annonce de l'enregistrement",  # 5 header
        "Le conseiller annonce l'enregistrement.",  # 6 description
        "Vérifie que l'appel est annoncé comme enregistré.",  # step prompt
        "Sois bref.",  # extra instructions
        "1. Enregistrement annoncé",  # 7 control points
        "MOTS-CLÉS À RECHERCHER : enregistré, opposition",  # 8 keywords
        "RÈGLES D'ANALYSE",  # 9 rules
        "Analyse maintenant cette étape",  # 10 closing
    )
    assert order == sorted(order)
    assert prompt.rstrip().endswith("réponds uniquement avec l'objet JSON demandé.")
    assert "2. Droit d'opposition rappelé" in prompt
    assert "Sévérité : CRITICAL" in prompt and "Poids : 8 points" in prompt and "Étape critique : OUI" in prompt
    assert prompt.startswith("Tu es un auditeur qualité.")


def test_rules_explain_index_and_minutage_derivation_and_enums():
    prompt = build_step_prompt(make_config(), make_step(), TIMELINE_BLOCK, total_steps=3)
    assert "recording_index = X − 1" in prompt and "« Enregistrement #X »" in prompt
    assert "chunk_index = Y − 1" in prompt and "« Chunk Y »" in prompt
    assert "« Temps: »" in prompt and "MM:SS" in prompt
    for enum in ("CONFORME | NON_CONFORME | PARTIEL", "PRESENT | ABSENT | PARTIEL | NON_APPLICABLE",
                 "EXCELLENT | BON | ACCEPTABLE | INSUFFISANT | REJET"):
        assert enum in prompt
    assert "ORIAS" in prompt  # phonetic tolerance list


@pytest.mark.parametrize("system_prompt", [None, "", "   "])
def test_empty_system_prompt_and_description_are_omitted_not_null(system_prompt):
    step = make_step(description=None)
    prompt = build_step_prompt(make_config(system_prompt, [step]), step, TIMELINE_BLOCK, total_steps=1)
    assert prompt.startswith("<<TIMELINE BLOCK>>")
    assert "null" not in prompt and "None" not in prompt
    assert "Description : \n\nInstructions de l'étape :" in prompt
    assert "Instructions complémentaires" not in prompt


def test_verification_block_only_for_product_steps():
    plain = make_step()
    product = make_step(verifyProductInfo=True)
    assert "VÉRIFICATION DES INFORMATIONS PRODUIT" not in build_step_prompt(make_config(), plain, TIMELINE_BLOCK, total_steps=1)
    prompt = build_step_prompt(make_config(), product, TIMELINE_BLOCK, total_steps=1)
    timeline, block, header = _positions(prompt, "<<TIMELINE BLOCK>>", "VÉRIFICATION DES INFORMATIONS PRODUIT", "ÉTAPE 2/1")
    assert timeline < block < header
    assert "N'invente JAMAIS de garantie" in prompt and "PARTIEL" in prompt
    assert "Vérification des informations produit : OUI" in prompt


def test_no_keywords_is_explicit():
    prompt = build_step_prompt(make_config(), make_step(keywords=[]), "T", total_steps=1)
    assert "MOTS-CLÉS À RECHERCHER : (aucun)" in prompt


# --------------------------------------------------------------------------- fallback (§8)


def test_fallback_step_output():
    step = make_step()
    out = fallback_step_output(step, "invalid JSON")
    StepAnalysis.model_validate(out)
    assert (out["traite"], out["conforme"], out["score"], out["niveau_conformite"]) == (False, "NON_CONFORME", 0, "INSUFFISANT")
    assert out["commentaire_global"] == "Step failed: invalid JSON"
    assert [p["point"] for p in out["points_controle"]] == step.control_points
    assert all(p["statut"] == "ABSENT" and p["citations"] == [] and p["commentaire"] == "Step failed: invalid JSON"
               for p in out["points_controle"])
    assert out["minutages"] == [] and out["mots_cles_trouves"] == [] and out["erreurs_transcription_tolerees"] == 0


@given(st.lists(st.text(min_size=1).filter(str.strip), min_size=1, max_size=8), st.text())
def test_fallback_always_valid(points, error):
    step = make_step(controlPoints=points)
    out = fallback_step_output(step, error)
    StepAnalysis.model_validate(out)
    assert len(out["points_controle"]) == len(points)
    assert out["commentaire_global"] == f"Step failed: {error}"
