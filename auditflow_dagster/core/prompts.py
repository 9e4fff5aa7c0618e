"""Per-step audit prompts (prompt mode and tools mode) and the failed-step fallback (spec 03 §3.2,
§3.3, §5, §8).

Why the prompt is built here, deterministically: the text is a contract with the timeline layout
(``Enregistrement #X`` / ``Chunk Y`` / ``Temps:`` labels) — or, in tools mode, with the fields the
transcript tools return — and with evidence gating (verbatim quotes, 0-based indices). Keeping it pure makes it testable and lets a rerun rebuild the exact same prompt
from the audit snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from auditflow_dagster.core.audit_config import AuditConfigSpec, AuditStepSpec
from auditflow_dagster.core.product_context import (
    ProductInfo,
    product_context_block,
    verification_block,
)

__all__ = [
    "build_step_prompt",
    "build_tools_system_prompt",
    "build_tools_user_prompt",
    "fallback_step_output",
]

_PHONETIC_TOLERANCE = """\
TOLÉRANCE PHONÉTIQUE (la transcription automatique peut déformer certains termes) :
- « ORIAS » peut apparaître comme « aurias », « o rias », « oriasse » ou « horias » (registre des intermédiaires) ;
- le nom du cabinet de courtage peut être mal orthographié ou découpé en plusieurs mots ;
- « C2S », « CSS », « CMU » ou « 100 % Santé » peuvent apparaître comme « c deux s », « cé esse esse », « cent pour cent santé » ;
- « frais de dossier », « frais de courtage », « cotisation » peuvent apparaître comme « frais de dosier », « frais de courtages », « cotisations » ;
- « délai de carence » / « résiliation » peuvent apparaître comme « délai de carense » / « résiliassion ».
Si tu retiens une variante, mets erreur_transcription_notee à true et renseigne variation_phonetique_utilisee.
La citation (texte) doit néanmoins reproduire la transcription telle qu'elle est écrite, variante comprise."""

_RULES = """\
RÈGLES D'ANALYSE
1. Analyse UNIQUEMENT cette étape, à partir de la chronologie fournie ci-dessus.
2. Retourne exactement un élément dans points_controle par point de contrôle listé, dans le même ordre, \
en recopiant le texte du point dans le champ point.
3. Les citations se placent DANS chaque point de contrôle (champ citations), jamais ailleurs.
4. Un point PRESENT exige au moins une citation. Un point PARTIEL doit en avoir au moins une. \
Un point ABSENT ou NON_APPLICABLE n'a aucune citation (liste vide).
5. N'invente JAMAIS de citation : le champ texte reproduit mot pour mot un passage d'UN SEUL chunk de la chronologie \
(sans le préfixe « speaker_X: »). Sans preuve dans la transcription, le point est ABSENT \
(PARTIEL si l'élément n'apparaît qu'indirectement ou incomplètement).
6. Métadonnées de chaque citation, à déduire des libellés de la chronologie :
   - recording_index = X − 1 pour « Enregistrement #X » (0 pour « Enregistrement #1 ») ;
   - chunk_index = Y − 1 pour « Chunk Y » (0 pour « Chunk 1 ») ;
   - minutage_secondes = la première valeur (en secondes) de la ligne « Temps: » du chunk cité ;
   - minutage = ces secondes converties en MM:SS (minutes et secondes entières, sur deux chiffres ; 75.4 s → « 01:15 ») ;
   - speaker = le libellé du locuteur tel qu'écrit (par exemple speaker_0) ;
   - recording_date (JJ/MM/AAAA) et recording_time (HH:MM) = « Date: » et « Heure: » de l'enregistrement ; \
recording_url = « N/A ».
7. minutages (de l'étape et de chaque point) = les minutages MM:SS pertinents.
8. score = nombre entier de points obtenus, entre 0 et le poids de l'étape.
9. Tous les champs du schéma sont obligatoires, même vides. Réponds UNIQUEMENT par l'objet JSON, sans texte autour.

VALEURS AUTORISÉES
- conforme : CONFORME | NON_CONFORME | PARTIEL
- statut (point de contrôle) : PRESENT | ABSENT | PARTIEL | NON_APPLICABLE
- niveau_conformite : EXCELLENT | BON | ACCEPTABLE | INSUFFISANT | REJET"""

_CLOSING = "Analyse maintenant cette étape et réponds uniquement avec l'objet JSON demandé."


_TOOLS_RULES = """\
MODE OUTILS — ACCÈS À LA TRANSCRIPTION
La transcription des appels n'est PAS incluse dans les messages : tu la consultes uniquement avec les deux outils \
searchTranscript et getTranscriptChunks, qui lisent la chronologie figée de cet audit (enregistrements et chunks \
numérotés à partir de 0).
- Tu ne cites QUE du texte lu dans le champ full_text renvoyé par getTranscriptChunks. L'aperçu (preview_text) de \
searchTranscript ne suffit jamais pour citer.
- Ne cite jamais un chunk que tu n'as pas récupéré avec getTranscriptChunks, ni un passage situé au-delà d'une coupure « … ».
- Pour chaque citation, recopie tels quels depuis le résultat de l'outil pour le chunk cité : recording_index et \
chunk_index (0-based, sans rien ajouter ni retrancher), minutage, minutage_secondes, recording_date, recording_time \
et recording_url.
- speaker = le libellé en début de la ligne citée (par exemple speaker_0)."""

_TOOLS_DESCRIPTION = """\
OUTILS DISPONIBLES
1. searchTranscript(query, maxResults, minTermLength) : cherche les mots de query (normalisés : minuscules, sans \
accents ni ponctuation ; mots d'au moins minTermLength caractères, 2 à 8, défaut 3) dans tous les chunks et renvoie \
les chunks qui en contiennent le plus (maxResults : 1 à 50), avec score, indices, minutage et aperçu.
2. getTranscriptChunks(chunks, includeNeighbors, maxChars) : renvoie le texte complet des chunks demandés \
([{recording_index, chunk_index}], 1 à 60 références), avec 0 à 2 chunks voisins de chaque côté (includeNeighbors) \
et un budget total de caractères (maxChars : 1000 à 80000) ; au-delà du budget le dernier chunk est coupé par « … » \
et truncated vaut true.
Passe null pour un paramètre facultatif afin d'utiliser sa valeur par défaut."""

_TOOLS_STRATEGY = """\
STRATÉGIE CONSEILLÉE (1 à 3 séries d'appels, regroupés dans un même tour quand c'est possible)
1. searchTranscript avec le nom de l'étape, ses mots-clés et les termes des points de contrôle \
(plusieurs recherches ciblées peuvent être lancées en parallèle) ;
2. getTranscriptChunks sur les meilleurs chunks trouvés, avec includeNeighbors = 1 pour le contexte ;
3. réponds avec l'objet JSON final, sans appeler d'outil.
Le nombre de tours d'appels est limité : ne répète pas une recherche déjà faite. Si rien n'est trouvé après \
quelques recherches, conclus : sans preuve, le point est ABSENT."""

_TOOLS_ANALYSIS_RULES = """\
RÈGLES D'ANALYSE
1. Analyse UNIQUEMENT l'étape décrite dans le message de l'utilisateur, à partir de ce que les outils t'ont renvoyé.
2. Retourne exactement un élément dans points_controle par point de contrôle listé, dans le même ordre, \
en recopiant le texte du point dans le champ point.
3. Les citations se placent DANS chaque point de contrôle (champ citations), jamais ailleurs.
4. Un point PRESENT exige au moins une citation. Un point PARTIEL doit en avoir au moins une. \
Un point ABSENT ou NON_APPLICABLE n'a aucune citation (liste vide).
5. N'invente JAMAIS de citation : le champ texte reproduit mot pour mot un passage du full_text d'UN SEUL chunk \
(sans le préfixe « speaker_X: »). Sans preuve dans la transcription, le point est ABSENT \
(PARTIEL si l'élément n'apparaît qu'indirectement ou incomplètement).
6. minutages (de l'étape et de chaque point) = les minutages MM:SS pertinents, recopiés des résultats des outils.
7. score = nombre entier de points obtenus, entre 0 et le poids de l'étape.
8. Tous les champs du schéma sont obligatoires, même vides. Ta réponse finale est UNIQUEMENT l'objet JSON, \
sans texte autour.

VALEURS AUTORISÉES
- conforme : CONFORME | NON_CONFORME | PARTIEL
- statut (point de contrôle) : PRESENT | ABSENT | PARTIEL | NON_APPLICABLE
- niveau_conformite : EXCELLENT | BON | ACCEPTABLE | INSUFFISANT | REJET"""

_TOOLS_CLOSING = (
    "Commence par rechercher dans la transcription (searchTranscript), lis les chunks pertinents "
    "(getTranscriptChunks), puis réponds uniquement avec l'objet JSON demandé pour cette étape."
)


def _product_blocks(step: AuditStepSpec, product: ProductInfo | None,
                    docs: Mapping[str, list[str]] | None) -> list[str]:
    """Blocks 3 and 4 (spec 03 §3.3), for ``verifyProductInfo`` steps only: the product context
    when a product was linked, then the verification block (variant A, B or C)."""
    if not step.verify_product_info:
        return []
    blocks = [product_context_block(product)] if product is not None else []
    return [*blocks, verification_block(product, docs)]


def _yes_no(flag: bool) -> str:
    return "OUI" if flag else "NON"


def _step_blocks(step: AuditStepSpec, *, total_steps: int, extra_instructions: str | None) -> list[str]:
    """Blocks 5–8 of spec 03 §3.2 (header, description/prompt/extra, control points, keywords),
    shared by both modes so a step reads the same whether the transcript is pasted or searched."""
    blocks = [
        "\n".join(
            [
                f"ÉTAPE {step.position}/{total_steps} : {step.name}",
                f"Sévérité : {step.severity_level}",
                f"Poids : {step.weight} points",
                f"Étape critique : {_yes_no(step.is_critical)}",
                f"Vérification des informations produit : {_yes_no(step.verify_product_info)}",
            ]
        ),
        f"Description : {step.description or ''}",
        f"Instructions de l'étape :\n{step.prompt}",
    ]
    if extra_instructions and extra_instructions.strip():
        blocks.append(f"Instructions complémentaires :\n{extra_instructions.strip()}")
    points = "\n".join(f"{i}. {p}" for i, p in enumerate(step.control_points, start=1))
    blocks.append(f"POINTS DE CONTRÔLE ({len(step.control_points)}) :\n{points}")
    keywords = ", ".join(step.keywords) if step.keywords else "(aucun)"
    blocks.append(f"MOTS-CLÉS À RECHERCHER : {keywords}")
    return blocks


def build_step_prompt(
    config: AuditConfigSpec,
    step: AuditStepSpec,
    timeline_block: str,
    *,
    total_steps: int,
    extra_instructions: str | None = None,
    product: ProductInfo | None = None,
    product_docs: Mapping[str, list[str]] | None = None,
    facts: str | None = None,
) -> str:
    """The single user message of a prompt-mode step analysis (spec 03 §3.2, sections in order).

    1 config system prompt (omitted when empty — legacy printed ``null``) · 2 timeline or excerpt ·
    2b ``facts``: personal data spoken during the calls, when the timeline is redacted
    (:func:`auditflow_dagster.core.privacy.facts_section`; omitted when ``None``) · 3 product
    context (when the lookup linked a product) · 4 verification block, variant A/B/C
    for ``verifyProductInfo`` steps · 5 step header · 6 description (empty, never ``null``), step prompt,
    optional rerun instructions · 7 numbered control points · 8 keywords · 9 analysis rules and
    enum values · 10 closing line.
    """
    sections: list[str] = []

    system_prompt = (config.system_prompt or "").strip()
    if system_prompt:
        sections.append(system_prompt)

    sections.append(timeline_block)
    if facts and facts.strip():
        sections.append(facts.strip())
    sections.extend(_product_blocks(step, product, product_docs))

    sections.extend(_step_blocks(step, total_steps=total_steps, extra_instructions=extra_instructions))
    sections.append(_PHONETIC_TOLERANCE)
    sections.append(_RULES)
    sections.append(_CLOSING)
    return "\n\n".join(sections)


def build_tools_system_prompt(config: AuditConfigSpec) -> str:
    """The system message of a tools-mode step analysis (spec 03 §3.2 "Tools mode", §5).

    Config system prompt (omitted when empty) · tools rules (no transcript supplied; quote only a
    fetched ``full_text``; copy 0-based indices, minutage and recording fields from the tools) ·
    tool descriptions · advised strategy · phonetic tolerance, analysis rules and enum values.
    It does not depend on the step, so every step of an audit shares it.
    """
    sections: list[str] = []
    system_prompt = (config.system_prompt or "").strip()
    if system_prompt:
        sections.append(system_prompt)
    sections.extend([_TOOLS_RULES, _TOOLS_DESCRIPTION, _TOOLS_STRATEGY, _PHONETIC_TOLERANCE, _TOOLS_ANALYSIS_RULES])
    return "\n\n".join(sections)


def build_tools_user_prompt(
    config: AuditConfigSpec,
    step: AuditStepSpec,
    *,
    total_steps: int,
    extra_instructions: str | None = None,
    product: ProductInfo | None = None,
    product_docs: Mapping[str, list[str]] | None = None,
    facts: str | None = None,
) -> str:
    """The user message of a tools-mode step analysis: blocks 3–8 of §3.2 and a "search first" line.

    ``facts`` (personal data spoken during the calls, redacted timelines only) comes first: the
    tools return redacted text, so what was said is known from this section only ·
    3 product context · 4 verification block, same variant logic as prompt mode (legacy only
    had vector-store docs here) ·
    5–8 step header, description, instructions, control points, keywords · closing line.
    No timeline: the model reads the transcript through the tools.
    """
    del config  # the config system prompt goes in the system message
    sections: list[str] = [facts.strip()] if facts and facts.strip() else []
    sections.extend(_product_blocks(step, product, product_docs))
    sections.extend(_step_blocks(step, total_steps=total_steps, extra_instructions=extra_instructions))
    sections.append(_TOOLS_CLOSING)
    return "\n\n".join(sections)


def fallback_step_output(step: AuditStepSpec, error: str) -> dict[str, Any]:
    """The result written when a step analysis failed (spec 03 §8).

    The audit must still complete, so a failed step becomes a well-formed, schema-valid analysis that
    earns nothing: ``traite=false``, NON_CONFORME, score 0, INSUFFISANT, and one ABSENT point per
    configured control point carrying the error (so reviewers see *why* in every row).
    """
    message = f"Step failed: {error}"
    return {
        "traite": False,
        "conforme": "NON_CONFORME",
        "minutages": [],
        "score": 0,
        "points_controle": [
            {
                "point": point,
                "statut": "ABSENT",
                "commentaire": message,
                "citations": [],
                "minutages": [],
                "erreur_transcription_notee": False,
                "variation_phonetique_utilisee": None,
            }
            for point in step.control_points
        ],
        "mots_cles_trouves": [],
        "commentaire_global": message,
        "niveau_conformite": "INSUFFISANT",
        "erreurs_transcription_tolerees": 0,
    }
