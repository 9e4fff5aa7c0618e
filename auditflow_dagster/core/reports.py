"""Compliance reports (issue 10 §1): the day's audits aggregated for a QA lead, and the weekly
roll-up of the daily reports — pure functions over plain rows (pandas for the aggregation,
matplotlib with the Agg canvas for the charts; no Dagster, no SQL).

**Inputs** (one report = one set of audits; the caller selects them, e.g. the latest completed,
not deleted audit per fiche × config of a sales day):

* ``audits``: dicts with :data:`AUDIT_FIELDS` — ``score`` is the stored ``score_percentage``
  (0–100, 2 decimals), ``advisor`` the fiche's ``attribution_user_nom``, ``groupe`` its effective
  groupe, the ``*_citations``/``downgraded_control_points``/``steps_*`` counters the audit's
  evidence-gating statistics (``result_data.metadata.evidence_gating``);
* ``steps``: dicts with :data:`STEP_FIELDS` (one per stored step result);
* ``points``: dicts with :data:`POINT_FIELDS` (one per stored control-point verdict).

**Definitions.** A *missed* control point is ``ABSENT``; ``PARTIEL`` is counted apart as
*partial*; ``NON_APPLICABLE`` is not evaluated. Control points are keyed by their text (step name,
point), so the same checklist line is one row whichever config position it has. A *critical-step
failure* is a critical step whose verdict is not ``CONFORME`` (``PARTIEL`` fails, spec 03 §6).
An audit is *compliant* when its ``is_compliant`` flag says so (every niveau but REJET).

**Additivity.** Every stored section is made of counts and sums (means and rates are derived from
them), so :func:`rollup_reports` merges daily reports exactly: the roll-up of the days equals the
report of the union of their audits (ISO weeks: :func:`weekly_rollups`). Scores are summed in
hundredths (integers) and means rounded half-up to 2 decimals, like PostgreSQL's
``ROUND(AVG(numeric), 2)``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from auditflow_dagster.core.report_render import md_table, pct_text, render_png
from auditflow_dagster.core.scoring import half_up

if TYPE_CHECKING:
    import pandas as pd
else:
    class _Pandas:
        """pandas, imported on first use: every run process imports this module with the code
        location (``definitions.py``) and only report runs aggregate, so an interactive audit does
        not pay for pandas at start (measured by ``bench.interactive``)."""

        def __getattr__(self, name: str) -> Any:
            import pandas

            return getattr(pandas, name)

    pd = _Pandas()

__all__ = [
    "AUDIT_FIELDS",
    "NIVEAUX",
    "POINT_FIELDS",
    "STEP_FIELDS",
    "daily_report",
    "empty_report",
    "groupe_compliance_png",
    "iso_week_key",
    "markdown_sections",
    "niveau_chart_png",
    "rollup_reports",
    "score_histogram_png",
    "week_days",
    "weekly_rollups",
]

NIVEAUX: tuple[str, ...] = ("EXCELLENT", "BON", "ACCEPTABLE", "INSUFFISANT", "REJET")
NO_GROUPE = "(sans groupe)"
NO_ADVISOR = "(non attribué)"
TOP_MISSED = 10
#: Score bins of width 10: [0,10), [10,20) … [90,100] (100 falls in the last one).
SCORE_BIN_WIDTH = 10
SCORE_BINS: tuple[tuple[int, int], ...] = tuple((lo, lo + SCORE_BIN_WIDTH) for lo in range(0, 100, SCORE_BIN_WIDTH))

GATING_FIELDS: tuple[str, ...] = ("total_citations", "removed_citations", "downgraded_control_points",
                                  "steps_score_reduced", "steps_conforme_adjusted")
AUDIT_FIELDS: tuple[str, ...] = ("audit_id", "fiche_id", "groupe", "advisor", "score", "niveau", "is_compliant",
                                 "critical_passed", "critical_total", *GATING_FIELDS)
STEP_FIELDS: tuple[str, ...] = ("audit_id", "step_position", "step_name", "is_critical", "conforme")
POINT_FIELDS: tuple[str, ...] = ("audit_id", "step_position", "step_name", "control_point_index", "point", "statut")

_GROUP_SUMS = ("audits", "score_sum_cents", "compliant", "rejet", "critical_failed")
_POINT_COUNTS = ("evaluated", "missed", "partial", "present", "not_applicable")


# --------------------------------------------------------------------------------------------- #
# Small helpers
# --------------------------------------------------------------------------------------------- #


def _label(value: Any, default: str) -> str:
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip()
    return text or default


def _cents(score: Any) -> int:
    """A 2-decimal percentage as integer hundredths (exact for Decimal, str and float inputs)."""
    if score is None:
        return 0
    return int(half_up(score if not isinstance(score, str) else float(score), 2) * 100)


def _mean(cents_sum: int, n: int) -> float | None:
    """Mean of ``n`` scores summing to ``cents_sum`` hundredths, half-up to 2 decimals."""
    return float(half_up(Fraction(int(cents_sum), 100 * int(n)), 2)) if n else None


def _rate(part: int, whole: int) -> float | None:
    """``part / whole`` as a fraction rounded half-up to 4 decimals (None when ``whole`` is 0)."""
    return float(half_up(Fraction(int(part), int(whole)), 4)) if whole else None


def _frame(rows: Iterable[Mapping[str, Any]] | pd.DataFrame, fields: Sequence[str]) -> pd.DataFrame:
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    for f in fields:
        if f not in df.columns:
            df[f] = pd.Series([None] * len(df), dtype=object)
    return df[list(fields)]


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows (numpy scalars → Python, NaN → None)."""
    out = []
    for rec in df.to_dict(orient="records"):
        row = {}
        for k, v in rec.items():
            if hasattr(v, "item"):
                v = v.item()
            if isinstance(v, float) and math.isnan(v):
                v = None
            row[str(k)] = v
        out.append(row)
    return out


# --------------------------------------------------------------------------------------------- #
# Additive parts: counts and sums only
# --------------------------------------------------------------------------------------------- #


def _audit_frame(audits: Iterable[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    df = _frame(audits, AUDIT_FIELDS)
    df["groupe"] = [_label(g, NO_GROUPE) for g in df["groupe"]]
    df["advisor"] = [_label(a, NO_ADVISOR) for a in df["advisor"]]
    df["niveau"] = [_label(n, "PENDING") for n in df["niveau"]]
    df["score_sum_cents"] = [_cents(s) for s in df["score"]]
    df["compliant"] = [int(bool(c)) for c in df["is_compliant"]]
    df["rejet"] = (df["niveau"] == "REJET").astype(int)
    passed = pd.to_numeric(df["critical_passed"], errors="coerce").fillna(0).astype(int)
    total = pd.to_numeric(df["critical_total"], errors="coerce").fillna(0).astype(int)
    df["critical_failed"] = (passed < total).astype(int)
    for f in GATING_FIELDS:
        df[f] = pd.to_numeric(df[f], errors="coerce").fillna(0).astype(int)
    df["audits"] = 1
    return df


def _group_sums(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    if df.empty:
        return pd.DataFrame(columns=[*keys, *_GROUP_SUMS])
    return df.groupby(keys, as_index=False, sort=True)[list(_GROUP_SUMS)].sum()


def _parts(audits: Any, steps: Any, points: Any) -> dict[str, Any]:
    a = _audit_frame(audits)
    bins = [0] * len(SCORE_BINS)
    for c in a["score_sum_cents"]:
        bins[min(max(int(c) // (SCORE_BIN_WIDTH * 100), 0), len(SCORE_BINS) - 1)] += 1
    s = _frame(steps, STEP_FIELDS)
    s = s[s["is_critical"].fillna(False).astype(bool)].copy()
    s["evaluated"] = 1
    s["failed"] = (s["conforme"] != "CONFORME").astype(int)
    critical = (s.groupby("step_name", as_index=False, sort=True).agg(
        step_position=("step_position", "min"), evaluated=("evaluated", "sum"), failed=("failed", "sum"))
        if not s.empty else pd.DataFrame(columns=["step_name", "step_position", "evaluated", "failed"]))
    p = _frame(points, POINT_FIELDS)
    p["missed"] = (p["statut"] == "ABSENT").astype(int)
    p["partial"] = (p["statut"] == "PARTIEL").astype(int)
    p["present"] = (p["statut"] == "PRESENT").astype(int)
    p["not_applicable"] = (p["statut"] == "NON_APPLICABLE").astype(int)
    p["evaluated"] = 1 - p["not_applicable"]
    cps = (p.groupby(["step_name", "point"], as_index=False, sort=True).agg(
        step_position=("step_position", "min"), **{c: (c, "sum") for c in _POINT_COUNTS})
        if not p.empty else pd.DataFrame(columns=["step_name", "point", "step_position", *_POINT_COUNTS]))
    niveau = a["niveau"].value_counts()
    return {
        "totals": {
            "audits": len(a), "fiches": int(a["fiche_id"].nunique()), "score_sum_cents": int(a["score_sum_cents"].sum()),
            "compliant": int(a["compliant"].sum()), "critical_failed": int(a["critical_failed"].sum()),
            "min_score_cents": int(a["score_sum_cents"].min()) if len(a) else None,
            "max_score_cents": int(a["score_sum_cents"].max()) if len(a) else None,
        },
        "niveau": {str(k): int(v) for k, v in niveau.items()},
        "bins": bins,
        "groupe": _group_sums(a, ["groupe"]),
        "advisor": _group_sums(a, ["advisor", "groupe"]),
        "critical": critical,
        "points": cps,
        "gating": {f: int(a[f].sum()) for f in GATING_FIELDS}
        | {"audits_with_removed_citations": int((a["removed_citations"] > 0).sum())},
    }


def _with_means(df: pd.DataFrame, keys: list[str]) -> list[dict[str, Any]]:
    rows = []
    for rec in _records(df.sort_values(keys, kind="stable")):
        n = int(rec["audits"])
        cents = int(rec.pop("score_sum_cents"))
        rows.append({**{k: rec[k] for k in keys}, "audits": n, "score_sum": cents / 100, "mean_score": _mean(cents, n),
                     "compliant": int(rec["compliant"]), "compliant_rate": _rate(int(rec["compliant"]), n),
                     "rejet": int(rec["rejet"]), "critical_failed": int(rec["critical_failed"])})
    return rows


def _finish(parts: dict[str, Any]) -> dict[str, Any]:
    """The JSON report (sections are lists/dicts of plain values) from additive parts."""
    t = parts["totals"]
    n = int(t["audits"])
    niveau_counts = {k: int(parts["niveau"].get(k, 0)) for k in NIVEAUX}
    niveau_counts |= {k: int(v) for k, v in sorted(parts["niveau"].items()) if k not in NIVEAUX and v}
    critical = parts["critical"]
    critical_rows = [
        {"step_position": int(r["step_position"]), "step_name": r["step_name"], "evaluated": int(r["evaluated"]),
         "failed": int(r["failed"]), "failure_rate": _rate(int(r["failed"]), int(r["evaluated"]))}
        for r in _records(critical.sort_values(["step_position", "step_name"], kind="stable"))
    ]
    points = parts["points"]
    point_rows = [
        {"step_position": int(r["step_position"]), "step_name": r["step_name"], "point": r["point"],
         **{c: int(r[c]) for c in _POINT_COUNTS}, "missed_rate": _rate(int(r["missed"]), int(r["evaluated"]))}
        for r in _records(points.sort_values(["step_position", "step_name", "point"], kind="stable"))
    ]
    g = parts["gating"]
    return {
        "totals": {
            "audits": n, "fiches": int(t["fiches"]), "score_sum": int(t["score_sum_cents"]) / 100,
            "mean_score": _mean(int(t["score_sum_cents"]), n),
            "min_score": None if t["min_score_cents"] is None else int(t["min_score_cents"]) / 100,
            "max_score": None if t["max_score_cents"] is None else int(t["max_score_cents"]) / 100,
            "compliant": int(t["compliant"]), "compliant_rate": _rate(int(t["compliant"]), n),
            "audits_with_critical_failure": int(t["critical_failed"]),
        },
        "niveau_counts": niveau_counts,
        "score_distribution": [
            {"bin": f"{lo}-{hi}", "lower": lo, "upper": hi, "count": int(c)}
            for (lo, hi), c in zip(SCORE_BINS, parts["bins"], strict=True)
        ],
        "per_groupe": _with_means(parts["groupe"], ["groupe"]),
        "per_advisor": _with_means(parts["advisor"], ["advisor", "groupe"]),
        "critical_steps": critical_rows,
        "control_points": point_rows,
        "top_missed_points": top_missed(point_rows),
        "gating": {**{k: int(g.get(k, 0)) for k in GATING_FIELDS},
                   "audits_with_removed_citations": int(g.get("audits_with_removed_citations", 0)),
                   "removed_rate": _rate(int(g.get("removed_citations", 0)), int(g.get("total_citations", 0)))},
    }


def top_missed(point_rows: list[dict[str, Any]], n: int = TOP_MISSED) -> list[dict[str, Any]]:
    """The ``n`` most missed control points: most ``ABSENT`` first, then most ``PARTIEL``, then
    checklist order; only points missed or partial at least once."""
    rows = [r for r in point_rows if r["missed"] + r["partial"] > 0]
    rows.sort(key=lambda r: (-r["missed"], -r["partial"], r["step_position"], r["step_name"], r["point"]))
    return rows[:n]


# --------------------------------------------------------------------------------------------- #
# Public: daily report, roll-ups
# --------------------------------------------------------------------------------------------- #


def daily_report(audits: Iterable[Mapping[str, Any]] | pd.DataFrame,
                 steps: Iterable[Mapping[str, Any]] | pd.DataFrame = (),
                 points: Iterable[Mapping[str, Any]] | pd.DataFrame = ()) -> dict[str, Any]:
    """The report of one set of audits (see the module docstring for the row shapes).

    Sections: ``totals``, ``niveau_counts`` (every niveau, zeros included), ``score_distribution``,
    ``per_groupe``, ``per_advisor`` (advisor × groupe), ``critical_steps``, ``control_points`` (all
    of them, so roll-ups stay exact), ``top_missed_points`` (10) and ``gating``."""
    return _finish(_parts(audits, steps, points))


def empty_report() -> dict[str, Any]:
    return daily_report([])


def _parts_of(report: Mapping[str, Any]) -> dict[str, Any]:
    """Additive parts back from a stored report."""
    t = report["totals"]

    def frame(rows: list[dict[str, Any]], keys: list[str]) -> pd.DataFrame:
        df = pd.DataFrame([{**{k: r[k] for k in keys}, "audits": r["audits"],
                            "score_sum_cents": int(round(float(r["score_sum"]) * 100)), "compliant": r["compliant"],
                            "rejet": r["rejet"], "critical_failed": r["critical_failed"]} for r in rows],
                          columns=[*keys, *_GROUP_SUMS])
        return df

    return {
        "totals": {"audits": int(t["audits"]), "fiches": int(t["fiches"]),
                   "score_sum_cents": int(round(float(t["score_sum"]) * 100)),
                   "compliant": int(t["compliant"]), "critical_failed": int(t["audits_with_critical_failure"]),
                   "min_score_cents": None if t.get("min_score") is None else int(round(float(t["min_score"]) * 100)),
                   "max_score_cents": None if t.get("max_score") is None else int(round(float(t["max_score"]) * 100))},
        "niveau": dict(report["niveau_counts"]),
        "bins": [int(b["count"]) for b in report["score_distribution"]],
        "groupe": frame(report["per_groupe"], ["groupe"]),
        "advisor": frame(report["per_advisor"], ["advisor", "groupe"]),
        "critical": pd.DataFrame(report["critical_steps"], columns=["step_name", "step_position", "evaluated", "failed"]),
        "points": pd.DataFrame(report["control_points"], columns=["step_name", "point", "step_position", *_POINT_COUNTS]),
        "gating": {k: int(v) for k, v in report["gating"].items() if k != "removed_rate"},
    }


def rollup_reports(reports: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One report from several (days → week): counts and sums added, means and rates re-derived,
    the top-10 re-ranked over all control points. Equal to :func:`daily_report` of the union."""
    parts = [_parts_of(r) for r in reports]
    if not parts:
        return empty_report()
    totals: dict[str, Any] = {k: sum(p["totals"][k] for p in parts)
                              for k in ("audits", "fiches", "score_sum_cents", "compliant", "critical_failed")}
    for k, pick in (("min_score_cents", min), ("max_score_cents", max)):
        values = [p["totals"][k] for p in parts if p["totals"][k] is not None]
        totals[k] = pick(values) if values else None
    niveau: dict[str, int] = {}
    for p in parts:
        for k, v in p["niveau"].items():
            niveau[k] = niveau.get(k, 0) + int(v)
    gating: dict[str, int] = {}
    for p in parts:
        for k, v in p["gating"].items():
            gating[k] = gating.get(k, 0) + int(v)

    def merged(name: str, keys: list[str], agg: dict[str, Any]) -> pd.DataFrame:
        frames = [p[name] for p in parts if not p[name].empty]
        if not frames:
            return parts[0][name]
        return pd.concat(frames, ignore_index=True).groupby(keys, as_index=False, sort=True).agg(agg)

    group_agg = {c: "sum" for c in _GROUP_SUMS}
    return _finish({
        "totals": totals,
        "niveau": niveau,
        "bins": [sum(col) for col in zip(*(p["bins"] for p in parts), strict=True)],
        "groupe": merged("groupe", ["groupe"], group_agg),
        "advisor": merged("advisor", ["advisor", "groupe"], group_agg),
        "critical": merged("critical", ["step_name"], {"step_position": "min", "evaluated": "sum", "failed": "sum"}),
        "points": merged("points", ["step_name", "point"],
                         {"step_position": "min", **{c: "sum" for c in _POINT_COUNTS}}),
        "gating": gating,
    })


def iso_week_key(day: dt.date | str) -> str:
    """``2026-03-11`` → ``2026-W11`` (ISO 8601 week, Monday first; week 1 holds January 4th)."""
    d = dt.date.fromisoformat(day) if isinstance(day, str) else day
    year, week, _ = d.isocalendar()
    return f"{year}-W{week:02d}"


def week_days(week: str) -> list[str]:
    """The seven ``YYYY-MM-DD`` days (Monday → Sunday) of ISO week ``YYYY-Www``."""
    year, w = week.split("-W")
    monday = dt.date.fromisocalendar(int(year), int(w), 1)
    return [(monday + dt.timedelta(days=i)).isoformat() for i in range(7)]


def weekly_rollups(daily: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{day: daily report}`` → ``{ISO week: roll-up}``, each with the ``days`` it includes."""
    by_week: dict[str, list[str]] = {}
    for day in sorted(daily):
        by_week.setdefault(iso_week_key(day), []).append(day)
    return {week: {**rollup_reports(daily[d] for d in days), "days": days} for week, days in sorted(by_week.items())}


# --------------------------------------------------------------------------------------------- #
# Markdown (the Dagster UI renders it in materialization metadata)
# --------------------------------------------------------------------------------------------- #








def markdown_sections(report: Mapping[str, Any], *, advisors: int = 5) -> dict[str, str]:
    """Markdown tables of a report: ``niveau_counts``, ``per_groupe``, ``advisors_top_bottom``
    (best and worst ``advisors`` by mean score), ``top_missed_points``, ``critical_steps``, ``gating``."""
    t = report["totals"]
    n = t["audits"]
    niveau = report["niveau_counts"]
    out = {
        "niveau_counts": md_table(["niveau", "audits", "share"],
                                [[k, v, pct_text(v / n if n else None)] for k, v in niveau.items()]
                                + [["**total**", n, pct_text(1.0 if n else None)]]),
        "per_groupe": md_table(["groupe", "audits", "mean score %", "compliant", "REJET", "critical failed"],
                             [[g["groupe"], g["audits"], g["mean_score"], pct_text(g["compliant_rate"]), g["rejet"],
                               g["critical_failed"]] for g in report["per_groupe"]]) if report["per_groupe"]
        else "no audit",
    }
    ranked = sorted(report["per_advisor"], key=lambda r: (-(r["mean_score"] or 0), r["advisor"], r["groupe"]))
    headers = ["rank", "advisor", "groupe", "audits", "mean score %", "compliant", "REJET"]

    def adv_row(i: int, r: dict[str, Any]) -> list[Any]:
        return [i, r["advisor"], r["groupe"], r["audits"], r["mean_score"], pct_text(r["compliant_rate"]), r["rejet"]]

    if not ranked:
        out["advisors_top_bottom"] = "no audit"
    elif len(ranked) <= 2 * advisors:
        out["advisors_top_bottom"] = md_table(headers, [adv_row(i, r) for i, r in enumerate(ranked, 1)])
    else:
        top = [adv_row(i, r) for i, r in enumerate(ranked[:advisors], 1)]
        bottom = [adv_row(len(ranked) - advisors + i, r) for i, r in enumerate(ranked[-advisors:], 1)]
        out["advisors_top_bottom"] = (f"**Top {advisors}**\n\n" + md_table(headers, top)
                                      + f"\n\n**Bottom {advisors}**\n\n" + md_table(headers, bottom))
    out["top_missed_points"] = md_table(
        ["#", "step", "control point", "missed (ABSENT)", "partial", "evaluated", "missed rate"],
        [[i, f"{r['step_position']}. {r['step_name']}", r["point"], r["missed"], r["partial"], r["evaluated"],
          pct_text(r["missed_rate"])] for i, r in enumerate(report["top_missed_points"], 1)],
    ) if report["top_missed_points"] else "no control point missed"
    out["critical_steps"] = md_table(
        ["step", "evaluated", "failed", "failure rate"],
        [[f"{r['step_position']}. {r['step_name']}", r["evaluated"], r["failed"], pct_text(r["failure_rate"])]
         for r in report["critical_steps"]],
    ) if report["critical_steps"] else "no critical step evaluated"
    g = report["gating"]
    out["gating"] = md_table(["evidence gating", "count"], [
        ["citations checked", g["total_citations"]], ["citations removed", g["removed_citations"]],
        ["removed rate", pct_text(g["removed_rate"])], ["control points downgraded", g["downgraded_control_points"]],
        ["steps with score reduced", g["steps_score_reduced"]], ["steps with verdict adjusted", g["steps_conforme_adjusted"]],
        ["audits with a citation removed", g["audits_with_removed_citations"]]])
    return out


# --------------------------------------------------------------------------------------------- #
# Charts: PNG bytes, rendered offline (Agg canvas, no pyplot state, thread-safe)
# --------------------------------------------------------------------------------------------- #

NIVEAU_COLORS = {"EXCELLENT": "#1b7837", "BON": "#5aae61", "ACCEPTABLE": "#f1a340", "INSUFFISANT": "#d6604d",
                 "REJET": "#b2182b"}




def _integer_locator() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def niveau_chart_png(niveau_counts: Mapping[str, int], title: str = "Audits per niveau") -> bytes:
    labels = list(niveau_counts)
    values = [int(niveau_counts[k]) for k in labels]

    def draw(fig: Any, ax: Any) -> None:
        bars = ax.bar(labels, values, color=[NIVEAU_COLORS.get(k, "#888888") for k in labels])
        ax.bar_label(bars, padding=2)
        ax.set_ylabel("audits")
        ax.set_title(title)
        ax.set_ylim(0, max([*values, 1]) * 1.15)
        ax.yaxis.set_major_locator(_integer_locator())

    return render_png(draw)


def score_histogram_png(score_distribution: Sequence[Mapping[str, Any]], title: str = "Score distribution") -> bytes:
    def draw(fig: Any, ax: Any) -> None:
        lows = [int(b["lower"]) for b in score_distribution]
        counts = [int(b["count"]) for b in score_distribution]
        widths = [int(b["upper"]) - int(b["lower"]) for b in score_distribution]
        bars = ax.bar(lows, counts, width=widths, align="edge", color="#4575b4", edgecolor="white")
        ax.bar_label(bars, labels=[str(c) if c else "" for c in counts], padding=2)
        ax.set_xlim(0, 100)
        ax.set_xticks(range(0, 101, 10))
        ax.set_xlabel("score %")
        ax.set_ylabel("audits")
        ax.set_title(title)
        ax.set_ylim(0, max([*counts, 1]) * 1.15)
        ax.yaxis.set_major_locator(_integer_locator())

    return render_png(draw)


def groupe_compliance_png(per_groupe: Sequence[Mapping[str, Any]], title: str = "Compliance per groupe") -> bytes:
    rows = sorted(per_groupe, key=lambda r: (r["compliant_rate"] or 0, r["groupe"]))

    def draw(fig: Any, ax: Any) -> None:
        names = [str(r["groupe"]) for r in rows]
        rates = [100 * (r["compliant_rate"] or 0) for r in rows]
        bars = ax.barh(names, rates, color=["#5aae61" if v >= 80 else "#f1a340" if v >= 60 else "#d6604d" for v in rates])
        ax.bar_label(bars, labels=[f"{v:.0f}% (n={r['audits']}, mean {r['mean_score']})" for v, r in zip(rates, rows, strict=True)],
                     padding=3, fontsize=8)
        ax.set_xlim(0, 140)
        ax.set_xticks(range(0, 101, 20))
        ax.set_xlabel("compliant audits %")
        ax.set_title(title)
        if not rows:
            ax.text(0.5, 0.5, "no audit", transform=ax.transAxes, ha="center", va="center")

    return render_png(draw, size=(6.4, max(2.4, 0.45 * len(rows) + 1.2)))


# --------------------------------------------------------------------------------------------- #
# When a report is due (the ``compliance_reports_trigger`` sensor)
# --------------------------------------------------------------------------------------------- #


@dataclass(frozen=True)
class DayActivity:
    """The audits of one sales day as the trigger sees them: when one last changed, and whether
    one is still pending or running (the day has not settled)."""

    day: str
    last_change: dt.datetime
    busy: bool


def days_due(activity: Iterable[DayActivity], generated: Mapping[str, dt.datetime], *, now: dt.datetime,
             settle: dt.timedelta) -> list[tuple[str, dt.datetime]]:
    """Days whose daily report must be (re)built, with the audit change it will cover.

    A day is due when an audit changed after its report's ``generated_at`` (or it has no report),
    no audit of the day is still pending or running, and the last change is at least ``settle``
    old — so a day audited by a backfill gets one report when its last fiche finishes, not one per
    fiche. ``generated_at`` is the moment the report *read* its rows, so a change that lands while
    a report is being built makes the day due again."""
    due = []
    for a in sorted(activity, key=lambda a: a.day):
        report_at = generated.get(a.day)
        if report_at is not None and report_at >= a.last_change:
            continue
        if a.busy or now - a.last_change < settle:
            continue
        due.append((a.day, a.last_change))
    return due


def week_partition_key(day: str) -> str:
    """The ``weekly_compliance_report`` partition of a day: the Monday of its ISO week."""
    return week_days(iso_week_key(day))[0]


def weeks_due(daily_generated: Mapping[str, dt.datetime],
              weekly_generated: Mapping[str, dt.datetime]) -> list[tuple[str, dt.datetime]]:
    """Weeks (Monday keys) whose roll-up is older than one of their daily reports, with the newest
    daily report it will include. ``weekly_generated`` is keyed by Monday too."""
    newest: dict[str, dt.datetime] = {}
    for day, at in daily_generated.items():
        monday = week_partition_key(day)
        newest[monday] = max(at, newest.get(monday, at))
    return [(monday, at) for monday, at in sorted(newest.items())
            if weekly_generated.get(monday) is None or weekly_generated[monday] < at]
