"""``bench.batch.ideal_wall_seconds``: the lower bound the batch benchmark divides by."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from bench.batch import ideal_wall_seconds

ISSUE = dict(recordings=2, steps=18, crm_s=0.1, stt_s=1.0, llm_s=0.5, crm_cap=3, stt_cap=4, llm_cap=16, per_audit_cap=10)


def test_the_issue_defaults_are_llm_bound():
    r = ideal_wall_seconds(fiches=200, **ISSUE)
    # sales search + first details call + first transcription, then 3,600 calls 16 at a time
    assert r["critical"] == "llm"
    assert r["t_ideal"] == 0.1 + 0.1 + 1.0 + math.ceil(3600 / 16) * 0.5 == 113.7
    # STT: 400 transcriptions 4 at a time, then the last fiche's 18 steps (10 at a time: 2 waves)
    assert r["bound_stt"] == 0.2 + 100 + 1.0


def test_a_slow_stt_makes_it_stt_bound():
    r = ideal_wall_seconds(fiches=200, **{**ISSUE, "stt_s": 2.0})
    assert r["critical"] == "stt" and r["t_ideal"] == 0.2 + 200 + 1.0


@given(st.integers(1, 2000), st.integers(1, 4), st.integers(1, 40), st.integers(1, 8), st.integers(1, 8),
       st.integers(1, 32))
def test_the_bound_is_at_least_every_resources_work_and_grows_with_fiches(n, rec, steps, crm_cap, stt_cap, llm_cap):
    kw = {**ISSUE, "recordings": rec, "steps": steps, "crm_cap": crm_cap, "stt_cap": stt_cap, "llm_cap": llm_cap}
    r = ideal_wall_seconds(fiches=n, **kw)
    assert r["t_ideal"] >= n * steps * 0.5 / llm_cap
    assert r["t_ideal"] >= n * rec * 1.0 / stt_cap
    assert r["t_ideal"] >= n * 0.1 / crm_cap
    assert r["t_ideal"] == max(r["bound_crm"], r["bound_stt"], r["bound_llm"])
    assert ideal_wall_seconds(fiches=n + 1, **kw)["t_ideal"] >= r["t_ideal"]
