"""Rules that keep a progressive fetch job from waiting forever for days no run will deliver."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from auditflow_dagster.core.progress_watch import days_to_fail, run_partition_days

DAYS = [(dt.date(2026, 5, 1) + dt.timedelta(days=i)).isoformat() for i in range(10)]
STATUSES = ["QUEUED", "STARTING", "STARTED", "SUCCESS", "FAILURE", "CANCELED", "CANCELING"]


def one(day: str) -> dict[str, str]:
    return {"dagster/partition": day}


def span(a: str, b: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": a, "dagster/asset_partition_range_end": b}


def test_partition_days_from_tags():
    assert run_partition_days(one("2026-05-03")) == ["2026-05-03"]
    assert run_partition_days(span("2026-02-27", "2026-03-02")) == ["2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02"]
    assert run_partition_days({}) == []
    assert run_partition_days(span("2026-05-01", "nope")) == []


def test_failed_run_fails_its_days_only_while_others_run():
    remaining = DAYS[:6]
    runs = [("FAILURE", span(DAYS[0], DAYS[2])), ("STARTED", span(DAYS[3], DAYS[5]))]
    assert days_to_fail(remaining, runs, backfill_finished=False) == DAYS[:3]


def test_a_retry_in_progress_protects_the_day():
    runs = [("FAILURE", one(DAYS[0])), ("QUEUED", one(DAYS[0]))]
    assert days_to_fail([DAYS[0]], runs, backfill_finished=False) == []
    assert days_to_fail([DAYS[0]], runs, backfill_finished=True) == []


def test_finished_backfill_fails_everything_left():
    assert days_to_fail(DAYS[:4], [("SUCCESS", one(DAYS[0]))], backfill_finished=True) == DAYS[:4]
    assert days_to_fail(DAYS[:4], [], backfill_finished=True) == DAYS[:4]
    assert days_to_fail(DAYS[:4], [], backfill_finished=False) == []


runs_strategy = st.lists(st.tuples(st.sampled_from(STATUSES), st.sampled_from(DAYS).map(one)), max_size=12)


@given(st.lists(st.sampled_from(DAYS), unique=True), runs_strategy, st.booleans())
def test_never_fails_a_day_a_run_may_still_deliver(remaining, runs, finished):
    lost = days_to_fail(remaining, runs, backfill_finished=finished)
    pending = {t["dagster/partition"] for s, t in runs if s in ("QUEUED", "STARTING", "STARTED", "CANCELING")}
    assert set(lost) <= set(remaining)
    assert not (set(lost) & pending)
    assert lost == [d for d in remaining if d in set(lost)]  # job order kept
    if not finished:
        bad = {t["dagster/partition"] for s, t in runs if s in ("FAILURE", "CANCELED")}
        assert set(lost) <= bad


def test_audit_abandoned_only_when_old_and_no_run_is_live():
    from auditflow_dagster.core.progress_watch import audit_is_abandoned

    assert audit_is_abandoned(["FAILURE"], 31, 30) and audit_is_abandoned([], 31, 30)
    assert audit_is_abandoned(["SUCCESS", "CANCELED"], 30, 30)
    assert not audit_is_abandoned(["FAILURE"], 29.9, 30)  # too young
    assert not audit_is_abandoned(["FAILURE", "STARTED"], 500, 30)  # a re-execution is still writing
    assert not audit_is_abandoned(["QUEUED"], 500, 30)
