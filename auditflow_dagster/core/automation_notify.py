"""What an automation run tells the outside world when it ends (spec 05 §5.2, §5.4, §3.10). Pure.

The run's finalizer (and its catastrophic-failure path) build the webhook JSON and the email text
here, from plain values, so the same shapes are produced whatever path ended the run and so they
can be tested without a database, an SMTP server or an HTTP receiver. Sending is elsewhere: the
webhook goes through the durable outbox (``db.webhooks.enqueue_automation_webhook``), the mail
through ``resources.mailer.send_mail``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

STATUS_FAILED = "failed"
UNKNOWN_ERROR = "Unknown error"

#: Summary counters, in the order the webhook and the email show them (spec 05 §5.2, §5.4).
COUNT_FIELDS = (
    "total_fiches",
    "successful_fiches",
    "failed_fiches",
    "ignored_fiches",
    "transcriptions_run",
    "audits_run",
)
_COUNT_LABELS = {
    "total_fiches": "Total fiches",
    "successful_fiches": "Successful",
    "failed_fiches": "Failed",
    "ignored_fiches": "Ignored",
    "transcriptions_run": "Transcriptions",
    "audits_run": "Audits",
}


def duration_seconds(duration_ms: int | float | None) -> int:
    """Whole seconds, half rounded up — the legacy ``Math.round(ms / 1000)``, not Python's banker's
    rounding (``round(2.5) == 2``), so receivers see the numbers they always saw."""
    if duration_ms is None or isinstance(duration_ms, bool):
        return 0
    try:
        ms = float(duration_ms)
    except (TypeError, ValueError):
        return 0
    if not math.isfinite(ms):
        return 0
    return int(math.floor(ms / 1000.0 + 0.5))


def _one_line(text: Any) -> str:
    """Collapse whitespace so one failure stays one line of the mail (an error message may carry a
    stack-like multi-line text) and a header-like line cannot be smuggled into the body."""
    return " ".join(str(text).split())


def _count(counts: Mapping[str, Any], key: str) -> int:
    value = counts.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    return int(value)


def normalize_failures(failures: Sequence[Mapping[str, Any]] | None) -> list[dict[str, str]]:
    """``[{ficheId, error}]`` with string values: receivers and the mail get one shape whether the
    caller passed result rows (``fiche_id``) or outcomes (``ficheId``); a missing error reads
    ``Unknown error`` like the run detail (spec 05 §3.9)."""
    out: list[dict[str, str]] = []
    for item in failures or ():
        if not isinstance(item, Mapping):
            continue
        fiche_id = item.get("ficheId", item.get("fiche_id"))
        if fiche_id is None:
            continue
        error = item.get("error")
        out.append({"ficheId": str(fiche_id), "error": str(error) if error not in (None, "") else UNKNOWN_ERROR})
    return out


def webhook_payload(
    *,
    schedule_id: int | str,
    schedule_name: str,
    run_id: int | str,
    status: str,
    duration_ms: int | float | None,
    total_fiches: int,
    successful_fiches: int,
    failed_fiches: int,
    ignored_fiches: int,
    transcriptions_run: int,
    audits_run: int,
    failures: list[dict[str, Any]],
) -> dict[str, Any]:
    """The end-of-run webhook body (spec 05 §5.2). Ids are strings (the rewrite's choice: legacy
    echoed whatever type it had, so receivers already had to accept strings). Receivers must not
    rely on key order: the outbox stores the body as JSONB, which orders keys its own way (the same
    way on every attempt, so the signed bytes stay stable)."""
    return {
        "schedule_id": str(schedule_id),
        "schedule_name": schedule_name,
        "run_id": str(run_id),
        "status": status,
        "duration_seconds": duration_seconds(duration_ms),
        "total_fiches": int(total_fiches),
        "successful_fiches": int(successful_fiches),
        "failed_fiches": int(failed_fiches),
        "ignored_fiches": int(ignored_fiches),
        "transcriptions_run": int(transcriptions_run),
        "audits_run": int(audits_run),
        "failures": normalize_failures(failures),
    }


def failure_webhook_payload(
    *,
    schedule_id: int | str,
    schedule_name: str,
    run_id: int | str,
    error: str,
    duration_ms: int | float | None,
) -> dict[str, Any]:
    """The catastrophic-failure webhook body (spec 05 §3.10): no counters (the run never got to
    count), only the error message — never a stack, which the rewrite does not expose."""
    return {
        "schedule_id": str(schedule_id),
        "schedule_name": schedule_name,
        "run_id": str(run_id),
        "status": STATUS_FAILED,
        "error": str(error) if error not in (None, "") else UNKNOWN_ERROR,
        "duration_seconds": duration_seconds(duration_ms),
    }


def email_subject(schedule_name: str, status: str) -> str:
    """``Automation <name> - <STATUS>`` (spec 05 §5.4). Line breaks in a schedule name are folded
    so the name can never inject extra mail headers."""
    return f"Automation {_one_line(schedule_name)} - {_one_line(status).upper()}"


def email_body(
    status: str,
    counts: Mapping[str, Any],
    duration_ms: int | float | None,
    failures: list[dict[str, Any]],
) -> str:
    """Plain-text body (spec 05 §5.4): the final status line, the summary (total, successful,
    failed, ignored, transcriptions, audits, duration in seconds), then — only when there are
    any — ``Failures:`` with one ``- <ficheId>: <error>`` line each.

    ``counts`` uses the run's column names (:data:`COUNT_FIELDS`); a missing counter reads 0.
    """
    lines = [f"Automation run finished with status: {_one_line(status).upper()}", "", "Summary:"]
    for key in COUNT_FIELDS:
        lines.append(f"  {_COUNT_LABELS[key]}: {_count(counts, key)}")
    lines.append(f"  Duration: {duration_seconds(duration_ms)}s")
    normalized = normalize_failures(failures)
    if normalized:
        lines += ["", "Failures:"]
        lines += [f"- {_one_line(f['ficheId'])}: {_one_line(f['error'])}" for f in normalized]
    return "\n".join(lines)


def failure_email_body(error: str, duration_ms: int | float | None) -> str:
    """The one-line body of the catastrophic-failure mail (spec 05 §3.10)."""
    message = _one_line(error) if error not in (None, "") else UNKNOWN_ERROR
    return f"Automation failed after {duration_seconds(duration_ms)}s: {message}"
