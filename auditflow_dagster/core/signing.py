"""Outgoing webhook payloads and signatures (spec 01 §4.7, spec 06 §3.1). Pure: stdlib only.

* :func:`build_payload` rebuilds the body of a progressive-fetch webhook from its stored scalar
  columns and partial rows — used for the first attempt and every retry, so retries carry the same
  bytes.
* :func:`encode_body` is the one serialization (compact JSON, UTF-8): the exact bytes sent are the
  bytes signed.
* :func:`sign_v1` / :func:`sign_v2` / :func:`webhook_headers` produce the headers receivers verify:
  V1 = HMAC-SHA256(secret, body), V2 = HMAC-SHA256(secret, timestamp + "." + body).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from typing import Any

USER_AGENT = "AI-Audit-Webhook/1.0"
WEBHOOK_EVENTS = ("progress", "complete", "failed")
PARTIAL_DATA_CAP = 500

#: ``data`` keys after ``status``, in the order they appear in the body (spec 01 §4.7).
OPTIONAL_DATA_FIELDS = (
    "progress",
    "completedDays",
    "totalDays",
    "totalFiches",
    "currentFichesCount",
    "latestDate",
    "error",
    "dataUrl",
)
PARTIAL_FIELDS = ("ficheId", "groupe", "prospectNom", "prospectPrenom", "recordingsCount", "createdAt")


def _key(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)


def sign_v1(secret: str | bytes, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256(secret, body)>``."""
    return "sha256=" + hmac.new(_key(secret), body, hashlib.sha256).hexdigest()


def sign_v2(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>``."""
    return "sha256=" + hmac.new(_key(secret), timestamp.encode("utf-8") + b"." + body, hashlib.sha256).hexdigest()


def encode_body(payload: Mapping[str, Any]) -> bytes:
    """Compact JSON (no spaces, key order kept, non-ASCII kept), UTF-8."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def webhook_headers(
    event: str,
    job_id: str,
    delivery_id: str,
    attempt: int,
    timestamp: str,
    secret: str | bytes | None,
    body: bytes,
) -> dict[str, str]:
    """Request headers; both signatures only when a (non-empty) secret is given."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Webhook-Event": event,
        "X-Webhook-Job-Id": job_id,
        "X-Webhook-Delivery-Id": delivery_id,
        "X-Webhook-Attempt": str(int(attempt)),
        "X-Webhook-Timestamp": timestamp,
    }
    if secret:
        headers["X-Webhook-Signature"] = sign_v1(secret, body)
        headers["X-Webhook-Signature-V2"] = sign_v2(secret, timestamp, body)
    return headers


def build_payload(
    event: str,
    job_id: str,
    timestamp: str,
    data_columns: Mapping[str, Any],
    partial_rows: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """``{event, jobId, timestamp, data}``.

    ``data_columns`` is keyed by the camelCase ``data`` names (``status`` required). ``data`` =
    ``status`` then each non-null optional field in :data:`OPTIONAL_DATA_FIELDS` order;
    ``partialData`` (rows in the given order, each with the :data:`PARTIAL_FIELDS` keys) only when
    there are rows, capped at :data:`PARTIAL_DATA_CAP` with ``partialDataTruncated: true``.
    """
    if event not in WEBHOOK_EVENTS:
        raise ValueError(f"unknown webhook event {event!r}")
    status = data_columns.get("status")
    if status is None:
        raise ValueError("webhook data needs a status")
    data: dict[str, Any] = {"status": status}
    for name in OPTIONAL_DATA_FIELDS:
        value = data_columns.get(name)
        if value is not None:
            data[name] = value
    if partial_rows:
        data["partialData"] = [{k: row.get(k) for k in PARTIAL_FIELDS} for row in partial_rows[:PARTIAL_DATA_CAP]]
        if len(partial_rows) > PARTIAL_DATA_CAP:
            data["partialDataTruncated"] = True
    return {"event": event, "jobId": job_id, "timestamp": timestamp, "data": data}
