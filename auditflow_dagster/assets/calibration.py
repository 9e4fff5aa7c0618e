"""Calibration report (issue 11 §3): how far to trust the machine — per control point and per
config, how often human reviewers agree with the AI verdict, what they change it to, and the trend
by ISO week.

A thin, unpartitioned asset: the rows come from the review and rerun trails
(:mod:`auditflow_dagster.db.calibration`), the numbers from the pure
:mod:`auditflow_dagster.core.calibration` (where the choices are documented: AI verdict = what the
audit run stored, human verdict = the latest review, reruns count as neither side). Nothing is
stored: ``GET /api/reports/calibration`` runs the same computation with optional filters; the
materialization shows the whole history in the Dagster UI — markdown tables and PNG charts
(matplotlib, Agg, offline) embedded as ``data:`` image URIs, like the compliance reports.
"""

from typing import Any

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
)

from auditflow_dagster.assets.audits import audits
from auditflow_dagster.assets.reruns import audit_step_reruns
from auditflow_dagster.assets.runtime import png_markdown
from auditflow_dagster.core import calibration as core
from auditflow_dagster.db import calibration as store
from auditflow_dagster.resources.database import DatabaseResource

METHOD = (
    "**AI verdict** = what the audit run stored (the `previous_*` value of the first trail row that touched the "
    "item); **human verdict** = the override of the latest review of the item; week = ISO week of that review "
    "(Europe/Paris). **Reruns** count as neither side: a rerun that changed a verdict a reviewer then confirmed "
    "is a disagreement of the original verdict; a rerun never reviewed counts nothing. *Unrecoverable* = the "
    "original verdict was not recorded (a step rerun came first for a control point), left out of every rate."
)




def _rate(value: float | None) -> float:
    return round(value, 4) if value is not None else 0.0


def calibration_metadata(report: dict[str, Any]) -> dict[str, Any]:
    """Headline numbers, the markdown tables and the two charts of a calibration report."""
    t = report["totals"]
    md = core.markdown_sections(report)
    return {
        "control_points_reviewed": t["control_points"]["reviewed"],
        "control_points_agreed": t["control_points"]["agreed"],
        "control_point_agreement_rate": _rate(t["control_points"]["agreement_rate"]),
        "steps_reviewed": t["steps"]["reviewed"],
        "steps_agreed": t["steps"]["agreed"],
        "step_agreement_rate": _rate(t["steps"]["agreement_rate"]),
        "unrecoverable": t["control_points"]["unrecoverable"] + t["steps"]["unrecoverable"],
        "method": MetadataValue.md(METHOD),
        "per_config": MetadataValue.md(md["configs"]),
        "per_control_point": MetadataValue.md(md["control_points"]),
        "per_step": MetadataValue.md(md["steps"]),
        "weekly_trend": MetadataValue.md(md["weekly"]),
        "confusion_control_points": MetadataValue.md(md["confusion_control_points"]),
        "confusion_steps": MetadataValue.md(md["confusion_steps"]),
        "chart_trend": png_markdown("trend", core.trend_chart_png(report)),
        "chart_control_points": png_markdown("control points", core.control_point_chart_png(report)),
    }


@asset(
    deps=[AssetDep(audits, partition_mapping=AllPartitionMapping()),
          AssetDep(audit_step_reruns, partition_mapping=AllPartitionMapping())],
    group_name="reports",
    kinds={"postgres"},
    description=(
        "AI-vs-human calibration: per control point, step and config, the AI verdicts reviewed by a human, the "
        "agreement rate, the confusion (AI PRESENT → human ABSENT, …) and the trend by ISO week (Europe/Paris), "
        "from the review and rerun trails. Same numbers as GET /api/reports/calibration."
    ),
)
def calibration_report(context: AssetExecutionContext, db: DatabaseResource) -> MaterializeResult:
    with db.session() as s:
        rows = store.reviewed_verdicts(s)
    report = core.calibration_report(rows)
    t = report["totals"]
    context.log.info("calibration: %s control-point and %s step verdicts reviewed", t["control_points"]["reviewed"],
                     t["steps"]["reviewed"])
    return MaterializeResult(metadata=calibration_metadata(report))


CALIBRATION_ASSETS = [calibration_report]
