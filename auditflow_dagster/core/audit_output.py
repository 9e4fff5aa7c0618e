"""The strict output schema of one step analysis (spec 03 §3.4).

These pydantic models are sent to the LLM as a strict JSON schema (structured output) and validate
whatever comes back; the offline auditor produces the same shape, so everything downstream
(evidence gating, storage, scoring) sees one contract.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Conforme = Literal["CONFORME", "NON_CONFORME", "PARTIEL"]
Statut = Literal["PRESENT", "ABSENT", "PARTIEL", "NON_APPLICABLE"]
Niveau = Literal["EXCELLENT", "BON", "ACCEPTABLE", "INSUFFISANT", "REJET"]

CONFORME_ORDER: dict[str, int] = {"NON_CONFORME": 0, "PARTIEL": 1, "CONFORME": 2}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Citation(_Strict):
    texte: str
    minutage: str
    minutage_secondes: float
    speaker: str
    recording_index: int
    chunk_index: int
    recording_date: str
    recording_time: str
    recording_url: str


class ControlPointResult(_Strict):
    point: str
    statut: Statut
    commentaire: str
    citations: list[Citation]
    minutages: list[str]
    erreur_transcription_notee: bool
    variation_phonetique_utilisee: str | None


class StepAnalysis(_Strict):
    traite: bool
    conforme: Conforme
    minutages: list[str]
    score: int = Field(ge=0)
    points_controle: list[ControlPointResult]
    mots_cles_trouves: list[str]
    commentaire_global: str
    niveau_conformite: Niveau
    erreurs_transcription_tolerees: int


def step_analysis_json_schema() -> dict[str, Any]:
    """JSON schema suitable for OpenAI strict structured output (every field required, no extras)."""
    schema = StepAnalysis.model_json_schema()

    def _strictify(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node["required"] = list(node["properties"].keys())
                node["additionalProperties"] = False
            # OpenAI strict mode rejects numeric bounds and titles it does not need.
            node.pop("minimum", None)
            node.pop("title", None)
            for v in node.values():
                _strictify(v)
        elif isinstance(node, list):
            for v in node:
                _strictify(v)

    _strictify(schema)
    return schema
