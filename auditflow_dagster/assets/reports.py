"""Compliance reports (issue 10 §1): ``daily_compliance_report[day]`` and its weekly roll-up.

Thin assets: load the rows (:mod:`auditflow_dagster.db.reports`), aggregate them with the pure
:mod:`auditflow_dagster.core.reports`, upsert the report row (read by ``GET /api/reports/daily/{date}``)
and show the report in the Dagster UI — markdown tables and PNG charts (matplotlib, Agg, offline)
embedded in the materialization metadata as ``data:`` image URIs (the UI's markdown renderer allows
``data:`` image sources).

* ``daily_compliance_report`` is partitioned by sales day and depends on *all* partitions of the
  fiche-partitioned ``audits`` (:class:`~dagster.AllPartitionMapping`): which fiches belong to a day
  is known from ``fiche_cache.sales_date``, not from partition keys. One run per day (the default
  backfill policy), so each day's materialization carries its own tables and charts; a run over a
  range of days still writes every day and shows a per-day summary.
* ``weekly_compliance_report`` is partitioned by week (Monday start, Europe/Paris; key = the
  Monday's date) and rolls up the stored daily report rows of its ISO week — exact, since the
  daily rows hold counts and sums (see the core module).
"""

from typing import Any

from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    TimeWindowPartitionMapping,
    WeeklyPartitionsDefinition,
    asset,
)

from auditflow_dagster.assets.audits import audits
from auditflow_dagster.assets.runtime import markdown_table, png_markdown
from auditflow_dagster.core import reports as core
from auditflow_dagster.db import reports as store
from auditflow_dagster.db.clock import now_utc
from auditflow_dagster.partitions import sales_days
from auditflow_dagster.resources.database import DatabaseResource

#: Weeks of the report roll-up: Monday → Sunday in the CRM's time zone, the current week included
#: (like ``sales_days``' ``end_offset=1``), keyed by the Monday's date.
compliance_weeks = WeeklyPartitionsDefinition(start_date="2020-01-06", timezone="Europe/Paris", day_offset=1,
                                              end_offset=1)




def report_metadata(report: dict[str, Any], label: str) -> dict[str, Any]:
    """Headline numbers, the markdown tables and the three charts of one report."""
    t = report["totals"]
    md = core.markdown_sections(report)
    return {
        "audits": t["audits"],
        "fiches": t["fiches"],
        "mean_score": t["mean_score"] if t["mean_score"] is not None else 0.0,
        "compliant_rate": t["compliant_rate"] if t["compliant_rate"] is not None else 0.0,
        "audits_with_critical_failure": t["audits_with_critical_failure"],
        "citations_removed": report["gating"]["removed_citations"],
        "control_points_downgraded": report["gating"]["downgraded_control_points"],
        "niveau_counts": MetadataValue.md(md["niveau_counts"]),
        "per_groupe": MetadataValue.md(md["per_groupe"]),
        "advisors_top_bottom": MetadataValue.md(md["advisors_top_bottom"]),
        "top_missed_control_points": MetadataValue.md(md["top_missed_points"]),
        "critical_step_failures": MetadataValue.md(md["critical_steps"]),
        "evidence_gating": MetadataValue.md(md["gating"]),
        "chart_niveau": png_markdown("niveau", core.niveau_chart_png(report["niveau_counts"], f"Audits per niveau — {label}")),
        "chart_scores": png_markdown("scores", core.score_histogram_png(report["score_distribution"],
                                                                  f"Score distribution — {label}")),
        "chart_groupes": png_markdown("groupes", core.groupe_compliance_png(report["per_groupe"],
                                                                      f"Compliance per groupe — {label}")),
    }


@asset(
    partitions_def=sales_days,
    deps=[AssetDep(audits, partition_mapping=AllPartitionMapping())],
    group_name="reports",
    kinds={"pandas", "postgres"},
    description=(
        "The sales day's compliance report: niveau counts, score distribution, per groupe and per advisor, "
        "critical-step failures, the ten most missed control points and evidence-gating statistics, over the "
        "latest completed audit per fiche × config. Stored in daily_compliance_reports (GET /api/reports/daily/{date})."
    ),
)
def daily_compliance_report(context: AssetExecutionContext, db: DatabaseResource) -> MaterializeResult:
    days = list(context.partition_keys)
    reports: dict[str, dict[str, Any]] = {}
    for day in days:
        read_at = now_utc()
        with db.session() as s:
            rows = store.day_rows(s, day)
        reports[day] = core.daily_report(*rows)
        with db.session() as s:
            store.upsert_daily(s, day, reports[day], context.run_id, generated_at=read_at)
        context.log.info("daily compliance report %s: %s audits", day, reports[day]["totals"]["audits"])
    last = days[-1]
    metadata = report_metadata(reports[last], last)
    if len(days) > 1:
        metadata["days"] = MetadataValue.md(markdown_table(
            ["day", "audits", "mean score %", "compliant", "REJET"],
            [[d, r["totals"]["audits"], r["totals"]["mean_score"], r["totals"]["compliant"],
              r["niveau_counts"].get("REJET", 0)] for d, r in reports.items()]))
        metadata["charts_day"] = last
    return MaterializeResult(metadata=metadata)


@asset(
    partitions_def=compliance_weeks,
    deps=[AssetDep(daily_compliance_report, partition_mapping=TimeWindowPartitionMapping())],
    group_name="reports",
    kinds={"pandas", "postgres"},
    description=(
        "The week's compliance report (ISO week, Monday → Sunday, Europe/Paris): the roll-up of the stored "
        "daily compliance reports of its days. Stored in weekly_compliance_reports."
    ),
)
def weekly_compliance_report(context: AssetExecutionContext, db: DatabaseResource) -> MaterializeResult:
    metadata: dict[str, Any] = {}
    for key in context.partition_keys:
        week = core.iso_week_key(key)
        days = core.week_days(week)
        read_at = now_utc()
        with db.session() as s:
            daily = store.daily_reports(s, days)
        report = core.rollup_reports(daily[d] for d in sorted(daily))
        with db.session() as s:
            store.upsert_weekly(s, week, days[0], sorted(daily), report, context.run_id, generated_at=read_at)
        missing = [d for d in days if d not in daily]
        if missing:
            context.log.warning("weekly report %s: no daily report for %s", week, ", ".join(missing))
        metadata = {
            "week": week,
            **report_metadata(report, week),
            "days_included": MetadataValue.json(sorted(daily)),
            "days_missing": MetadataValue.json(missing),
            "per_day": MetadataValue.md(markdown_table(
                ["day", "audits", "mean score %", "compliant", "REJET"],
                [[d, r["totals"]["audits"], r["totals"]["mean_score"], r["totals"]["compliant"],
                  r["niveau_counts"].get("REJET", 0)] for d, r in sorted(daily.items())]) if daily else "no daily report"),
        }
    return MaterializeResult(metadata=metadata)


REPORT_ASSETS = [daily_compliance_report, weekly_compliance_report]
