"""Step-level derivations and audit-level compliance (spec 03 §4.4 and §6).

Why this module exists on its own: the same formulas are used by evidence gating (finalizer),
control-point reruns, human reviews and the asset check that recomputes stored summaries. If two
copies drifted, a stored audit could disagree with its own recomputation, so there is exactly one
implementation here and everybody imports it.

Rounding is always *half-up* (the legacy is JavaScript ``Math.round`` / ``toFixed``); Python's
``round()`` is banker's rounding and would turn 2.5 into 2, so it is never used for business values.
Ratios are rationals with small denominators (``(2·present + partiel) / (2·applicable)``); they are
recovered exactly before comparing them with the 0.40/0.85/0.95 thresholds or rounding ``ratio·W``,
so a float artefact such as ``0.8499999999`` can never change a verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

__all__ = [
    "Compliance",
    "StepScoreInput",
    "compute_compliance",
    "derived_step_score",
    "half_up",
    "niveau_for",
    "step_ratio",
    "verdict_for_ratio",
]

# Thresholds of spec 03 §4.4 (step verdict) and §6 (audit level), as exact fractions.
_CONFORME_MIN = Fraction(85, 100)
_PARTIEL_MIN = Fraction(40, 100)
_EXCELLENT_STEP_MIN = Fraction(95, 100)
# Audit levels on the *unrounded* percentage, highest first.
_AUDIT_LEVELS: tuple[tuple[int, str], ...] = ((90, "EXCELLENT"), (75, "BON"), (60, "ACCEPTABLE"))

# Ratios have denominator 2·|A| (|A| = applicable control points); 10_000 leaves a huge margin while
# staying far coarser than float noise (~1e-16), so the exact rational is always recovered.
_MAX_RATIO_DENOMINATOR = 10_000


def half_up(x: float | int | Decimal | Fraction, ndigits: int = 0) -> Decimal:
    """Round ``x`` half away from zero to ``ndigits`` decimals (JS ``Math.round``/``toFixed`` parity).

    Floats go through their shortest ``repr`` so ``86.66666666666667`` rounds like the number the
    user sees, not like its binary expansion; Fractions are divided exactly in Decimal context.
    """
    if isinstance(x, Decimal):
        d = x
    elif isinstance(x, Fraction):
        d = Decimal(x.numerator) / Decimal(x.denominator)
    elif isinstance(x, bool):
        d = Decimal(int(x))
    elif isinstance(x, int):
        d = Decimal(x)
    else:
        if not math.isfinite(x):
            raise ValueError(f"cannot round non-finite value {x!r}")
        d = Decimal(repr(float(x)))
    return d.quantize(Decimal(1).scaleb(-ndigits), rounding=ROUND_HALF_UP)


def _exact_ratio(ratio: float | Fraction) -> Fraction:
    if isinstance(ratio, Fraction):
        return ratio
    return Fraction(ratio).limit_denominator(_MAX_RATIO_DENOMINATOR)


def _step_ratio_exact(statuts: list[str]) -> Fraction:
    applicable = [s for s in statuts if s != "NON_APPLICABLE"]
    if not applicable:
        # Nothing could be checked: the step is not penalised (spec 03 §4.4).
        return Fraction(1)
    present = sum(1 for s in applicable if s == "PRESENT")
    partiel = sum(1 for s in applicable if s == "PARTIEL")
    return Fraction(2 * present + partiel, 2 * len(applicable))


def step_ratio(statuts: list[str]) -> float:
    """(#PRESENT + 0.5·#PARTIEL) / #applicable, with NON_APPLICABLE points left out; 1.0 if none apply.

    Unknown status strings count as applicable and earn nothing (like ABSENT): an unreadable status
    must never raise the score.
    """
    return float(_step_ratio_exact(statuts))


def derived_step_score(ratio: float, weight: int) -> int:
    """``clamp(floor(ratio·W + 0.5), 0, W)`` with ``W = max(0, weight)`` — half-up, exact."""
    w = max(0, int(weight))
    value = math.floor(_exact_ratio(ratio) * w + Fraction(1, 2))
    return max(0, min(w, value))


def verdict_for_ratio(ratio: float) -> str:
    """CONFORME at ≥ 0.85, PARTIEL at ≥ 0.40, else NON_CONFORME (spec 03 §4.4)."""
    r = _exact_ratio(ratio)
    if r >= _CONFORME_MIN:
        return "CONFORME"
    if r >= _PARTIEL_MIN:
        return "PARTIEL"
    return "NON_CONFORME"


def niveau_for(conforme: str, ratio: float) -> str:
    """Step ``niveau_conformite`` that accompanies a derived verdict.

    CONFORME → EXCELLENT when ratio ≥ 0.95 else BON; PARTIEL → ACCEPTABLE; anything else →
    INSUFFISANT. (Step levels have no effect on the audit level, which is computed in §6.)
    """
    if conforme == "CONFORME":
        return "EXCELLENT" if _exact_ratio(ratio) >= _EXCELLENT_STEP_MIN else "BON"
    if conforme == "PARTIEL":
        return "ACCEPTABLE"
    return "INSUFFISANT"


@dataclass(frozen=True)
class StepScoreInput:
    """One *configured* step as seen by the audit summary.

    ``score``/``conforme`` are ``None`` when there is no result row for the step: it still weighs in
    the denominator (a failed step costs points), earns 0 and is not CONFORME.
    """

    position: int
    weight: int
    is_critical: bool
    score: int | None
    conforme: str | None


@dataclass(frozen=True)
class Compliance:
    """Audit summary of spec 03 §6 (what ``audits`` columns and ``result_data.compliance`` hold)."""

    poids_total: int
    poids_obtenu: int
    percentage: float  # unrounded, for display only; the level is decided on the exact value
    score_percentage: Decimal  # 2 decimals, half-up; also stored as overall_score
    niveau: str
    is_compliant: bool
    critical_passed: int
    critical_total: int

    def as_result_dict(self) -> dict[str, object]:
        """``result_data.compliance`` shape."""
        return {
            "score": float(self.score_percentage),
            "niveau": self.niveau,
            "points_critiques": f"{self.critical_passed}/{self.critical_total}",
            "poids_obtenu": self.poids_obtenu,
            "poids_total": self.poids_total,
        }

    def overall_score_label(self) -> str:
        """Event label such as ``"26/30"``."""
        return f"{self.poids_obtenu}/{self.poids_total}"

    def percentage_label(self) -> str:
        """Event label such as ``"86.67%"`` (JS ``toFixed(2)`` parity)."""
        return f"{self.score_percentage:.2f}%"


def _earned(score: int | None, weight: int) -> int:
    if score is None or isinstance(score, bool):
        return 0
    try:
        s = int(score)
    except (TypeError, ValueError):
        return 0
    # "Bonus" points above the weight are capped; a negative score (never valid) earns nothing.
    return max(0, min(s, max(0, weight)))


def compute_compliance(steps: list[StepScoreInput]) -> Compliance:
    """Compute the audit summary from the configured steps (spec 03 §6).

    * ``poids_total`` = Σ weights of configured steps (failed/missing ones included);
    * ``poids_obtenu`` = Σ min(score, max(0, weight));
    * ``score_percentage`` = 100·obtenu/total rounded half-up to 2 decimals (0 when total is 0);
    * REJET as soon as one critical step is not CONFORME (PARTIEL fails), otherwise the level is
      read on the **unrounded** percentage (89.996 % is BON even though it displays 90.00 %).
    """
    poids_total = sum(s.weight for s in steps)
    poids_obtenu = sum(_earned(s.score, s.weight) for s in steps)
    critical_total = sum(1 for s in steps if s.is_critical)
    critical_passed = sum(1 for s in steps if s.is_critical and s.conforme == "CONFORME")

    if poids_total > 0:
        exact_pct = Fraction(100 * poids_obtenu, poids_total)
    else:
        exact_pct = Fraction(0)
    score_percentage = half_up(exact_pct, 2)

    if critical_passed < critical_total:
        niveau = "REJET"
    else:
        niveau = "INSUFFISANT"
        for threshold, label in _AUDIT_LEVELS:
            if exact_pct >= threshold:
                niveau = label
                break

    return Compliance(
        poids_total=poids_total,
        poids_obtenu=poids_obtenu,
        percentage=float(exact_pct),
        score_percentage=score_percentage,
        niveau=niveau,
        is_compliant=niveau != "REJET",  # INSUFFISANT still counts as compliant (legacy parity)
        critical_passed=critical_passed,
        critical_total=critical_total,
    )
