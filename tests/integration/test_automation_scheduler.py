"""The automation scheduler sensor (spec 05 §2): time travel on real PostgreSQL rows and a real
Dagster instance — due detection in IANA zones across the 2026 Paris DST changes, run keys and
Dagster's run-key de-duplication, stale and dead-run reconciliation, the tick cron."""

import datetime as dt
import logging
import os
import sys
from zoneinfo import ZoneInfo

import pytest
from dagster import (
    DagsterRunStatus,
    Definitions,
    Field,
    Noneable,
    Permissive,
    RunsFilter,
    build_sensor_context,
    job,
    op,
)
from sqlalchemy import select, update

from auditflow_dagster.core.schedules import epoch_ms
from auditflow_dagster.db.models import (
    AutomationLog,
    AutomationRun,
    AutomationSchedule,
    Event,
)
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.sensors import automation_scheduler as sensor_module
from auditflow_dagster.sensors.automation_scheduler import automation_scheduler
from auditflow_dagster.settings import get_settings

PARIS = ZoneInfo("Europe/Paris")
MINUTE = dt.timedelta(minutes=1)


# A stand-in with the real job's name, op and config: the sensor only needs the target to exist, and
# the real job (which needs the CRM and the database) must not run here. test_run_config_fits_the_real_job
# checks the request against the real job's config schema.
@op(name="automation_run", config_schema={
    "schedule_id": int,
    "due_at_ms": Field(Noneable(int), is_required=False),
    "run_id": Field(Noneable(int), is_required=False),
    "trigger": Field(str, default_value="scheduled"),
    "override_fiche_selection": Field(Noneable(Permissive()), is_required=False),
})
def _automation_run_stand_in(context) -> None:
    context.log.info(f"stand-in automation run {context.op_config}")


@job(name="automation_run_job")
def automation_run_job_stand_in() -> None:
    _automation_run_stand_in()


@op
def _boom() -> None:
    raise RuntimeError("boom")


@job
def failing_job() -> None:
    _boom()


scheduler_test_defs = Definitions(jobs=[automation_run_job_stand_in, failing_job], sensors=[automation_scheduler])
REPO = scheduler_test_defs.get_repository_def()


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def paris(*args: int, fold: int = 0) -> dt.datetime:
    """A Paris wall time as a UTC instant."""
    return dt.datetime(*args, tzinfo=PARIS, fold=fold).astimezone(dt.UTC)


def naive(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def key(schedule_id: int, due_at: dt.datetime) -> str:
    return f"automation-schedule-{schedule_id}-{epoch_ms(due_at)}"


def add_schedule(**fields) -> int:
    values = {"name": "nightly", "schedule_type": "DAILY", "time_of_day": "07:00", "timezone": "Europe/Paris",
              **fields}
    for name in ("last_run_at", "last_due_at"):
        if values.get(name) is not None:
            values[name] = naive(values[name])
    with session_scope() as s:
        row = AutomationSchedule(**values)
        s.add(row)
        s.flush()
        return row.id


def add_run(schedule_id: int, started_at: dt.datetime, **over) -> int:
    with session_scope() as s:
        run = AutomationRun(schedule_id=schedule_id, started_at=naive(started_at),
                            config_snapshot={"schedule": {"name": "nightly", "scheduleType": "DAILY"}}, **over)
        s.add(run)
        s.flush()
        return run.id


def schedule_row(schedule_id: int) -> AutomationSchedule:
    with session_scope() as s:
        return s.get(AutomationSchedule, schedule_id)


def run_row(run_id: int) -> AutomationRun:
    with session_scope() as s:
        return s.get(AutomationRun, run_id)


def claim(schedule_id: int, due_at: dt.datetime) -> None:
    """What the run job does at start (§2.5 compare-and-set)."""
    with session_scope() as s:
        s.execute(update(AutomationSchedule).where(AutomationSchedule.id == schedule_id).values(
            last_run_status="running", last_run_at=naive(due_at), last_due_at=naive(due_at)))


def finish(schedule_id: int, at: dt.datetime, status: str = "success") -> None:
    """What the run's finalization does (§2.3): ``last_run_at = now``."""
    with session_scope() as s:
        s.execute(update(AutomationSchedule).where(AutomationSchedule.id == schedule_id).values(
            last_run_status=status, last_run_at=naive(at), total_runs=AutomationSchedule.total_runs + 1))


def tick(monkeypatch, instance, now: dt.datetime, cursor: str | None = None):
    """One evaluation at ``now`` through Dagster's own tick evaluation (validates the requests)."""
    monkeypatch.setattr(sensor_module, "current_time", lambda: now)
    return automation_scheduler.evaluate_tick(build_sensor_context(instance=instance, cursor=cursor,
                                                                   repository_def=REPO))


def travel(monkeypatch, instance, start: dt.datetime, end: dt.datetime, *, step: dt.timedelta = MINUTE,
           run_minutes: int = 5, jitter: dt.timedelta = dt.timedelta(seconds=13)) -> list[tuple[int, dt.datetime]]:
    """Tick from ``start`` to ``end`` carrying the cursor; each request is claimed by the "job" at once
    and finished ``run_minutes`` later. Returns ``(schedule_id, due_at)`` per launch, asserting that no
    run key is ever requested twice."""
    launched: list[tuple[int, dt.datetime]] = []
    keys: set[str] = set()
    finishing: dict[int, dt.datetime] = {}
    cursor = None
    now = start + jitter
    while now < end:
        for sid, at in list(finishing.items()):
            if now >= at:
                finish(sid, at)
                del finishing[sid]
        data = tick(monkeypatch, instance, now, cursor)
        cursor = data.cursor
        for request in data.run_requests:
            assert request.run_key not in keys, f"duplicate run key {request.run_key} at {now}"
            keys.add(request.run_key)
            cfg = request.run_config["ops"]["automation_run"]["config"]
            due_at = dt.datetime.fromtimestamp(cfg["due_at_ms"] / 1000, dt.UTC)
            assert request.run_key == key(cfg["schedule_id"], due_at)
            assert due_at <= now
            launched.append((cfg["schedule_id"], due_at))
            claim(cfg["schedule_id"], due_at)
            finishing[cfg["schedule_id"]] = now + dt.timedelta(minutes=run_minutes)
        now += step
    return launched


@pytest.fixture(autouse=True)
def _fresh_settings():
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


# --------------------------------------------------------------------------------------------
# Due detection, run keys, tags
# --------------------------------------------------------------------------------------------


def test_daily_0700_paris_one_request_with_documented_key_and_tags(db, dagster_instance, monkeypatch):
    sid = add_schedule()
    due_at = paris(2026, 6, 10, 7, 0)  # CEST: 05:00Z
    assert due_at == utc(2026, 6, 10, 5, 0)

    assert tick(monkeypatch, dagster_instance, due_at - dt.timedelta(seconds=30)).run_requests == []
    data = tick(monkeypatch, dagster_instance, due_at + dt.timedelta(seconds=25))
    assert len(data.run_requests) == 1
    request = data.run_requests[0]
    assert epoch_ms(due_at) == 1781067600000
    assert request.run_key == f"automation-schedule-{sid}-1781067600000"
    assert request.job_name == "automation_run_job"
    assert request.run_config == {"ops": {"automation_run": {"config": {
        "schedule_id": sid, "due_at_ms": 1781067600000, "trigger": "scheduled"}}}}
    assert request.tags == {"automation/schedule_id": str(sid), "automation/due_at": "2026-06-10T05:00:00.000Z",
                            "automation/trigger": "scheduled", "auditflow/trigger": "automation",
                            "dagster/sensor_name": "automation_scheduler"}  # added by Dagster's evaluation
    assert data.cursor == str(epoch_ms(due_at))
    # the sensor writes no marks (§2.5): the job's compare-and-set does
    row = schedule_row(sid)
    assert row.last_run_at is None and row.last_run_status is None and row.last_due_at is None

    # without a launch, every minute of the window asks for the same occurrence, then it is lost (§2.6)
    keys = set()
    for minute in range(0, 26):
        now = due_at + minute * MINUTE + dt.timedelta(seconds=40)
        requests = tick(monkeypatch, dagster_instance, now).run_requests
        assert len(requests) == (1 if minute <= 20 else 0), minute
        keys |= {r.run_key for r in requests}
    assert keys == {request.run_key}


def test_winter_wall_time_and_one_launch_per_day(db, dagster_instance, monkeypatch):
    sid = add_schedule()
    launched = travel(monkeypatch, dagster_instance, utc(2026, 1, 14, 5, 30), utc(2026, 1, 15, 6, 30),
                      step=dt.timedelta(minutes=13))
    assert launched == [(sid, paris(2026, 1, 14, 7, 0)), (sid, paris(2026, 1, 15, 7, 0))]
    assert paris(2026, 1, 15, 7, 0) == utc(2026, 1, 15, 6, 0)


def test_same_minute_twice_and_daemon_restart_give_the_same_key(db, dagster_instance, monkeypatch):
    sid = add_schedule()
    due_at = paris(2026, 6, 10, 7, 0)
    first = tick(monkeypatch, dagster_instance, due_at + dt.timedelta(minutes=3, seconds=5))
    again = tick(monkeypatch, dagster_instance, due_at + dt.timedelta(minutes=3, seconds=55))  # same minute, same input
    assert [r.run_key for r in first.run_requests] == [r.run_key for r in again.run_requests] == [key(sid, due_at)]
    # with the cursor of that minute the same minute is not scanned again
    same = tick(monkeypatch, dagster_instance, due_at + dt.timedelta(minutes=3, seconds=58), first.cursor)
    assert same.run_requests == [] and same.skip_message.startswith("no scan")
    # next minute, cursor carried: still the same occurrence (not launched yet)
    nxt = tick(monkeypatch, dagster_instance, due_at + dt.timedelta(minutes=4, seconds=2), first.cursor)
    assert [r.run_key for r in nxt.run_requests] == [key(sid, due_at)]
    # daemon restart: a fresh context without cursor, minutes later
    restart = tick(monkeypatch, dagster_instance, due_at + dt.timedelta(minutes=11, seconds=30))
    assert [r.run_key for r in restart.run_requests] == [key(sid, due_at)]
    # once the job claimed it (last_run_at = due_at), it is not due any more
    claim(sid, due_at)
    finish(sid, due_at + dt.timedelta(minutes=2))
    assert tick(monkeypatch, dagster_instance, due_at + dt.timedelta(minutes=12)).run_requests == []


def test_garbage_cursor_scans(db, dagster_instance, monkeypatch):
    sid = add_schedule()
    data = tick(monkeypatch, dagster_instance, paris(2026, 6, 10, 7, 1), cursor="not-a-number")
    assert [r.run_key for r in data.run_requests] == [key(sid, paris(2026, 6, 10, 7, 0))]


# --------------------------------------------------------------------------------------------
# Dagster's run-key de-duplication, through the sensor daemon's own tick machinery
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def queued_instance(databases):
    """Like ``dagster_instance`` but with the production run queue: runs are created, not launched."""
    from dagster import instance_for_test

    with instance_for_test(overrides={
        "storage": {"postgres": {"postgres_url": os.environ["AUDITFLOW_DAGSTER_STORAGE_URL"]}},
        "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"},
    }) as instance:
        instance.wipe()
        for state in instance.all_instigator_state():
            instance.delete_instigator_state(state.instigator_origin_id, state.selector_id)
        yield instance


def _daemon_tick(workspace, monkeypatch, now: dt.datetime) -> None:
    from dagster._core.test_utils import freeze_time
    from dagster._daemon.sensor import execute_sensor_iteration

    monkeypatch.setattr(sensor_module, "current_time", lambda: now)
    with freeze_time(now):
        list(execute_sensor_iteration(workspace, logging.getLogger("test.sensor_daemon"), None, None))


def _runs_with_key(instance, run_key: str):
    return instance.get_runs(RunsFilter(tags={"dagster/run_key": run_key}))


def test_sensor_daemon_launches_a_run_key_once(db, queued_instance, monkeypatch):
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.scheduler.instigation import TickStatus
    from dagster._core.test_utils import create_test_daemon_workspace_context
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

    instance = queued_instance
    sid = add_schedule()
    due_at = paris(2026, 6, 10, 7, 0)
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, module_name=__name__, attribute="scheduler_test_defs",
                             working_directory=os.getcwd()),
        location_name="automation_scheduler_test")
    with create_test_daemon_workspace_context(InProcessWorkspaceLoadTarget(origin), instance) as workspace:
        _daemon_tick(workspace, monkeypatch, due_at + dt.timedelta(seconds=20))
        runs = _runs_with_key(instance, key(sid, due_at))
        assert len(runs) == 1
        run = runs[0]
        assert run.job_name == "automation_run_job" and run.status == DagsterRunStatus.QUEUED
        assert run.tags["dagster/sensor_name"] == "automation_scheduler"
        assert run.tags["automation/due_at"] == "2026-06-10T05:00:00.000Z"
        assert run.tags["automation/schedule_id"] == str(sid)
        assert run.run_config["ops"]["automation_run"]["config"]["due_at_ms"] == epoch_ms(due_at)

        # two minutes later the (queued, not yet started) job has not claimed the schedule: the sensor
        # asks again for the same key and the daemon refuses a second run
        _daemon_tick(workspace, monkeypatch, due_at + dt.timedelta(minutes=2, seconds=20))
        # a daemon restart loses nothing either: forget the cursor, tick again
        state = instance.get_instigator_state(*_sensor_ids(workspace))
        instance.update_instigator_state(state.with_data(state.instigator_data._replace(cursor=None)))
        _daemon_tick(workspace, monkeypatch, due_at + dt.timedelta(minutes=4, seconds=20))
        assert len(_runs_with_key(instance, key(sid, due_at))) == 1
        assert len(instance.get_runs(RunsFilter(job_name="automation_run_job"))) == 1
        ticks = list(reversed(instance.get_ticks(*_sensor_ids(workspace))))  # oldest first
        assert [t.status for t in ticks] == [TickStatus.SUCCESS, TickStatus.SKIPPED, TickStatus.SKIPPED]
        assert [t.run_keys for t in ticks] == [[key(sid, due_at)]] * 3  # asked three times …
        assert [len(t.run_ids) for t in ticks] == [1, 0, 0]  # … launched once
        assert [t.cursor for t in ticks] == [str(epoch_ms(due_at + m * MINUTE)) for m in (0, 2, 4)]


def _sensor_ids(workspace) -> tuple[str, str]:
    location = next(iter(workspace.create_request_context().get_code_location_entries().values())).code_location
    remote = next(iter(location.get_repositories().values())).get_sensor("automation_scheduler")
    return remote.get_remote_origin_id(), remote.selector_id


# --------------------------------------------------------------------------------------------
# DST (Europe/Paris 2026: 29 March spring-forward, 25 October fall-back)
# --------------------------------------------------------------------------------------------


def test_spring_forward_skips_the_missing_0230(db, dagster_instance, monkeypatch):
    daily = add_schedule(name="daily 02:30", time_of_day="02:30")
    twice = add_schedule(name="01:30 and 02:30", schedule_type="CRON", time_of_day=None,
                         cron_expression="30 1,2 * * *")
    launched = travel(monkeypatch, dagster_instance, utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 2, 0))
    # 02:00 CET jumps to 03:00 CEST: 02:30 does not exist that day (core.schedules: skipped)
    assert launched == [(twice, paris(2026, 3, 29, 1, 30))]
    assert paris(2026, 3, 29, 1, 30) == utc(2026, 3, 29, 0, 30)
    # the next day both run again at their wall time
    launched = travel(monkeypatch, dagster_instance, utc(2026, 3, 29, 23, 15), utc(2026, 3, 30, 1, 0))
    assert sorted(launched, key=lambda x: (x[1], x[0])) == [
        (twice, paris(2026, 3, 30, 1, 30)), (daily, paris(2026, 3, 30, 2, 30)), (twice, paris(2026, 3, 30, 2, 30))]


def test_fall_back_runs_the_repeated_0230_once(db, dagster_instance, monkeypatch):
    daily = add_schedule(name="daily 02:30", time_of_day="02:30")
    twice = add_schedule(name="01:30 and 02:30", schedule_type="CRON", time_of_day=None,
                         cron_expression="30 1,2 * * *")
    launched = travel(monkeypatch, dagster_instance, utc(2026, 10, 24, 23, 15), utc(2026, 10, 25, 2, 15))
    first_0230 = paris(2026, 10, 25, 2, 30, fold=0)
    assert first_0230 == utc(2026, 10, 25, 0, 30) and paris(2026, 10, 25, 2, 30, fold=1) == utc(2026, 10, 25, 1, 30)
    # 03:00 CEST falls back to 02:00 CET: 02:30 happens twice on the clock, once for the scheduler,
    # even though the first run finished long before the second pass (legacy ran it twice, §2.6)
    assert sorted(launched, key=lambda x: (x[1], x[0])) == [
        (twice, paris(2026, 10, 25, 1, 30)), (daily, first_0230), (twice, first_0230)]
    assert schedule_row(daily).last_due_at == naive(first_0230)
    assert schedule_row(daily).last_run_at > naive(first_0230)  # finished


def test_fall_back_second_pass_with_only_last_due_at_recorded(db, dagster_instance, monkeypatch):
    """Belt and braces: whatever last_run_at says, last_due_at = the first pass refuses the second."""
    first = paris(2026, 10, 25, 2, 30, fold=0)
    add_schedule(name="due only", time_of_day="02:30", last_due_at=first, last_run_status="success")
    add_schedule(name="run only", time_of_day="02:30", last_run_at=first, last_run_status="success")
    add_schedule(name="never ran", time_of_day="02:30")  # the second pass is not an occurrence at all
    for minute in range(0, 25):
        now = utc(2026, 10, 25, 1, 30) + minute * MINUTE + dt.timedelta(seconds=9)
        assert tick(monkeypatch, dagster_instance, now).run_requests == [], now


# --------------------------------------------------------------------------------------------
# Running, stale, dead runs, MANUAL, broken rows
# --------------------------------------------------------------------------------------------


def test_running_and_not_stale_is_skipped(db, dagster_instance, monkeypatch):
    now = paris(2026, 6, 10, 7, 2)
    sid = add_schedule(last_run_status="running", last_run_at=now - dt.timedelta(hours=2))
    run_id = add_run(sid, now - dt.timedelta(hours=2))
    data = tick(monkeypatch, dagster_instance, now)
    assert data.run_requests == []
    assert f"schedule {sid} (nightly): running" in data.skip_message
    assert run_row(run_id).status == "running" and schedule_row(sid).last_run_status == "running"


def test_stale_run_is_reconciled_and_the_schedule_evaluated(db, dagster_instance, monkeypatch):
    now = paris(2026, 6, 10, 7, 3) + dt.timedelta(seconds=30)
    started = now - dt.timedelta(hours=6)  # STALE = 5 h + 30 min = 330 min
    sid = add_schedule(last_run_status="running", last_run_at=started, total_runs=4, failed_runs=1)
    stale_id = add_run(sid, started)
    fresh_other = add_run(add_schedule(name="other"), now - dt.timedelta(minutes=5))
    data = tick(monkeypatch, dagster_instance, now)

    run = run_row(stale_id)
    assert run.status == "failed"
    assert run.error_message == "Marked stale by scheduler after 360m (threshold 330m)"
    assert run.completed_at == naive(now) and run.duration_ms == 6 * 3600 * 1000
    assert run.error_details == {"marked_stale": True, "reason": "stale_threshold_exceeded",
                                 "stale_before": "2026-06-09T23:33:30.000Z", "marked_at": "2026-06-10T05:03:30.000Z"}
    schedule = schedule_row(sid)
    assert schedule.last_run_status == "failed"
    assert schedule.last_run_at == naive(started) and (schedule.total_runs, schedule.failed_runs) == (4, 1)
    with session_scope() as s:
        logs = s.scalars(select(AutomationLog).where(AutomationLog.run_id == stale_id)).all()
        events = s.scalars(select(Event).where(Event.name == "automation.run.failed")).all()
    assert [(entry.level, entry.message) for entry in logs] == [("error", "Automation run marked stale by scheduler")]
    assert logs[0].meta["marked_stale"] is True and logs[0].meta["reason"] == "stale_threshold_exceeded"
    assert [e.payload for e in events] == [{
        "job_id": f"automation-run-{stale_id}", "schedule_id": str(sid), "run_id": str(stale_id), "status": "failed",
        "error": "Marked stale by scheduler after 360m (threshold 330m)", "duration_ms": 6 * 3600 * 1000}]
    assert f"job-automation-run-{stale_id}" in events[0].channels
    # … and evaluation continued: 07:00 is due (last_run_at is six hours earlier)
    assert key(sid, paris(2026, 6, 10, 7, 0)) in [r.run_key for r in data.run_requests]
    assert run_row(fresh_other).status == "running"  # another schedule's young run is left alone

    # idempotent: the next tick changes nothing and logs nothing more
    tick(monkeypatch, dagster_instance, now + MINUTE)
    with session_scope() as s:
        assert len(s.scalars(select(AutomationLog)).all()) == 1
        assert len(s.scalars(select(Event).where(Event.name == "automation.run.failed")).all()) == 1


def test_running_schedule_with_null_last_run_at_is_stale(db, dagster_instance, monkeypatch):
    """⚠ Legacy never reconciled these: the schedule stayed stuck forever."""
    now = paris(2026, 6, 10, 7, 1)
    sid = add_schedule(last_run_status="running", last_run_at=None)
    data = tick(monkeypatch, dagster_instance, now)
    assert schedule_row(sid).last_run_status == "failed"
    assert [r.run_key for r in data.run_requests] == [key(sid, paris(2026, 6, 10, 7, 0))]


def test_dead_dagster_run_is_reconciled_at_once(db, dagster_instance, monkeypatch):
    instance = dagster_instance
    due_at = paris(2026, 6, 10, 7, 0)
    now = due_at + dt.timedelta(minutes=3)

    failed = failing_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not failed.success
    canceled = instance.create_run_for_job(job_def=automation_run_job_stand_in, run_config={
        "ops": {"automation_run": {"config": {"schedule_id": 1}}}})
    instance.report_run_canceled(canceled)
    alive = instance.create_run_for_job(job_def=automation_run_job_stand_in, run_config={
        "ops": {"automation_run": {"config": {"schedule_id": 1}}}})
    assert instance.get_run_by_id(canceled.run_id).status == DagsterRunStatus.CANCELED
    retried = failing_job.execute_in_process(instance=instance, raise_on_error=False)
    instance.create_run_for_job(job_def=failing_job, tags={"dagster/root_run_id": retried.run_id,
                                                           "dagster/parent_run_id": retried.run_id})

    sid = add_schedule(last_run_status="running", last_run_at=due_at, last_due_at=due_at)
    dead = add_run(sid, due_at, dagster_run_id=failed.run_id)
    other = add_schedule(name="other", last_run_status="running", last_run_at=due_at)
    with_backfill = add_run(other, due_at, dagster_run_id=failed.run_id, backfill_ids=["bf1"])
    third = add_schedule(name="third", last_run_status="running", last_run_at=due_at)
    cancelled_run = add_run(third, due_at, dagster_run_id=canceled.run_id)
    fourth = add_schedule(name="fourth", last_run_status="running", last_run_at=due_at)
    alive_run = add_run(fourth, due_at, dagster_run_id=alive.run_id)
    fifth = add_schedule(name="fifth", last_run_status="running", last_run_at=due_at)
    reexecuted_run = add_run(fifth, due_at, dagster_run_id=retried.run_id)

    data = tick(monkeypatch, instance, now)
    run = run_row(dead)
    assert run.status == "failed"
    assert run.error_message == f"Dagster run {failed.run_id} ended FAILURE before the fiche pipeline started"
    assert run.error_details["reason"] == "dagster_run_failed" and run.error_details["marked_stale"] is True
    assert run.duration_ms == 3 * 60 * 1000
    assert schedule_row(sid).last_run_status == "failed"
    assert schedule_row(sid).last_run_at == naive(due_at)  # unchanged (§2.3)
    cancelled = run_row(cancelled_run)
    assert cancelled.status == "failed" and cancelled.error_details["reason"] == "dagster_run_canceled"
    assert cancelled.error_message == f"Dagster run {canceled.run_id} ended CANCELED before the fiche pipeline started"
    assert schedule_row(third).last_run_status == "failed"
    # a launched backfill: another sensor finalizes the run; a live Dagster run: not dead
    assert run_row(with_backfill).status == "running" and schedule_row(other).last_run_status == "running"
    assert run_row(alive_run).status == "running" and schedule_row(fourth).last_run_status == "running"
    # a failed run whose re-execution is still pending is not dead either
    assert run_row(reexecuted_run).status == "running" and schedule_row(fifth).last_run_status == "running"
    # the occurrence they were running is not launched again (last_run_at = due_at)
    assert data.run_requests == []
    with session_scope() as s:
        failed_events = s.scalars(select(Event).where(Event.name == "automation.run.failed")).all()
    assert sorted(e.payload["run_id"] for e in failed_events) == sorted([str(dead), str(cancelled_run)])


def test_manual_is_never_requested_but_still_reconciled(db, dagster_instance, monkeypatch):
    now = paris(2026, 6, 10, 7, 1)
    manual = add_schedule(name="manual", schedule_type="MANUAL", time_of_day="07:00", cron_expression="0 7 * * *")
    data = tick(monkeypatch, dagster_instance, now)
    assert data.run_requests == []
    stuck = add_schedule(name="manual stuck", schedule_type="MANUAL", time_of_day=None,
                         last_run_status="running", last_run_at=now - dt.timedelta(hours=7))
    run_id = add_run(stuck, now - dt.timedelta(hours=7))
    assert travel(monkeypatch, dagster_instance, paris(2026, 6, 10, 6, 50), paris(2026, 6, 10, 7, 30)) == []
    assert run_row(run_id).status == "failed" and schedule_row(stuck).last_run_status == "failed"
    assert schedule_row(manual).last_run_status is None


def test_broken_schedule_is_skipped_with_a_warning(db, dagster_instance, monkeypatch):
    now = paris(2026, 6, 10, 7, 1)
    broken = add_schedule(name="broken", time_of_day=None)
    bad_cron = add_schedule(name="bad cron", schedule_type="CRON", time_of_day=None, cron_expression="0 7 * * MON")
    data = tick(monkeypatch, dagster_instance, now)
    assert data.run_requests == []
    assert f"schedule {broken} (broken): skipped, DAILY schedule requires timeOfDay" in data.skip_message
    assert f"schedule {bad_cron} (bad cron): skipped" in data.skip_message
    # a healthy schedule next to them is still launched
    good = add_schedule(name="good")
    assert [r.run_key for r in tick(monkeypatch, dagster_instance, now).run_requests] == [
        key(good, paris(2026, 6, 10, 7, 0))]


def test_inactive_schedule_is_not_evaluated(db, dagster_instance, monkeypatch):
    add_schedule(is_active=False)
    assert tick(monkeypatch, dagster_instance, paris(2026, 6, 10, 7, 1)).run_requests == []


# --------------------------------------------------------------------------------------------
# AUTOMATION_SCHEDULER_CRON (§2.5, §2.6)
# --------------------------------------------------------------------------------------------


def test_hourly_tick_scans_at_minute_zero_with_a_window_covering_the_hour(db, dagster_instance, monkeypatch):
    monkeypatch.setenv("AUTOMATION_SCHEDULER_CRON", "0 * * * *")
    monkeypatch.setenv("AUTOMATION_SCHEDULER_WINDOW_MINUTES", "20")
    get_settings.cache_clear()
    sid = add_schedule(time_of_day="07:15")  # 05:15Z in June
    scanned: list[dt.datetime] = []
    launches: list[tuple[dt.datetime, str]] = []
    cursor = str(epoch_ms(utc(2026, 6, 10, 4, 57)))
    now = utc(2026, 6, 10, 4, 58, 30)
    while now < utc(2026, 6, 10, 7, 3):
        data = tick(monkeypatch, dagster_instance, now, cursor)
        cursor = data.cursor
        if data.run_requests or not data.skip_message.startswith("no scan"):
            scanned.append(now.replace(second=0))
        for request in data.run_requests:
            launches.append((now, request.run_key))
            claim(sid, paris(2026, 6, 10, 7, 15))
        now += MINUTE
    assert scanned == [utc(2026, 6, 10, 5, 0), utc(2026, 6, 10, 6, 0), utc(2026, 6, 10, 7, 0)]
    # 07:15 Paris is found by the 06:00Z scan, 45 minutes later: W = max(20, 60 + 1) = 61
    assert launches == [(utc(2026, 6, 10, 6, 0, 30), key(sid, paris(2026, 6, 10, 7, 15)))]


def test_hourly_tick_first_evaluation_scans_and_late_wakeup_still_scans(db, dagster_instance, monkeypatch):
    monkeypatch.setenv("AUTOMATION_SCHEDULER_CRON", "0 * * * *")
    get_settings.cache_clear()
    sid = add_schedule(time_of_day="07:15")
    # no cursor (first evaluation / restart) ⇒ scan whatever the minute
    first = tick(monkeypatch, dagster_instance, utc(2026, 6, 10, 5, 40))
    assert [r.run_key for r in first.run_requests] == [key(sid, paris(2026, 6, 10, 7, 15))]
    # a wake-up that lands at 06:02 after a 05:58 evaluation still scans (06:00 is in (cursor, now])
    late = tick(monkeypatch, dagster_instance, utc(2026, 6, 10, 6, 2, 10),
                cursor=str(epoch_ms(utc(2026, 6, 10, 5, 58))))
    assert [r.run_key for r in late.run_requests] == [key(sid, paris(2026, 6, 10, 7, 15))]


def test_bad_tick_cron_falls_back_to_every_minute(db, dagster_instance, monkeypatch):
    monkeypatch.setenv("AUTOMATION_SCHEDULER_CRON", "every hour")
    get_settings.cache_clear()
    sid = add_schedule()
    data = tick(monkeypatch, dagster_instance, paris(2026, 6, 10, 7, 1, 5),
                cursor=str(epoch_ms(paris(2026, 6, 10, 7, 0))))
    assert [r.run_key for r in data.run_requests] == [key(sid, paris(2026, 6, 10, 7, 0))]


# --------------------------------------------------------------------------------------------
# The request fits the real job
# --------------------------------------------------------------------------------------------


def test_run_config_fits_the_real_job(db, dagster_instance, monkeypatch):
    jobs = pytest.importorskip("auditflow_dagster.jobs.automation")
    sid = add_schedule()
    request = tick(monkeypatch, dagster_instance, paris(2026, 6, 10, 7, 1)).run_requests[0]
    real = jobs.automation_run_job
    assert real.name == "automation_run_job" and real.has_node_named("automation_run")
    op_def = real.get_node_named("automation_run").definition
    from dagster._config import process_config

    result = process_config(op_def.config_schema.config_type, request.run_config["ops"]["automation_run"]["config"])
    assert result.success, result.errors
    assert result.value["schedule_id"] == sid
