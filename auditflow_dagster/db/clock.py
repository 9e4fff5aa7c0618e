"""Time as the database stores it: naive UTC ``timestamp(3)``, and its ISO form with ms and ``Z``
(the API's date format, spec 06 §5.6)."""

from __future__ import annotations

import datetime as dt


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def iso(ts: dt.datetime | None) -> str | None:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z" if ts else None
