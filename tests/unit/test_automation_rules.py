"""The pure rules of an automation run (spec 05 §1.3 presets, §3.2 recordings threshold, §3.3
selection, §3.6 verdict texts, §3.9 final status, §5.1 notify rule, §3.11 log hygiene): examples
and hypothesis properties for every public function of ``core/automation.py``."""

from __future__ import annotations

import calendar
import datetime as dt
import json
import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditflow_dagster.core.automation import (
    DATE_RANGES,
    EMPTY_TIMELINE,
    LOG_VALUE_MAX,
    LOST,
    NO_CONFIGS,
    NO_RECORDINGS,
    NOT_FOUND,
    PROVIDER_MISSING,
    SCHEDULE_STATUS,
    STOPPED,
    TRANSCRIPTION_INCOMPLETE,
    Verdict,
    audits_verdict,
    dates_preview,
    dmy,
    final_status,
    groupe_kept,
    minus_one_month,
    parse_dmy,
    post_details_verdict,
    recordings_threshold,
    sanitize_log_metadata,
    selection_days,
    should_notify,
    split_fiche_ids,
)

D = dt.date
ONE = dt.timedelta(days=1)

#: Dates far enough from date.min/date.max for every preset's arithmetic.
dates = st.dates(min_value=D(1900, 1, 1), max_value=D(2200, 12, 31))
near_dates = st.dates(min_value=D(2023, 1, 1), max_value=D(2025, 12, 31))


def contiguous_ascending(days: list[dt.date]) -> bool:
    return all(b - a == ONE for a, b in zip(days, days[1:], strict=False))


def span(start: dt.date, end: dt.date) -> list[dt.date]:
    out, day = [], start
    while day <= end:
        out.append(day)
        day += ONE
    return out


# --------------------------------------------------------------------------------------------
# parse_dmy / dmy
# --------------------------------------------------------------------------------------------


def test_parse_dmy_examples() -> None:
    assert parse_dmy("31/03/2024") == D(2024, 3, 31)
    assert parse_dmy("29/02/2024") == D(2024, 2, 29)
    for bad in (None, "", "29/02/2023", "31/04/2024", "00/01/2024", "01/13/2024", "2024-03-31", "1/3/2024",
                "01/03/24", " 01/03/2024", "01-03-2024", "aa/bb/cccc"):
        assert parse_dmy(bad) is None, bad


@given(dates)
def test_dmy_round_trips(day: dt.date) -> None:
    text = dmy(day)
    assert re.fullmatch(r"\d{2}/\d{2}/\d{4}", text)
    assert parse_dmy(text) == day


# --------------------------------------------------------------------------------------------
# minus_one_month (§1.3: clamp to month end, legacy overflowed)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("day", "expected"), [
    (D(2024, 3, 31), D(2024, 2, 29)),   # leap year
    (D(2023, 3, 31), D(2023, 2, 28)),
    (D(2023, 3, 29), D(2023, 2, 28)),
    (D(2024, 3, 15), D(2024, 2, 15)),
    (D(2024, 1, 31), D(2023, 12, 31)),  # year boundary
    (D(2024, 1, 1), D(2023, 12, 1)),
    (D(2024, 5, 31), D(2024, 4, 30)),
    (D(2024, 7, 31), D(2024, 6, 30)),
    (D(2024, 2, 29), D(2024, 1, 29)),
    (D(2100, 3, 31), D(2100, 2, 28)),   # 2100 is not a leap year
    (D(2000, 3, 31), D(2000, 2, 29)),   # 2000 is
])
def test_minus_one_month_examples(day: dt.date, expected: dt.date) -> None:
    assert minus_one_month(day) == expected


@given(dates)
def test_minus_one_month_properties(day: dt.date) -> None:
    prev = minus_one_month(day)
    assert (prev.year * 12 + prev.month) == (day.year * 12 + day.month) - 1
    assert prev.day == min(day.day, calendar.monthrange(prev.year, prev.month)[1])
    assert 28 <= (day - prev).days <= 31
    if day.day <= 28:
        assert prev.day == day.day


# --------------------------------------------------------------------------------------------
# selection_days (§1.3 presets)
# --------------------------------------------------------------------------------------------

TODAY = D(2024, 3, 31)


def test_fixed_presets_examples() -> None:
    assert selection_days("yesterday", TODAY) == [D(2024, 3, 30)]
    assert selection_days("last_24h", TODAY) == [D(2024, 3, 30), TODAY]
    assert selection_days("last_week", TODAY) == span(D(2024, 3, 24), TODAY)
    assert len(selection_days("last_week", TODAY)) == 8
    assert selection_days("yesterday", D(2024, 1, 1)) == [D(2023, 12, 31)]
    assert selection_days("last_24h", D(2024, 3, 1)) == [D(2024, 2, 29), D(2024, 3, 1)]


def test_last_month_clamps_to_month_end() -> None:
    assert selection_days("last_month", D(2024, 3, 31)) == span(D(2024, 2, 29), D(2024, 3, 31))
    assert selection_days("last_month", D(2023, 3, 31)) == span(D(2023, 2, 28), D(2023, 3, 31))
    assert selection_days("last_month", D(2024, 3, 31))[0] == D(2024, 2, 29)
    assert selection_days("last_month", D(2023, 3, 31))[0] == D(2023, 2, 28)
    assert selection_days("last_month", D(2024, 1, 15)) == span(D(2023, 12, 15), D(2024, 1, 15))
    # the legacy overflowed 31 Mar − 1 month into 3 Mar; the clamped start covers all of March
    assert selection_days("last_month", D(2023, 3, 31))[:2] == [D(2023, 2, 28), D(2023, 3, 1)]


def test_custom_examples() -> None:
    c = "custom"
    assert selection_days(c, TODAY, "01/03/2024", "03/03/2024") == [D(2024, 3, 1), D(2024, 3, 2), D(2024, 3, 3)]
    assert selection_days(c, TODAY, "05/03/2024", "05/03/2024") == [D(2024, 3, 5)]
    # clamped to today
    assert selection_days(c, TODAY, "29/03/2024", "15/04/2024") == [D(2024, 3, 29), D(2024, 3, 30), TODAY]
    # entirely in the future ⇒ nothing (ends no_dates, §7)
    assert selection_days(c, TODAY, "01/04/2024", "15/04/2024") == []
    # start only ⇒ [start]; a future start only ⇒ []
    assert selection_days(c, TODAY, "10/03/2024") == [D(2024, 3, 10)]
    assert selection_days(c, TODAY, "10/03/2024", None) == [D(2024, 3, 10)]
    assert selection_days(c, TODAY, "10/03/2024", "") == [D(2024, 3, 10)]
    assert selection_days(c, TODAY, "31/03/2024") == [TODAY]
    assert selection_days(c, TODAY, "01/04/2024") == []
    # start > end ⇒ []
    assert selection_days(c, TODAY, "10/03/2024", "09/03/2024") == []
    # no / invalid start ⇒ []
    assert selection_days(c, TODAY) == []
    assert selection_days(c, TODAY, None, "10/03/2024") == []
    assert selection_days(c, TODAY, "2024-03-01", "10/03/2024") == []
    assert selection_days(c, TODAY, "30/02/2024", "10/03/2024") == []


@pytest.mark.parametrize("preset", [None, "", "LAST_WEEK", "last_year", "today", "custom ", "Yesterday"])
def test_unknown_or_missing_preset_selects_nothing(preset: str | None) -> None:
    assert selection_days(preset, TODAY, "01/03/2024", "03/03/2024") == []


def test_date_ranges_constant() -> None:
    assert DATE_RANGES == ("last_24h", "yesterday", "last_week", "last_month", "custom")


@given(dates, st.sampled_from(DATE_RANGES[:4]))
def test_presets_are_ascending_contiguous_and_end_at_today_or_yesterday(today: dt.date, preset: str) -> None:
    days = selection_days(preset, today)
    assert days, preset
    assert contiguous_ascending(days)
    assert days[-1] == (today - ONE if preset == "yesterday" else today)
    assert len(set(days)) == len(days)


@given(dates)
def test_preset_sizes(today: dt.date) -> None:
    assert selection_days("yesterday", today) == [today - ONE]
    assert selection_days("last_24h", today) == [today - ONE, today]
    week = selection_days("last_week", today)
    assert len(week) == 8 and week[0] == today - 7 * ONE
    month = selection_days("last_month", today)
    assert month[0] == minus_one_month(today)
    assert 29 <= len(month) <= 32


@given(dates, dates, near_dates)
def test_custom_is_start_to_min_end_today(start: dt.date, end: dt.date, today: dt.date) -> None:
    days = selection_days("custom", today, dmy(start), dmy(end))
    assert days == span(start, min(end, today))
    assert contiguous_ascending(days)
    assert all(start <= d <= end and d <= today for d in days)
    if start > end or start > today:
        assert days == []


@given(dates, near_dates, st.sampled_from([None, "", "nope", "31/02/2024"]))
def test_custom_start_only(start: dt.date, today: dt.date, end: str | None) -> None:
    assert selection_days("custom", today, dmy(start), end) == ([start] if start <= today else [])


@given(near_dates, st.text(max_size=12), st.one_of(st.none(), st.text(max_size=12)),
       st.one_of(st.none(), st.text(max_size=12)))
def test_any_input_gives_ascending_contiguous_days_never_after_today(
        today: dt.date, preset: str, start: str | None, end: str | None) -> None:
    for p in (preset, "custom"):
        days = selection_days(p, today, start, end)
        assert contiguous_ascending(days)
        assert all(d <= today for d in days)
        if p not in DATE_RANGES:
            assert days == []


# --------------------------------------------------------------------------------------------
# split_fiche_ids (§3.3 manual)
# --------------------------------------------------------------------------------------------


def test_split_fiche_ids_examples() -> None:
    assert split_fiche_ids(["1, 2 ,3", " 4\n5\t6 ", "2", "", "  ", ",,,", "7,,8"]) == \
        ["1", "2", "3", "4", "5", "6", "7", "8"]
    assert split_fiche_ids(["b", "a", "b", "a,c"]) == ["b", "a", "c"]
    assert split_fiche_ids([]) == []
    assert split_fiche_ids(["", " , "]) == []
    assert split_fiche_ids(iter(["x y"])) == ["x", "y"]
    assert split_fiche_ids(["abc-DEF/1", "abc-def/1"]) == ["abc-DEF/1", "abc-def/1"]  # ids are opaque
    assert split_fiche_ids([None, "1"]) == ["1"]  # type: ignore[list-item]


id_tokens = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters=","),
                    min_size=1, max_size=6).filter(lambda t: t.strip() == t and not any(c.isspace() for c in t))
separators = st.text(alphabet=st.sampled_from([",", " ", "\t", "\n", "\r", "\u00a0", "\u2003"]), min_size=1, max_size=3)


@st.composite
def entries_from_tokens(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    groups = draw(st.lists(st.lists(id_tokens, max_size=5), max_size=6))
    entries = []
    for group in groups:
        lead = draw(st.one_of(st.just(""), separators))
        trail = draw(st.one_of(st.just(""), separators))
        entries.append(lead + "".join(t + draw(separators) for t in group[:-1]) + (group[-1] if group else "") + trail)
    return entries, groups


@given(entries_from_tokens())
def test_split_fiche_ids_properties(data: tuple[list[str], list[list[str]]]) -> None:
    entries, groups = data
    out = split_fiche_ids(entries)
    flat = [t for g in groups for t in g]
    assert out == list(dict.fromkeys(flat))          # order of first occurrence, de-duplicated
    assert len(set(out)) == len(out)
    assert set(out) == set(flat)                      # every token appears


@given(st.lists(st.text(max_size=20), max_size=8))
def test_split_fiche_ids_arbitrary_text(entries: list[str]) -> None:
    out = split_fiche_ids(entries)
    assert len(set(out)) == len(out)
    assert all(t and t.strip() and "," not in t and not any(c.isspace() for c in t) for t in out)
    tokens = [t for e in entries for t in e.replace(",", " ").split()]
    assert out == list(dict.fromkeys(tokens))


# --------------------------------------------------------------------------------------------
# recordings_threshold (§3.2)
# --------------------------------------------------------------------------------------------


def test_recordings_threshold_examples() -> None:
    assert recordings_threshold(None, 0, 50) == 50       # env 0 ⇒ HARD (not "disabled")
    assert recordings_threshold(0, 0, 50) == 50
    assert recordings_threshold(None, 20, 50) == 20
    assert recordings_threshold(10, 20, 50) == 10        # selection wins over env
    assert recordings_threshold(30, 20, 50) == 30
    assert recordings_threshold(80, 20, 50) == 50        # never above HARD
    assert recordings_threshold(None, 80, 50) == 50
    assert recordings_threshold(-3, 7, 50) == 7          # non-positive selection ignored
    assert recordings_threshold(None, -1, 50) == 50
    assert recordings_threshold(5, 0, 3) == 3
    assert recordings_threshold(None, 0, 0) == 1         # HARD floors at 1


@given(st.one_of(st.none(), st.integers(-10, 200)), st.integers(-10, 200), st.integers(-5, 200))
def test_recordings_threshold_properties(selection: int | None, env: int, hard_max: int) -> None:
    t = recordings_threshold(selection, env, hard_max)
    hard = max(1, hard_max)
    assert 1 <= t <= hard
    if selection is not None and selection > 0:
        assert t == min(selection, hard)                 # selection wins over env
    elif env > 0:
        assert t == min(env, hard)
    else:
        assert t == hard                                 # env 0 ⇒ HARD


# --------------------------------------------------------------------------------------------
# groupe_kept (§3.3 pre-details filter)
# --------------------------------------------------------------------------------------------


def test_groupe_kept_examples() -> None:
    assert groupe_kept("A", ["A", "B"])
    assert groupe_kept(" A ", ["A"])
    assert groupe_kept("A", [" A "])
    assert not groupe_kept("C", ["A", "B"])
    assert groupe_kept(None, ["A"])                       # unknown: decided after details
    assert groupe_kept("  ", ["A"])
    assert groupe_kept("C", [])                          # no filter
    assert groupe_kept("C", ["", "  "])
    assert not groupe_kept("a", ["A"])                   # exact match (trimmed)


groupe_names = st.text(alphabet="ABC ab", max_size=4)


@given(st.one_of(st.none(), groupe_names), st.lists(groupe_names, max_size=4))
def test_groupe_kept_properties(groupe: str | None, groupes: list[str]) -> None:
    wanted = {g.strip() for g in groupes if g.strip()}
    known = groupe is not None and groupe.strip() != ""
    assert groupe_kept(groupe, groupes) == (not wanted or not known or groupe.strip() in wanted)
    assert groupe_kept(groupe, groupes + ([groupe] if groupe else []))  # listing it always keeps it


# --------------------------------------------------------------------------------------------
# post_details_verdict (§3.6 step 2)
# --------------------------------------------------------------------------------------------


def test_post_details_reasons_verbatim() -> None:
    v = post_details_verdict("C", 3, groupes=["A"], threshold=50, only_with_recordings=False)
    assert v == Verdict("ignored", reason="Groupe not selected (C)")
    v = post_details_verdict(None, 3, groupes=["A"], threshold=50, only_with_recordings=False)
    assert v == Verdict("ignored", reason="Groupe not selected (unknown)")
    v = post_details_verdict("  ", 3, groupes=["A"], threshold=50, only_with_recordings=False)
    assert v == Verdict("ignored", reason="Groupe not selected (unknown)")
    v = post_details_verdict(" C ", 3, groupes=["A"], threshold=50, only_with_recordings=False)
    assert v is not None and v.reason == "Groupe not selected (C)"
    v = post_details_verdict("A", 7, groupes=["A"], threshold=5, only_with_recordings=False)
    assert v == Verdict("ignored", reason="Too many recordings (7>5)", recordings_count=7)
    v = post_details_verdict("A", 0, groupes=["A"], threshold=5, only_with_recordings=True)
    assert v == Verdict("ignored", reason="No recordings", recordings_count=0)
    assert NO_RECORDINGS == "No recordings"


def test_post_details_passes() -> None:
    kw = {"threshold": 5, "only_with_recordings": True}
    assert post_details_verdict("A", 5, groupes=["A"], **kw) is None        # N == T is allowed
    assert post_details_verdict(None, 1, groupes=[], **kw) is None          # no groupes filter
    assert post_details_verdict("Z", 1, groupes=["", " "], **kw) is None    # blank groupes = no filter
    assert post_details_verdict("A", 0, groupes=[], threshold=5, only_with_recordings=False) is None


def test_post_details_filter_order() -> None:
    # groupe before too-many before no-recordings
    v = post_details_verdict("C", 99, groupes=["A"], threshold=5, only_with_recordings=True)
    assert v is not None and v.reason == "Groupe not selected (C)" and v.recordings_count is None
    v = post_details_verdict("C", 0, groupes=["A"], threshold=5, only_with_recordings=True)
    assert v is not None and v.reason == "Groupe not selected (C)"
    # too many before no recordings: with a threshold of -1 a 0-recording fiche is "too many"
    v = post_details_verdict("A", 0, groupes=["A"], threshold=-1, only_with_recordings=True)
    assert v is not None and v.reason == "Too many recordings (0>-1)"


@given(st.one_of(st.none(), groupe_names), st.integers(0, 80), st.lists(groupe_names, max_size=3),
       st.integers(1, 60), st.booleans())
def test_post_details_matches_the_spec_order(groupe: str | None, n: int, groupes: list[str], threshold: int,
                                             only_with: bool) -> None:
    v = post_details_verdict(groupe, n, groupes=groupes, threshold=threshold, only_with_recordings=only_with)
    wanted = {g.strip() for g in groupes if g.strip()}
    g = (groupe or "").strip()
    if wanted and g not in wanted:
        assert v == Verdict("ignored", reason=f"Groupe not selected ({g or 'unknown'})")
    elif n > threshold:
        assert v == Verdict("ignored", reason=f"Too many recordings ({n}>{threshold})", recordings_count=n)
    elif only_with and n == 0:
        assert v == Verdict("ignored", reason="No recordings", recordings_count=0)
    else:
        assert v is None
    if v is not None:
        assert v.status == "ignored" and v.error is None


def test_result_texts_verbatim() -> None:
    assert NOT_FOUND == "Fiche not found (404)"
    assert EMPTY_TIMELINE == "No transcribed recordings (empty timeline)"
    assert TRANSCRIPTION_INCOMPLETE == "Transcription incomplete (timeout/stall)"
    assert PROVIDER_MISSING == "Transcription provider not configured"
    assert NO_CONFIGS == "No audit configs resolved"
    assert STOPPED == "Not processed: stopped after a failure (continueOnError=false)"
    assert LOST.startswith("Not processed:")


# --------------------------------------------------------------------------------------------
# audits_verdict (§3.6 step 4)
# --------------------------------------------------------------------------------------------


def test_audits_verdict_examples() -> None:
    assert audits_verdict([("completed", None), ("completed", None)]) == Verdict("successful")
    assert audits_verdict([("completed", None), ("failed", "boom"), ("failed", "second")]) == \
        Verdict("failed", error="boom")
    assert audits_verdict([("failed", None)]) == Verdict("failed", error="Audit failed")
    assert audits_verdict([("failed", "")]) == Verdict("failed", error="Audit failed")
    assert audits_verdict([("completed", None), ("running", None)]) == \
        Verdict("failed", error="Audit incomplete (timeout/stall)")
    # a failure anywhere beats an earlier non-terminal one
    assert audits_verdict([("running", None), ("failed", "x")]) == Verdict("failed", error="x")
    assert audits_verdict([("pending", None)]).error == "Audit incomplete (timeout/stall)"


audit_statuses = st.lists(st.tuples(st.sampled_from(["completed", "failed", "running", "pending", "queued"]),
                                    st.one_of(st.none(), st.text(max_size=5))), max_size=6)


@given(audit_statuses)
def test_audits_verdict_properties(statuses: list[tuple[str, str | None]]) -> None:
    v = audits_verdict(statuses)
    failed = [e for s, e in statuses if s == "failed"]
    if failed:
        assert v == Verdict("failed", error=failed[0] or "Audit failed")   # first in config order
    elif all(s == "completed" for s, _ in statuses):
        assert v == Verdict("successful")
    else:
        assert v == Verdict("failed", error="Audit incomplete (timeout/stall)")
    assert (v.status == "successful") == all(s == "completed" for s, _ in statuses)
    assert v.reason is None and v.recordings_count is None


# --------------------------------------------------------------------------------------------
# final_status (§3.9) and the schedule mapping (§2.3)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("successful", "failed", "expected"), [
    (0, 0, "completed"),   # everything ignored / nothing to do
    (1, 0, "completed"),
    (5, 0, "completed"),
    (0, 1, "failed"),
    (0, 4, "failed"),
    (1, 1, "partial"),
    (3, 1, "partial"),
    (1, 9, "partial"),
])
def test_final_status_grid(successful: int, failed: int, expected: str) -> None:
    assert final_status(successful, failed) == expected


@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_final_status_properties(successful: int, failed: int) -> None:
    status = final_status(successful, failed)
    assert (status == "completed") == (failed == 0)
    assert (status == "partial") == (failed > 0 and successful > 0)
    assert (status == "failed") == (failed > 0 and successful == 0)
    assert status in SCHEDULE_STATUS


def test_schedule_status_mapping() -> None:
    assert SCHEDULE_STATUS == {"completed": "success", "partial": "partial", "failed": "failed"}


# --------------------------------------------------------------------------------------------
# should_notify (§5.1)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("on_complete", [True, False])
@pytest.mark.parametrize("on_error", [True, False])
@pytest.mark.parametrize("status", ["completed", "partial", "failed"])
def test_should_notify_grid(status: str, on_complete: bool, on_error: bool) -> None:
    expected = (on_complete and status == "completed") or (on_error and status != "completed")
    assert should_notify(status, notify_on_complete=on_complete, notify_on_error=on_error) is expected


@given(st.integers(0, 50), st.integers(0, 50), st.booleans(), st.booleans())
def test_should_notify_follows_final_status(successful: int, failed: int, on_complete: bool, on_error: bool) -> None:
    status = final_status(successful, failed)
    got = should_notify(status, notify_on_complete=on_complete, notify_on_error=on_error)
    assert got == (on_complete if failed == 0 else on_error)   # partial uses the error flag


# --------------------------------------------------------------------------------------------
# sanitize_log_metadata (§3.11)
# --------------------------------------------------------------------------------------------

REDACTED = "[REDACTED]"
SECRET_WORDS = ("password", "passwd", "smtp_pass", "secret", "client_secret", "token", "access_token",
                "refresh_tokens", "api_key", "apiKey", "api-key", "X-API-KEY", "Authorization", "cookie",
                "Set-Cookie", "credentials", "webhookSecret", "externalApiKey")


def strict_json(value: object) -> str:
    """What PostgreSQL jsonb accepts: strict JSON (no NaN/Infinity) without NUL characters."""
    text = json.dumps(value, allow_nan=False)
    assert "\\u0000" not in text
    return text


def test_sanitize_examples() -> None:
    meta = {
        "password": "hunter2", "api_key": "sk-1", "Authorization": "Bearer abc", "externalApiKey": "k",
        "nested": {"deeper": [{"client_secret": "s", "ok": 1}], "cookie": "c=1"},
        "total_tokens": 1500, "prompt_tokens": 3, "token_count": 2,
        "url": "https://crm.example/api/sales?api_key=abc&x=1#frag",
        "text": "see http://a.example/p?q=1 and https://b.example/x",
        "long": "x" * (LOG_VALUE_MAX + 50),
        "status": "completed", "duration_ms": 1234, "ratio": 0.5, "flag": True, "nothing": None,
        "ficheIds": ["1", "2"],
    }
    out = sanitize_log_metadata(meta)
    assert out["password"] == out["api_key"] == out["Authorization"] == out["externalApiKey"] == REDACTED
    assert out["nested"] == {"deeper": [{"client_secret": REDACTED, "ok": 1}], "cookie": REDACTED}
    assert out["total_tokens"] == 1500 and out["prompt_tokens"] == 3 and out["token_count"] == 2
    assert out["url"] == "https://crm.example/api/sales#frag"
    assert out["text"] == "see http://a.example/p and https://b.example/x"
    assert out["long"] == "x" * LOG_VALUE_MAX + "…"
    assert {k: out[k] for k in ("status", "duration_ms", "ratio", "flag", "nothing", "ficheIds")} == \
        {"status": "completed", "duration_ms": 1234, "ratio": 0.5, "flag": True, "nothing": None, "ficheIds": ["1", "2"]}
    assert meta["password"] == "hunter2"   # input untouched
    strict_json(out)


def test_sanitize_edge_cases() -> None:
    assert sanitize_log_metadata(None) == {}
    assert sanitize_log_metadata({}) == {}
    out = sanitize_log_metadata({
        1: "int key", "when": dt.datetime(2024, 3, 31, 12, 0), "ids": {3, 3}, "tup": (1, "a"),
        "raw": b"bytes", "many": list(range(500)), "obj": object(),
    })
    assert out["1"] == "int key"
    assert out["when"] == "2024-03-31 12:00:00"
    assert out["ids"] == "{3}" and out["tup"] == [1, "a"] and out["raw"] == "b'bytes'"
    assert out["many"] == list(range(200))
    assert out["obj"].startswith("<object object")
    strict_json(out)


def test_sanitize_secret_counters_only_when_numeric() -> None:
    out = sanitize_log_metadata({"total_tokens": 10, "refresh_tokens": "rt-secret", "auth_tokens": ["a", "b"],
                                 "token_count": "abc", "password_count": 2, "tokens": {"raw": "x"}})
    assert out == {"total_tokens": 10, "refresh_tokens": REDACTED, "auth_tokens": REDACTED,
                   "token_count": REDACTED, "password_count": 2, "tokens": REDACTED}


def test_sanitize_is_jsonb_safe() -> None:
    out = sanitize_log_metadata({"score": math.nan, "hi": math.inf, "lo": -math.inf, "err": "a\x00b",
                                 "k\x00ey": [math.nan, "x\x00"], "total_tokens": math.nan})
    assert out == {"score": "nan", "hi": "inf", "lo": "-inf", "err": "ab", "key": ["nan", "x"],
                   "total_tokens": REDACTED}  # a NaN is no counter
    strict_json(out)


def test_sanitize_url_scheme_is_case_insensitive() -> None:
    assert sanitize_log_metadata({"u": "HTTPS://x.example/p?token=1"}) == {"u": "HTTPS://x.example/p"}


json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30),
                        st.sampled_from(["https://h.example/p?k=v", "x http://h/a?b=c&d y", "\x00",
                                         "z" * (LOG_VALUE_MAX + 3)]))
any_keys = st.one_of(st.text(max_size=12), st.sampled_from(SECRET_WORDS + ("total_tokens", "token_count", "passed")))
json_like = st.recursive(json_leaves, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                            st.dictionaries(any_keys, kids, max_size=4)),
                         max_leaves=20)
SECRET_RE = re.compile(r"pass|secret|token|api[_-]?key|authorization|cookie|credential", re.I)
URL_WITH_QUERY = re.compile(r"https?://[^\s?#\"']+\?", re.I)


def is_counter(key: str, value: object) -> bool:
    """Counters such as ``total_tokens`` / ``*_count`` are kept when they hold a (finite) number."""
    return key.endswith(("_count", "tokens")) and isinstance(value, (int, float)) and math.isfinite(value)


def check_clean(key: str | None, raw: object, out: object) -> None:
    """Walk the input and the output together and check each rule of §3.11."""
    if key is not None and SECRET_RE.search(key):
        if not is_counter(key, raw):
            assert out == REDACTED, (key, raw, out)
            return
    if isinstance(raw, dict):
        assert isinstance(out, dict)
        names = [str(k).replace("\x00", "") for k in raw]
        assert set(out) == set(names)
        for name, v in zip(names, raw.values(), strict=True):
            if names.count(name) == 1:   # keys that collide once NUL is stripped: last one wins
                check_clean(name, v, out[name])
    elif isinstance(raw, list):
        assert isinstance(out, list) and len(out) == min(len(raw), 200)
        for r, o in zip(raw, out, strict=False):
            check_clean(key, r, o)
    elif isinstance(raw, str):
        assert isinstance(out, str)
        assert len(out) <= LOG_VALUE_MAX + 1
        assert "\x00" not in out
        assert not URL_WITH_QUERY.search(out)
        if len(raw) <= LOG_VALUE_MAX and "\x00" not in raw and not URL_WITH_QUERY.search(raw):
            assert out == raw
    elif isinstance(raw, float) and not math.isfinite(raw):
        assert out == str(raw)
    else:
        assert out == raw and type(out) is type(raw)


@given(st.dictionaries(any_keys, json_like, max_size=6))
def test_sanitize_properties(meta: dict[str, object]) -> None:
    out = sanitize_log_metadata(meta)
    strict_json(out)
    assert all(isinstance(k, str) and "\x00" not in k for k in out)
    check_clean(None, meta, out)
    assert sanitize_log_metadata(out) == out   # idempotent


@given(st.sampled_from(SECRET_WORDS), json_like, st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=4))
def test_secret_keys_redacted_at_any_depth(secret: str, value: object, path: list[str]) -> None:
    meta: dict[str, object] = {secret: value}
    for step in reversed(path):
        meta = {step: [meta]} if step == "b" else {step: meta}
    out = sanitize_log_metadata(meta)
    node: object = out
    for step in path:
        node = node[step][0] if step == "b" else node[step]  # type: ignore[index]
    assert node[secret] == (value if is_counter(secret, value) else REDACTED)  # type: ignore[index]


@given(st.sampled_from(["total_tokens", "prompt_tokens", "completion_tokens", "max_tokens", "token_count"]),
       st.integers(0, 10**9))
def test_token_counters_kept(key: str, n: int) -> None:
    assert sanitize_log_metadata({key: n, "usage": {key: n}}) == {key: n, "usage": {key: n}}


# --------------------------------------------------------------------------------------------
# dates_preview (§3.3 "Calculated N dates to query")
# --------------------------------------------------------------------------------------------


def test_dates_preview_examples() -> None:
    days = [f"{i:02d}/03/2024" for i in range(1, 12)]
    assert dates_preview([]) == []
    assert dates_preview(days[:10]) == days[:10]
    assert dates_preview(days) == [*days[:5], "..."]
    assert dates_preview(tuple(days[:3])) == days[:3]


@given(st.lists(st.text(max_size=10), max_size=40))
def test_dates_preview_properties(days: list[str]) -> None:
    preview = dates_preview(days)
    assert isinstance(preview, list)
    if len(days) <= 10:
        assert preview == days
    else:
        assert preview == [*days[:5], "..."]
    assert len(preview) <= 10


@given(near_dates, st.sampled_from(DATE_RANGES[:4]))
def test_dates_preview_of_a_preset(today: dt.date, preset: str) -> None:
    days = [dmy(d) for d in selection_days(preset, today)]
    preview = dates_preview(days)
    assert preview[0] == days[0]
    assert (preview[-1] == "...") == (len(days) > 10)
