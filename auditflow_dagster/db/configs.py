"""Audit configuration storage (spec 03 §1): import from the legacy JSON format, load as the
``AuditConfigSpec`` the engine snapshots into each audit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from auditflow_dagster.core.audit_config import (
    AuditConfigSpec,
    AuditStepSpec,
    config_from_legacy_json,
)
from auditflow_dagster.db.models import AuditConfig, AuditStep

BUNDLED_CHECKLIST = Path(__file__).resolve().parents[1] / "sample" / "checklist.json"


#: The step attributes shared by the table row and the spec (same names on both sides).
STEP_FIELDS = ("position", "name", "description", "prompt", "control_points", "keywords", "severity_level",
               "is_critical", "chronological_important", "weight", "verify_product_info")


def step_fields(step: Any) -> dict[str, Any]:
    """Copy a step's fields between :class:`AuditStep` rows and :class:`AuditStepSpec` (lists copied)."""
    return {f: list(v) if isinstance(v := getattr(step, f), (list, tuple)) else v for f in STEP_FIELDS}


def import_config(session: Session, spec: AuditConfigSpec, *, created_by: str | None = None) -> AuditConfig:
    """Insert a config and its steps atomically (the caller's transaction)."""
    row = AuditConfig(
        name=spec.name,
        description=spec.description,
        system_prompt=spec.system_prompt,
        is_active=spec.is_active,
        run_automatically=spec.run_automatically,
        created_by=created_by,
        extra=spec.extra,
    )
    session.add(row)
    session.flush()
    for s in spec.steps:
        session.add(AuditStep(audit_config_id=row.id, **step_fields(s)))
    session.flush()
    return row


def import_legacy_json(session: Session, data: dict[str, Any], **kw: Any) -> AuditConfig:
    return import_config(session, config_from_legacy_json(data), **kw)


def load_config(session: Session, config_id: int) -> tuple[AuditConfig, AuditConfigSpec] | None:
    row = session.get(AuditConfig, config_id)
    if row is None:
        return None
    steps = session.scalars(
        select(AuditStep).where(AuditStep.audit_config_id == config_id).order_by(AuditStep.position)
    )
    spec = AuditConfigSpec(
        name=row.name,
        description=row.description,
        system_prompt=row.system_prompt,
        is_active=row.is_active,
        run_automatically=row.run_automatically,
        extra=row.extra or {},
        steps=[AuditStepSpec(**step_fields(s)) for s in steps],
    )
    return row, spec


def automatic_config_ids(session: Session) -> list[int]:
    """Configs that automation and the daily pipeline run: active and flagged automatic."""
    return list(
        session.scalars(
            select(AuditConfig.id)
            .where(AuditConfig.is_active.is_(True), AuditConfig.run_automatically.is_(True))
            .order_by(AuditConfig.id)
        )
    )


def ensure_bundled_config(session: Session) -> int:
    """Install our bundled checklist once (as the automatic config); return its id."""
    data = json.loads(BUNDLED_CHECKLIST.read_text(encoding="utf-8"))
    # concurrent start-ups must not install it twice
    session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": 0x41464346})
    existing = session.scalar(select(AuditConfig.id).where(AuditConfig.name == data["name"]).order_by(AuditConfig.id))
    if existing is not None:
        return existing
    data = {**data, "runAutomatically": True}
    return import_legacy_json(session, data, created_by="bundled").id
