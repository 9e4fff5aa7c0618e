"""Compliance report aggregation (issue 10 §1) on hand-built rows: every section, the rounding,
the roll-up's exactness, ISO weeks, markdown and PNG charts."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from auditflow_dagster.core import reports as r


def audit(audit_id: int, score: float | str, niveau: str, *, groupe: str | None = "Azur", advisor: str | None = "Jean",
          critical: tuple[int, int] = (2, 2), removed: int = 0, total: int = 10, downgraded: int = 0) -> dict:
    return {"audit_id": audit_id, "fiche_id": str(1000 + audit_id), "groupe": groupe, "advisor": advisor,
            "score": score, "niveau": niveau, "is_compliant": niveau != "REJET", "critical_passed": critical[0],
            "critical_total": critical[1], "total_citations": total, "removed_citations": removed,
            "downgraded_control_points": downgraded, "steps_score_reduced": 1 if downgraded else 0,
            "steps_conforme_adjusted": 0}


def step(audit_id: int, position: int, name: str, conforme: str, critical: bool = False) -> dict:
    return {"audit_id": audit_id, "step_position": position, "step_name": name, "is_critical": critical,
            "conforme": conforme}


def point(audit_id: int, position: int, name: str, index: int, text: str, statut: str) -> dict:
    return {"audit_id": audit_id, "step_position": position, "step_name": name, "control_point_index": index,
            "point": text, "statut": statut}


AUDITS = [
    audit(1, 100, "EXCELLENT", advisor="Jean", removed=2, downgraded=1),
    audit(2, "70.01", "ACCEPTABLE", advisor="Jean"),
    audit(3, 70.00, "ACCEPTABLE", groupe="Corail", advisor="Marie"),
    audit(4, 0, "REJET", groupe=None, advisor=None, critical=(0, 2), total=0),
    audit(5, 89.99, "BON", groupe="Corail", advisor="  ", critical=(1, 2)),
    audit(6, 10.0, "REJET", groupe="Corail", advisor="Marie", critical=(1, 2), removed=1, total=4),
]
STEPS = [
    step(1, 1, "Identité", "CONFORME", True), step(1, 2, "Prix", "CONFORME"),
    step(4, 1, "Identité", "NON_CONFORME", True), step(4, 2, "Prix", "NON_CONFORME"),
    step(5, 1, "Identité", "PARTIEL", True), step(6, 1, "Identité", "CONFORME", True),
    step(6, 3, "Rétractation", "NON_CONFORME", True),
]
POINTS = [
    point(1, 1, "Identité", 1, "ORIAS", "PRESENT"), point(4, 1, "Identité", 1, "ORIAS", "ABSENT"),
    point(5, 1, "Identité", 1, "ORIAS", "PARTIEL"), point(6, 1, "Identité", 1, "ORIAS", "ABSENT"),
    point(4, 2, "Prix", 1, "Prix annoncé", "ABSENT"), point(1, 2, "Prix", 1, "Prix annoncé", "NON_APPLICABLE"),
    point(6, 3, "Rétractation", 1, "Délai de 14 jours", "PARTIEL"),
    point(6, 3, "Rétractation", 2, "Lettre de rétractation", "PRESENT"),
]


@pytest.fixture(scope="module")
def report() -> dict:
    return r.daily_report(AUDITS, STEPS, POINTS)


def test_totals_and_niveau_counts(report):
    t = report["totals"]
    assert t["audits"] == 6 and t["fiches"] == 6
    assert t["score_sum"] == 340.0 and t["mean_score"] == 56.67  # 340/6 = 56.666… half-up
    assert (t["min_score"], t["max_score"]) == (0.0, 100.0)
    assert t["compliant"] == 4 and t["compliant_rate"] == 0.6667
    assert t["audits_with_critical_failure"] == 3
    assert report["niveau_counts"] == {"EXCELLENT": 1, "BON": 1, "ACCEPTABLE": 2, "INSUFFISANT": 0, "REJET": 2}
    assert list(report["niveau_counts"]) == list(r.NIVEAUX)  # every niveau, in order, zeros included


def test_score_distribution_bins_are_left_closed_and_100_is_in_the_last(report):
    counts = {b["bin"]: b["count"] for b in report["score_distribution"]}
    assert len(counts) == 10 and sum(counts.values()) == 6
    assert counts["0-10"] == 1  # 0
    assert counts["10-20"] == 1  # 10.0: left-closed
    assert counts["70-80"] == 2  # 70.00 and 70.01
    assert counts["80-90"] == 1  # 89.99
    assert counts["90-100"] == 1  # 100


def test_per_groupe_and_per_advisor(report):
    groupes = {g["groupe"]: g for g in report["per_groupe"]}
    assert set(groupes) == {"Azur", "Corail", r.NO_GROUPE}
    assert groupes["Azur"]["audits"] == 2 and groupes["Azur"]["mean_score"] == 85.01  # (100 + 70.01)/2 = 85.005 → half-up
    assert groupes["Azur"]["compliant_rate"] == 1.0
    corail = groupes["Corail"]
    assert (corail["audits"], corail["mean_score"], corail["compliant"], corail["rejet"]) == (3, 56.66, 2, 1)
    assert corail["critical_failed"] == 2
    assert groupes[r.NO_GROUPE]["compliant_rate"] == 0.0
    advisors = {(a["advisor"], a["groupe"]): a for a in report["per_advisor"]}
    assert set(advisors) == {("Jean", "Azur"), ("Marie", "Corail"), (r.NO_ADVISOR, "Corail"), (r.NO_ADVISOR, r.NO_GROUPE)}
    assert advisors[("Marie", "Corail")]["mean_score"] == 40.0 and advisors[("Marie", "Corail")]["audits"] == 2


def test_critical_steps_count_partiel_as_a_failure(report):
    assert report["critical_steps"] == [
        {"step_position": 1, "step_name": "Identité", "evaluated": 4, "failed": 2, "failure_rate": 0.5},
        {"step_position": 3, "step_name": "Rétractation", "evaluated": 1, "failed": 1, "failure_rate": 1.0},
    ]  # "Prix" is not critical


def test_control_points_and_top_missed(report):
    by_text = {(p["step_name"], p["point"]): p for p in report["control_points"]}
    orias = by_text[("Identité", "ORIAS")]
    assert (orias["evaluated"], orias["missed"], orias["partial"], orias["present"]) == (4, 2, 1, 1)
    prix = by_text[("Prix", "Prix annoncé")]
    assert (prix["evaluated"], prix["not_applicable"], prix["missed"], prix["missed_rate"]) == (1, 1, 1, 1.0)
    top = [(p["step_name"], p["point"]) for p in report["top_missed_points"]]
    # most ABSENT first, then most PARTIEL; a point never missed nor partial is not listed
    assert top == [("Identité", "ORIAS"), ("Prix", "Prix annoncé"), ("Rétractation", "Délai de 14 jours")]


def test_top_missed_keeps_ten_in_checklist_order_on_ties():
    points = [point(1, pos, f"Étape {pos}", 1, f"Point {pos}", "ABSENT") for pos in range(12, 0, -1)]
    top = r.daily_report([audit(1, 50, "INSUFFISANT")], [], points)["top_missed_points"]
    assert [p["step_position"] for p in top] == list(range(1, 11))


def test_gating_statistics(report):
    assert report["gating"] == {"total_citations": 44, "removed_citations": 3, "downgraded_control_points": 1,
                                "steps_score_reduced": 1, "steps_conforme_adjusted": 0,
                                "audits_with_removed_citations": 2, "removed_rate": 0.0682}


def test_empty_day():
    report = r.daily_report([], [], [])
    assert report["totals"]["audits"] == 0 and report["totals"]["mean_score"] is None
    assert set(report["niveau_counts"].values()) == {0} and report["top_missed_points"] == []
    assert r.empty_report() == report
    assert r.rollup_reports([]) == report
    assert "no audit" in r.markdown_sections(report)["per_groupe"]


def test_rollup_of_days_equals_the_report_of_their_union(report):
    first, second = {1, 2, 5}, {3, 4, 6}

    def part(ids: set[int]) -> dict:
        return r.daily_report([a for a in AUDITS if a["audit_id"] in ids], [s for s in STEPS if s["audit_id"] in ids],
                              [p for p in POINTS if p["audit_id"] in ids])

    assert r.rollup_reports([part(first), part(second)]) == report
    assert r.rollup_reports([part(first), r.empty_report(), part(second)]) == report


def test_iso_weeks():
    assert r.iso_week_key("2026-03-09") == "2026-W11" and r.iso_week_key("2026-03-08") == "2026-W10"
    assert r.iso_week_key("2027-01-01") == "2026-W53"  # a Friday: still the last ISO week of 2026
    assert r.week_days("2026-W53") == [f"2026-12-{d}" for d in range(28, 32)] + ["2027-01-01", "2027-01-02", "2027-01-03"]
    daily = {"2026-03-08": r.daily_report(AUDITS[:1]), "2026-03-09": r.daily_report(AUDITS[1:3]),
             "2026-03-15": r.daily_report(AUDITS[3:])}
    weeks = r.weekly_rollups(daily)
    assert list(weeks) == ["2026-W10", "2026-W11"]
    assert weeks["2026-W11"]["days"] == ["2026-03-09", "2026-03-15"]
    assert weeks["2026-W11"]["totals"]["audits"] == 5 and weeks["2026-W10"]["totals"]["audits"] == 1


def test_markdown_sections(report):
    md = r.markdown_sections(report)
    assert set(md) == {"niveau_counts", "per_groupe", "advisors_top_bottom", "top_missed_points", "critical_steps",
                       "gating"}
    assert md["niveau_counts"].splitlines()[0] == "| niveau | audits | share |"
    assert "| REJET | 2 | 33.3% |" in md["niveau_counts"]
    assert "| Azur | 2 | 85.01 | 100.0% | 0 | 0 |" in md["per_groupe"]
    assert "| 1 | 1. Identité | ORIAS | 2 | 1 | 4 | 50.0% |" in md["top_missed_points"]
    assert "| citations removed | 3 |" in md["gating"]
    many = r.daily_report([audit(i, i * 7, "BON", advisor=f"A{i:02d}") for i in range(1, 14)])
    ranking = r.markdown_sections(many)["advisors_top_bottom"]
    assert "**Top 5**" in ranking and "**Bottom 5**" in ranking
    assert "| 1 | A13 |" in ranking and "| 13 | A01 |" in ranking and "A07" not in ranking


def test_cells_escape_pipes():
    md = r.markdown_sections(r.daily_report([audit(1, 50, "INSUFFISANT", groupe="A|B")]))["per_groupe"]
    assert "A\\|B" in md


@pytest.mark.parametrize("render", ["niveau", "scores", "groupes", "groupes-empty"])
def test_charts_are_png(report, render):
    png = {"niveau": lambda: r.niveau_chart_png(report["niveau_counts"]),
           "scores": lambda: r.score_histogram_png(report["score_distribution"]),
           "groupes": lambda: r.groupe_compliance_png(report["per_groupe"]),
           "groupes-empty": lambda: r.groupe_compliance_png([])}[render]()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    image.verify()
    assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 150
