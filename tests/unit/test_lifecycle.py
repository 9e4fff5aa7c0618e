"""Partition lifecycle rules (DESIGN §3.11): what may disappear from Dagster, and key chunking."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditflow_dagster.core.lifecycle import (
    MAX_KEYS_PER_CALL,
    Cutoff,
    FicheActivity,
    chunked,
    is_retirable,
    keys_in_range,
    parse_sales_day,
    partitions_to_retire,
    retention_cutoff,
    run_cutoff,
    run_partition_keys,
)

NOW = dt.datetime(2026, 6, 15, 10, 0, tzinfo=dt.UTC)
CUTOFF = retention_cutoff(NOW, 60)
BASE_DAY = dt.date(2026, 1, 1)


def fiche(fid: str, day: dt.date | None, last: dt.datetime | None, open_audit: bool = False) -> FicheActivity:
    return FicheActivity(fid, day.isoformat() if day else None, last, open_audit)


# --- cutoffs ----------------------------------------------------------------------------------


def test_cutoff_is_retention_days_before_the_business_day():
    c = retention_cutoff(NOW, 60)
    assert c.day == dt.date(2026, 4, 16)
    # start of 2026-04-16 in Paris (CEST, UTC+2) is 22:00 UTC the day before, stored naive
    assert c.instant == dt.datetime(2026, 4, 15, 22, 0)


def test_cutoff_uses_the_business_time_zone_near_midnight():
    # 23:30 UTC on 2026-06-15 is already 2026-06-16 in Paris
    late = dt.datetime(2026, 6, 15, 23, 30, tzinfo=dt.UTC)
    assert retention_cutoff(late, 1).day == dt.date(2026, 6, 15)
    assert retention_cutoff(late, 1, "UTC").day == dt.date(2026, 6, 14)
    # a naive now is UTC
    assert retention_cutoff(late.replace(tzinfo=None), 1) == retention_cutoff(late, 1)


def test_zero_or_negative_windows_are_refused():
    with pytest.raises(ValueError):
        retention_cutoff(NOW, 0)
    with pytest.raises(ValueError):
        run_cutoff(NOW, -1)
    assert run_cutoff(NOW, 30) == NOW - dt.timedelta(days=30)


def test_parse_sales_day():
    assert parse_sales_day("2026-03-01") == dt.date(2026, 3, 1)
    for bad in (None, "", "01/03/2026", "2026-02-30", "2026-3-1"):
        assert parse_sales_day(bad) is None


# --- one fiche -------------------------------------------------------------------------------

OLD_DAY = CUTOFF.day - dt.timedelta(days=1)
OLD_TS = CUTOFF.instant - dt.timedelta(seconds=1)


def test_old_and_quiet_and_final_is_retired():
    assert is_retirable(fiche("1", OLD_DAY, OLD_TS), CUTOFF)


def test_open_audit_keeps_the_partition():
    assert not is_retirable(fiche("1", OLD_DAY, OLD_TS, open_audit=True), CUTOFF)


def test_sales_day_on_the_cutoff_is_kept():
    assert not is_retirable(fiche("1", CUTOFF.day, OLD_TS), CUTOFF)


def test_recent_activity_keeps_an_old_fiche():
    """An old fiche re-registered for a new audit or a refetch stays for a whole window again."""
    assert not is_retirable(fiche("1", OLD_DAY, CUTOFF.instant), CUTOFF)


def test_no_evidence_of_age_keeps_the_partition():
    assert not is_retirable(fiche("1", None, None), CUTOFF)
    assert is_retirable(FicheActivity("1", "garbage", OLD_TS, False), CUTOFF)
    assert is_retirable(fiche("1", OLD_DAY, None), CUTOFF)


# --- many fiches (properties) ----------------------------------------------------------------

fiche_ids = st.integers(min_value=1, max_value=60).map(str)
days = st.one_of(st.none(), st.integers(min_value=0, max_value=400).map(lambda n: BASE_DAY + dt.timedelta(days=n)))
stamps = st.one_of(
    st.none(),
    st.integers(min_value=0, max_value=400 * 24).map(lambda h: dt.datetime(2026, 1, 1) + dt.timedelta(hours=h)),
)
activities = st.builds(fiche, fiche_ids, days, stamps, st.booleans())
cutoffs = st.builds(
    lambda n, days_: retention_cutoff(dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(hours=n), days_),
    st.integers(min_value=0, max_value=500 * 24),
    st.integers(min_value=1, max_value=120),
)
key_lists = st.lists(fiche_ids, unique=True, max_size=60)


@given(key_lists, st.lists(activities, max_size=80), cutoffs, st.sets(fiche_ids, max_size=20),
       st.one_of(st.none(), st.integers(min_value=0, max_value=70)))
def test_never_retires_what_must_stay(existing, fiches, cutoff, protected, limit):
    out = partitions_to_retire(existing, fiches, cutoff, protected=protected, limit=limit)
    rows: dict[str, list[FicheActivity]] = {}
    for f in fiches:
        rows.setdefault(f.fiche_id, []).append(f)
    assert len(out) == len(set(out))
    assert set(out) <= set(existing), "only keys that exist as partitions"
    assert not set(out) & protected, "never a key a live run or backfill targets"
    if limit is not None:
        assert len(out) <= limit
    for key in out:
        assert key in rows, "a key without a fiche row has an unknown age: kept"
        for f in rows[key]:
            assert not f.has_open_audit, "never a fiche with a non-final audit"
            day = parse_sales_day(f.sales_date)
            assert day is None or day < cutoff.day, "never a fiche sold on or after the cutoff"
            assert f.last_activity is None or f.last_activity < cutoff.instant, "never a recently active fiche"
    # partition order (oldest registered first) is kept
    positions = [existing.index(k) for k in out]
    assert positions == sorted(positions)


@given(key_lists, st.lists(activities, max_size=80), cutoffs, st.sets(fiche_ids, max_size=20))
def test_retires_everything_eligible_without_a_limit(existing, fiches, cutoff, protected):
    out = set(partitions_to_retire(existing, fiches, cutoff, protected=protected))
    for key in existing:
        mine = [f for f in fiches if f.fiche_id == key]
        eligible = bool(mine) and key not in protected and all(is_retirable(f, cutoff) for f in mine)
        assert (key in out) == eligible


@given(key_lists, st.lists(activities, max_size=80), cutoffs, st.integers(min_value=0, max_value=70))
def test_a_limited_pass_is_a_prefix_of_the_full_pass(existing, fiches, cutoff, limit):
    full = partitions_to_retire(existing, fiches, cutoff)
    assert partitions_to_retire(existing, fiches, cutoff, limit=limit) == full[:limit]


@given(key_lists, st.lists(activities, max_size=80), cutoffs)
def test_a_second_pass_retires_nothing_more(existing, fiches, cutoff):
    first = partitions_to_retire(existing, fiches, cutoff)
    remaining = [k for k in existing if k not in set(first)]
    assert partitions_to_retire(remaining, fiches, cutoff) == []


def test_mixed_example():
    c = Cutoff(day=dt.date(2026, 3, 1), instant=dt.datetime(2026, 3, 1))
    old, old_ts = dt.date(2026, 1, 10), dt.datetime(2026, 1, 10, 9)
    fiches = [
        fiche("a", old, old_ts),                      # retired
        fiche("b", old, old_ts, open_audit=True),     # audit still running
        fiche("c", dt.date(2026, 3, 1), old_ts),      # sold on the cutoff
        fiche("d", old, dt.datetime(2026, 3, 2)),     # re-audited recently
        fiche("e", old, old_ts),                      # a run is queued for it
        fiche("g", old, old_ts),                      # not a partition any more
    ]
    existing = ["a", "b", "c", "d", "e", "f"]         # f has no fiche row
    assert partitions_to_retire(existing, fiches, c, protected={"e"}) == ["a"]


# --- chunks ----------------------------------------------------------------------------------


@given(st.lists(st.text(max_size=5), max_size=300), st.integers(min_value=1, max_value=40))
def test_chunks_cover_the_keys_exactly_in_order(keys, size):
    chunks = chunked(keys, size)
    assert [k for c in chunks for k in c] == keys
    assert all(1 <= len(c) <= size for c in chunks)
    assert all(len(c) == size for c in chunks[:-1]), "only the last chunk may be short"
    assert len(chunks) == -(-len(keys) // size)


def test_default_chunk_is_the_dagster_limit():
    keys = [str(i) for i in range(25_001)]
    chunks = chunked(keys)
    assert MAX_KEYS_PER_CALL == 10_000
    assert [len(c) for c in chunks] == [10_000, 10_000, 5_001]
    assert chunked([]) == []
    with pytest.raises(ValueError):
        chunked(keys, 0)


# --- what a run targets ----------------------------------------------------------------------


def test_run_partition_keys():
    order = ["10", "11", "12", "13", "14"]
    assert run_partition_keys({"dagster/partition": "12"}, order) == {"12"}
    rng = {"dagster/asset_partition_range_start": "11", "dagster/asset_partition_range_end": "13"}
    assert run_partition_keys(rng, order) == {"11", "12", "13"}
    assert run_partition_keys({}, order) == set()
    # an endpoint that vanished: the range cannot be resolved, the surviving end stays protected
    assert keys_in_range(order, "11", "99") == ["11"]
    assert keys_in_range(order, "13", "11") == ["11", "12", "13"]


@given(st.lists(st.integers(0, 200).map(str), unique=True, min_size=1, max_size=40), st.data())
def test_ranges_are_slices_of_the_partition_order(order, data):
    i = data.draw(st.integers(0, len(order) - 1))
    j = data.draw(st.integers(i, len(order) - 1))
    assert keys_in_range(order, order[i], order[j]) == order[i : j + 1]
