"""Sensor ``automation_scheduler``: launches due automation schedules (spec 05 §2.1, §2.4–§2.6).

Every ~60 s Dagster evaluates it; it *scans* only when a UTC minute in ``(cursor, now]`` matches
``AUTOMATION_SCHEDULER_CRON`` (the cursor is the last evaluated minute, epoch ms). A scan, per
active schedule:

1. stale handling (§2.1 step 2.1, §2.4): a ``running`` schedule is reconciled when it is stale
   (``now − last_run_at ≥ STALE`` or NULL ``last_run_at``) and then evaluated; running and not
   stale ⇒ skipped. Runs whose Dagster run ended FAILURE/CANCELED before any fiche backfill was
   launched are failed at once (rewrite);
2. ``MANUAL`` never runs; a schedule whose timing cannot be evaluated is skipped with a warning;
3. due detection (:func:`core.schedules.due_occurrence`) over the effective window
   ``W = max(AUTOMATION_SCHEDULER_WINDOW_MINUTES, tick period + 1)`` (§2.6);
4. one ``RunRequest`` per due schedule, run key ``automation-schedule-{id}-{dueAtMs}``.

Duplicates are prevented by Dagster's run-key de-duplication for sensors (same minute ⇒ same
``dueAt`` ⇒ same key, whatever the cursor) and by the job's compare-and-set at start (§2.5), which
is why the sensor itself writes no marks on schedules.
"""

import datetime as dt
import functools
import logging

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from auditflow_dagster.core.schedules import (
    DueOccurrence,
    ScheduleConfigError,
    due_occurrence,
    effective_window_minutes,
    epoch_ms,
    floor_minute,
    parse_cron,
    tick_period_minutes,
    tick_should_scan,
)
from auditflow_dagster.db import automation_scheduler as scheduler_db
from auditflow_dagster.db.clock import iso
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.settings import get_settings

SENSOR_NAME = "automation_scheduler"
AUTOMATION_RUN_JOB = "automation_run_job"
AUTOMATION_RUN_OP = "automation_run"
FALLBACK_TICK_CRON = "* * * * *"

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
_FAILED = {DagsterRunStatus.FAILURE: "FAILURE", DagsterRunStatus.CANCELED: "CANCELED"}
_announced: set[tuple[str, int, int]] = set()
logger = logging.getLogger("auditflow.automation.scheduler")


def current_time() -> dt.datetime:
    """The evaluation instant (aware UTC). Module-level so tests can travel in time by patching it."""
    return dt.datetime.now(dt.UTC)


# --------------------------------------------------------------------------------------------
# Cursor and cadence (§2.5, §2.6)
# --------------------------------------------------------------------------------------------


def parse_cursor(cursor: str | None) -> dt.datetime | None:
    """The last evaluated minute (aware UTC) from the cursor (epoch ms); garbage ⇒ None (scan)."""
    try:
        return _EPOCH + dt.timedelta(milliseconds=int(str(cursor).strip()))
    except (TypeError, ValueError, OverflowError):
        return None


def format_cursor(minute: dt.datetime) -> str:
    return str(epoch_ms(floor_minute(minute)))


@functools.lru_cache(maxsize=16)
def _tick_period(tick_cron: str) -> int:
    return tick_period_minutes(tick_cron)


def tick_cron_and_window(tick_cron: str, configured_window: int) -> tuple[str, int, str | None]:
    """``(usable tick cron, effective W, warning)``: a bad ``AUTOMATION_SCHEDULER_CRON`` falls back
    to every minute (with a warning) rather than stopping all automation."""
    warning = None
    try:
        parse_cron(tick_cron)
        period = _tick_period(tick_cron)
    except ScheduleConfigError as exc:
        warning = f"AUTOMATION_SCHEDULER_CRON {tick_cron!r} is unusable ({exc}); scanning every minute"
        tick_cron, period = FALLBACK_TICK_CRON, 1
    return tick_cron, effective_window_minutes(configured_window, period), warning


# --------------------------------------------------------------------------------------------
# Dagster side of the stale check (§2.4 rewrite extension)
# --------------------------------------------------------------------------------------------


def dagster_run_failure(instance, dagster_run_id: str) -> str | None:
    """``"FAILURE"``/``"CANCELED"`` when the run and every re-execution of it are over and the latest
    failed without a pending retry; else None (alive, succeeded, or unknown to this instance)."""
    records = [*instance.get_run_records(RunsFilter(run_ids=[dagster_run_id])),
               *instance.get_run_records(RunsFilter(tags={"dagster/root_run_id": dagster_run_id}))]
    if not records or any(r.dagster_run.status not in _FINISHED for r in records):
        return None
    latest = max(records, key=lambda r: r.create_timestamp).dagster_run
    if latest.tags.get("dagster/will_retry") == "true":
        return None
    return _FAILED.get(latest.status)


def failed_dagster_runs(instance, pending: list[dict], schedule_ids: set[int]) -> dict[int, dict[int, str]]:
    """``{schedule_id: {automation_run_id: status}}`` for runs whose Dagster run failed (best effort)."""
    out: dict[int, dict[int, str]] = {}
    for run in pending:
        if run["schedule_id"] not in schedule_ids:
            continue
        try:
            status = dagster_run_failure(instance, run["dagster_run_id"])
        except Exception:  # noqa: BLE001 - reconciliation is best effort (§2.4)
            logger.warning("could not read Dagster run %s", run["dagster_run_id"], exc_info=True)
            continue
        if status:
            out.setdefault(run["schedule_id"], {})[run["id"]] = status
    return out


# --------------------------------------------------------------------------------------------
# The scan
# --------------------------------------------------------------------------------------------


def scheduled_run_request(schedule_id: int, due: DueOccurrence) -> RunRequest:
    """The run of one due occurrence (§2.5): its key is the idempotency key of §2.1 step 3."""
    return RunRequest(
        run_key=due.run_key(schedule_id),
        job_name=AUTOMATION_RUN_JOB,
        run_config={"ops": {AUTOMATION_RUN_OP: {"config": {
            "schedule_id": int(schedule_id), "due_at_ms": due.due_at_ms, "trigger": "scheduled"}}}},
        tags={
            "automation/schedule_id": str(schedule_id),
            "automation/due_at": iso(due.due_at.astimezone(dt.UTC).replace(tzinfo=None)),
            "automation/trigger": "scheduled",
            "auditflow/trigger": "automation",
        },
    )


def scan(instance, now: dt.datetime, window_minutes: int, log) -> tuple[list[RunRequest], list[str]]:
    """One evaluation of every active schedule; returns the run requests and notes for the tick."""
    settings = get_settings()
    stale_ms = settings.automation_stale_ms
    with session_scope() as session:
        schedules = scheduler_db.active_schedules(session)
        pending = scheduler_db.runs_awaiting_pipeline(session)
    failures = failed_dagster_runs(instance, pending, {s["id"] for s in schedules}) if instance is not None else {}

    requests: list[RunRequest] = []
    notes: list[str] = []
    for schedule in schedules:
        sid, label = schedule["id"], f"schedule {schedule['id']} ({schedule['name']})"
        status = schedule["last_run_status"]
        stale = scheduler_db.schedule_is_stale(status, schedule["last_run_at"], now=now, stale_ms=stale_ms)
        dead = failures.get(sid, {})
        if status == "running" or dead:
            try:
                with session_scope() as session:
                    count = scheduler_db.reconcile_stale(session, sid, now=now, stale_ms=stale_ms,
                                                         failed_dagster_runs=dead)
                    status = scheduler_db.last_run_status(session, sid)
                if count or stale:
                    log.warning(f"automation scheduler: {label} reconciled {count} dead run(s)"
                                f"{' (schedule stale)' if stale else ''}")
                    notes.append(f"{label}: reconciled {count} run(s)")
            except Exception as exc:  # noqa: BLE001 - best effort, never fatal (§2.4)
                log.warning(f"automation scheduler: could not reconcile {label}: {exc}")
        if status == "running" and not stale:
            notes.append(f"{label}: running")
            continue
        if schedule["schedule_type"] == "MANUAL":
            continue
        try:
            due = due_occurrence(schedule, now, schedule["last_run_at"], window_minutes=window_minutes,
                                 last_due_at=schedule["last_due_at"])
        except ScheduleConfigError as exc:
            log.warning(f"automation scheduler: {label} skipped: {exc}")
            notes.append(f"{label}: skipped, {exc}")
            continue
        if due is not None:
            requests.append(scheduled_run_request(sid, due))
            log.info(f"automation scheduler: {label} due at {iso(due.due_at.replace(tzinfo=None))} "
                     f"(local {due.local.isoformat()}), run key {due.run_key(sid)}")
    notes.insert(0, f"{len(schedules)} active schedule(s), {len(requests)} due")
    return requests, notes


def evaluate(instance, cursor: str | None, now: dt.datetime, log) -> SensorResult:
    """The tick (§2.5): scan when the tick cron matched since the cursor; the cursor becomes ``now``'s minute."""
    settings = get_settings()
    tick_cron, window, warning = tick_cron_and_window(settings.automation_scheduler_cron,
                                                      settings.automation_scheduler_window_minutes)
    if warning:
        log.warning(f"automation scheduler: {warning}")
    key = (tick_cron, settings.automation_scheduler_window_minutes, window)
    if key not in _announced:  # "effective W logged at start" (§2.6)
        _announced.add(key)
        log.info(f"automation scheduler: tick cron {tick_cron!r}, window {window} min "
                 f"(configured {settings.automation_scheduler_window_minutes})")
    new_cursor = format_cursor(now)
    if not tick_should_scan(tick_cron, parse_cursor(cursor), now):
        return SensorResult(skip_reason=f"no scan: AUTOMATION_SCHEDULER_CRON {tick_cron!r} did not match "
                                        "since the last evaluated minute", cursor=new_cursor)
    requests, notes = scan(instance, now, window, log)
    if requests:
        return SensorResult(run_requests=requests, cursor=new_cursor)
    return SensorResult(skip_reason="; ".join(notes), cursor=new_cursor)


@sensor(
    name=SENSOR_NAME,
    job_name=AUTOMATION_RUN_JOB,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Launches automation_run_job for each due automation schedule (run key "
                "automation-schedule-{id}-{dueAtMs}) and reconciles stale or dead automation runs.",
)
def automation_scheduler(context: SensorEvaluationContext) -> SensorResult:
    from auditflow_dagster.db.embedded import ensure_database_env

    ensure_database_env()
    return evaluate(context.instance, context.cursor, current_time(), context.log)
