"""Audit configurations: the checklist a call is judged against (spec 03 §1).

The legacy JSON format (``name``, ``description``, ``systemPrompt``, ``auditSteps[]`` with camelCase
step fields, plus informational keys such as ``version`` or ``complianceThresholds``) is the exchange
format: real brokerages keep their checklists in it, so :func:`config_from_legacy_json` must accept
those files unchanged. Informational keys are kept in ``extra`` for export but never drive the engine
(thresholds are fixed by the scoring rules, rejection criteria act only through the prompt).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SeverityLevel = Literal["LOW", "MEDIUM", "HIGH", "CRITICAL"]


class AuditStepSpec(BaseModel):
    """One step of a checklist. ``position`` is 1-based; ``weight`` is the step's maximum points."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    position: int = Field(ge=1)
    name: str = Field(min_length=1)
    description: str | None = None
    prompt: str = Field(min_length=1)
    control_points: list[str] = Field(alias="controlPoints", min_length=1)
    keywords: list[str] = Field(default_factory=list)
    severity_level: SeverityLevel = Field(alias="severityLevel")
    is_critical: bool = Field(default=False, alias="isCritical")
    chronological_important: bool = Field(default=False, alias="chronologicalImportant")
    weight: int = Field(default=5, ge=1, le=10)
    verify_product_info: bool = Field(default=False, alias="verifyProductInfo")

    @field_validator("name", "prompt")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v

    @field_validator("control_points")
    @classmethod
    def _points_not_blank(cls, v: list[str]) -> list[str]:
        if any(not p.strip() for p in v):
            raise ValueError("control points must not be blank")
        return v


class AuditConfigSpec(BaseModel):
    """A whole checklist, as imported or snapshotted into an audit run."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    name: str = Field(min_length=1)
    description: str | None = None
    system_prompt: str | None = Field(default=None, alias="systemPrompt")
    is_active: bool = Field(default=True, alias="isActive")
    run_automatically: bool = Field(default=False, alias="runAutomatically")
    steps: list[AuditStepSpec] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unique_positions(self) -> "AuditConfigSpec":
        positions = [s.position for s in self.steps]
        if len(positions) != len(set(positions)):
            raise ValueError("step positions must be unique within a config")
        self.steps.sort(key=lambda s: s.position)
        return self

    @property
    def total_weight(self) -> int:
        return sum(s.weight for s in self.steps)


_KNOWN_KEYS = {"name", "description", "systemPrompt", "isActive", "runAutomatically", "auditSteps", "steps"}


def config_from_legacy_json(data: dict[str, Any]) -> AuditConfigSpec:
    """Parse a legacy config file (``auditSteps`` or ``steps``) without changing its meaning.

    Unknown top-level keys (``version``, ``complianceThresholds`` …) go to ``extra`` so an export
    gives the file back; they are never read by the engine (spec 03 §1.2).
    """
    if not isinstance(data, dict):
        raise ValueError("audit config must be a JSON object")
    steps = data.get("auditSteps", data.get("steps", []))
    extra = {k: v for k, v in data.items() if k not in _KNOWN_KEYS}
    return AuditConfigSpec.model_validate({**{k: v for k, v in data.items() if k in _KNOWN_KEYS}, "steps": steps, "extra": extra})


def config_to_legacy_json(config: AuditConfigSpec) -> dict[str, Any]:
    """Export in the legacy shape (camelCase, ``auditSteps``), informational keys restored."""
    out: dict[str, Any] = dict(config.extra)
    out.update(
        {
            "name": config.name,
            "description": config.description,
            "systemPrompt": config.system_prompt,
            "isActive": config.is_active,
            "runAutomatically": config.run_automatically,
            "auditSteps": [s.model_dump(by_alias=True) for s in config.steps],
        }
    )
    return out
