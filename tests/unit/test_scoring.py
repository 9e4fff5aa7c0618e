"""Scoring rules: spec 03 §4.4 step helpers and §6 audit compliance."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditflow_dagster.core.scoring import (
    StepScoreInput,
    compute_compliance,
    derived_step_score,
    half_up,
    niveau_for,
    step_ratio,
    verdict_for_ratio,
)

# --------------------------------------------------------------------------- half_up


@pytest.mark.parametrize(
    ("value", "ndigits", "expected"),
    [
        (2.5, 0, Decimal("3")),
        (0.5, 0, Decimal("1")),
        (1.5, 0, Decimal("2")),
        (-2.5, 0, Decimal("-3")),
        (86.66666666666667, 2, Decimal("86.67")),
        (1.005, 2, Decimal("1.01")),  # repr is '1.005': rounds like the number the user sees
        (Decimal("12.345"), 2, Decimal("12.35")),
        (Fraction(1, 8), 2, Decimal("0.13")),
        (7, 0, Decimal("7")),
    ],
)
def test_half_up(value, ndigits, expected):
    assert half_up(value, ndigits) == expected


def test_half_up_differs_from_bankers_round():
    assert round(2.5) == 2  # the trap this helper exists for
    assert half_up(2.5) == 3


# --------------------------------------------------------------------------- step helpers


def test_step_ratio_counts_partiel_as_half_and_ignores_non_applicable():
    assert step_ratio(["PRESENT", "ABSENT", "PARTIEL", "NON_APPLICABLE"]) == pytest.approx(0.5)
    assert step_ratio(["NON_APPLICABLE", "NON_APPLICABLE"]) == 1.0
    assert step_ratio([]) == 1.0
    assert step_ratio(["PRESENT"] * 5 + ["ABSENT"]) == pytest.approx(5 / 6)
    assert step_ratio(["garbage", "PRESENT"]) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("ratio", "weight", "expected"),
    [
        (0.5, 5, 3),  # 2.5 → 3 (half-up, not banker's)
        (0.5, 8, 4),
        (5 / 6, 6, 5),
        (1 / 6, 3, 1),  # 0.5 → 1 even though 1/6 is inexact in binary
        (1.0, 10, 10),
        (0.0, 10, 0),
        (1.0, 0, 0),
        (1.0, -3, 0),
    ],
)
def test_derived_step_score(ratio, weight, expected):
    assert derived_step_score(ratio, weight) == expected


@pytest.mark.parametrize(
    ("ratio", "verdict"),
    [(1.0, "CONFORME"), (0.85, "CONFORME"), (17 / 20, "CONFORME"), (5 / 6, "PARTIEL"), (0.4, "PARTIEL"),
     (2 / 5, "PARTIEL"), (0.39, "NON_CONFORME"), (0.0, "NON_CONFORME")],
)
def test_verdict_for_ratio(ratio, verdict):
    assert verdict_for_ratio(ratio) == verdict


def test_niveau_for():
    assert niveau_for("CONFORME", 0.95) == "EXCELLENT"
    assert niveau_for("CONFORME", 0.9) == "BON"
    assert niveau_for("PARTIEL", 0.5) == "ACCEPTABLE"
    assert niveau_for("NON_CONFORME", 0.1) == "INSUFFISANT"


@given(st.lists(st.sampled_from(["PRESENT", "ABSENT", "PARTIEL", "NON_APPLICABLE"]), max_size=30),
       st.integers(min_value=0, max_value=10))
def test_derived_score_matches_exact_half_up(statuts, weight):
    ratio = step_ratio(statuts)
    applicable = [s for s in statuts if s != "NON_APPLICABLE"]
    exact = (Fraction(2 * applicable.count("PRESENT") + applicable.count("PARTIEL"), 2 * len(applicable))
             if applicable else Fraction(1))
    expected = int(half_up(exact * weight))
    assert derived_step_score(ratio, weight) == expected
    assert 0 <= derived_step_score(ratio, weight) <= weight


# --------------------------------------------------------------------------- compliance, 4-case table

WEIGHTS = [(1, 10, True), (2, 7, False), (3, 5, False), (4, 8, True)]


def _case(*results):
    return [
        StepScoreInput(position=p, weight=w, is_critical=c, score=r[0], conforme=r[1])
        for (p, w, c), r in zip(WEIGHTS, results, strict=True)
    ]


@pytest.mark.parametrize(
    ("results", "earned", "pct", "crit", "niveau", "compliant"),
    [
        ([(10, "CONFORME"), (5, "PARTIEL"), (6, "PARTIEL"), (6, "PARTIEL")], 26, "86.67", (1, 2), "REJET", False),
        ([(10, "CONFORME"), (5, "PARTIEL"), (5, "CONFORME"), (8, "CONFORME")], 28, "93.33", (2, 2), "EXCELLENT", True),
        ([(9, "CONFORME"), (0, "NON_CONFORME"), (3, "PARTIEL"), (7, "CONFORME")], 19, "63.33", (2, 2), "ACCEPTABLE", True),
        ([(9, "CONFORME"), (0, "NON_CONFORME"), (0, "NON_CONFORME"), (7, "CONFORME")], 16, "53.33", (2, 2), "INSUFFISANT", True),
    ],
    ids=["case1", "case2", "case3", "case4"],
)
def test_compliance_table(results, earned, pct, crit, niveau, compliant):
    c = compute_compliance(_case(*results))
    assert c.poids_total == 30
    assert c.poids_obtenu == earned
    assert c.score_percentage == Decimal(pct)
    assert (c.critical_passed, c.critical_total) == crit
    assert c.niveau == niveau
    assert c.is_compliant is compliant


def test_compliance_labels_and_result_dict():
    c = compute_compliance(_case((10, "CONFORME"), (5, "PARTIEL"), (6, "PARTIEL"), (6, "PARTIEL")))
    assert c.overall_score_label() == "26/30"
    assert c.percentage_label() == "86.67%"
    assert c.as_result_dict() == {
        "score": 86.67, "niveau": "REJET", "points_critiques": "1/2", "poids_obtenu": 26, "poids_total": 30,
    }
    assert c.percentage == pytest.approx(86.6666666, rel=1e-6)


def test_missing_rows_count_as_zero_and_not_conforme():
    steps = [StepScoreInput(1, 10, True, None, None), StepScoreInput(2, 10, False, 10, "CONFORME")]
    c = compute_compliance(steps)
    assert (c.poids_obtenu, c.poids_total) == (10, 20)
    assert c.niveau == "REJET"
    assert c.critical_passed == 0


def test_niveau_uses_unrounded_percentage():
    # 22499/25000 = 89.996 %: displays 90.00 but the level is decided on the exact value → BON.
    steps = [StepScoreInput(i, 10, False, 10, "CONFORME") for i in range(2249)]  # 22490 / 22490
    steps.append(StepScoreInput(9999, 9, False, 9, "CONFORME"))  # +9 / +9
    steps += [StepScoreInput(10_000 + i, 10, False, 0, "CONFORME") for i in range(250)]  # +0 / +2500
    steps.append(StepScoreInput(20_000, 1, False, 0, "CONFORME"))  # +0 / +1
    c = compute_compliance(steps)
    assert (c.poids_obtenu, c.poids_total) == (22499, 25000)
    assert c.score_percentage == Decimal("90.00")
    assert c.niveau == "BON"


def test_bonus_points_are_capped_and_empty_config_is_zero():
    c = compute_compliance([StepScoreInput(1, 5, False, 9, "CONFORME")])
    assert (c.poids_obtenu, c.poids_total, c.score_percentage) == (5, 5, Decimal("100.00"))
    empty = compute_compliance([])
    assert (empty.poids_total, empty.score_percentage, empty.niveau, empty.is_compliant) == (
        0, Decimal("0.00"), "INSUFFISANT", True)


# --------------------------------------------------------------------------- properties

_step = st.builds(
    StepScoreInput,
    position=st.integers(1, 50),
    weight=st.integers(1, 10),
    is_critical=st.booleans(),
    score=st.one_of(st.none(), st.integers(0, 15)),
    conforme=st.one_of(st.none(), st.sampled_from(["CONFORME", "PARTIEL", "NON_CONFORME"])),
)


@given(st.lists(_step, max_size=12))
def test_compliance_properties(steps):
    c = compute_compliance(steps)
    assert Decimal(0) <= c.score_percentage <= Decimal(100)
    assert c.score_percentage == c.score_percentage.quantize(Decimal("0.01"))
    has_failed_critical = any(s.is_critical and s.conforme != "CONFORME" for s in steps)
    assert (c.niveau == "REJET") is has_failed_critical
    assert c.is_compliant is (not has_failed_critical)
    assert 0 <= c.critical_passed <= c.critical_total


@given(st.lists(_step, min_size=1, max_size=12), st.data())
def test_compliance_monotonic_in_scores(steps, data):
    i = data.draw(st.integers(0, len(steps) - 1))
    bump = data.draw(st.integers(1, 5))
    raised = list(steps)
    s = raised[i]
    raised[i] = StepScoreInput(s.position, s.weight, s.is_critical, (s.score or 0) + bump, s.conforme)
    before, after = compute_compliance(steps), compute_compliance(raised)
    assert after.poids_obtenu >= before.poids_obtenu
    assert after.score_percentage >= before.score_percentage
    order = ["REJET", "INSUFFISANT", "ACCEPTABLE", "BON", "EXCELLENT"]
    assert order.index(after.niveau) >= order.index(before.niveau)
