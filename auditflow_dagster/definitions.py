"""The AuditFlow code location: one ``Definitions`` object (DESIGN §2)."""

from __future__ import annotations

import warnings

from dagster import BetaWarning

# backfill_policy is "beta" in 1.13; we rely on it deliberately (DESIGN §3.4).
warnings.filterwarnings("ignore", category=BetaWarning)

from dagster import (
    Definitions,
    define_asset_job,
    in_process_executor,
)

from auditflow_dagster.assets.audits import audit_step_results, audits
from auditflow_dagster.assets.calibration import CALIBRATION_ASSETS
from auditflow_dagster.assets.checks import AUDIT_CHECKS
from auditflow_dagster.assets.fiches import fiche_details
from auditflow_dagster.assets.reports import REPORT_ASSETS
from auditflow_dagster.assets.reruns import audit_step_reruns, rerun_audit_step_job
from auditflow_dagster.assets.sales import sales_list
from auditflow_dagster.assets.transcripts import transcripts
from auditflow_dagster.jobs.automation import automation_run_job
from auditflow_dagster.partitions import fiches_partitions
from auditflow_dagster.resources.crm import CrmResource
from auditflow_dagster.resources.database import DatabaseResource
from auditflow_dagster.resources.llm import LlmResource
from auditflow_dagster.resources.notifier import NotifierResource
from auditflow_dagster.resources.stt import SttResource
from auditflow_dagster.schedules import (
    daily_sales_schedule,
    revalidation_schedule,
    sales_day_job,
)
from auditflow_dagster.sensors.audit_watchdog import audit_watchdog
from auditflow_dagster.sensors.automation_runs import automation_runs_progress
from auditflow_dagster.sensors.automation_scheduler import automation_scheduler
from auditflow_dagster.sensors.batches import audit_batches_progress
from auditflow_dagster.sensors.day_pipeline import sales_day_fiches_backfill
from auditflow_dagster.sensors.lifecycle import partition_lifecycle
from auditflow_dagster.sensors.progress import progressive_fetch_watchdog
from auditflow_dagster.sensors.reports import compliance_reports_trigger
from auditflow_dagster.sensors.run_endings import run_endings
from auditflow_dagster.sensors.webhooks import webhook_deliveries_sensor
from auditflow_dagster.settings import get_settings

FICHE_ASSETS = [fiche_details, transcripts, audit_step_results, audits]

#: One fiche (interactive API audit) or a key range of fiches (batches): the whole chain, in process.
audit_fiche_job = define_asset_job(
    "audit_fiche",
    selection=FICHE_ASSETS,
    partitions_def=fiches_partitions,
    executor_def=in_process_executor,
    description="Details → transcripts → step analyses → finalized audit, for the run's fiche partition(s).",
)

#: A details refresh for one fiche (the API's read path when the cache cannot answer).
fetch_fiche_job = define_asset_job(
    "fetch_fiche",
    selection=[fiche_details],
    partitions_def=fiches_partitions,
    executor_def=in_process_executor,
    description="Fetch and cache the full CRM details of one fiche.",
)

#: Transcription on demand (spec 02 §5.1 ``transcribe_fiche``): a details refresh, then the transcripts.
transcribe_fiche_job = define_asset_job(
    "transcribe_fiche",
    selection=[fiche_details, transcripts],
    partitions_def=fiches_partitions,
    executor_def=in_process_executor,
    description="Refresh the fiche's details (recording URLs may be re-signed), then transcribe its recordings.",
)


def build_definitions() -> Definitions:
    settings = get_settings()
    return Definitions(
        assets=[sales_list, *FICHE_ASSETS, audit_step_reruns, *REPORT_ASSETS, *CALIBRATION_ASSETS],
        asset_checks=AUDIT_CHECKS,
        jobs=[audit_fiche_job, fetch_fiche_job, transcribe_fiche_job, sales_day_job, rerun_audit_step_job,
              automation_run_job],
        schedules=[daily_sales_schedule, revalidation_schedule],
        sensors=[sales_day_fiches_backfill, webhook_deliveries_sensor, progressive_fetch_watchdog, partition_lifecycle,
                 audit_watchdog, audit_batches_progress, automation_runs_progress,
                 automation_scheduler, run_endings, compliance_reports_trigger],
        executor=in_process_executor,
        resources={
            "crm": CrmResource.from_settings(settings),
            "stt": SttResource.from_settings(settings),
            "llm": LlmResource.from_settings(settings),
            "db": DatabaseResource(),
            "notifier": NotifierResource(),
        },
    )


defs = build_definitions()
