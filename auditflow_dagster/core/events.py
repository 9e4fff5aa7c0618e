"""Realtime event rules (spec 06 §1.3, §2.2): which channels an event reaches, and how an
oversized payload is shrunk. Pure, so the rules are testable without a database."""

from __future__ import annotations

import json
import re
from typing import Any

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_\-=@,.;]")

# Keys kept when a payload is too big (spec 06 §2.2), in this order.
_KEEP_WHEN_TRUNCATED = (
    "audit_id", "audit_db_id", "audit_config_id", "fiche_id", "event_id", "batch_id", "job_id", "jobId",
    "rerun_id", "rerun_scope", "step_position", "step_name", "control_point_index", "schedule_id", "run_id",
    "status", "progress", "current_phase", "progress_percentage", "completed_steps", "total_steps",
    "failed_steps", "completedSteps", "totalSteps", "failedSteps", "completedDays", "totalDays", "totalFiches",
)
_COUNTED_ARRAYS = ("datesCompleted", "datesRemaining", "datesFailed")


def normalize_channel_id(value: Any) -> str | None:
    """Trim, replace characters outside the allowed set by ``_``, cut to 180 characters."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        return None
    return _ID_UNSAFE.sub("_", value.strip())[:180]


def derive_channels(name: str, payload: dict[str, Any]) -> list[str]:
    """Logical channels (without the legacy ``private-`` prefix) an event is delivered on."""
    channels: list[str] = []

    def add(prefix: str, raw: Any) -> None:
        key = normalize_channel_id(raw)
        if key and f"{prefix}-{key}" not in channels:
            channels.append(f"{prefix}-{key}")

    add("audit", payload.get("audit_id"))
    if normalize_channel_id(payload.get("audit_db_id")) != normalize_channel_id(payload.get("audit_id")):
        add("audit", payload.get("audit_db_id"))
    add("fiche", payload.get("fiche_id"))
    add("job", payload.get("jobId") if normalize_channel_id(payload.get("jobId")) else payload.get("job_id"))
    add("job", payload.get("batch_id"))
    if not channels or name == "notification" or name.startswith("batch."):
        channels.append("global")
    return channels


def _size(payload: Any) -> int:
    return len(json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8"))


def shrink_payload(payload: Any, max_bytes: int = 9000) -> dict[str, Any]:
    """Apply the size guard: keep the routing/progress keys, count the date arrays, flag
    ``truncated``; ``{"truncated": true}`` if even that is too big."""
    limit = max(1000, max_bytes)
    if not isinstance(payload, dict):
        payload = {"value": payload}
    if _size(payload) <= limit:
        return payload
    reduced: dict[str, Any] = {k: payload[k] for k in _KEEP_WHEN_TRUNCATED if k in payload}
    for key in _COUNTED_ARRAYS:
        if isinstance(payload.get(key), list):
            reduced[f"{key}Count"] = len(payload[key])
    reduced["truncated"] = True
    if _size(reduced) > limit:
        return {"truncated": True}
    return reduced
