"""The webhook outbox (spec 01 §4.7, spec 06 §3.1, DESIGN §3.9).

A webhook is a ``webhook_deliveries`` row (+ ``webhook_delivery_partial_fiches`` rows) written in
the transaction of the state change it reports (:func:`enqueue_job_webhook`). A sensor drains the
outbox: :func:`claim_due` takes due rows with ``FOR UPDATE SKIP LOCKED`` and leases them (pushes
``next_retry_at`` past the send timeout) in a short transaction, the request is rebuilt from the
columns (:func:`rebuild_request`), sent outside any transaction, and :func:`record_result` applies the
bookkeeping in another short transaction.

Delivery states written here:

* ``pending`` — due when ``next_retry_at`` is null or past (a claim leases it by moving
  ``next_retry_at`` forward; a crashed sender's lease simply expires);
* ``sent`` — a 2xx answer;
* ``dead`` — the last allowed attempt failed, or the URL was refused by the SSRF guard at send
  time (nothing sent), or the stored secret cannot be decrypted.

A failed attempt that may be retried goes back to ``pending`` with ``attempt + 1`` and
``next_retry_at = now + min(2^attempt s, 30 s)``. (The legacy transient ``failed`` state is not
written: a delivery is either waiting for its next attempt or finished.)

Automation runs (spec 05 §5.2, §3.10) use the same outbox (:func:`enqueue_automation_webhook`):
``source = 'automation'``, no job, ``automation_run_id`` set, and the whole body stored in the JSON
``payload`` (it is small and fixed once the run ended), so every attempt sends the same bytes. Legacy
sent these once, unsigned; here they get the outbox's retries, the send-time SSRF check, and both
signatures when ``AUTOMATION_WEBHOOK_SECRET`` is set (``X-Webhook-Job-Id: automation-run-<id>``, the
realtime job id of the run).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from auditflow_dagster.core.signing import (
    PARTIAL_DATA_CAP,
    WEBHOOK_EVENTS,
    build_payload,
    encode_body,
    webhook_headers,
)
from auditflow_dagster.db.clock import iso, now_utc
from auditflow_dagster.db.models import (
    ProgressiveFetchJob,
    WebhookDelivery,
    WebhookDeliveryPartialFiche,
)
from auditflow_dagster.db.secret_box import unseal
from auditflow_dagster.settings import get_settings

SOURCE_AUTOMATION = "automation"
AUTOMATION_EVENTS = ("automation.completed", "automation.failed")

STATUS_PENDING = "pending"
STATUS_SENT = "sent"
STATUS_DEAD = "dead"
RESPONSE_BODY_LIMIT = 1000
BACKOFF_CAP_SECONDS = 30

#: camelCase ``data`` key → ``webhook_deliveries`` column (spec 01 §4.7).
DATA_COLUMNS = {
    "status": "payload_status",
    "progress": "payload_progress",
    "completedDays": "payload_completed_days",
    "totalDays": "payload_total_days",
    "totalFiches": "payload_total_fiches",
    "currentFichesCount": "payload_current_fiches_count",
    "latestDate": "payload_latest_date",
    "error": "payload_error",
    "dataUrl": "payload_data_url",
}
_INT_FIELDS = {"progress", "completedDays", "totalDays", "totalFiches", "currentFichesCount"}


@dataclass(frozen=True)
class SendOutcome:
    """What one attempt produced: an HTTP answer (``status_code`` + ``response_body``), a network
    error (``error``, sanitized), or a refusal before any request (``refused``: guard message)."""

    status_code: int | None = None
    response_body: str | None = None
    error: str | None = None
    refused: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class PreparedRequest:
    """A claimed delivery ready to send (plain values: safe to use after the session closed)."""

    delivery_id: str
    attempt: int
    url: str
    body: bytes
    headers: dict[str, str]


def backoff_seconds(attempt: int) -> int:
    """Delay after failed attempt ``attempt`` (1-based): min(2^attempt, 30) s → 2 s, 4 s, …"""
    return min(2 ** max(1, attempt), BACKOFF_CAP_SECONDS)


# ---------------------------------------------------------------------------------------------
# Enqueue
# ---------------------------------------------------------------------------------------------


def _iso_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return iso(value)
    return None


def _partial_row(item: Mapping[str, Any]) -> dict[str, Any] | None:
    """Only items with a string ficheId, a numeric recordingsCount and a createdAt are kept."""
    fiche_id = item.get("ficheId")
    count = item.get("recordingsCount")
    created = _iso_text(item.get("createdAt"))
    if not isinstance(fiche_id, str) or isinstance(count, bool) or not isinstance(count, (int, float)) or created is None:
        return None

    def text_or_none(key: str) -> str | None:
        v = item.get(key)
        return v if isinstance(v, str) else None

    return {
        "fiche_id": fiche_id,
        "groupe": text_or_none("groupe"),
        "prospect_nom": text_or_none("prospectNom"),
        "prospect_prenom": text_or_none("prospectPrenom"),
        "recordings_count": int(count),
        "fiche_created_at": created,
    }


def wants_event(job: ProgressiveFetchJob, event: str) -> bool:
    """A job receives ``event`` when it has a URL and its ``webhook_events`` list names the event
    (an empty list means every event)."""
    if not job.webhook_url:
        return False
    events = list(job.webhook_events or [])
    return not events or event in events


def enqueue_job_webhook(
    session: Session,
    job: ProgressiveFetchJob,
    event: str,
    data: Mapping[str, Any],
    partial_fiches: Sequence[Mapping[str, Any]] = (),
) -> str | None:
    """Write one delivery (+ its partial rows) in the caller's transaction; return its id, or
    ``None`` when the job has no webhook or did not subscribe to ``event``.

    ``data`` uses the body's camelCase names (``status`` required). Partial rows beyond the payload
    cap are not stored (one extra row is kept so the body can say ``partialDataTruncated``).
    """
    if event not in WEBHOOK_EVENTS:
        raise ValueError(f"unknown webhook event {event!r}")
    if not wants_event(job, event):
        return None
    if data.get("status") is None:
        raise ValueError("webhook data needs a status")
    now = now_utc()
    delivery = WebhookDelivery(
        id=uuid.uuid4().hex,
        job_id=job.id,
        event=event,
        url=job.webhook_url,
        payload={},
        payload_timestamp=iso(now),
        status=STATUS_PENDING,
        attempt=1,
        max_attempts=max(1, get_settings().webhook_max_attempts),
        next_retry_at=None,
        created_at=now,
        updated_at=now,
    )
    for key, column in DATA_COLUMNS.items():
        value = data.get(key)
        if value is not None and key in _INT_FIELDS:
            value = int(value)
        elif value is not None and key != "status":
            value = str(value)
        setattr(delivery, column, value)
    session.add(delivery)
    session.flush()
    rows = [r for r in (_partial_row(i) for i in partial_fiches if isinstance(i, Mapping)) if r is not None]
    for index, row in enumerate(rows[: PARTIAL_DATA_CAP + 1], start=1):
        session.add(WebhookDeliveryPartialFiche(delivery_id=delivery.id, row_index=index, **row))
    session.flush()
    return delivery.id


def automation_job_id(run_id: int) -> str:
    """The job id automation deliveries carry in ``X-Webhook-Job-Id`` (the run's realtime job id,
    spec 05 §5.6), so a receiver can correlate a webhook with the run's events."""
    return f"automation-run-{int(run_id)}"


def enqueue_automation_webhook(
    session: Session, *, run_id: int, url: str, event: str, payload: dict[str, Any]
) -> str:
    """Write one automation delivery in the caller's transaction; return its id.

    The body is ``payload`` exactly (``core.automation_notify.webhook_payload`` /
    ``failure_webhook_payload``); ``payload_status``/``payload_timestamp`` stay NULL so
    :func:`rebuild_request` sends the stored JSON, timestamped with the row's ``created_at`` (the
    same value on every attempt). The URL is checked again at send time by the sender.
    """
    if event not in AUTOMATION_EVENTS:
        raise ValueError(f"unknown automation webhook event {event!r}")
    if not isinstance(url, str) or not url.strip():
        raise ValueError("automation webhook needs a URL")
    now = now_utc()
    delivery = WebhookDelivery(
        id=uuid.uuid4().hex,
        job_id=None,
        source=SOURCE_AUTOMATION,
        automation_run_id=int(run_id),
        event=event,
        url=url.strip(),
        payload=dict(payload),
        payload_timestamp=None,
        payload_status=None,
        status=STATUS_PENDING,
        attempt=1,
        max_attempts=max(1, get_settings().webhook_max_attempts),
        next_retry_at=None,
        created_at=now,
        updated_at=now,
    )
    session.add(delivery)
    session.flush()
    return delivery.id


def _is_automation(delivery: WebhookDelivery) -> bool:
    return delivery.source == SOURCE_AUTOMATION or (delivery.automation_run_id is not None and not delivery.job_id)


# ---------------------------------------------------------------------------------------------
# Claim
# ---------------------------------------------------------------------------------------------


def default_lease_seconds() -> float:
    """How long a claim hides a delivery from other drains: the send timeout plus a margin."""
    return get_settings().webhook_timeout_ms / 1000.0 + 60.0


def claim_due(
    session: Session, limit: int, *, now: dt.datetime | None = None, lease_seconds: float | None = None
) -> list[WebhookDelivery]:
    """Lock up to ``limit`` due pending deliveries (``SKIP LOCKED``: concurrent drains take disjoint
    rows) and lease them by moving ``next_retry_at`` forward, so they stay invisible to other drains
    after this (short) transaction commits and until :func:`record_result` — or the lease expires."""
    if limit <= 0:
        return []
    now = now or now_utc()
    lease = default_lease_seconds() if lease_seconds is None else lease_seconds
    rows = list(
        session.scalars(
            select(WebhookDelivery)
            .where(
                WebhookDelivery.status == STATUS_PENDING,
                (WebhookDelivery.next_retry_at.is_(None)) | (WebhookDelivery.next_retry_at <= now),
            )
            .order_by(WebhookDelivery.next_retry_at.asc().nulls_first(), WebhookDelivery.created_at, WebhookDelivery.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    lease_until = now + dt.timedelta(seconds=lease)
    for d in rows:
        d.next_retry_at = lease_until
    session.flush()
    return rows


# ---------------------------------------------------------------------------------------------
# Rebuild
# ---------------------------------------------------------------------------------------------


def _partial_dict(row: Any) -> dict[str, Any]:
    if isinstance(row, Mapping):
        if "ficheId" in row:
            return dict(row)
        get = row.get
    else:
        def get(key: str) -> Any:
            return getattr(row, key, None)
    return {
        "ficheId": get("fiche_id"),
        "groupe": get("groupe"),
        "prospectNom": get("prospect_nom"),
        "prospectPrenom": get("prospect_prenom"),
        "recordingsCount": get("recordings_count"),
        "createdAt": get("fiche_created_at"),
    }


def rebuild_request(
    delivery: WebhookDelivery,
    partial_rows: Sequence[Any] = (),
    sealed_secret: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The exact body bytes and headers of the delivery's current attempt.

    The body is rebuilt from the ``payload_*`` columns and the partial rows (ordered by
    ``row_index``); rows lacking ``payload_timestamp``/``payload_status`` or with an unknown event
    fall back to the stored JSON ``payload`` (legacy rows). ``sealed_secret`` is the job's encrypted
    secret; both signatures are added when it is set.

    Automation deliveries send the stored JSON ``payload`` as is, with the timestamp of the row's
    creation, job id ``automation-run-<run id>``, and are signed with ``AUTOMATION_WEBHOOK_SECRET``
    when it is set (``sealed_secret`` is ignored for them).
    """
    if _is_automation(delivery):
        payload = dict(delivery.payload or {})
        timestamp = delivery.payload_timestamp or iso(delivery.created_at) or ""
        body = encode_body(payload)
        run_id = delivery.automation_run_id
        job_ref = automation_job_id(run_id) if run_id is not None else ""
        secret = get_settings().automation_webhook_secret.get_secret_value() or None
        headers = webhook_headers(delivery.event, job_ref, delivery.id, delivery.attempt, timestamp, secret, body)
        return body, headers
    rows = sorted(partial_rows, key=lambda r: (r.get("row_index", 0) if isinstance(r, Mapping) else r.row_index))
    if delivery.payload_timestamp and delivery.payload_status and delivery.event in WEBHOOK_EVENTS:
        timestamp = delivery.payload_timestamp
        columns = {key: getattr(delivery, column) for key, column in DATA_COLUMNS.items()}
        payload = build_payload(delivery.event, delivery.job_id or "", timestamp, columns, [_partial_dict(r) for r in rows])
    else:
        payload = dict(delivery.payload or {})
        timestamp = str(payload.get("timestamp") or delivery.payload_timestamp or iso(delivery.created_at) or "")
    body = encode_body(payload)
    secret = unseal(sealed_secret) if sealed_secret else None
    headers = webhook_headers(
        delivery.event, delivery.job_id or "", delivery.id, delivery.attempt, timestamp, secret, body
    )
    return body, headers


def load_request(session: Session, delivery: WebhookDelivery) -> PreparedRequest:
    """Load the delivery's partial rows and its job's sealed secret, then :func:`rebuild_request`
    (automation deliveries have neither: their body is the stored JSON)."""
    if _is_automation(delivery):
        body, headers = rebuild_request(delivery)
        return PreparedRequest(delivery.id, delivery.attempt, delivery.url, body, headers)
    rows = list(
        session.scalars(
            select(WebhookDeliveryPartialFiche)
            .where(WebhookDeliveryPartialFiche.delivery_id == delivery.id)
            .order_by(WebhookDeliveryPartialFiche.row_index)
            .limit(PARTIAL_DATA_CAP + 1)
        )
    )
    sealed = None
    if delivery.job_id:
        sealed = session.scalar(
            select(ProgressiveFetchJob.webhook_secret_encrypted).where(ProgressiveFetchJob.id == delivery.job_id)
        )
    body, headers = rebuild_request(delivery, rows, sealed)
    return PreparedRequest(delivery.id, delivery.attempt, delivery.url, body, headers)


# ---------------------------------------------------------------------------------------------
# Record
# ---------------------------------------------------------------------------------------------


def record_result(
    session: Session,
    delivery_id: str,
    outcome: SendOutcome,
    *,
    claimed_attempt: int | None = None,
    now: dt.datetime | None = None,
) -> str | None:
    """Apply one attempt's outcome (spec 01 §4.7 bookkeeping); return the delivery's new status,
    or ``None`` when the delivery is gone, already final, or (``claimed_attempt`` given) no longer
    at the attempt that was claimed — a stale result is never applied twice.

    Delivery: ``status_code``, ``response_body`` (≤ 1000 chars; the guard message for a refusal),
    ``sent_at`` when an HTTP answer came back, ``last_error``; then ``sent``, ``dead`` (refusal, or
    last attempt), or back to ``pending`` with ``attempt + 1`` and the backoff. Job:
    ``webhook_attempts += 1``, ``last_webhook_sent_at`` (when something was sent),
    ``webhook_last_error`` = ``HTTP <code>`` / the error / the guard message / null on success.
    """
    now = now or now_utc()
    d = session.get(WebhookDelivery, delivery_id, with_for_update=True, populate_existing=True)
    if d is None or d.status != STATUS_PENDING:
        return None
    if claimed_attempt is not None and d.attempt != claimed_attempt:
        return None

    if outcome.refused is not None:
        message = outcome.refused[:RESPONSE_BODY_LIMIT]
        d.status, d.status_code, d.response_body, d.last_error = STATUS_DEAD, None, message, message
        d.next_retry_at = None
        job_error: str | None = message
    elif outcome.status_code is not None:
        d.status_code = outcome.status_code
        d.response_body = (outcome.response_body or "")[:RESPONSE_BODY_LIMIT]
        d.sent_at = now
        job_error = None if outcome.ok else f"HTTP {outcome.status_code}"
        d.last_error = job_error
    else:
        d.status_code, d.response_body = None, None
        job_error = (outcome.error or "network error")[:RESPONSE_BODY_LIMIT]
        d.last_error = job_error

    if outcome.refused is None:
        if outcome.ok:
            d.status, d.next_retry_at = STATUS_SENT, None
        elif d.attempt >= d.max_attempts:
            d.status, d.next_retry_at = STATUS_DEAD, None
        else:
            d.next_retry_at = now + dt.timedelta(seconds=backoff_seconds(d.attempt))
            d.attempt = d.attempt + 1
    d.updated_at = now

    if d.job_id:
        values: dict[str, Any] = {
            "webhook_attempts": ProgressiveFetchJob.webhook_attempts + 1,
            "webhook_last_error": job_error,
            # delivery bookkeeping is not job progress: keep updated_at (the polling timestamp)
            "updated_at": ProgressiveFetchJob.updated_at,
        }
        if outcome.refused is None:
            values["last_webhook_sent_at"] = now
        session.execute(update(ProgressiveFetchJob).where(ProgressiveFetchJob.id == d.job_id).values(**values))
    session.flush()
    return d.status


def mark_unsendable(session: Session, delivery_id: str, message: str, *, claimed_attempt: int | None = None) -> str | None:
    """Finish a delivery that cannot be sent at all (refused URL, undecryptable secret)."""
    return record_result(session, delivery_id, SendOutcome(refused=message), claimed_attempt=claimed_attempt)
