"""Calibration (issue 11 §3): how often human reviewers agree with the AI's verdicts, per control
point, per step and per audit config, with the confusion between verdicts and a trend by ISO week.
Pure functions over plain rows (no Dagster, no SQL); charts with matplotlib's Agg canvas.

**Input: one row per reviewed AI verdict** (:class:`ReviewedVerdict`; the SQL that builds them is
:mod:`auditflow_dagster.db.calibration`). An *item* is one verdict of one audit: a step verdict
(``audit_step_results.conforme``: ``CONFORME``/``NON_CONFORME``/``PARTIEL``) or a control-point
verdict (``audit_step_result_control_points.statut``: ``PRESENT``/``ABSENT``/``PARTIEL``/
``NON_APPLICABLE``) — the vocabularies the review routes accept and the tables store. An item
reviewed by a human gives exactly one row:

* **AI verdict** = what the *audit run* stored, before any human edit or rerun. Step rows are
  rewritten in place by reviews and reruns, so the original survives only in the append-only
  trails: it is the ``previous_*`` value of the first trail row that touched the item (reviews and
  rerun events of the step, oldest first). ``None`` when that first row does not record it — a
  step rerun replaces every control point of its step without recording their statuses, and a
  control-point review re-derives its step's verdict (rows written before the review kept that
  verdict in ``previous_conforme`` cannot tell it). Such rows are *unrecoverable*: counted apart,
  never guessed, and left out of every rate.
* **Human verdict** = the override of the *latest* review of the item (a reviewer who changes
  their mind corrects their own verdict; earlier reviews of the same item are not extra samples,
  which would count a human against a human). ``reviewed_at`` is that review's time (naive UTC as
  stored, or aware); its ISO week in Europe/Paris is the week of the sample. A control-point review
  that only edits the comment keeps the statut it saw: it counts as an agreement (the row cannot
  tell "statut not sent" from "statut confirmed").

**Reruns count as neither side.** The machine being calibrated is the production audit run; a
rerun is launched by a human who doubts a verdict, runs in prompt mode, often with a human-written
``customPrompt`` steering the model. So a rerun output is not an AI verdict of its own (counting it
would mix a human-assisted machine into the numbers and inflate agreement exactly where the
production verdict was wrong), and a rerun is not a human verdict either (nobody confirmed its
result). Consequences: a rerun that changed a verdict which a reviewer then confirmed counts as a
**disagreement of the original** AI verdict (the original was wrong and a human said so); a rerun
that changed nothing, then confirmed, counts as an agreement; a rerun never followed by a review
counts nothing. Rows whose item was rerun before its final review are flagged
(``rerun_before_review``) and counted per group as ``rerun_assisted``.

**Output** (:func:`calibration_report`): for every group — all rows (``totals``), each config
(``configs``), each step (``steps``), each control point (``control_points``, keyed by config,
step position and 1-based index; label = the text of its most recently reviewed row) — and each
level (step / control point) the statistics of :func:`verdict_stats`: ``reviewed`` (usable rows),
``agreed`` (AI verdict == human verdict), ``agreement_rate`` = agreed / reviewed (``None`` when
nothing was reviewed), the full ``confusion`` matrix ``{ai: {human: n}}`` over the level's
vocabulary (plus any other stored value seen), its ``main_confusion`` (largest off-diagonal cell),
``rerun_assisted``, ``unrecoverable`` and ``weekly`` (per ISO week: reviewed, agreed, rate).
Invariants (property-tested): rates in [0, 1]; the confusion total equals ``reviewed``; its
diagonal equals ``agreed``; weekly counts sum to the totals; groups partition the rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from zoneinfo import ZoneInfo

from auditflow_dagster.core.report_render import md_table, pct_text, render_png

__all__ = [
    "CONTROL_POINT_VERDICTS",
    "LEVELS",
    "PARIS",
    "STEP_VERDICTS",
    "ReviewedVerdict",
    "calibration_report",
    "control_point_chart_png",
    "iso_week",
    "markdown_sections",
    "paris_day_bounds",
    "trend_chart_png",
    "verdict_stats",
]

PARIS = ZoneInfo("Europe/Paris")
Level = Literal["step", "control_point"]
LEVELS: tuple[Level, ...] = ("control_point", "step")
#: Control-point statuses (spec 04 §3.2) and step verdicts (§3.1), in display order.
CONTROL_POINT_VERDICTS: tuple[str, ...] = ("PRESENT", "ABSENT", "PARTIEL", "NON_APPLICABLE")
STEP_VERDICTS: tuple[str, ...] = ("CONFORME", "NON_CONFORME", "PARTIEL")
VOCABULARY: dict[str, tuple[str, ...]] = {"control_point": CONTROL_POINT_VERDICTS, "step": STEP_VERDICTS}


@dataclass(frozen=True)
class ReviewedVerdict:
    """One reviewed AI verdict (see the module docstring). ``control_point_index`` and ``point`` are
    ``None`` for a step verdict; ``ai_verdict`` is ``None`` when the original is unrecoverable."""

    level: Level
    config_id: int
    audit_id: int
    step_position: int
    step_name: str
    control_point_index: int | None
    point: str | None
    ai_verdict: str | None
    human_verdict: str
    reviewed_at: dt.datetime
    rerun_before_review: bool = False
    config_name: str | None = None

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"unknown level {self.level!r}")
        if (self.level == "control_point") != (self.control_point_index is not None):
            raise ValueError("control_point_index is set for, and only for, control-point verdicts")

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> ReviewedVerdict:
        return cls(level=m["level"], config_id=int(m["config_id"]), audit_id=int(m["audit_id"]),
                   step_position=int(m["step_position"]), step_name=str(m.get("step_name") or ""),
                   control_point_index=None if m.get("control_point_index") is None else int(m["control_point_index"]),
                   point=m.get("point"), ai_verdict=m.get("ai_verdict"), human_verdict=str(m["human_verdict"]),
                   reviewed_at=m["reviewed_at"], rerun_before_review=bool(m.get("rerun_before_review")),
                   config_name=m.get("config_name"))

    @property
    def usable(self) -> bool:
        return self.ai_verdict is not None

    @property
    def agreed(self) -> bool:
        return self.ai_verdict is not None and self.ai_verdict == self.human_verdict


# --------------------------------------------------------------------------------------------- #
# Time: ISO weeks and day bounds in Europe/Paris
# --------------------------------------------------------------------------------------------- #


def _aware_utc(ts: dt.datetime) -> dt.datetime:
    return ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts


def iso_week(ts: dt.datetime) -> str:
    """The ISO week (``2026-W11``) of an instant, in Europe/Paris; a naive ``ts`` is UTC (as stored)."""
    year, week, _ = _aware_utc(ts).astimezone(PARIS).isocalendar()
    return f"{year}-W{week:02d}"


def paris_day_bounds(since: dt.date | None, until: dt.date | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    """``[since 00:00, until+1 00:00)`` in Europe/Paris as naive UTC (the stored form); ``None`` stays open."""

    def midnight(d: dt.date) -> dt.datetime:
        return dt.datetime.combine(d, dt.time(), PARIS).astimezone(dt.UTC).replace(tzinfo=None)

    return (midnight(since) if since else None, midnight(until + dt.timedelta(days=1)) if until else None)


# --------------------------------------------------------------------------------------------- #
# Statistics
# --------------------------------------------------------------------------------------------- #


def _labels(level: Level, rows: Sequence[ReviewedVerdict]) -> list[str]:
    base = list(VOCABULARY[level])
    extra = sorted({v for r in rows for v in (r.ai_verdict, r.human_verdict) if v is not None} - set(base))
    return base + extra


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _weekly(rows: Sequence[ReviewedVerdict]) -> list[dict[str, Any]]:
    weeks: dict[str, list[int]] = {}
    for r in rows:
        if r.usable:
            cell = weeks.setdefault(iso_week(r.reviewed_at), [0, 0])
            cell[0] += 1
            cell[1] += int(r.agreed)
    return [{"week": w, "reviewed": n, "agreed": a, "agreement_rate": _rate(a, n)} for w, (n, a) in sorted(weeks.items())]


def verdict_stats(rows: Iterable[ReviewedVerdict], level: Level) -> dict[str, Any]:
    """The statistics of one group of rows of one level (rows of the other level are ignored)."""
    mine = [r for r in rows if r.level == level]
    usable = [r for r in mine if r.usable]
    labels = _labels(level, mine)
    confusion = {a: dict.fromkeys(labels, 0) for a in labels}
    for r in usable:
        confusion[r.ai_verdict][r.human_verdict] += 1  # type: ignore[index]
    agreed = sum(confusion[label][label] for label in labels)
    off = [(n, -i, -j, a, h) for i, a in enumerate(labels) for j, h in enumerate(labels)
           if a != h and (n := confusion[a][h]) > 0]
    main = None
    if off:
        n, _, _, a, h = max(off)  # the largest cell; ties: vocabulary order (AI row, then human column)
        main = {"ai": a, "human": h, "count": n}
    return {"reviewed": len(usable), "agreed": agreed, "agreement_rate": _rate(agreed, len(usable)),
            "confusion": confusion, "main_confusion": main,
            "rerun_assisted": sum(1 for r in usable if r.rerun_before_review),
            "unrecoverable": len(mine) - len(usable), "weekly": _weekly(usable)}


def _latest(rows: Sequence[ReviewedVerdict]) -> ReviewedVerdict:
    # one row per item and audit, so (time, audit) decides; the texts only make it a total order
    return max(rows, key=lambda r: (_aware_utc(r.reviewed_at), r.audit_id, r.step_name, r.point or "",
                                    r.config_name or ""))


def _group(rows: Iterable[ReviewedVerdict], key: Callable[[ReviewedVerdict], Any]) -> dict[Any, list[ReviewedVerdict]]:
    out: dict[Any, list[ReviewedVerdict]] = {}
    for r in rows:
        out.setdefault(key(r), []).append(r)
    return dict(sorted(out.items()))


def calibration_report(rows: Iterable[ReviewedVerdict | Mapping[str, Any]],
                       filters: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The calibration report of ``rows`` (see the module docstring); ``filters`` is echoed back."""
    data = [r if isinstance(r, ReviewedVerdict) else ReviewedVerdict.from_mapping(r) for r in rows]
    points = [r for r in data if r.level == "control_point"]
    steps = [r for r in data if r.level == "step"]
    configs = []
    for cfg, group in _group(data, lambda r: r.config_id).items():
        named = [r for r in group if r.config_name]
        configs.append({"config_id": cfg, "config_name": _latest(named).config_name if named else None,
                        "control_points": verdict_stats(group, "control_point"), "steps": verdict_stats(group, "step")})
    per_step = []
    for (cfg, pos), group in _group(steps, lambda r: (r.config_id, r.step_position)).items():
        per_step.append({"config_id": cfg, "step_position": pos, "step_name": _latest(group).step_name,
                         **verdict_stats(group, "step")})
    per_point = []
    for (cfg, pos, idx), group in _group(points, lambda r: (r.config_id, r.step_position, r.control_point_index)).items():
        latest = _latest(group)
        per_point.append({"config_id": cfg, "step_position": pos, "step_name": latest.step_name,
                          "control_point_index": idx, "point": latest.point or "", **verdict_stats(group, "control_point")})
    return {
        "filters": dict(filters or {}),
        "totals": {"control_points": verdict_stats(data, "control_point"), "steps": verdict_stats(data, "step")},
        "configs": configs,
        "steps": per_step,
        "control_points": per_point,
    }


# --------------------------------------------------------------------------------------------- #
# Markdown (the Dagster UI renders it in materialization metadata)
# --------------------------------------------------------------------------------------------- #








def _confusion_text(main: Mapping[str, Any] | None) -> str:
    return "–" if main is None else f"{main['ai']} → {main['human']} ×{main['count']}"


def _short(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _matrix(stats: Mapping[str, Any]) -> str:
    labels = list(stats["confusion"])
    return md_table(["AI ↓ / human →", *labels, "total"],
                  [[a, *(stats["confusion"][a][h] for h in labels), sum(stats["confusion"][a].values())]
                   for a in labels])


def markdown_sections(report: Mapping[str, Any], *, point_chars: int = 90) -> dict[str, str]:
    """Markdown tables: ``configs``, ``control_points``, ``steps``, ``weekly`` and the two overall
    confusion matrices (``confusion_control_points``, ``confusion_steps``)."""
    cols = ["reviewed", "agreement", "main confusion (AI → human)", "rerun-assisted", "unrecoverable"]

    def stat_cells(s: Mapping[str, Any]) -> list[Any]:
        return [s["reviewed"], pct_text(s["agreement_rate"]), _confusion_text(s["main_confusion"]), s["rerun_assisted"],
                s["unrecoverable"]]

    out: dict[str, str] = {}
    out["configs"] = md_table(["config", "level", *cols], [
        [f"{c['config_id']}" + (f" — {c['config_name']}" if c["config_name"] else ""), label, *stat_cells(c[key])]
        for c in report["configs"] for key, label in (("control_points", "control points"), ("steps", "steps"))
    ]) if report["configs"] else "no review"
    out["control_points"] = md_table(["config", "step", "#", "control point", *cols], [
        [p["config_id"], f"{p['step_position']}. {p['step_name']}", p["control_point_index"],
         _short(p["point"], point_chars), *stat_cells(p)] for p in report["control_points"]
    ]) if report["control_points"] else "no control-point review"
    out["steps"] = md_table(["config", "step", *cols], [
        [s["config_id"], f"{s['step_position']}. {s['step_name']}", *stat_cells(s)] for s in report["steps"]
    ]) if report["steps"] else "no step review"
    t = report["totals"]
    weeks = sorted({w["week"] for key in ("control_points", "steps") for w in t[key]["weekly"]})
    by = {key: {w["week"]: w for w in t[key]["weekly"]} for key in ("control_points", "steps")}

    def week_cells(key: str, week: str) -> list[Any]:
        w = by[key].get(week)
        return [0, "–"] if w is None else [w["reviewed"], pct_text(w["agreement_rate"])]

    out["weekly"] = md_table(["ISO week (Europe/Paris)", "control points reviewed", "agreement", "steps reviewed",
                            "agreement"], [[w, *week_cells("control_points", w), *week_cells("steps", w)]
                                           for w in weeks]) if weeks else "no review"
    out["confusion_control_points"] = _matrix(t["control_points"])
    out["confusion_steps"] = _matrix(t["steps"])
    return out


# --------------------------------------------------------------------------------------------- #
# Charts: PNG bytes, rendered offline (Agg canvas, no pyplot state, thread-safe)
# --------------------------------------------------------------------------------------------- #




def trend_chart_png(report: Mapping[str, Any], title: str = "AI-vs-human agreement per ISO week") -> bytes:
    """Agreement % per ISO week (Europe/Paris), one line per level, each point labelled with its n."""
    t = report["totals"]
    weeks = sorted({w["week"] for key in ("control_points", "steps") for w in t[key]["weekly"]})

    def draw(fig: Any, ax: Any) -> None:
        x = list(range(len(weeks)))
        for key, label, color in (("control_points", "control points", "#4575b4"), ("steps", "steps", "#d6604d")):
            by = {w["week"]: w for w in t[key]["weekly"]}
            xs = [i for i, w in enumerate(weeks) if w in by]
            ys = [100 * (by[weeks[i]]["agreement_rate"] or 0) for i in xs]
            ax.plot(xs, ys, marker="o", color=color, label=label)
            for i, y in zip(xs, ys, strict=True):
                ax.annotate(f"n={by[weeks[i]]['reviewed']}", (i, y), textcoords="offset points", xytext=(0, 6),
                            ha="center", fontsize=7, color=color)
        ax.set_xticks(x, weeks, rotation=30, fontsize=8)
        ax.set_ylim(0, 110)
        ax.set_ylabel("agreement %")
        ax.set_title(title)
        if weeks:
            ax.legend(loc="lower left", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no review", transform=ax.transAxes, ha="center", va="center")

    return render_png(draw)


def control_point_chart_png(report: Mapping[str, Any], top: int = 15,
                            title: str = "Agreement per control point (most reviewed)") -> bytes:
    """Horizontal bars: agreement % of the ``top`` most reviewed control points."""
    rows = sorted((p for p in report["control_points"] if p["reviewed"]),
                  key=lambda p: (-p["reviewed"], p["config_id"], p["step_position"], p["control_point_index"]))[:top]
    rows.reverse()  # the most reviewed on top

    def draw(fig: Any, ax: Any) -> None:
        names = [f"c{p['config_id']} {p['step_position']}.{p['control_point_index']} {_short(p['point'], 38)}" for p in rows]
        rates = [100 * (p["agreement_rate"] or 0) for p in rows]
        bars = ax.barh(range(len(rows)), rates,
                       color=["#5aae61" if v >= 90 else "#f1a340" if v >= 70 else "#d6604d" for v in rates])
        ax.set_yticks(range(len(rows)), names, fontsize=7)
        ax.bar_label(bars, labels=[f"{v:.0f}% (n={p['reviewed']})" for v, p in zip(rates, rows, strict=True)],
                     padding=3, fontsize=7)
        ax.set_xlim(0, 130)
        ax.set_xticks(range(0, 101, 20))
        ax.set_xlabel("agreement %")
        ax.set_title(title)
        if not rows:
            ax.text(0.5, 0.5, "no control-point review", transform=ax.transAxes, ha="center", va="center")

    return render_png(draw, size=(7.2, max(2.4, 0.32 * len(rows) + 1.2)))
