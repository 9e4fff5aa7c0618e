"""HTTP failure helpers shared by the external-service clients (CRM, speech-to-text).

Both must describe a failure without leaking the URL, headers or body of the request, and both
honour ``Retry-After``; one implementation serves the two.
"""

from __future__ import annotations

import email.utils
import errno as _errno
import logging
import re
import time
from datetime import timezone

import httpx

_URL_QUERY = re.compile(r"(https?://[^\s?#\"'<>]+)\?[^\s#\"'<>]*")


def redact_url_queries(text: str) -> str:
    """``https://host/a.mp3?X-Amz-Signature=…`` → ``https://host/a.mp3?<redacted>``: signed URLs
    carry their credential in the query string."""
    return _URL_QUERY.sub(r"\1?<redacted>", text)


class RedactUrlQueries(logging.Filter):
    """Log filter for the HTTP libraries: httpx logs every request URL at INFO (signed recording
    URLs included), so the query string is cut from the record before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_url_queries(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def install_log_redaction() -> None:
    """Idempotent: attach :class:`RedactUrlQueries` to the loggers of the HTTP stack."""
    for name in ("httpx", "httpcore", "openai", "openai._base_client"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactUrlQueries) for f in logger.filters):
            logger.addFilter(RedactUrlQueries())


install_log_redaction()


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
