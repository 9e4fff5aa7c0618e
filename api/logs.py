"""API process logging (spec 06 §5.7, §5.8): the request id of the request being served is on every
log line, and every line goes through the one secret-scrubbing filter
(:class:`auditflow_dagster.resources.http_errors.RedactSecrets`)."""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import uuid

from auditflow_dagster.resources.http_errors import install_log_redaction

#: the ``X-Request-Id`` of the request this task serves ("-" outside a request)
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("auditflow_request_id", default="-")
_ACCEPTED_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
FORMAT = "%(asctime)s %(levelname)s %(name)s [req=%(request_id)s] %(message)s"


def request_id_from(raw: bytes | None) -> str:
    """The caller's ``X-Request-Id`` when it is a plain token (≤128 chars, no spaces or control
    characters, so it cannot forge log lines), else a new UUID."""
    value = (raw or b"").decode("latin-1").strip()
    return value if _ACCEPTED_ID.match(value) else str(uuid.uuid4())


def current_request_id() -> str:
    return REQUEST_ID.get()


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


def configure_api_logging() -> None:
    """Idempotent. Scrubbing everywhere (root logger, its handlers, the HTTP/uvicorn/Dagster
    loggers and a record factory); the request id on the root handlers' records. A process with
    no root handler (uvicorn's default config only sets its own loggers) gets one on stderr with
    :data:`FORMAT`, so the API's own INFO lines are not lost."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
        logging.getLogger("auditflow").setLevel(logging.INFO)
    for handler in root.handlers:
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())
    install_log_redaction()
