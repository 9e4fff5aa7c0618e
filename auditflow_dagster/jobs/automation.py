"""``automation_run_job``: one automation run (spec 05 §3), the Dagster way (DESIGN §3.4).

The job's op starts the run (compare-and-set for a scheduled occurrence, or the row the trigger
endpoint created), selects the fiches, and hands them to ONE asset backfill over the fiche
partitions (details → transcripts → step analyses → audits), tagged with the run id. The fiche
assets record each fiche's verdict as soon as it is known (``assets/automation_gate.py``); the
``automation_runs_progress`` sensor publishes progress, retries failed fiches (``retryFailed``)
and finalizes. So a 200-fiche run is a handful of Dagster runs (50 partitions per run), each
visible in the UI, instead of hundreds of per-fiche workers.

Sales lists go through the same writer as the ``sales_list`` asset, and each day read from the CRM
is reported as a ``sales_list[day]`` materialization of this run (lineage in the UI).
"""

import datetime as dt
import time
import zoneinfo
from typing import Any

from dagster import (
    AssetMaterialization,
    Config,
    OpExecutionContext,
    in_process_executor,
    job,
    op,
)

from auditflow_dagster.assets.runtime import run_async
from auditflow_dagster.core import automation as rules
from auditflow_dagster.db import automation_runs as runs_db
from auditflow_dagster.db.clock import now_utc
from auditflow_dagster.db.locks import global_slot
from auditflow_dagster.db.models import AutomationRun, AutomationSchedule
from auditflow_dagster.partitions import FICHES_PARTITIONS_NAME, MAX_KEYS_PER_ADD
from auditflow_dagster.resources.crm import CrmResource
from auditflow_dagster.resources.database import DatabaseResource
from auditflow_dagster.settings import get_settings

FICHE_CHAIN = ["fiche_details", "transcripts", "audit_step_results", "audits"]
RUN_ID_TAG = "automation/run_id"


class AutomationRunConfig(Config):
    """``schedule_id`` + ``due_at_ms`` for a scheduled occurrence (the sensor's run request);
    ``run_id`` for a manual trigger (the row the endpoint created, with its override selection)."""

    schedule_id: int
    due_at_ms: int | None = None
    run_id: int | None = None
    trigger: str = "scheduled"


def _today_in(zone: str) -> dt.date:
    try:
        tz = zoneinfo.ZoneInfo(zone or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        tz = zoneinfo.ZoneInfo("UTC")
    return dt.datetime.now(dt.UTC).astimezone(tz).date()


def selection_of(schedule: AutomationSchedule, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The effective ``ficheSelection``: the manual override replaces the stored one whole."""
    if overrides:
        return dict(overrides)
    from auditflow_dagster.db.automation import selection_json

    return selection_json(schedule)


def fiche_backfill_run_config(plan: dict[str, Any], run_id: int, schedule_id: int) -> dict[str, Any]:
    """What every run of the fiche backfill gets: a forced details refresh (within the cooldown)
    and the audit options of the schedule (all resolved configs, tools mode, run links)."""
    return {"ops": {
        "fiche_details": {"config": {"force_refresh": True}},
        "audit_step_results": {"config": {
            "audit_config_ids": plan["config_ids"],
            "use_rlm": plan["use_rlm"],
            "trigger_source": "automation",
            "skip_if_audited": False,
            "automation_schedule_id": schedule_id,
            "automation_run_id": run_id,
        }},
    }}


def launch_fiche_backfill(instance: Any, *, run_id: int, schedule_id: int, fiche_ids: list[str],
                          plan: dict[str, Any], attempt: int) -> str:
    """One asset backfill over the fiches' partitions through the whole chain (re-registering the
    partitions first: retention may have retired them). Returns the backfill id."""
    from dagster._core.definitions.assets.graph.asset_graph_subset import (
        AssetGraphSubset,
    )
    from dagster._core.definitions.events import AssetKey, AssetKeyPartitionKey
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    from auditflow_dagster.definitions import defs

    known = set(instance.get_dynamic_partitions(FICHES_PARTITIONS_NAME))
    new = [f for f in fiche_ids if f not in known]
    for i in range(0, len(new), MAX_KEYS_PER_ADD):
        instance.add_dynamic_partitions(FICHES_PARTITIONS_NAME, new[i: i + MAX_KEYS_PER_ADD])
    asset_graph = defs.get_repository_def().asset_graph
    subset = AssetGraphSubset.from_asset_partition_set(
        {AssetKeyPartitionKey(AssetKey(a), f) for a in FICHE_CHAIN for f in fiche_ids}, asset_graph)
    backfill_id = make_new_backfill_id()
    # (no automation/schedule_id tag here: that tag's run limit is for the job run only)
    tags = {RUN_ID_TAG: str(run_id), "automation/attempt": str(attempt),
            "auditflow/trigger": "automation", "auditflow/priority": plan.get("priority", "normal")}
    instance.add_backfill(PartitionBackfill.from_asset_graph_subset(
        backfill_id=backfill_id, backfill_timestamp=time.time(), tags=tags, dynamic_partitions_store=instance,
        asset_graph_subset=subset, title=f"automation run {run_id}" + (f" (retry {attempt})" if attempt else ""),
        description=f"Automation run {run_id} of schedule {schedule_id}: {len(fiche_ids)} fiche(s)",
        run_config=fiche_backfill_run_config(plan, run_id, schedule_id)))
    return backfill_id


def _start(context: OpExecutionContext, config: AutomationRunConfig, db: DatabaseResource) -> int | None:
    settings = get_settings()
    root = context.run.root_run_id or context.run_id
    with db.session() as s:
        if config.run_id is not None:
            run = runs_db.begin_manual_run(s, config.run_id, root)
            if run is None:
                context.log.info("automation run %s is already final; nothing to do", config.run_id)
                return None
            return run.id
        if config.due_at_ms is None:
            raise ValueError("a scheduled automation run needs due_at_ms")
        due_at = dt.datetime.fromtimestamp(config.due_at_ms / 1000, dt.UTC).replace(tzinfo=None)
        run = runs_db.start_scheduled_run(s, schedule_id=config.schedule_id, due_at=due_at, dagster_run_id=root,
                                          stale_ms=settings.automation_stale_ms)
        if run is None:
            context.log.info("schedule %s occurrence %s already handled (or the schedule is running); exiting",
                             config.schedule_id, due_at.isoformat())
            return None
        return run.id


def _select(context: OpExecutionContext, run_id: int, crm: CrmResource, db: DatabaseResource) -> Any:
    """Spec 05 §3.3: the candidate fiches, pre-filtered and capped; yields materializations of the
    days read from the CRM (reported as ``sales_list[day]`` materializations). Returns
    ``(selected, plan, early_exit_reason, days, revalidation_failures)``."""
    settings = get_settings()
    with db.session() as s:
        run = s.get(AutomationRun, run_id)
        schedule = runs_db.schedule_of(s, run)
        selection = selection_of(schedule, (run.config_snapshot or {}).get("overrides"))
        config_ids, dropped = runs_db.resolve_configs(s, schedule)
        api_key = None
        if schedule.external_api_key:
            from auditflow_dagster.db.secret_box import unseal

            api_key = unseal(schedule.external_api_key)
        zone = schedule.timezone or "UTC"
        sched = {"run_transcription": schedule.run_transcription, "skip_if_transcribed": schedule.skip_if_transcribed,
                 "priority": schedule.transcription_priority if schedule.transcription_priority in
                 ("low", "normal", "high") else "normal", "run_audits": schedule.run_audits,
                 "continue_on_error": schedule.continue_on_error, "retry_failed": schedule.retry_failed,
                 "max_retries": schedule.max_retries}
        if dropped:
            runs_db.log(s, run_id, "warning", "Dropped unknown or inactive audit config(s)", {"configIds": dropped})
        runs_db.log(s, run_id, "info", f"Resolved {len(config_ids)} audit config(s)", {"configIds": config_ids})
        if not config_ids and sched["run_audits"]:
            runs_db.log(s, run_id, "error", "No audit configs resolved; cannot proceed with audits")

    groupes = [g.strip() for g in selection.get("groupes") or [] if isinstance(g, str) and g.strip()]
    max_fiches = selection.get("maxFiches") if isinstance(selection.get("maxFiches"), int) else None
    plan = {
        **sched, "config_ids": config_ids, "use_rlm": bool(selection.get("useRlm")), "groupes": groupes,
        "only_with_recordings": bool(selection.get("onlyWithRecordings")),
        "only_unaudited": bool(selection.get("onlyUnaudited")),
        "threshold": rules.recordings_threshold(selection.get("maxRecordingsPerFiche"),
                                                settings.automation_max_recordings_per_fiche,
                                                settings.automation_hard_max_recordings_per_fiche),
        "mode": selection.get("mode"), "dateRange": selection.get("dateRange"), "maxFiches": max_fiches,
        "maxRecordingsPerFiche": selection.get("maxRecordingsPerFiche"),
    }
    failures: list[dict[str, Any]] = []
    days: list[str] = []

    if selection.get("mode") == "manual":
        ids = rules.split_fiche_ids(selection.get("ficheIds") or [])
        with db.session() as s:
            runs_db.log(s, run_id, "info", "Processing manual fiche selection")
        if not ids:
            return [], plan, "no_fiches_manual", days, failures
        selected = ids[:max_fiches] if max_fiches else ids
        with db.session() as s:
            runs_db.log(s, run_id, "info", f"Using {len(selected)} manually selected fiches", {"ficheIds": selected})
        return selected, plan, None, days, failures

    day_dates = rules.selection_days(selection.get("dateRange"), _today_in(zone), selection.get("customStartDate"),
                                     selection.get("customEndDate"))
    days = [d.isoformat() for d in day_dates]
    with db.session() as s:
        runs_db.log(s, run_id, "info", f"Calculated {len(days)} dates to query",
                    {"dates": rules.dates_preview([rules.dmy(d) for d in day_dates])})
    if not days:
        return [], plan, "no_dates", days, failures

    from auditflow_dagster.assets.sales import write_sales_day

    cooldown = dt.timedelta(milliseconds=settings.automation_revalidation_cooldown_ms)
    candidates: list[tuple[str, str | None]] = []
    known = set(context.instance.get_dynamic_partitions(FICHES_PARTITIONS_NAME))
    materialized: list[AssetMaterialization] = []

    with db.session() as s:
        fresh = {k for k in days if (t := runs_db.day_revalidated_at(s, k)) is not None and now_utc() - t < cooldown}
    stale = [(k, d) for k, d in zip(days, day_dates) if k not in fresh]

    async def fetch_stale() -> dict[str, dict[str, Any] | str]:
        """One CRM client for every day the cache cannot answer; a failed day maps to its error."""
        out: dict[str, dict[str, Any] | str] = {}
        try:
            async with crm.client(auth_token=api_key) as client:
                for key, day in stale:
                    try:
                        async with global_slot("crm_sales_search", settings.fiche_sales_search_concurrency):
                            out[key] = await client.sales_with_calls(day, day, include_recordings=True)
                    except Exception as exc:  # noqa: BLE001 - that day falls back to the cache (§3.3)
                        out[key] = str(exc)[:500] or exc.__class__.__name__
        except Exception as exc:  # noqa: BLE001 - no client: every stale day falls back to the cache
            for key, _ in stale:
                out.setdefault(key, str(exc)[:500] or exc.__class__.__name__)
        return out

    answers = run_async(fetch_stale) if stale else {}
    for day_key in days:
        if day_key in fresh:
            with db.session() as s:
                rows = runs_db.cached_day(s, day_key)
                runs_db.log(s, run_id, "info", f"Sales list {day_key} from cache (revalidated within the cooldown)",
                            {"date": day_key, "fiches": len(rows)})
            candidates += rows
            continue
        payload = answers[day_key]
        if isinstance(payload, str):
            failures.append({"date": day_key, "error": payload})
            with db.session() as s:
                rows = runs_db.cached_day(s, day_key)
                runs_db.log(s, run_id, "warning", f"Sales list {day_key} failed; using {len(rows)} cached fiche(s)",
                            {"date": day_key, "error": payload})
            candidates += rows
            continue
        items = payload.get("fiches") or []
        write_sales_day(db, context.instance, day_key, items, None, known)
        materialized.append(AssetMaterialization(asset_key="sales_list", partition=day_key, metadata={
            "fiches": len(items), "automation_run_id": run_id, "source": "automation selection"}))
        with db.session() as s:
            candidates += runs_db.cached_day(s, day_key)

    for m in materialized:
        context.log_event(m)
    seen: set[str] = set()
    unique = [(f, g) for f, g in candidates if not (f in seen or seen.add(f))]
    kept = [f for f, g in unique if rules.groupe_kept(g, groupes)]
    if plan["only_unaudited"]:
        with db.session() as s:
            done = runs_db.audited_fiches(s, kept, config_ids if plan["run_audits"] else [])
        kept = [f for f in kept if f not in done]
    selected = kept[:max_fiches] if max_fiches else kept
    return selected, plan, None if selected else "no_fiches", days, failures


@op(description="Start the automation run, select its fiches and launch their backfill (spec 05 §3).")
def automation_run(context: OpExecutionContext, config: AutomationRunConfig, crm: CrmResource,
                   db: DatabaseResource) -> None:
    try:
        run_id = _start(context, config, db)
    except runs_db.RunRefused as exc:
        context.log.warning(str(exc))  # no run row: nothing to finalize (spec 05 §3.1 step 2)
        return
    if run_id is None:
        return
    with db.session() as s:
        run = s.get(AutomationRun, run_id)
        if run.backfill_ids:  # a retry of a run that already launched its fiches: the sensor has it
            context.log.info("automation run %s already launched backfill %s", run_id, run.backfill_ids[-1])
            return
        schedule_id = run.schedule_id
    try:
        selected, plan, early, days, failures = _select(context, run_id, crm, db)
        with db.session() as s:
            runs_db.save_plan(s, run_id, selected=selected, plan=plan, revalidation_failures=failures)
            runs_db.log(s, run_id, "info", f"Final: {len(selected)} fiches to process")
            run = s.get(AutomationRun, run_id)
            groupes = plan["groupes"]
            selection_event = {
                "mode": plan["mode"], "dateRange": plan["dateRange"], "groupes_count": len(groupes),
                "onlyWithRecordings": plan["only_with_recordings"], "onlyUnaudited": plan["only_unaudited"],
                "maxFiches": plan["maxFiches"], "maxRecordingsPerFiche": plan["maxRecordingsPerFiche"],
                "useRlm": plan["use_rlm"], "total_fiches": len(selected), "total_dates": len(days)}
            if len(groupes) <= 10:
                selection_event["groupes"] = groupes
            runs_db.realtime(s, "automation.run.selection", run, **selection_event)
        if early:
            with db.session() as s:
                runs_db.early_exit(s, run_id, early)
            return
        with db.session() as s:
            runs_db.log(s, run_id, "info", f"Running {len(plan['config_ids'])} configs × {len(selected)} fiches = "
                        f"{len(plan['config_ids']) * len(selected)} total audits")
        backfill_id = launch_fiche_backfill(context.instance, run_id=run_id, schedule_id=schedule_id,
                                            fiche_ids=selected, plan=plan, attempt=0)
        with db.session() as s:
            runs_db.add_backfill(s, run_id, backfill_id, attempt=0)
            runs_db.log(s, run_id, "info", f"Launched fiche pipeline backfill {backfill_id} for {len(selected)} fiches",
                        {"backfill_id": backfill_id})
        context.log.info("automation run %s: %s fiches → backfill %s", run_id, len(selected), backfill_id)
    except Exception as exc:
        with db.session() as s:
            ending = runs_db.fail_run(s, run_id, str(exc) or exc.__class__.__name__, name=exc.__class__.__name__)
        if ending is not None:
            notify_ending(ending)
        raise


def notify_ending(ending: runs_db.Ending) -> None:
    """Webhook (outbox) and e-mail for a committed ending; failures are logged, never raised."""
    runs_db.notify(ending)


@job(executor_def=in_process_executor, tags={"auditflow/trigger": "automation"},
     description="One automation run: start, select fiches, launch their backfill (spec 05).")
def automation_run_job() -> None:
    automation_run()
