"""Sensor ``automation_runs_progress``: drives each automation run after its fiches were handed to
a backfill (spec 05 §3.6–§3.9, §5).

Each tick, per running run: publish ``automation.run.progress`` when the per-fiche verdicts moved;
when the run's current backfill is over (and none of its runs is active), either retry the failed
fiches with one more backfill (``retryFailed``, up to ``maxRetries`` extra attempts) or finalize
the run once (row-locked), then notify (webhook through the outbox, e-mail).
"""

from dagster import DefaultSensorStatus, SensorEvaluationContext, SkipReason, sensor

from auditflow_dagster.db import automation_runs as runs_db
from auditflow_dagster.db.models import AutomationRun
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.sensors.batches import backfill_settled


def retry_or_finalize(instance, run_id: int, attempt: int) -> str:
    """The run's current backfill is over: ``retried`` or ``finalized`` (or ``noop`` when another
    evaluation got there first)."""
    from auditflow_dagster.jobs.automation import launch_fiche_backfill, notify_ending

    with session_scope() as s:
        run = s.get(AutomationRun, run_id, with_for_update=True)
        if run is None or run.status != "running":
            return "noop"
        plan = (run.config_snapshot or {}).get("plan") or {}
        retries_left = plan.get("retry_failed") and attempt < int(plan.get("max_retries") or 0)
        if retries_left and runs_db.has_failure(s, run_id):
            failed = runs_db.take_failed_for_retry(s, run_id)
            fiche_ids = [f["ficheId"] for f in failed]
            backfill_id = launch_fiche_backfill(instance, run_id=run_id, schedule_id=run.schedule_id,
                                                fiche_ids=fiche_ids, plan=plan, attempt=attempt + 1)
            runs_db.add_backfill(s, run_id, backfill_id, attempt=attempt + 1)
            runs_db.log(s, run_id, "warning",
                        f"Retrying {len(fiche_ids)} failed fiche(s) (attempt {attempt + 1}/{plan.get('max_retries')})",
                        {"failures": failed, "backfill_id": backfill_id})
            return "retried"
    with session_scope() as s:
        ending = runs_db.finalize_run(s, run_id)
    if ending is None:
        return "noop"
    notify_ending(ending)
    return "finalized"


def watch_automation_runs(instance) -> dict[str, int]:
    counts = {"runs": 0, "progress": 0, "retried": 0, "finalized": 0}
    with session_scope() as s:
        running = runs_db.running_runs(s)
    for run_id, backfill_ids, attempt in running:
        counts["runs"] += 1
        with session_scope() as s:
            counts["progress"] += int(runs_db.publish_progress(s, run_id))
        if backfill_settled(instance, backfill_ids[-1]):
            outcome = retry_or_finalize(instance, run_id, attempt)
            if outcome in counts:
                counts[outcome] += 1
    return counts


@sensor(
    name="automation_runs_progress",
    minimum_interval_seconds=10,
    default_status=DefaultSensorStatus.RUNNING,
    description="Publishes automation run progress, retries failed fiches (retryFailed) and finalizes runs "
                "once their fiche backfill is over; then notifies.",
)
def automation_runs_progress(context: SensorEvaluationContext) -> SkipReason:
    from auditflow_dagster.db.embedded import ensure_database_env

    ensure_database_env()
    c = watch_automation_runs(context.instance)
    return SkipReason(f"automation runs: running={c['runs']}, progress={c['progress']}, retried={c['retried']}, "
                      f"finalized={c['finalized']}")
