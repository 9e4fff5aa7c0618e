"""Sensor: drain the webhook outbox (DESIGN §3.9, spec 01 §4.7 durable retries).

Every couple of seconds the sensor claims due ``webhook_deliveries`` (``FOR UPDATE SKIP LOCKED`` +
lease, in a short transaction), sends them in parallel outside any transaction, and records each
outcome in its own short transaction. It launches no runs; its ``SkipReason`` says what it did.
Concurrent drains (two daemons, a manual call) never take the same delivery.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from typing import Any

from dagster import DefaultSensorStatus, SensorEvaluationContext, SkipReason, sensor

from auditflow_dagster.db.secret_box import SecretKeyError
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.db.webhooks import (
    STATUS_DEAD,
    STATUS_PENDING,
    STATUS_SENT,
    PreparedRequest,
    SendOutcome,
    claim_due,
    load_request,
    record_result,
)
from auditflow_dagster.resources.notifier import NotifierResource, WebhookSender

log = logging.getLogger(__name__)

BATCH_SIZE = 16
#: Stop claiming new batches after this long (the sensor evaluation timeout is 60 s by default).
TIME_BUDGET_SECONDS = 25.0


def _claim_batch(n: int) -> tuple[list[PreparedRequest], list[tuple[str, int, str]]]:
    """Claim up to ``n`` deliveries; return requests to send and (id, attempt, message) of
    deliveries that cannot be sent at all."""
    ready: list[PreparedRequest] = []
    unsendable: list[tuple[str, int, str]] = []
    with session_scope() as s:
        for d in claim_due(s, n):
            try:
                ready.append(load_request(s, d))
            except SecretKeyError as exc:
                unsendable.append((d.id, d.attempt, str(exc)))
            except Exception as exc:  # noqa: BLE001 - a malformed row must not block the outbox
                unsendable.append((d.id, d.attempt, f"cannot build webhook request ({type(exc).__name__})"))
    return ready, unsendable


def _send(sender: WebhookSender, req: PreparedRequest) -> SendOutcome:
    try:
        return sender.send(req.url, req.body, req.headers)
    except Exception as exc:  # noqa: BLE001 - unexpected sender bug: retry like a network error
        log.warning("webhook delivery %s: sender raised %s", req.delivery_id, type(exc).__name__)
        return SendOutcome(error=f"send failed: {type(exc).__name__}")


def drain_due_webhooks(
    limit: int = 50,
    sender: WebhookSender | None = None,
    *,
    batch_size: int = BATCH_SIZE,
    time_budget_seconds: float = TIME_BUDGET_SECONDS,
) -> dict[str, int]:
    """Send up to ``limit`` due deliveries; return counts
    ``{claimed, sent, retrying, dead, stale}`` (``stale``: a result not applied because another
    drain finished the delivery first)."""
    sender = sender or NotifierResource().sender()
    counts = {"claimed": 0, "sent": 0, "retrying": 0, "dead": 0, "stale": 0}
    started = time.monotonic()
    while counts["claimed"] < limit and time.monotonic() - started < time_budget_seconds:
        ready, unsendable = _claim_batch(min(batch_size, limit - counts["claimed"]))
        if not ready and not unsendable:
            break
        counts["claimed"] += len(ready) + len(unsendable)
        results: list[tuple[str, int, SendOutcome]] = [(i, a, SendOutcome(refused=m)) for i, a, m in unsendable]
        if ready:
            with concurrent.futures.ThreadPoolExecutor(max_workers=len(ready), thread_name_prefix="webhook-send") as pool:
                outcomes = list(pool.map(lambda r: _send(sender, r), ready))
            results += [(r.delivery_id, r.attempt, o) for r, o in zip(ready, outcomes)]
        for delivery_id, attempt, outcome in results:
            with session_scope() as s:
                status = record_result(s, delivery_id, outcome, claimed_attempt=attempt)
            key = {STATUS_SENT: "sent", STATUS_DEAD: "dead", STATUS_PENDING: "retrying"}.get(status or "", "stale")
            counts[key] += 1
    return counts


@sensor(
    minimum_interval_seconds=2,
    default_status=DefaultSensorStatus.RUNNING,
    description="Sends due outgoing webhooks (signed, SSRF-checked, retried with backoff, dead after max attempts).",
)
def webhook_deliveries_sensor(context: SensorEvaluationContext, notifier: NotifierResource) -> SkipReason:
    from auditflow_dagster.db.embedded import ensure_database_env

    ensure_database_env()
    counts: dict[str, Any] = drain_due_webhooks(limit=50, sender=notifier.sender())
    if counts["claimed"]:
        context.log.info(f"webhooks: {counts}")
    return SkipReason(
        "webhooks: "
        + ", ".join(f"{k}={counts[k]}" for k in ("claimed", "sent", "retrying", "dead", "stale"))
    )
