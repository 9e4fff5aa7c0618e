"""Calibration statistics (issue 11 §3) on generated rows: property tests of the invariants, and
hand-checked examples (confusion, main confusion, ISO weeks in Europe/Paris, unrecoverable rows,
markdown and charts)."""

from __future__ import annotations

import datetime as dt
import io
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from auditflow_dagster.core import calibration as cal
from auditflow_dagster.core.calibration import ReviewedVerdict

T0 = dt.datetime(2026, 1, 1)


@st.composite
def verdicts(draw) -> ReviewedVerdict:
    level = draw(st.sampled_from(cal.LEVELS))
    vocab = list(cal.VOCABULARY[level]) + ["UNKNOWN"]
    ai = draw(st.one_of(st.none(), st.sampled_from(vocab)))
    human = draw(st.sampled_from(vocab))
    pos = draw(st.integers(1, 3))
    return ReviewedVerdict(
        level=level, config_id=draw(st.integers(1, 3)), audit_id=draw(st.integers(1, 40)), step_position=pos,
        step_name=f"step {pos}", control_point_index=draw(st.integers(1, 3)) if level == "control_point" else None,
        point=draw(st.sampled_from(["Point A", "Point B"])) if level == "control_point" else None,
        ai_verdict=ai, human_verdict=human,
        reviewed_at=T0 + dt.timedelta(minutes=draw(st.integers(0, 60 * 24 * 120))),
        rerun_before_review=draw(st.booleans()), config_name=draw(st.one_of(st.none(), st.just("cfg"))))


def _check(stats: dict, rows: list[ReviewedVerdict], level: str) -> None:
    mine = [r for r in rows if r.level == level]
    usable = [r for r in mine if r.ai_verdict is not None]
    assert stats["reviewed"] == len(usable)
    assert stats["unrecoverable"] == len(mine) - len(usable)
    matrix = stats["confusion"]
    assert set(matrix) == {h for row in matrix.values() for h in row}  # square, same labels both ways
    assert list(matrix)[: len(cal.VOCABULARY[level])] == list(cal.VOCABULARY[level])
    total = sum(sum(row.values()) for row in matrix.values())
    diagonal = sum(matrix[a][a] for a in matrix)
    assert total == stats["reviewed"] and diagonal == stats["agreed"]
    assert stats["agreed"] == sum(1 for r in usable if r.ai_verdict == r.human_verdict)
    if stats["reviewed"]:
        assert 0.0 <= stats["agreement_rate"] <= 1.0
        assert stats["agreement_rate"] == diagonal / total
    else:
        assert stats["agreement_rate"] is None
    weeks = stats["weekly"]
    assert sum(w["reviewed"] for w in weeks) == stats["reviewed"]
    assert sum(w["agreed"] for w in weeks) == stats["agreed"]
    assert [w["week"] for w in weeks] == sorted({w["week"] for w in weeks})
    for w in weeks:
        assert w["reviewed"] > 0 and 0.0 <= w["agreement_rate"] <= 1.0 and w["agreement_rate"] == w["agreed"] / w["reviewed"]
    assert stats["rerun_assisted"] == sum(1 for r in usable if r.rerun_before_review) <= stats["reviewed"]
    main = stats["main_confusion"]
    off = {(a, h): n for a, row in matrix.items() for h, n in row.items() if a != h and n}
    if not off:
        assert main is None
    else:
        assert main["ai"] != main["human"] and main["count"] == max(off.values()) == off[(main["ai"], main["human"])]


@settings(max_examples=200, deadline=None)
@given(st.lists(verdicts(), max_size=60))
def test_invariants_hold_for_every_group(rows):
    report = cal.calibration_report(rows, {"config_id": None})
    assert report["filters"] == {"config_id": None}
    for level, key in (("control_point", "control_points"), ("step", "steps")):
        _check(report["totals"][key], rows, level)
        for c in report["configs"]:
            _check(c[key], [r for r in rows if r.config_id == c["config_id"]], level)
        # configs partition the totals
        assert sum(c[key]["reviewed"] for c in report["configs"]) == report["totals"][key]["reviewed"]
        assert sum(c[key]["agreed"] for c in report["configs"]) == report["totals"][key]["agreed"]
    for s in report["steps"]:
        _check(s, [r for r in rows if r.level == "step" and (r.config_id, r.step_position)
                   == (s["config_id"], s["step_position"])], "step")
    for p in report["control_points"]:
        _check(p, [r for r in rows if r.level == "control_point" and (r.config_id, r.step_position, r.control_point_index)
                   == (p["config_id"], p["step_position"], p["control_point_index"])], "control_point")
    # per-item groups partition their level, and are sorted by key
    assert sum(p["reviewed"] + p["unrecoverable"] for p in report["control_points"]) == \
        sum(1 for r in rows if r.level == "control_point")
    assert sum(s["reviewed"] + s["unrecoverable"] for s in report["steps"]) == sum(1 for r in rows if r.level == "step")
    keys = [(p["config_id"], p["step_position"], p["control_point_index"]) for p in report["control_points"]]
    assert keys == sorted(set(keys))
    # agreement per config equals a plain recount
    for c in report["configs"]:
        for level, key in (("control_point", "control_points"), ("step", "steps")):
            counted = Counter(r.ai_verdict == r.human_verdict for r in rows
                              if r.config_id == c["config_id"] and r.level == level and r.ai_verdict is not None)
            assert (c[key]["agreed"], c[key]["reviewed"]) == (counted[True], counted[True] + counted[False])


@settings(max_examples=50, deadline=None)
@given(st.lists(verdicts(), max_size=25))
def test_order_of_rows_does_not_matter(rows):
    assert cal.calibration_report(rows) == cal.calibration_report(list(reversed(rows)))


def _cp(ai, human, *, at=T0, cfg=1, pos=1, idx=1, audit=1, point="Annonce du nom", rerun=False) -> ReviewedVerdict:
    return ReviewedVerdict("control_point", cfg, audit, pos, "Présentation", idx, point, ai, human, at, rerun)


def _step(ai, human, *, at=T0, cfg=1, pos=1, audit=1) -> ReviewedVerdict:
    return ReviewedVerdict("step", cfg, audit, pos, "Présentation", None, None, ai, human, at)


def test_confusion_and_main_confusion_by_hand():
    rows = [_cp("PRESENT", "PRESENT", audit=1), _cp("PRESENT", "ABSENT", audit=2), _cp("PRESENT", "ABSENT", audit=3),
            _cp("ABSENT", "PRESENT", audit=4), _cp("PARTIEL", "PARTIEL", audit=5, rerun=True),
            _cp(None, "ABSENT", audit=6), _step("CONFORME", "NON_CONFORME"), _step("PARTIEL", "PARTIEL", audit=2)]
    report = cal.calibration_report(rows)
    [p] = report["control_points"]
    assert (p["reviewed"], p["agreed"], p["unrecoverable"], p["rerun_assisted"]) == (5, 2, 1, 1)
    assert p["agreement_rate"] == 0.4
    assert p["confusion"]["PRESENT"] == {"PRESENT": 1, "ABSENT": 2, "PARTIEL": 0, "NON_APPLICABLE": 0}
    assert p["confusion"]["ABSENT"]["PRESENT"] == 1
    assert p["main_confusion"] == {"ai": "PRESENT", "human": "ABSENT", "count": 2}
    [s] = report["steps"]
    assert (s["reviewed"], s["agreed"], s["agreement_rate"]) == (2, 1, 0.5)
    assert s["main_confusion"] == {"ai": "CONFORME", "human": "NON_CONFORME", "count": 1}
    assert list(s["confusion"]) == ["CONFORME", "NON_CONFORME", "PARTIEL"]
    # a tie between off-diagonal cells goes to vocabulary order (AI row first)
    tie = cal.verdict_stats([_cp("ABSENT", "PRESENT"), _cp("PRESENT", "PARTIEL")], "control_point")
    assert tie["main_confusion"] == {"ai": "PRESENT", "human": "PARTIEL", "count": 1}
    # an unknown stored value gets its own row and column, after the vocabulary
    odd = cal.verdict_stats([_step("UNKNOWN", "CONFORME")], "step")
    assert list(odd["confusion"]) == ["CONFORME", "NON_CONFORME", "PARTIEL", "UNKNOWN"]
    assert odd["confusion"]["UNKNOWN"]["CONFORME"] == 1 and odd["agreed"] == 0


def test_iso_weeks_are_parisian():
    # Sunday 2026-03-08 23:30 UTC is Monday 00:30 in Paris (UTC+1): ISO week 11, not 10
    assert cal.iso_week(dt.datetime(2026, 3, 8, 23, 30)) == "2026-W11"
    assert cal.iso_week(dt.datetime(2026, 3, 8, 22, 59)) == "2026-W10"
    # summer time (UTC+2): Sunday 22:30 UTC is already Monday
    assert cal.iso_week(dt.datetime(2026, 6, 7, 22, 30)) == "2026-W24"
    assert cal.iso_week(dt.datetime(2026, 6, 7, 21, 59, tzinfo=dt.UTC)) == "2026-W23"
    # ISO year boundary: 2027-01-01 (Friday) belongs to 2026-W53
    assert cal.iso_week(dt.datetime(2027, 1, 1, 12)) == "2026-W53"
    rows = [_cp("PRESENT", "PRESENT", at=dt.datetime(2026, 3, 8, 23, 30)),
            _cp("PRESENT", "ABSENT", at=dt.datetime(2026, 3, 8, 22, 0), audit=2)]
    weekly = cal.calibration_report(rows)["totals"]["control_points"]["weekly"]
    assert weekly == [{"week": "2026-W10", "reviewed": 1, "agreed": 0, "agreement_rate": 0.0},
                      {"week": "2026-W11", "reviewed": 1, "agreed": 1, "agreement_rate": 1.0}]


def test_paris_day_bounds():
    since, until = cal.paris_day_bounds(dt.date(2026, 3, 1), dt.date(2026, 3, 31))
    assert since == dt.datetime(2026, 2, 28, 23, 0)  # CET
    assert until == dt.datetime(2026, 3, 31, 22, 0)  # April 1st 00:00 CEST
    assert cal.paris_day_bounds(None, None) == (None, None)


def test_labels_come_from_the_latest_review():
    rows = [_cp("PRESENT", "PRESENT", at=T0, point="Ancien texte"),
            _cp("PRESENT", "PRESENT", at=T0 + dt.timedelta(days=1), audit=2, point="Nouveau texte")]
    assert cal.calibration_report(rows)["control_points"][0]["point"] == "Nouveau texte"


def test_rows_from_mappings_and_validation():
    row = {"level": "step", "config_id": 2, "audit_id": "7", "step_position": 3, "step_name": "S", "control_point_index": None,
           "point": None, "ai_verdict": "CONFORME", "human_verdict": "CONFORME", "reviewed_at": T0,
           "rerun_before_review": None, "config_name": "C"}
    report = cal.calibration_report([row])
    assert report["configs"][0]["config_name"] == "C" and report["steps"][0]["agreed"] == 1
    with pytest.raises(ValueError):
        ReviewedVerdict("step", 1, 1, 1, "S", 2, None, "CONFORME", "CONFORME", T0)
    with pytest.raises(ValueError):
        ReviewedVerdict("audit", 1, 1, 1, "S", None, None, "CONFORME", "CONFORME", T0)  # type: ignore[arg-type]


def test_markdown_and_charts():
    rows = [_cp("PRESENT", "ABSENT", at=T0 + dt.timedelta(days=7 * i), audit=i, idx=1 + i % 2) for i in range(5)]
    rows += [_step("CONFORME", "CONFORME", audit=i, at=T0 + dt.timedelta(days=3 * i)) for i in range(3)]
    report = cal.calibration_report(rows)
    md = cal.markdown_sections(report)
    assert set(md) == {"configs", "control_points", "steps", "weekly", "confusion_control_points", "confusion_steps"}
    assert "PRESENT → ABSENT ×3" in md["control_points"] and "0.0%" in md["control_points"]
    assert "| 1. Présentation | 3 | 100.0% |" in md["steps"]
    assert md["confusion_steps"].splitlines()[2] == "| CONFORME | 3 | 0 | 0 | 3 |"
    for png in (cal.trend_chart_png(report), cal.control_point_chart_png(report),
                cal.trend_chart_png(cal.calibration_report([])), cal.control_point_chart_png(cal.calibration_report([]))):
        img = Image.open(io.BytesIO(png))
        assert img.format == "PNG" and img.size[0] > 100
    empty = cal.markdown_sections(cal.calibration_report([]))
    assert empty["control_points"] == "no control-point review" and empty["weekly"] == "no review"
