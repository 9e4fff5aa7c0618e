"""Rendering shared by the compliance and calibration reports: markdown tables for the Dagster UI
and PNG charts drawn offline (matplotlib's Agg canvas, no pyplot state, so thread-safe)."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from auditflow_dagster.core.scoring import half_up


def md_cell(value: Any) -> str:
    """A table cell: None is empty; pipes and newlines cannot break the row."""
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def pct_text(rate: float | None) -> str:
    """A rate as a percentage with one decimal (half-up); "–" when there is no rate."""
    return "–" if rate is None else f"{float(half_up(rate * 100, 1))}%"


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(md_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render_png(draw: Callable[[Any, Any], None], *, size: tuple[float, float] = (6.4, 3.6)) -> bytes:
    """``draw(figure, axes)`` onto a fresh figure → PNG bytes (no version string: same data, same bytes)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    draw(fig, fig.subplots())
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
