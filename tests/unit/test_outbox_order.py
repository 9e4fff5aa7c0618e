"""Outbox rows are released exactly once, in id order, whatever order commits make them visible."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from auditflow_dagster.core.outbox_order import OrderedRelease


def test_a_late_commit_holds_back_later_rows_then_both_go_in_order():
    r = OrderedRelease[str](safe=10, gap_timeout=5)
    assert r.offer([(12, "b")], now=0) == []  # 11 still in flight
    assert r.offer([(12, "b")], now=1) == []
    assert r.offer([(11, "a"), (12, "b")], now=2) == [(11, "a"), (12, "b")]
    assert r.safe == 12 and not r.pending


def test_a_rolled_back_id_is_skipped_after_the_timeout():
    r = OrderedRelease[str](safe=0, gap_timeout=5)
    assert r.offer([(1, "a"), (3, "c")], now=0) == [(1, "a")]
    assert r.offer([], now=4.9) == []
    assert r.offer([], now=5.0) == [(3, "c")]
    assert r.safe == 3


def test_nothing_above_is_not_a_gap():
    r = OrderedRelease[str](safe=5)
    assert r.offer([], now=100) == [] and r.safe == 5 and not r.gap_since


@given(st.permutations(list(range(1, 30))), st.lists(st.integers(1, 5), min_size=1, max_size=30))
def test_any_visibility_order_releases_each_row_once_in_order(order, batch_sizes):
    r = OrderedRelease[int](safe=0, gap_timeout=1e9)  # no rollbacks: every id eventually appears
    out: list[int] = []
    i, t = 0, 0.0
    for size in batch_sizes * 30:
        if i >= len(order):
            break
        batch = order[i:i + size]
        i += size
        t += 1
        out += [rid for rid, _ in r.offer([(x, x) for x in batch], now=t)]
    out += [rid for rid, _ in r.offer([(x, x) for x in order[i:]], now=t + 1)]
    assert out == list(range(1, 30))
