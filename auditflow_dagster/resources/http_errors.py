"""HTTP failure helpers shared by the external-service clients (CRM, speech-to-text).

Both must describe a failure without leaking the URL, headers or body of the request, and both
honour ``Retry-After``; one implementation serves the two.
"""

from __future__ import annotations

import email.utils
import errno as _errno
import time
from datetime import timezone

import httpx


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or HTTP-date); ``None`` if absent/invalid/≤0."""
    if value is None:
        return None
    v = value.strip()
    if not v:
        return None
    try:
        seconds = float(v)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(v)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds <= 0:  # NaN or non-positive
        return None
    return seconds


def transport_code(exc: BaseException) -> str:
    """A URL-free transport code (``ETIMEDOUT``, ``ECONNREFUSED``, ``ECONNRESET`` …)."""
    if isinstance(exc, httpx.TimeoutException):
        return "ETIMEDOUT"
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in _errno.errorcode:
            return _errno.errorcode[cur.errno]
        if isinstance(cur, TimeoutError):
            return "ETIMEDOUT"
        cur = cur.__cause__ or cur.__context__
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return "ECONNRESET"
    if isinstance(exc, httpx.ConnectError):
        return "ECONNREFUSED"
    return type(exc).__name__
