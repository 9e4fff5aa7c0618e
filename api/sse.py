"""Server-sent events framing (spec 06 §2.4): ``id``/``event``/``data`` lines, a ``retry`` hint
first, ``: ping`` heartbeats, and the headers that stop proxies from buffering."""

from __future__ import annotations

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
