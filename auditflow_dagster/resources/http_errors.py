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

_URL_QUERY = re.compile(r"(https?://[^\s?#\"'<>]+)\?(?!<redacted>)[^\s#\"'<>]*")


def redact_url_queries(text: str) -> str:
    """``https://host/a.mp3?X-Amz-Signature=…`` → ``https://host/a.mp3?<redacted>``: signed URLs
    carry their credential in the query string."""
    return _URL_QUERY.sub(r"\1?<redacted>", text)


# --- log sanitization (spec 06 §5.8): one filter for every log path ------------------------------

REDACTED = "[REDACTED]"
_BEARER = re.compile(r"(?i)\b(bearer|basic)(\s+)(?!\[REDACTED\])[^\s\"',;]+")
_URL_USERINFO = re.compile(r"(?i)\b(https?://)[^/\s@\"'<>?#]+@")
#: a secret-looking key (header, query parameter, keyword, JSON/dict key) followed by its value
_SECRET_PAIR = re.compile(
    r"""(?ix)
    (?P<key>\b[\w-]*(?:authorization|cookie|token|secret|password|passwd|api[_-]?key|apikey|signing[_-]?key
        |credential|signature)[\w-]*|\bsig|\bkey)
    (?P<sep>["']?\s*[:=]\s*["']?)
    (?P<value>(?:(?:bearer|basic)\s+)?[^\s"',;&}\])]+)""")
#: counters, not secrets: ``total_tokens=123``, ``tokens_used: 50``, ``max_tokens``…
_COUNTER_KEY = re.compile(r"(?i)(tokens|_count|_used|_limit)$|^(max|total|prompt|completion)_tokens")
_KEY_SHAPED = [
    (re.compile(r"\b(sk-(?:proj-|svcacct-|admin-)?)[A-Za-z0-9_\-]{16,}"), r"\1[REDACTED]"),  # OpenAI
    (re.compile(r"\b(sk_)[0-9a-f]{24,}\b"), r"\1[REDACTED]"),  # ElevenLabs
    (re.compile(r"\b(afk_[0-9a-f]{8}_)[A-Za-z0-9_\-]{20,}"), r"\1[REDACTED]"),  # our API keys (prefix kept)
]


def _secret_pair(m: re.Match[str]) -> str:
    key, value = m.group("key"), m.group("value")
    bare = re.sub(r"(?i)^(?:bearer|basic)\s+", "", value)
    if bare.startswith(("[REDACTED", "<redacted>")):
        return m.group(0)  # already scrubbed (``Authorization: Bearer [REDACTED]``)
    if _COUNTER_KEY.search(key.strip("\"'")) and re.fullmatch(r"-?\d+(?:\.\d+)?", value):
        return m.group(0)  # a number under a counter's name (total_tokens=123) stays
    if key.lower() in ("key", "sig") and m.group("sep").strip(" \"'") != "=":
        return m.group(0)  # bare ``key``/``sig`` only as a query parameter (key=…), not "key: step 3"
    return f"{key}{m.group('sep')}{REDACTED}"


def redact_secrets(text: str) -> str:
    """Spec 06 §5.8 string scrubbing: ``Bearer <x>`` / ``Basic <x>``; the values of secret-looking
    keys (``Authorization:``, ``xi-api-key:``, ``api_key=``, ``access_token=``, ``"password": …``,
    ``signature``/``sig``/``key`` query parameters); key-shaped strings (OpenAI ``sk-…``,
    ElevenLabs ``sk_…``, our ``afk_<prefix>_…``); URL query strings and userinfo. Counters such as
    ``total_tokens=123`` are kept."""
    if not text:
        return text
    out = redact_url_queries(text)
    out = _URL_USERINFO.sub(r"\1[REDACTED]@", out)
    out = _BEARER.sub(r"\1\2[REDACTED]", out)
    out = _SECRET_PAIR.sub(_secret_pair, out)
    for pattern, repl in _KEY_SHAPED:
        out = pattern.sub(repl, out)
    return out


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Scrub one record in place (idempotent): its rendered message, its exception and stack text."""
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a broken %-format is logging's to report, not ours
        return record
    redacted = redact_secrets(message)
    if redacted != message:
        # Scrub the template and each argument, keeping their structure (uvicorn's access
        # formatter unpacks record.args); flatten only when a secret spans them.
        args = record.args
        if isinstance(args, tuple):
            args = tuple(redact_secrets(a) if isinstance(a, str) else a for a in args)
        elif isinstance(args, dict):
            args = {k: redact_secrets(v) if isinstance(v, str) else v for k, v in args.items()}
        record.msg = redact_secrets(record.msg) if isinstance(record.msg, str) else record.msg
        record.args = args
        try:
            clean = record.getMessage() == redacted
        except Exception:  # noqa: BLE001
            clean = False
        if not clean:
            record.msg, record.args = redacted, ()
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact_secrets(record.exc_text)
    if record.stack_info:
        record.stack_info = redact_secrets(record.stack_info)
    return record


class RedactSecrets(logging.Filter):
    """The log filter of spec 06 §5.8 (see :func:`redact_secrets`); never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


RedactUrlQueries = RedactSecrets  # the former, URL-only name

#: loggers that get the filter themselves (records logged on them directly); the root logger's
#: handlers get it too, and the record factory covers loggers made later (Dagster's per-run
#: ``context.log`` managers, whose records feed the run's event log).
_LOGGERS = ("", "httpx", "httpcore", "openai", "openai._base_client", "uvicorn", "uvicorn.error", "uvicorn.access",
            "dagster", "auditflow", "alembic", "sqlalchemy")
_FACTORY_MARK = "_auditflow_redacting"


def install_log_redaction() -> None:
    """Idempotent: :class:`RedactSecrets` on the root logger, its handlers and the loggers above,
    and a record factory that scrubs every record when it is created — in any logger of the
    process, including Dagster's run log managers (so ``context.log`` text is clean before it is
    written to the event log, the console or the compute logs)."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        targets: list[logging.Filterer] = [logger, *logger.handlers]
        for target in targets:
            if not any(isinstance(f, RedactSecrets) for f in target.filters):
                target.addFilter(RedactSecrets())
    factory = logging.getLogRecordFactory()
    if not getattr(factory, _FACTORY_MARK, False):
        def redacting_factory(*args: object, **kwargs: object) -> logging.LogRecord:
            return redact_record(factory(*args, **kwargs))

        setattr(redacting_factory, _FACTORY_MARK, True)
        logging.setLogRecordFactory(redacting_factory)


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
