"""Webhook payload reconstruction and signatures (spec 01 §4.7, spec 06 §3.1)."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from auditflow_dagster.core.signing import (
    PARTIAL_DATA_CAP,
    build_payload,
    encode_body,
    sign_v1,
    sign_v2,
    webhook_headers,
)

SECRET = "s3cr3t-test"
TIMESTAMP = "2025-01-02T03:04:05.678Z"
SYNTHETIC_BODY = (
    b'{"event":"failed","jobId":"job_synthetic_01","timestamp":"2025-01-02T03:04:05.678Z",'
    b'"data":{"status":"failed","error":"1 date(s) failed during progressive fetch"}}'
)


def _hmac(key: str, msg: bytes) -> str:
    return "sha256=" + hmac.new(key.encode(), msg, hashlib.sha256).hexdigest()


def test_synthetic_check_from_the_spec():
    payload = build_payload(
        "failed", "job_synthetic_01", TIMESTAMP,
        {"status": "failed", "error": "1 date(s) failed during progressive fetch"}, [],
    )
    body = encode_body(payload)
    assert body == SYNTHETIC_BODY
    expected_v1 = _hmac(SECRET, SYNTHETIC_BODY)
    expected_v2 = _hmac(SECRET, TIMESTAMP.encode() + b"." + SYNTHETIC_BODY)
    assert sign_v1(SECRET, body) == expected_v1
    assert sign_v2(SECRET, TIMESTAMP, body) == expected_v2
    assert expected_v1 != expected_v2
    headers = webhook_headers("failed", "job_synthetic_01", "d1", 2, TIMESTAMP, SECRET, body)
    assert headers["X-Webhook-Signature"] == expected_v1
    assert headers["X-Webhook-Signature-V2"] == expected_v2


def test_signatures_change_with_any_byte():
    assert sign_v1(SECRET, SYNTHETIC_BODY) != sign_v1(SECRET, SYNTHETIC_BODY + b" ")
    assert sign_v1(SECRET, SYNTHETIC_BODY) != sign_v1("other", SYNTHETIC_BODY)
    assert sign_v2(SECRET, TIMESTAMP, SYNTHETIC_BODY) != sign_v2(SECRET, "2025-01-02T03:04:05.679Z", SYNTHETIC_BODY)
    assert sign_v1(SECRET.encode(), SYNTHETIC_BODY) == sign_v1(SECRET, SYNTHETIC_BODY)


def test_headers_without_secret_and_with_real_attempt():
    h = webhook_headers("progress", "job1", "deliv1", 3, TIMESTAMP, None, b"{}")
    assert h == {
        "Content-Type": "application/json",
        "User-Agent": "AI-Audit-Webhook/1.0",
        "X-Webhook-Event": "progress",
        "X-Webhook-Job-Id": "job1",
        "X-Webhook-Delivery-Id": "deliv1",
        "X-Webhook-Attempt": "3",
        "X-Webhook-Timestamp": TIMESTAMP,
    }
    assert "X-Webhook-Signature" not in webhook_headers("progress", "j", "d", 1, TIMESTAMP, "", b"{}")


def test_data_order_and_null_omission():
    columns = {
        "dataUrl": "http://api/x", "error": None, "latestDate": "2025-01-03", "currentFichesCount": 4,
        "totalFiches": 4, "totalDays": 3, "completedDays": 2, "progress": 67, "status": "processing",
    }
    p = build_payload("progress", "job1", TIMESTAMP, columns, [])
    assert list(p) == ["event", "jobId", "timestamp", "data"]
    assert list(p["data"]) == [
        "status", "progress", "completedDays", "totalDays", "totalFiches", "currentFichesCount", "latestDate", "dataUrl",
    ]
    assert "partialData" not in p["data"]  # empty lists are omitted
    complete = build_payload("complete", "job1", TIMESTAMP, {"status": "complete", "progress": 100, "totalDays": 3,
                                                             "completedDays": 3, "totalFiches": 9, "dataUrl": "u"})
    assert complete["data"] == {"status": "complete", "progress": 100, "completedDays": 3, "totalDays": 3,
                                "totalFiches": 9, "dataUrl": "u"}
    # progress 0 is a value, not a null
    assert build_payload("progress", "j", TIMESTAMP, {"status": "processing", "progress": 0})["data"]["progress"] == 0


def test_partial_data_shape_and_cap():
    rows = [{"ficheId": str(i), "groupe": None, "prospectNom": "N", "prospectPrenom": "P", "recordingsCount": 1,
             "createdAt": TIMESTAMP, "extra": "dropped"} for i in range(PARTIAL_DATA_CAP + 1)]
    p = build_payload("progress", "j", TIMESTAMP, {"status": "processing"}, rows[:2])
    assert p["data"]["partialData"][0] == {"ficheId": "0", "groupe": None, "prospectNom": "N", "prospectPrenom": "P",
                                           "recordingsCount": 1, "createdAt": TIMESTAMP}
    assert "partialDataTruncated" not in p["data"]
    capped = build_payload("progress", "j", TIMESTAMP, {"status": "processing"}, rows)
    assert len(capped["data"]["partialData"]) == PARTIAL_DATA_CAP
    assert capped["data"]["partialDataTruncated"] is True
    exact = build_payload("progress", "j", TIMESTAMP, {"status": "processing"}, rows[:PARTIAL_DATA_CAP])
    assert "partialDataTruncated" not in exact["data"]


def test_body_is_compact_utf8_and_roundtrips():
    p = build_payload("progress", "j", TIMESTAMP, {"status": "processing"},
                      [{"ficheId": "1", "prospectNom": "Hélène", "recordingsCount": 0, "createdAt": TIMESTAMP}])
    body = encode_body(p)
    assert "Hélène".encode() in body and b": " not in body
    assert json.loads(body) == p


def test_invalid_inputs():
    with pytest.raises(ValueError):
        build_payload("deleted", "j", TIMESTAMP, {"status": "x"})
    with pytest.raises(ValueError):
        build_payload("failed", "j", TIMESTAMP, {"error": "no status"})
