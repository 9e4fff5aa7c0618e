"""Recording enrichment (spec 02 §1.2)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditflow_dagster.core.recordings import (
    enrich_recording,
    parse_recording_filename,
    parse_start_time,
    phone_display,
)

FILENAME = "3f2c9a10-0000-4000-8000-000000000001-15-01-25-09h30-33100000001-33600000002.mp3"

# --------------------------------------------------------------------------- phones


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("33600000002", "+33 6 00 00 00 02"),
        ("33100000001", "+33 1 00 00 00 01"),
        ("0600000002", "0600000002"),  # not 33-prefixed
        ("336000000021", "336000000021"),  # 12 digits
        ("3360000000", "3360000000"),  # 10 digits
        ("+33600000002", "+33600000002"),
        ("", ""),
        (None, None),
    ],
)
def test_phone_display(raw, shown):
    assert phone_display(raw) == shown


@given(st.text(alphabet="0123456789", min_size=9, max_size=9))
def test_phone_display_round_trip(rest):
    shown = phone_display("33" + rest)
    assert shown.startswith("+33 ")
    assert shown.replace("+", "").replace(" ", "") == "33" + rest
    assert [len(g) for g in shown.split(" ")] == [3, 1, 2, 2, 2, 2]


# --------------------------------------------------------------------------- start_time


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2025-01-15T09:30:12.12345", dt.datetime(2025, 1, 15, 9, 30, 12, 123450)),  # naive read as UTC
        ("2025-01-15T09:30:12Z", dt.datetime(2025, 1, 15, 9, 30, 12)),
        ("2025-01-15T11:30:12+02:00", dt.datetime(2025, 1, 15, 9, 30, 12)),  # converted to UTC
        ("2025-01-15", dt.datetime(2025, 1, 15, 0, 0)),
        ("2025-01-15 09:30", dt.datetime(2025, 1, 15, 9, 30)),
        ("2025-01-15T09:30:12 Europe/Paris", dt.datetime(2025, 1, 15, 9, 30, 12)),  # literal fallback
        ("01/02/2025 10:00", dt.datetime(2025, 2, 1, 10, 0)),  # day first: 1 February
        ("31/12/2024 23:59", dt.datetime(2024, 12, 31, 23, 59)),
        ("05/03/2025", dt.datetime(2025, 3, 5, 0, 0)),
        ("02/31/2025 10:00", None),  # month-first is never accepted
        ("2025-13-45T10:00", None),
        ("hier", None),
        ("", None),
        ("   ", None),
        (None, None),
    ],
)
def test_parse_start_time(raw, expected):
    assert parse_start_time(raw) == expected


@given(st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 31)))
def test_parse_start_time_day_first_and_iso(value):
    value = value.replace(second=0, microsecond=0)
    assert parse_start_time(value.strftime("%d/%m/%Y %H:%M")) == value
    assert parse_start_time(value.isoformat()) == value
    assert parse_start_time(value.replace(tzinfo=dt.UTC).isoformat()) == value


# --------------------------------------------------------------------------- filename (A)


def test_parse_recording_filename_spec_example():
    url = f"https://cdn.example/calls/2025/{FILENAME}?X-Amz-Signature=ab/cd&x=1#frag"
    assert parse_recording_filename(url) == {
        "uuid": "3f2c9a10-0000-4000-8000-000000000001",
        "date": "15/01/2025",
        "time": "09:30",
        "timestamp": "2025-01-15T09:30:00",
        "from_number": "+33 1 00 00 00 01",
        "to_number": "+33 6 00 00 00 02",
        "from_number_raw": "33100000001",
        "to_number_raw": "33600000002",
    }


def test_parse_recording_filename_case_insensitive_and_unchecked_ranges():
    parsed = parse_recording_filename("https://x/3F2C9A10-0000-4000-8000-00000000000A-45-13-25-27H99-1-2.MP3")
    assert parsed is not None
    assert (parsed["date"], parsed["time"], parsed["from_number"], parsed["to_number"]) == ("45/13/2025", "27:99", "1", "2")


@pytest.mark.parametrize(
    "url",
    [
        None,
        "",
        "https://x/3f2c9a10-0000-4000-8000-000000000001-15-01-25-09h30-33100000001.mp3",  # one number only
        "https://x/3f2c9a10-0000-4000-8000-000000000001-15-01-25-09h30-1-2.wav",
        "https://x/prefix-3f2c9a10-0000-4000-8000-000000000001-15-01-25-09h30-1-2.mp3",
        f"https://x/{FILENAME}/",
    ],
)
def test_parse_recording_filename_no_match(url):
    assert parse_recording_filename(url) is None


# --------------------------------------------------------------------------- enrich_recording


def test_enrich_filename_wins_over_payload():
    raw = {"call_id": "1234567890123456789", "recording_url": f"  https://cdn/{FILENAME}?sig=1  ",
           "start_time": "2025-01-16T10:00:00", "duration_seconds": 42, "direction": "out", "answered": True,
           "from_number": "33999999999", "to_number": "33888888888", "uuid": "other"}
    rec = enrich_recording(raw)
    assert rec == {
        "call_id": "1234567890123456789",
        "recording_url": f"https://cdn/{FILENAME}?sig=1",
        "start_time": dt.datetime(2025, 1, 16, 10, 0),
        "duration_seconds": 42,
        "direction": "out",
        "answered": True,
        "uuid": "3f2c9a10-0000-4000-8000-000000000001",
        "recording_date": "15/01/2025",
        "recording_time": "09:30",
        "from_number": "+33 1 00 00 00 01",
        "to_number": "+33 6 00 00 00 02",
        "parsed": parse_recording_filename(f"https://cdn/{FILENAME}?sig=1"),
    }


def test_enrich_fallback_camel_case_and_day_first():
    raw = {"callId": "98765432109876543210", "recordingUrl": "https://cdn/rec.mp3", "startTime": "01/02/2025 10:05",
           "durationSeconds": 12.5, "fromNumber": "33600000002", "toNumber": "0102030405", "uuid": "u-1",
           "direction": "in", "answered": "yes"}
    rec = enrich_recording(raw)
    assert rec["call_id"] == "98765432109876543210"
    assert rec["start_time"] == dt.datetime(2025, 2, 1, 10, 5)
    assert rec["duration_seconds"] == 13  # half-up
    assert (rec["recording_date"], rec["recording_time"]) == ("01/02/2025", "10:05")
    assert (rec["from_number"], rec["to_number"], rec["uuid"]) == ("+33 6 00 00 00 02", "0102030405", "u-1")
    assert rec["answered"] is None  # not a bool
    assert rec["parsed"] == {"uuid": "u-1", "date": "01/02/2025", "time": "10:05", "timestamp": "2025-02-01T10:05:00",
                             "from_number": "+33 6 00 00 00 02", "to_number": "0102030405",
                             "from_number_raw": "33600000002", "to_number_raw": "0102030405"}


def test_enrich_snake_blank_falls_back_to_camel_and_partial_parsed():
    rec = enrich_recording({"call_id": "", "callId": "77", "recording_url": "", "recordingUrl": None,
                            "to_number": "33600000002", "start_time": "garbage"})
    assert rec["call_id"] == "77"
    assert rec["recording_url"] == ""
    assert rec["start_time"] is None
    assert rec["parsed"] == {"uuid": "", "date": "", "time": "", "timestamp": "", "from_number": "",
                             "to_number": "+33 6 00 00 00 02", "from_number_raw": "", "to_number_raw": "33600000002"}
    assert (rec["recording_date"], rec["from_number"], rec["to_number"]) == (None, None, "+33 6 00 00 00 02")


def test_enrich_nothing_usable_gives_null_parsed():
    rec = enrich_recording({"call_id": "5", "duration_seconds": "12", "direction": "  "})
    assert rec["parsed"] is None
    assert rec["duration_seconds"] is None  # only numbers are durations
    assert rec["direction"] is None
    assert (rec["uuid"], rec["recording_date"], rec["recording_time"]) == (None, None, None)


@pytest.mark.parametrize("raw", [{}, {"call_id": ""}, {"call_id": "   ", "callId": None}, {"recording_url": "https://x"}])
def test_enrich_without_call_id_is_skipped(raw):
    assert enrich_recording(raw) is None


def test_call_id_is_never_a_number():
    rec = enrich_recording({"call_id": 12345678901234567890})
    assert rec["call_id"] == "12345678901234567890"
