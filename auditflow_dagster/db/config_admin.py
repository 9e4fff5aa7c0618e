"""Editing audit configurations in place (spec 03 §1.3, §1.4): the storage behind
``/api/audit-configs``.

Every change to a config's steps first locks the config row (``FOR NO KEY UPDATE``: audits can
still be created against it), so the position checks below cannot race another editor; deleting
a config takes ``FOR UPDATE``, which also waits for audits being inserted against it (their
foreign-key check holds ``FOR KEY SHARE``). ``audit_steps`` has UNIQUE(audit_config_id, position)
(not deferrable, checked row by row), so a reorder first moves every position to its negative and
then writes 1..n, all in the caller's transaction.

Replies are the legacy camelCase shapes with string ids (spec 06 §5.5).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from auditflow_dagster.core.audit_config import AuditStepSpec
from auditflow_dagster.db.clock import iso
from auditflow_dagster.db.configs import step_fields
from auditflow_dagster.db.models import Audit, AuditConfig, AuditStep


class ConfigNotFound(LookupError):
    pass


class ConfigConflict(Exception):
    """A state conflict: 409 (a config still used by audits, a step moved onto a taken position)."""


class ConfigInvalid(ValueError):
    """A request that cannot apply to the stored config: 400 (a taken position on add, a bad reorder)."""


#: Step keys of the legacy JSON (camelCase) → AuditStep columns.
STEP_KEYS = {
    "position": "position", "name": "name", "description": "description", "prompt": "prompt",
    "controlPoints": "control_points", "keywords": "keywords", "severityLevel": "severity_level",
    "isCritical": "is_critical", "chronologicalImportant": "chronological_important", "weight": "weight",
    "verifyProductInfo": "verify_product_info",
}


# --------------------------------------------------------------------------------------------- #
# JSON shapes
# --------------------------------------------------------------------------------------------- #


def step_json(step: AuditStep) -> dict[str, Any]:
    return {
        "id": str(step.id),
        "auditConfigId": str(step.audit_config_id),
        "name": step.name,
        "description": step.description,
        "prompt": step.prompt,
        "controlPoints": list(step.control_points),
        "keywords": list(step.keywords or []),
        "severityLevel": step.severity_level,
        "isCritical": step.is_critical,
        "position": step.position,
        "chronologicalImportant": step.chronological_important,
        "weight": step.weight,
        "verifyProductInfo": step.verify_product_info,
        "createdAt": iso(step.created_at),
        "updatedAt": iso(step.updated_at),
    }


def config_json(row: AuditConfig, steps_count: int) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "name": row.name,
        "description": row.description,
        "systemPrompt": row.system_prompt,
        "isActive": row.is_active,
        "runAutomatically": row.run_automatically,
        "createdBy": row.created_by,
        "createdAt": iso(row.created_at),
        "updatedAt": iso(row.updated_at),
        "stepsCount": steps_count,
    }


def _steps_of(session: Session, config_ids: list[int]) -> dict[int, list[AuditStep]]:
    out: dict[int, list[AuditStep]] = {cid: [] for cid in config_ids}
    if config_ids:
        rows = session.scalars(
            select(AuditStep).where(AuditStep.audit_config_id.in_(config_ids))
            .order_by(AuditStep.audit_config_id, AuditStep.position, AuditStep.id)
        )
        for st in rows:
            out[st.audit_config_id].append(st)
    return out


def _steps_counts(session: Session, config_ids: list[int]) -> dict[int, int]:
    if not config_ids:
        return {}
    rows = session.execute(
        select(AuditStep.audit_config_id, func.count())
        .where(AuditStep.audit_config_id.in_(config_ids))
        .group_by(AuditStep.audit_config_id)
    )
    return {cid: n for cid, n in rows}


# --------------------------------------------------------------------------------------------- #
# Stats
# --------------------------------------------------------------------------------------------- #


def _empty_stats() -> dict[str, Any]:
    return {"totalAudits": 0, "completedAudits": 0, "failedAudits": 0, "averageScore": None,
            "averageDurationMs": None, "lastUsedAt": None, "complianceRate": None}


def config_stats(session: Session, config_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Per-config audit figures in one statement. Soft-deleted audits are left out; averages and
    the compliance rate are over completed audits (null when none): ``averageScore`` is the mean
    ``score_percentage``, ``complianceRate`` the percentage of completed audits that are compliant."""
    out = {cid: _empty_stats() for cid in config_ids}
    if not config_ids:
        return out
    completed = Audit.status == "completed"
    rows = session.execute(
        select(
            Audit.audit_config_id,
            func.count(),
            func.count().filter(completed),
            func.count().filter(Audit.status == "failed"),
            func.avg(Audit.score_percentage).filter(completed),
            func.avg(Audit.duration_ms).filter(completed),
            func.max(Audit.created_at),
            func.count().filter(completed, Audit.is_compliant.is_(True)),
        )
        .where(Audit.audit_config_id.in_(config_ids), Audit.deleted_at.is_(None))
        .group_by(Audit.audit_config_id)
    )
    for cid, total, done, failed, avg_score, avg_ms, last, compliant in rows:
        out[cid] = {
            "totalAudits": total,
            "completedAudits": done,
            "failedAudits": failed,
            "averageScore": round(float(avg_score), 2) if avg_score is not None else None,
            "averageDurationMs": round(float(avg_ms)) if avg_ms is not None else None,
            "lastUsedAt": iso(last),
            "complianceRate": round(100.0 * compliant / done, 2) if done else None,
        }
    return out


# --------------------------------------------------------------------------------------------- #
# Reads
# --------------------------------------------------------------------------------------------- #


def _newest_first():
    return (AuditConfig.created_at.desc(), AuditConfig.id.desc())


def list_configs(
    session: Session, *, include_inactive: bool, include_steps: bool, include_stats: bool
) -> list[dict[str, Any]]:
    query = select(AuditConfig).order_by(*_newest_first())
    if not include_inactive:
        query = query.where(AuditConfig.is_active.is_(True))
    rows = list(session.scalars(query))
    ids = [r.id for r in rows]
    counts = _steps_counts(session, ids)
    steps = _steps_of(session, ids) if include_steps else {}
    stats = config_stats(session, ids) if include_stats else {}
    out = []
    for r in rows:
        item = config_json(r, counts.get(r.id, 0))
        if include_steps:
            item["steps"] = [step_json(st) for st in steps[r.id]]
        if include_stats:
            item["stats"] = stats[r.id]
        out.append(item)
    return out


def config_detail(session: Session, config_id: int, *, include_stats: bool) -> dict[str, Any]:
    row = session.get(AuditConfig, config_id)
    if row is None:
        raise ConfigNotFound(config_id)
    steps = _steps_of(session, [config_id])[config_id]
    item = config_json(row, len(steps))
    item["steps"] = [step_json(st) for st in steps]
    if include_stats:
        item["stats"] = config_stats(session, [config_id])[config_id]
    return item


def latest_active_config(session: Session) -> AuditConfig | None:
    """"Latest active config" of spec 03 §1.2: the active config created last."""
    return session.scalar(select(AuditConfig).where(AuditConfig.is_active.is_(True)).order_by(*_newest_first()).limit(1))


def stats_of(session: Session, config_id: int) -> dict[str, Any]:
    if session.get(AuditConfig, config_id) is None:
        raise ConfigNotFound(config_id)
    return config_stats(session, [config_id])[config_id]


def validate_config(session: Session, config_id: int) -> list[str]:
    """The informational checks of ``GET …/validate`` (spec 03 §1.3); runs never call it."""
    row = session.get(AuditConfig, config_id)
    if row is None:
        return ["Audit configuration not found"]
    errors: list[str] = []
    if not row.is_active:
        errors.append("Audit configuration is inactive")
    steps = _steps_of(session, [config_id])[config_id]
    if not steps:
        errors.append("Audit configuration has no steps")
        return errors
    positions = [st.position for st in steps]
    if positions != list(range(1, len(steps) + 1)):
        errors.append(
            f"Step positions must be contiguous from 1 to {len(steps)} (found {', '.join(map(str, positions))})"
        )
    for st in steps:
        label = f"Step {st.position}"
        if not (st.name or "").strip():
            errors.append(f"{label}: missing name")
        if not (st.prompt or "").strip():
            errors.append(f"{label}: missing prompt")
        if not [p for p in (st.control_points or []) if p.strip()]:
            errors.append(f"{label}: no control points")
        if not 1 <= st.weight <= 10:
            errors.append(f"{label}: weight {st.weight} outside 1..10")
    return errors


# --------------------------------------------------------------------------------------------- #
# Writes (all in the caller's transaction)
# --------------------------------------------------------------------------------------------- #


def _lock(session: Session, config_id: int, *, for_delete: bool = False) -> AuditConfig:
    row = session.scalar(
        select(AuditConfig).where(AuditConfig.id == config_id).with_for_update(key_share=not for_delete)
    )
    if row is None:
        raise ConfigNotFound(config_id)
    return row


def _max_position(session: Session, config_id: int) -> int:
    return session.scalar(
        select(func.coalesce(func.max(AuditStep.position), 0)).where(AuditStep.audit_config_id == config_id)
    )


def _position_taken(session: Session, config_id: int, position: int, *, other_than: int | None = None) -> bool:
    query = select(AuditStep.id).where(AuditStep.audit_config_id == config_id, AuditStep.position == position)
    if other_than is not None:
        query = query.where(AuditStep.id != other_than)
    return session.scalar(query.limit(1)) is not None


def update_config(session: Session, config_id: int, changes: dict[str, Any]) -> dict[str, Any]:
    """Apply column changes (already validated; ``None`` clears a nullable column)."""
    row = _lock(session, config_id)
    for column, value in changes.items():
        setattr(row, column, value)
    session.flush()
    return {"id": str(row.id), "name": row.name, "stepsCount": _steps_counts(session, [row.id]).get(row.id, 0)}


def delete_config(session: Session, config_id: int) -> None:
    """Delete a config and (by cascade) its steps; 409 while audits reference it (ON DELETE RESTRICT)."""
    _lock(session, config_id, for_delete=True)
    used = session.scalar(select(func.count()).select_from(Audit).where(Audit.audit_config_id == config_id))
    if used:
        raise ConfigConflict(
            f"Audit configuration {config_id} is used by {used} audit(s) and cannot be deleted; "
            "deactivate it instead (isActive=false)"
        )
    session.execute(text("DELETE FROM audit_configs WHERE id = :id"), {"id": config_id})


def add_step(session: Session, config_id: int, spec: AuditStepSpec) -> AuditStep:
    _lock(session, config_id)
    if _position_taken(session, config_id, spec.position):
        nxt = _max_position(session, config_id) + 1
        raise ConfigInvalid(
            f"Step position {spec.position} is already used in audit configuration {config_id}; "
            f"use position {nxt} (the next free position)"
        )
    step = AuditStep(audit_config_id=config_id, **step_fields(spec))
    session.add(step)
    session.flush()
    session.refresh(step)
    return step


def update_step(session: Session, step_id: int, changes: dict[str, Any]) -> dict[str, Any]:
    """Apply a partial step (legacy camelCase keys), validated as a whole step after merging.

    Raises ``pydantic.ValidationError`` for an invalid result, :class:`ConfigConflict` when the new
    position belongs to another step of the config (legacy had no check)."""
    config_id = session.scalar(select(AuditStep.audit_config_id).where(AuditStep.id == step_id))
    if config_id is None:
        raise ConfigNotFound(step_id)
    _lock(session, config_id)
    step = session.get(AuditStep, step_id, populate_existing=True)
    if step is None:  # deleted while we waited for the lock
        raise ConfigNotFound(step_id)
    current = {key: (list(v) if isinstance(v := getattr(step, column), (list, tuple)) else v)
               for key, column in STEP_KEYS.items()}
    merged = AuditStepSpec.model_validate({**current, **changes}, strict=True)
    if merged.position != step.position and _position_taken(session, config_id, merged.position, other_than=step.id):
        raise ConfigConflict(
            f"Step position {merged.position} is already used by another step of audit configuration {config_id}"
        )
    for column, value in step_fields(merged).items():
        setattr(step, column, value)
    session.flush()
    session.refresh(step)
    return step_json(step)


def delete_step(session: Session, step_id: int) -> None:
    config_id = session.scalar(select(AuditStep.audit_config_id).where(AuditStep.id == step_id))
    if config_id is None:
        raise ConfigNotFound(step_id)
    _lock(session, config_id)
    session.execute(text("DELETE FROM audit_steps WHERE id = :id"), {"id": step_id})


def reorder_steps(session: Session, config_id: int, step_ids: list[int]) -> None:
    """Positions 1..n in ``step_ids`` order; ``step_ids`` must be exactly the config's steps."""
    _lock(session, config_id)
    current = set(session.scalars(select(AuditStep.id).where(AuditStep.audit_config_id == config_id)))
    if len(step_ids) != len(set(step_ids)) or set(step_ids) != current:
        raise ConfigInvalid(
            f"stepIds must list every step of audit configuration {config_id} exactly once "
            f"({len(current)} step(s), {len(step_ids)} id(s) given)"
        )
    if not step_ids:
        return
    # UNIQUE(audit_config_id, position) is checked row by row: move out of the way first.
    session.execute(
        update(AuditStep).where(AuditStep.audit_config_id == config_id).values(position=-AuditStep.position)
    )
    session.execute(
        text(
            "UPDATE audit_steps AS a SET position = v.pos, updated_at = (now() AT TIME ZONE 'UTC') "
            "FROM unnest(CAST(:ids AS bigint[]), CAST(:pos AS integer[])) AS v(id, pos) "
            "WHERE a.id = v.id AND a.audit_config_id = :cid"
        ),
        {"ids": step_ids, "pos": list(range(1, len(step_ids) + 1)), "cid": config_id},
    )
    session.expire_all()
