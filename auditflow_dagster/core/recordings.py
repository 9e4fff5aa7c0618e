"""Normalisation of CRM recording payloads (spec 02 §1.2).

Why: recordings arrive from the CRM gateway in snake_case or camelCase with loosely formatted
fields, and the audio file name is the most reliable source of the call's date, time and numbers.
Everything the DB stores and the UI shows (date ``DD/MM/YYYY``, time ``HH:MM``, display phone
numbers) is derived here once, deterministically, so an upsert of the same payload always yields
the same row.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

__all__ = ["enrich_recording", "parse_recording_filename", "parse_start_time", "phone_display"]

_FILENAME_RE = re.compile(
    r"^(?P<uuid>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    r"-(?P<dd>\d{2})-(?P<mm>\d{2})-(?P<yy>\d{2})-(?P<hh>\d{2})h(?P<mi>\d{2})"
    r"-(?P<from>\d+)-(?P<to>\d+)\.mp3$",
    re.IGNORECASE,
)
_FR_MOBILE_RE = re.compile(r"^33(\d)(\d{2})(\d{2})(\d{2})(\d{2})$")
_LITERAL_ISO_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2})(?::(\d{2}))?")
_DAY_FIRST_RE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})(?:[ T](\d{1,2})[:h](\d{2})(?::(\d{2}))?)?\s*$")


def phone_display(number: str | None) -> str | None:
    """``33600000002`` → ``+33 6 00 00 00 02``; any other value is returned unchanged.

    The DB stores this display form (legacy parity), so it must be applied exactly once, here.
    """
    if number is None:
        return None
    s = number if isinstance(number, str) else str(number)
    m = _FR_MOBILE_RE.match(s)
    if not m:
        return s
    return "+33 " + " ".join(m.groups())


def _to_naive_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def _safe_datetime(*parts: int) -> dt.datetime | None:
    try:
        return dt.datetime(*parts)
    except ValueError:
        return None


def parse_start_time(value: str | None) -> dt.datetime | None:
    """Parse a CRM ``start_time`` into a naive UTC datetime, or ``None`` (spec 02 §1.2 B).

    Order: (1) ISO 8601 — an offset is converted to UTC, no offset is *read as* UTC (legacy
    containers ran in UTC), a date alone is midnight; (2) ``YYYY-MM-DD[ T]HH:MM…`` taken literally,
    ignoring whatever follows; (3) ``DD/MM/YYYY[ HH:MM]`` **day first** — never month-first (the
    legacy generic parser read ``01/02/2025`` as 2 January; PROPOSED fix). Unparseable → ``None``
    so an upsert stores NULL instead of failing.
    """
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return _to_naive_utc(value)
    if not isinstance(value, str):
        return None
    s = value.strip()
    if not s:
        return None
    try:
        return _to_naive_utc(dt.datetime.fromisoformat(s))
    except ValueError:
        pass
    m = _LITERAL_ISO_RE.match(s)
    if m:
        y, mo, d, h, mi, sec = m.groups()
        parsed = _safe_datetime(int(y), int(mo), int(d), int(h), int(mi), int(sec or 0))
        if parsed is not None:
            return parsed
    m = _DAY_FIRST_RE.match(s)
    if m:
        d, mo, y, h, mi, sec = m.groups()
        return _safe_datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(sec or 0))
    return None


def parse_recording_filename(url: str | None) -> dict | None:
    """Extract call metadata from the audio file name (spec 02 §1.2 A), or ``None``.

    Pattern ``<uuid>-DD-MM-YY-HHhMM-<from>-<to>.mp3``, case-insensitive. The query string and
    fragment are cut off *before* taking the last path segment, so a signed URL whose signature
    contains ``/`` still matches. Date and time are copied as written (no range check), the year is
    ``20YY``; ``timestamp`` is the same wall-clock value as ``YYYY-MM-DDTHH:MM:00`` (unvalidated).
    """
    if not isinstance(url, str) or not url.strip():
        return None
    path = re.split(r"[?#]", url.strip(), maxsplit=1)[0]
    name = path.rsplit("/", 1)[-1]
    m = _FILENAME_RE.match(name)
    if not m:
        return None
    g = m.groupdict()
    return {
        "uuid": g["uuid"],
        "date": f"{g['dd']}/{g['mm']}/20{g['yy']}",
        "time": f"{g['hh']}:{g['mi']}",
        "timestamp": f"20{g['yy']}-{g['mm']}-{g['dd']}T{g['hh']}:{g['mi']}:00",
        "from_number": phone_display(g["from"]),
        "to_number": phone_display(g["to"]),
        "from_number_raw": g["from"],
        "to_number_raw": g["to"],
    }


def _pick(raw: dict[str, Any], snake: str, camel: str) -> Any:
    """First non-empty of the snake_case and camelCase keys (``""``/``None`` count as empty)."""
    for key in (snake, camel):
        v = raw.get(key)
        if v is None or (isinstance(v, str) and not v.strip()):
            continue
        return v
    return None


def _str_or_none(v: Any) -> str | None:
    if v is None:
        return None
    s = v.strip() if isinstance(v, str) else str(v)
    return s or None


def _duration(v: Any) -> int | None:
    """A number of seconds rounded half-up (PROPOSED: the legacy failed on non-integers)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if isinstance(v, int):
        return v
    if not math.isfinite(v):
        return None
    return int(Decimal(repr(v)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _fallback_parsed(
    start: dt.datetime | None, from_raw: str | None, to_raw: str | None, uuid: str | None
) -> dict[str, Any] | None:
    if start is None and not from_raw and not to_raw and not uuid:
        return None
    return {
        "uuid": uuid or "",
        "date": start.strftime("%d/%m/%Y") if start else "",
        "time": start.strftime("%H:%M") if start else "",
        "timestamp": start.strftime("%Y-%m-%dT%H:%M:%S") if start else "",
        "from_number": phone_display(from_raw) if from_raw else "",
        "to_number": phone_display(to_raw) if to_raw else "",
        "from_number_raw": from_raw or "",
        "to_number_raw": to_raw or "",
    }


def enrich_recording(raw: dict) -> dict | None:
    """Normalise one CRM recording element; ``None`` when it has no ``call_id``.

    Elements without a call id are skipped (PROPOSED): they would all collide on one upsert row.
    ``call_id`` stays a string (19–20 digit ids overflow JS numbers). The file name wins over the
    payload fields for date/time/numbers/uuid; the payload is the fallback. Phone numbers are
    returned in display form because that is what the DB stores.
    """
    if not isinstance(raw, dict):
        return None
    call_id = _str_or_none(_pick(raw, "call_id", "callId"))
    if not call_id:
        return None
    url_value = _pick(raw, "recording_url", "recordingUrl")
    recording_url = url_value.strip() if isinstance(url_value, str) else ""

    start_time = parse_start_time(_pick(raw, "start_time", "startTime"))
    from_raw = _str_or_none(_pick(raw, "from_number", "fromNumber"))
    to_raw = _str_or_none(_pick(raw, "to_number", "toNumber"))
    uuid_raw = _str_or_none(_pick(raw, "uuid", "uuid"))

    parsed = parse_recording_filename(recording_url) or _fallback_parsed(start_time, from_raw, to_raw, uuid_raw)

    direction = _pick(raw, "direction", "direction")
    answered = raw.get("answered")

    def from_parsed(key: str) -> str | None:
        value = parsed.get(key) if parsed else None
        return value or None

    return {
        "call_id": call_id,
        "recording_url": recording_url,
        "start_time": start_time,
        "duration_seconds": _duration(_pick(raw, "duration_seconds", "durationSeconds")),
        "direction": direction if isinstance(direction, str) else None,
        "answered": answered if isinstance(answered, bool) else None,
        "uuid": from_parsed("uuid"),
        "recording_date": from_parsed("date"),
        "recording_time": from_parsed("time"),
        "from_number": from_parsed("from_number"),
        "to_number": from_parsed("to_number"),
        "parsed": parsed,
    }
