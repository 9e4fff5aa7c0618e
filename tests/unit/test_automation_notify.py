"""Automation run notifications: webhook bodies, mail subject and body (spec 05 §5.2, §5.4, §3.10)."""

from __future__ import annotations

import pytest

from auditflow_dagster.core.automation_notify import (
    duration_seconds,
    email_body,
    email_subject,
    failure_email_body,
    failure_webhook_payload,
    webhook_payload,
)

COUNTS = {
    "total_fiches": 5,
    "successful_fiches": 3,
    "failed_fiches": 2,
    "ignored_fiches": 1,
    "transcriptions_run": 4,
    "audits_run": 3,
}


def _payload(**over):
    args = dict(schedule_id=12, schedule_name="Nightly", run_id=345, status="partial", duration_ms=12_500,
                failures=[{"ficheId": "1001", "error": "CRM timeout"}, {"fiche_id": 1002, "error": None}], **COUNTS)
    args.update(over)
    return webhook_payload(**args)


def test_webhook_payload_has_exactly_the_spec_fields_with_string_ids():
    p = _payload()
    assert list(p) == ["schedule_id", "schedule_name", "run_id", "status", "duration_seconds", "total_fiches",
                       "successful_fiches", "failed_fiches", "ignored_fiches", "transcriptions_run", "audits_run",
                       "failures"]
    assert p["schedule_id"] == "12" and p["run_id"] == "345"
    assert p["schedule_name"] == "Nightly" and p["status"] == "partial"
    assert p["duration_seconds"] == 13  # 12.5 s rounds half up like Math.round
    assert {k: p[k] for k in COUNTS} == COUNTS
    assert p["failures"] == [{"ficheId": "1001", "error": "CRM timeout"}, {"ficheId": "1002", "error": "Unknown error"}]


def test_webhook_payload_without_failures_is_an_empty_list():
    assert _payload(status="completed", failures=[])["failures"] == []


@pytest.mark.parametrize(("ms", "seconds"), [(0, 0), (499, 0), (500, 1), (1_499, 1), (2_500, 3), (None, 0)])
def test_duration_rounds_half_up(ms, seconds):
    assert duration_seconds(ms) == seconds


def test_failure_webhook_payload_is_the_catastrophic_variant():
    p = failure_webhook_payload(schedule_id=7, schedule_name="S", run_id=8, error="database gone", duration_ms=61_400)
    assert p == {"schedule_id": "7", "schedule_name": "S", "run_id": "8", "status": "failed",
                 "error": "database gone", "duration_seconds": 61}


def test_email_subject():
    assert email_subject("Nightly audit", "partial") == "Automation Nightly audit - PARTIAL"
    assert email_subject("Evil\r\nBcc: x@y", "failed") == "Automation Evil Bcc: x@y - FAILED"


def test_email_body_with_failures():
    body = email_body("partial", COUNTS, 12_500, [{"ficheId": "1001", "error": "CRM\ntimeout"},
                                                  {"ficheId": "1002", "error": ""}])
    lines = body.splitlines()
    assert "PARTIAL" in lines[0]
    for label, value in [("Total fiches", 5), ("Successful", 3), ("Failed", 2), ("Ignored", 1),
                         ("Transcriptions", 4), ("Audits", 3)]:
        assert f"  {label}: {value}" in lines
    assert "  Duration: 13s" in lines
    i = lines.index("Failures:")
    assert lines[i + 1:] == ["- 1001: CRM timeout", "- 1002: Unknown error"]


def test_email_body_without_failures_has_no_failures_section():
    body = email_body("completed", {"total_fiches": 2, "successful_fiches": 2}, 1_000, [])
    assert "Failures" not in body
    assert "  Failed: 0" in body.splitlines() and "  Ignored: 0" in body.splitlines()
    assert "COMPLETED" in body.splitlines()[0]


def test_failure_email_body_is_one_line():
    body = failure_email_body("boom\n  at somewhere", 3_000)
    assert "\n" not in body
    assert body == "Automation failed after 3s: boom at somewhere"
