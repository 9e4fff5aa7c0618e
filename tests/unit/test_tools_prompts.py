"""Tools-mode prompt structure (spec 03 §3.2 "Tools mode"): system vs user message."""

from __future__ import annotations

from auditflow_dagster.core.audit_config import AuditConfigSpec, AuditStepSpec
from auditflow_dagster.core.prompts import (
    build_step_prompt,
    build_tools_system_prompt,
    build_tools_user_prompt,
)


def make_step(**kw) -> AuditStepSpec:
    base = {"position": 2, "name": "Annonce de l'enregistrement", "description": "Le conseiller annonce l'enregistrement.",
            "prompt": "Vérifie que l'appel est annoncé comme enregistré.",
            "controlPoints": ["Enregistrement annoncé", "Droit d'opposition rappelé"],
            "keywords": ["enregistré", "opposition"], "severityLevel": "CRITICAL", "isCritical": True, "weight": 8}
    base.update(kw)
    return AuditStepSpec.model_validate(base)


def make_config(system_prompt: str | None = "Tu es un auditeur qualité.") -> AuditConfigSpec:
    return AuditConfigSpec.model_validate({"name": "Conformité", "systemPrompt": system_prompt,
                                           "steps": [make_step().model_dump(by_alias=True)]})


def _in_order(text: str, *needles: str) -> None:
    positions = [text.find(n) for n in needles]
    assert all(p >= 0 for p in positions), [n for n, p in zip(needles, positions, strict=True) if p < 0]
    assert positions == sorted(positions)


def test_system_message_persona_rules_tools_strategy() -> None:
    system = build_tools_system_prompt(make_config())
    assert system.startswith("Tu es un auditeur qualité.\n\n")
    _in_order(system, "Tu es un auditeur", "MODE OUTILS", "OUTILS DISPONIBLES", "STRATÉGIE CONSEILLÉE",
              "TOLÉRANCE PHONÉTIQUE", "RÈGLES D'ANALYSE", "VALEURS AUTORISÉES")
    for rule in ("n'est PAS incluse", "full_text", "Ne cite jamais un chunk que tu n'as pas récupéré",
                 "recording_index et chunk_index", "minutage_secondes", "recording_url",
                 "searchTranscript", "getTranscriptChunks", "includeNeighbors = 1"):
        assert rule in system, rule
    # no timeline layout and no label arithmetic: indices are copied from the tools
    assert "CHRONOLOGIE" not in system and "X − 1" not in system and "Enregistrement #" not in system
    assert "null" not in build_tools_system_prompt(make_config(None)).split("\n\n")[0]
    assert build_tools_system_prompt(make_config(None)).startswith("MODE OUTILS")
    assert build_tools_system_prompt(make_config("   ")).startswith("MODE OUTILS")


def test_user_message_step_blocks_and_search_first() -> None:
    config = make_config()
    step = make_step()
    user = build_tools_user_prompt(config, step, total_steps=7, extra_instructions="Sois bref.")
    _in_order(user, "ÉTAPE 2/7 : Annonce de l'enregistrement", "Sévérité : CRITICAL", "Poids : 8 points",
              "Étape critique : OUI", "Description : Le conseiller", "Instructions de l'étape :",
              "Instructions complémentaires :\nSois bref.", "POINTS DE CONTRÔLE (2) :\n1. Enregistrement annoncé\n"
              "2. Droit d'opposition rappelé", "MOTS-CLÉS À RECHERCHER : enregistré, opposition",
              "Commence par rechercher")
    assert "Tu es un auditeur" not in user and "VÉRIFICATION DES INFORMATIONS PRODUIT" not in user
    # the step blocks read exactly as in prompt mode
    prompt_mode = build_step_prompt(config, step, "<<TIMELINE>>", total_steps=7, extra_instructions="Sois bref.")
    blocks = user.split("\n\n")[:-1]
    assert "\n\n".join(blocks) in prompt_mode


def test_user_message_verification_block_for_product_steps() -> None:
    step = make_step(verifyProductInfo=True, description=None)
    user = build_tools_user_prompt(make_config(), step, total_steps=3)
    _in_order(user, "VÉRIFICATION DES INFORMATIONS PRODUIT", "N'invente JAMAIS de garantie", "ÉTAPE 2/3",
              "Vérification des informations produit : OUI")
    assert "Description : \n" in user and "null" not in user
