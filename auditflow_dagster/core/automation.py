"""The rules of an automation run (spec 05 §1.3, §3.2–§3.9), as pure functions.

The run job, the fiche assets and the finalizing sensor all decide through these, so "which days",
"which fiches are ignored and why", "what counts as a success" and "what status did the run end
with" have exactly one definition each — and property tests.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DATE_RANGES = ("last_24h", "yesterday", "last_week", "last_month", "custom")
DMY = re.compile(r"^(\d{2})/(\d{2})/(\d{4})$")
FICHE_ID_SPLIT = re.compile(r"[\s,]+")

#: Result texts (spec 05 §3.6, §3.8); kept verbatim, the frontend and the QA team read them.
NOT_FOUND = "Fiche not found (404)"
NO_RECORDINGS = "No recordings"
EMPTY_TIMELINE = "No transcribed recordings (empty timeline)"
TRANSCRIPTION_INCOMPLETE = "Transcription incomplete (timeout/stall)"
PROVIDER_MISSING = "Transcription provider not configured"
NO_CONFIGS = "No audit configs resolved"
STOPPED = "Not processed: stopped after a failure (continueOnError=false)"
LOST = "Not processed: the run's fiche pipeline ended before this fiche finished"


def parse_dmy(value: str | None) -> dt.date | None:
    """``DD/MM/YYYY`` → date; anything else → None."""
    m = DMY.match(value or "")
    if not m:
        return None
    try:
        return dt.date(int(m[3]), int(m[2]), int(m[1]))
    except ValueError:
        return None


def dmy(day: dt.date) -> str:
    return day.strftime("%d/%m/%Y")


def minus_one_month(day: dt.date) -> dt.date:
    """Same day last month, clamped to that month's end (31 Mar → 28/29 Feb; legacy overflowed
    into early March)."""
    year, month = (day.year - 1, 12) if day.month == 1 else (day.year, day.month - 1)
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def selection_days(date_range: str | None, today: dt.date, custom_start: str | None = None,
                   custom_end: str | None = None) -> list[dt.date]:
    """The inclusive, ascending days a date preset covers (spec 05 §1.3). ``today`` is the date in
    the schedule's zone. Unknown or missing presets select nothing; ``custom`` never reaches past
    today."""
    def span(start: dt.date, end: dt.date) -> list[dt.date]:
        return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)] if start <= end else []

    if date_range == "yesterday":
        return [today - dt.timedelta(days=1)]
    if date_range == "last_24h":
        return [today - dt.timedelta(days=1), today]
    if date_range == "last_week":
        return span(today - dt.timedelta(days=7), today)
    if date_range == "last_month":
        return span(minus_one_month(today), today)
    if date_range == "custom":
        start, end = parse_dmy(custom_start), parse_dmy(custom_end)
        if start is None:
            return []
        if end is None:
            return [start] if start <= today else []
        if start > end:
            return []
        return span(start, min(end, today))
    return []


def split_fiche_ids(entries: Iterable[str]) -> list[str]:
    """Manual ids: entries split on commas/whitespace, blanks dropped, order kept, de-duplicated
    (legacy kept duplicates and audited them twice)."""
    out: list[str] = []
    seen: set[str] = set()
    for entry in entries:
        for part in FICHE_ID_SPLIT.split(entry or ""):
            if part and part not in seen:
                seen.add(part)
                out.append(part)
    return out


def recordings_threshold(max_per_fiche: int | None, env_max: int, hard_max: int) -> int:
    """T = min(configured, HARD) where configured is the selection's cap, else the env cap, else
    HARD (spec 05 §3.2: "0 = disabled" in the legacy docs really meant "50")."""
    hard = max(1, hard_max)
    configured = max_per_fiche if max_per_fiche and max_per_fiche > 0 else env_max if env_max > 0 else hard
    return min(configured, hard)


def groupe_kept(groupe: str | None, groupes: Sequence[str]) -> bool:
    """Pre-details groupes filter: drop only fiches whose cached groupe is known and unlisted
    (an unknown groupe is decided after details)."""
    wanted = {g.strip() for g in groupes if g and g.strip()}
    if not wanted or groupe is None or not groupe.strip():
        return True
    return groupe.strip() in wanted


@dataclass(frozen=True)
class Verdict:
    """A fiche's outcome in a run: ``successful`` | ``failed`` | ``ignored``."""

    status: str
    error: str | None = None
    reason: str | None = None
    recordings_count: int | None = None


def post_details_verdict(groupe: str | None, recordings: int, *, groupes: Sequence[str], threshold: int,
                         only_with_recordings: bool) -> Verdict | None:
    """The filters that need full details, in the spec's order (§3.6 step 2): an ignored
    verdict, or None when the fiche goes on to transcription and audits."""
    wanted = {g.strip() for g in groupes if g and g.strip()}
    if wanted and (groupe or "").strip() not in wanted:
        return Verdict("ignored", reason=f"Groupe not selected ({(groupe or '').strip() or 'unknown'})")
    if recordings > threshold:
        return Verdict("ignored", reason=f"Too many recordings ({recordings}>{threshold})", recordings_count=recordings)
    if only_with_recordings and recordings == 0:
        return Verdict("ignored", reason=NO_RECORDINGS, recordings_count=0)
    return None


def audits_verdict(statuses: Sequence[tuple[str, str | None]]) -> Verdict:
    """Per-config audit outcomes ``[(status, error_message)]`` in config order → the fiche's
    verdict: all completed ⇒ successful; the first failed ⇒ failed with its message; anything still
    running ⇒ failed "Audit incomplete"."""
    for status, error in statuses:
        if status == "failed":
            return Verdict("failed", error=error or "Audit failed")
    if any(status != "completed" for status, _ in statuses):
        return Verdict("failed", error="Audit incomplete (timeout/stall)")
    return Verdict("successful")


def final_status(successful: int, failed: int) -> str:
    """No failures ⇒ completed (also when everything was ignored); failures and at least one
    success ⇒ partial; else failed (spec 05 §3.9)."""
    if failed == 0:
        return "completed"
    return "partial" if successful > 0 else "failed"


SCHEDULE_STATUS = {"completed": "success", "partial": "partial", "failed": "failed"}


def should_notify(status: str, *, notify_on_complete: bool, notify_on_error: bool) -> bool:
    """Normal end: completed uses the complete flag; partial and failed use the error flag (§5.1)."""
    return notify_on_complete if status == "completed" else notify_on_error


_SECRET_KEY = re.compile(r"(pass|secret|token|api[_-]?key|authorization|cookie|credential)", re.I)
_URL_QUERY = re.compile(r"(https?://[^\s?#\"']+)\?[^\s#\"']*", re.I)
LOG_VALUE_MAX = 2000


def sanitize_log_metadata(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """Log metadata as stored (spec 05 §3.11): secret-looking keys redacted, URL query strings
    dropped, long strings truncated; counters such as ``total_tokens`` (numbers) are kept. The
    result is strict JSON that PostgreSQL ``jsonb`` accepts: no NUL characters, no NaN/Infinity."""
    def name(k: Any) -> str:
        return str(k).replace("\x00", "")

    def clean(key: str, value: Any) -> Any:
        if (_SECRET_KEY.search(key)
                and not (key.endswith(("_count", "tokens")) and isinstance(value, (int, float)))):
            return "[REDACTED]"
        if isinstance(value, str):
            value = _URL_QUERY.sub(r"\1", value.replace("\x00", ""))
            return value if len(value) <= LOG_VALUE_MAX else value[:LOG_VALUE_MAX] + "…"
        if isinstance(value, Mapping):
            return {name(k): clean(name(k), v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(key, v) for v in value[:200]]
        if value is None or isinstance(value, (bool, int)) or (isinstance(value, float) and math.isfinite(value)):
            return value
        return clean(key, str(value))

    out = {name(k): clean(name(k), v) for k, v in (meta or {}).items()}
    json.dumps(out, allow_nan=False)
    return out


def dates_preview(days: Sequence[str]) -> list[str]:
    """The "Calculated N dates" log list: all when ≤ 10, else the first five and ``...``."""
    return list(days) if len(days) <= 10 else [*days[:5], "..."]
