"""Server-sent events framing (spec 06 §2.4): ``id``/``event``/``data`` lines, a ``retry`` hint
first, ``: ping`` heartbeats, and the headers that stop proxies from buffering."""

from __future__ import annotations

import base64
import json
from typing import Any

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def frame(event: str, data: Any, event_id: str | None = None) -> str:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str))
    return "\n".join(lines) + "\n\n"


def retry(ms: int = 3000) -> str:
    return f"retry: {ms}\n\n"


def ping() -> str:
    return ": ping\n\n"


def encode_run_cursor(after: str | None, index: int) -> str:
    """An SSE id for the ``index``-th event returned after Dagster cursor ``after``.

    Dagster's event connection has one cursor per page, not per event; (page cursor, index) names
    each event exactly, and the event log is append-only, so a resume is lossless and duplicate-free.
    """
    raw = json.dumps([after, index], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_run_cursor(value: str | None) -> tuple[str | None, int] | None:
    if not value:
        return None
    try:
        padded = value + "=" * (-len(value) % 4)
        after, index = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError):
        return None
    if (after is not None and not isinstance(after, str)) or not isinstance(index, int) or index < 0:
        return None
    return after, index
