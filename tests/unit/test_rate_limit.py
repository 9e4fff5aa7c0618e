"""Token bucket rules for the provider start rate (spec 02 §2)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from auditflow_dagster.core.rate_limit import BucketState, burst_for, take


def test_burst_is_half_rounded_up():
    assert [burst_for(n) for n in (1, 2, 9, 10, 11)] == [1, 1, 5, 5, 6]


def test_full_bucket_grants_the_burst_then_paces():
    state, granted = BucketState(5.0, 0.0), 0
    for _ in range(7):
        ok, state, wait = take(state, 0.0, 10, 5)
        granted += ok
    assert granted == 5 and wait == 6.0  # 10/min → one token every 6 s
    ok, state, _ = take(state, 6.0, 10, 5)
    assert ok


@given(st.integers(1, 600), st.lists(st.floats(0, 120), min_size=1, max_size=200))
def test_never_more_than_burst_plus_rate_in_any_window(per_minute, offsets):
    burst = burst_for(per_minute)
    times = sorted(offsets)
    state = BucketState(float(burst), 0.0)
    grants = []
    for t in times:
        ok, state, wait = take(state, t, per_minute, burst)
        if ok:
            grants.append(t)
        else:
            assert wait > 0
    for i, start in enumerate(grants):
        for j in range(i, len(grants)):
            window = grants[j] - start
            assert j - i + 1 <= burst + window * per_minute / 60.0 + 1e-6


@given(st.integers(1, 600), st.floats(0, 1))
def test_waiting_the_advised_time_is_enough(per_minute, tokens):
    burst = burst_for(per_minute)
    ok, state, wait = take(BucketState(tokens, 100.0), 100.0, per_minute, burst)
    if not ok:
        ok2, _, _ = take(state, 100.0 + wait + 1e-9, per_minute, burst)
        assert ok2
