"""Crash safety with real processes (issue 9 §3).

The whole stack (synthetic CRM, Dagster webserver + daemon with the repository's ``dagster.yaml``:
run retries for crashed runs, run monitoring; the API) runs on throw-away databases with the REAL
ElevenLabs and OpenAI clients against counting fakes (``crash_harness``: STT answers after
``STT_DELAY``, the LLM after ``LLM_DELAY``, so a kill lands while work is in flight). A sales day of
``FICHES`` fiches is launched as ``auditflow run-day`` does; something is killed mid-way; then
the day must end exactly as an undisturbed day does:

* every fiche has exactly one audit of the (one, bundled) config, latest and final, with the
  score, niveau, critical result, per-step score/verdict and every control point's statut of the
  undisturbed baseline (:func:`generator.expected_audit`, what an undisturbed run of these fakes
  produces); every audit has one stored row per checklist step;
* no provider call was repeated for a result that was stored before the crash. A call that was in
  flight (started, its result not yet committed) when the process died may be made once more by the
  retry: the answer was lost with the process, so paying it again is the only way to finish; that
  is the precise allowance (``crash_harness.check_calls``: such keys at most twice, every other key
  exactly once).

Scenarios: a run worker killed with SIGKILL twice (mid-transcription, then its retry mid-analysis);
the Dagster daemon killed with SIGKILL mid-sensor-tick and again mid-batch, restarted each time;
an API replica killed mid-``POST /api/audits/run`` and mid-``POST /api/audits/batch``, the client
retrying on the other replica; the PostgreSQL server (a private one: the machine's shared server is
never touched) stopped for ``PG_DOWN_SECONDS`` mid-run. Recovery times are printed. The pipeline
scenarios share one stack (each on its own sales day); the Postgres one has its own.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from decimal import Decimal

import httpx
import pytest

from auditflow_dagster.sample import generator
from tests.e2e import crash_harness as h
from tests.e2e.test_sse_replicas import SSEClient, channel_rows

pytestmark = pytest.mark.e2e

FICHES = 10
STT_DELAY = 0.8  # ~21 recordings at the STT cap of 4: a ~4 s window to kill in
LLM_DELAY = 0.5  # 100 steps at the LLM cap of 16: a ~3 s window
DAY_WORKER = dt.date(2025, 10, 7)
DAY_DAEMON = dt.date(2025, 10, 8)
SETTLE_TIMEOUT = 300


def day_fiches(day: dt.date) -> list[str]:
    return [f["id"] for f in generator.fiches_for_day(day, FICHES)]


@pytest.fixture(scope="module")
def fakes():
    with h.providers(stt_delay=STT_DELAY, llm_delay=LLM_DELAY) as p:
        yield p


@pytest.fixture(scope="module")
def stack(pg_server, fakes, tmp_path_factory):
    """One stack for the scenarios that do not restart PostgreSQL (each uses its own sales day)."""
    from tests.e2e.running import running_stack

    home = tmp_path_factory.mktemp("crash_home")
    with h.fresh_databases(pg_server) as (app_url, dagster_url):
        env = h.stack_env(app_url, dagster_url, home, fakes, FICHES)
        with running_stack(home / "logs", env) as s:
            s.instance = h.dagster_instance(s)
            try:
                yield s
            finally:
                s.instance.dispose()


def start_day(stack, fakes, day: dt.date) -> list[str]:
    fiches = day_fiches(day)
    fakes.stt.log.reset()
    fakes.llm.log.reset()
    fakes.llm.expect(fiches)
    h.launch_day(stack, day)
    return fiches


def kill_and_wait(pid: int) -> float:
    """SIGKILL ``pid``; returns the kill instant once the process is gone (a zombie counts)."""
    os.kill(pid, signal.SIGKILL)
    t = time.time()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/status") as f:
                if "\nState:\tZ" in f.read():
                    break
        except FileNotFoundError:
            break
        time.sleep(0.01)
    return t


def started_run(instance, day: dt.date, *, root: str | None = None):
    """The day's fiche backfill run currently executing (a retry of ``root`` when given)."""
    for run in h.day_runs(instance, day):
        if run.status.value != "STARTED" or not run.tags.get("dagster/backfill"):
            continue
        if root is None or run.root_run_id == root:
            return run
    return None


def settle(stack, day: dt.date, fiches: list[str]) -> float:
    h.wait_for(lambda: h.day_settled(stack.instance, day, len(fiches)), SETTLE_TIMEOUT, f"day {day} to settle")
    return time.time()


def test_run_worker_killed_twice_retried_audits_exactly_once(stack, fakes):
    """SIGKILL of the run worker mid-transcription, then of its retry mid-analysis: Dagster's code
    server fails each dead run, run retries relaunch it from the failure (same root run id), the
    retry reuses every stored transcript and step result."""
    inst = stack.instance
    t0 = time.time()
    fiches = start_day(stack, fakes, DAY_WORKER)
    exp_recs, exp_steps = h.expected_keys(fiches)

    # kill 1: the first run, while recordings are being transcribed (some stored, some in flight)
    h.wait_for(lambda: h.day_state(DAY_WORKER)["transcribed"] >= 3 and started_run(inst, DAY_WORKER), 240,
               "transcription under way", interval=0.05)
    first = started_run(inst, DAY_WORKER)
    pid = h.run_worker_pid(inst, first.run_id)
    assert pid, first.run_id
    t_kill1 = kill_and_wait(pid)
    stored_recs_1, stored_steps_1 = h.stored_keys(DAY_WORKER)
    unstored_1 = (fakes.stt.log.started_before(t_kill1) - stored_recs_1,
                  fakes.llm.log.started_before(t_kill1) - stored_steps_1)
    assert len(stored_recs_1) < len(exp_recs), "killed too late: every recording was already transcribed"
    print(f"\nkill 1: run {first.run_id[:8]} worker pid {pid} {t_kill1 - t0:.1f}s after launch; "
          f"{len(stored_recs_1)}/{len(exp_recs)} recordings stored, {len(unstored_1[0])} STT calls in flight")

    # the code server fails the dead run; run retries relaunch it (root = the first run)
    retry = h.wait_for(lambda: started_run(inst, DAY_WORKER, root=first.run_id), 120, "the retry to start", 0.05)
    failed = inst.get_run_record_by_id(first.run_id)
    assert failed.dagster_run.status.value == "FAILURE" and failed.dagster_run.tags.get("dagster/will_retry") == "true"
    t_failed1 = failed.end_time or failed.update_timestamp.timestamp()
    t_retry1 = inst.get_run_record_by_id(retry.run_id).start_time

    # kill 2: the retry, while audit steps are being analysed (some stored, some in flight)
    h.wait_for(lambda: fakes.llm.log.completed() >= 0.3 * len(exp_steps) and h.day_state(DAY_WORKER)["steps_stored"] >= 5,
               240, "analysis under way", interval=0.05)
    assert started_run(inst, DAY_WORKER, root=first.run_id).run_id == retry.run_id
    pid2 = h.run_worker_pid(inst, retry.run_id)
    t_kill2 = kill_and_wait(pid2)
    stored_recs_2, stored_steps_2 = h.stored_keys(DAY_WORKER)
    unstored_2 = (fakes.stt.log.started_before(t_kill2) - stored_recs_2,
                  fakes.llm.log.started_before(t_kill2) - stored_steps_2)
    assert len(stored_steps_2) < len(exp_steps), "killed too late: every step was already analysed"
    print(f"kill 2: retry {retry.run_id[:8]} worker pid {pid2} {t_kill2 - t0:.1f}s after launch; "
          f"{len(stored_steps_2)}/{len(exp_steps)} steps stored, {len(unstored_2[1])} LLM calls in flight")

    retry2 = h.wait_for(lambda: next((r for r in h.day_runs(inst, DAY_WORKER)
                                      if r.parent_run_id == retry.run_id), None), 120, "the second retry")
    t_done = settle(stack, DAY_WORKER, fiches)

    check = h.check_audits_exactly_once(DAY_WORKER, fiches)
    stt = h.check_calls("STT", fakes.stt.log, exp_recs, may_repeat=unstored_1[0] | unstored_2[0],
                        never_repeat=stored_recs_1)
    llm = h.check_calls("LLM", fakes.llm.log, exp_steps, may_repeat=unstored_1[1] | unstored_2[1],
                        never_repeat=stored_steps_2)
    assert not fakes.llm.errors, fakes.llm.errors
    runs = h.day_runs(inst, DAY_WORKER)
    assert [r.status.value for r in runs if r.run_id in (first.run_id, retry.run_id)] == ["FAILURE"] * 2
    assert inst.get_run_by_id(retry2.run_id).status.value == "SUCCESS"
    assert len(h.day_backfills(inst, DAY_WORKER)) == 1
    r2 = inst.get_run_record_by_id(retry2.run_id)
    print(f"recovery 1: dead run failed after {t_failed1 - t_kill1:.2f}s, retry started after {t_retry1 - t_kill1:.2f}s")
    print(f"recovery 2: retry started after {r2.start_time - t_kill2:.2f}s; day settled {t_done - t_kill2:.1f}s after "
          f"kill 2 ({t_done - t0:.1f}s after launch)")
    print(f"audits: {check.audits} completed = baseline, {check.step_rows} step rows; STT {stt}; LLM {llm}")


def sensor_ticks(instance, name: str, limit: int = 5):
    from dagster._core.definitions.run_request import InstigatorType

    state = next(s for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
                 if s.instigator_name == name)
    return instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=limit)


def sales_list_materialized_at(instance, day: dt.date) -> float | None:
    from dagster import AssetKey, AssetRecordsFilter

    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("sales_list"), asset_partitions=[day.isoformat()]), limit=1).records
    return records[0].timestamp if records else None


def restart_daemon(stack) -> float:
    child = stack.respawn("dagster-daemon")
    print(f"daemon restarted as pid {child.proc.pid}")
    return time.time()


def test_daemon_killed_mid_sensor_tick_and_mid_batch(stack, fakes):
    """SIGKILL of the Dagster daemon while ``sales_day_fiches_backfill`` evaluates the new day (the
    tick is STARTED: the sensor is reading the day or submitting its backfill), restart; then again
    while the day's run analyses. The restarted daemon resumes or re-evaluates the tick from the
    stored cursor: one backfill, one run, every call made once (no worker died)."""
    inst = stack.instance
    daemon = stack.child("dagster-daemon")
    t0 = time.time()
    fiches = start_day(stack, fakes, DAY_DAEMON)
    exp_recs, exp_steps = h.expected_keys(fiches)

    caught = None
    deadline = time.monotonic() + 240
    while caught is None:
        assert time.monotonic() < deadline, "the day sensor never ticked on the new day"
        t_mat = sales_list_materialized_at(inst, DAY_DAEMON)
        if t_mat is None:
            time.sleep(0.05)
            continue
        for tick in sensor_ticks(inst, "sales_day_fiches_backfill"):
            if tick.timestamp >= t_mat - 1 and tick.status.value == "STARTED":
                caught = ("mid-tick", tick)
            elif tick.timestamp >= t_mat and tick.status.value == "SUCCESS" and tick.run_ids:
                caught = ("after the tick (missed the window)", tick)
            if caught:
                break
        else:
            time.sleep(0.01)
    t_kill1 = kill_and_wait(daemon.proc.pid)
    daemon.proc.wait(timeout=10)
    tick = sensor_ticks(inst, "sales_day_fiches_backfill", limit=1)[0]
    backfills_at_kill = len(h.day_backfills(inst, DAY_DAEMON))
    print(f"\nkill 1: daemon pid {daemon.proc.pid} {caught[0]}, {t_kill1 - t0:.1f}s after launch; tick "
          f"{tick.tick_id} left {tick.status.value}, reserved ids {len(tick.tick_data.reserved_run_ids or [])}, "
          f"backfills for the day {backfills_at_kill}")
    t_restart1 = restart_daemon(stack)
    run = h.wait_for(lambda: started_run(inst, DAY_DAEMON), 240, "the day's run to start", 0.1)
    t_run = inst.get_run_record_by_id(run.run_id).start_time

    # kill 2: mid-batch; the run worker (a child of the dead daemon's code server) carries on
    h.wait_for(lambda: fakes.llm.log.completed() >= 0.3 * len(exp_steps), 240, "analysis under way", interval=0.05)
    daemon = stack.child("dagster-daemon")
    t_kill2 = kill_and_wait(daemon.proc.pid)
    daemon.proc.wait(timeout=10)
    print(f"kill 2: daemon pid {daemon.proc.pid} mid-batch, {fakes.llm.log.completed()}/{len(exp_steps)} LLM calls answered")
    time.sleep(2.0)
    restart_daemon(stack)
    t_done = settle(stack, DAY_DAEMON, fiches)

    check = h.check_audits_exactly_once(DAY_DAEMON, fiches)
    stt = h.check_calls("STT", fakes.stt.log, exp_recs, may_repeat=set(), never_repeat=exp_recs)
    llm = h.check_calls("LLM", fakes.llm.log, exp_steps, may_repeat=set(), never_repeat=exp_steps)
    assert not fakes.llm.errors, fakes.llm.errors
    backfills = h.day_backfills(inst, DAY_DAEMON)
    assert len(backfills) == 1, [(b.backfill_id, b.status.value) for b in backfills]
    runs = h.day_runs(inst, DAY_DAEMON)
    fiche_runs = [r for r in runs if r.tags.get("dagster/backfill")]
    assert [r.run_id for r in fiche_runs] == [run.run_id], [(r.run_id, r.status.value) for r in fiche_runs]
    assert all(r.status.value == "SUCCESS" for r in runs), [(r.job_name, r.status.value) for r in runs]
    print(f"recovery 1: daemon restarted {t_restart1 - t_kill1:.1f}s after kill 1, the day's run started "
          f"{t_run - t_restart1:.1f}s after the restart; day settled {t_done - t_kill2:.1f}s after kill 2 "
          f"({t_done - t0:.1f}s after launch)")
    print(f"audits: {check.audits} completed = baseline, {check.step_rows} step rows; one backfill, one run; "
          f"STT {stt}; LLM {llm}")


DAY_POSTGRES = dt.date(2025, 10, 9)
PG_DOWN_SECONDS = 5.0


@pytest.fixture()
def private_stack(fakes, tmp_path_factory):
    """A stack whose app and Dagster databases live on a private PostgreSQL server (restartable)."""
    from tests.e2e.running import running_stack

    home = tmp_path_factory.mktemp("crash_pg_home")
    pg = h.PrivatePostgres(tmp_path_factory.mktemp("crash_pg"))
    try:
        with h.fresh_databases(pg.uri) as (app_url, dagster_url):
            env = h.stack_env(app_url, dagster_url, home, fakes, FICHES)
            with running_stack(home / "logs", env) as s:
                s.instance = h.dagster_instance(s)
                s.pg = pg
                try:
                    yield s
                finally:
                    s.instance.dispose()
    finally:
        pg.close()


def test_postgres_restart_mid_run(private_stack, fakes):
    """The one PostgreSQL server (app + Dagster databases) stops mid-analysis and comes back
    ``PG_DOWN_SECONDS`` later: every process reconnects (pool pre-ping), the run finishes or is
    retried, and the day ends as undisturbed; results stored before the stop are never paid again."""
    stack = private_stack
    inst = stack.instance
    t0 = time.time()
    fiches = start_day(stack, fakes, DAY_POSTGRES)
    exp_recs, exp_steps = h.expected_keys(fiches)
    # a browser following the last fiche through the API, connected before the restart
    watched = fiches[-1]
    follower = SSEClient(f"{stack.api_url}/api/realtime/fiches/{watched}",
                         stop=lambda f: f["event"] in ("audit.completed", "audit.failed"))
    follower.start()
    assert follower.ready.wait(30) and follower.error is None, follower.error
    h.wait_for(lambda: fakes.llm.log.completed() >= 0.3 * len(exp_steps) and h.day_state(DAY_POSTGRES)["steps_stored"] >= 5,
               240, "analysis under way", interval=0.05)
    stored_recs, stored_steps = h.stored_keys(DAY_POSTGRES)
    assert len(stored_steps) < len(exp_steps), "stopped too late: every step was already analysed"
    t_stop = time.time()
    stack.pg.stop("fast")
    t_stopped = time.time()
    time.sleep(PG_DOWN_SECONDS)
    stack.pg.start()
    t_up = time.time()
    print(f"\nPostgreSQL stopped {t_stop - t0:.1f}s after launch ({len(stored_steps)}/{len(exp_steps)} steps stored), "
          f"down {t_up - t_stopped:.1f}s")
    unstored = (fakes.stt.log.started_before(t_up) - stored_recs, fakes.llm.log.started_before(t_up) - stored_steps)
    t_done = settle(stack, DAY_POSTGRES, fiches)

    check = h.check_audits_exactly_once(DAY_POSTGRES, fiches)
    stt = h.check_calls("STT", fakes.stt.log, exp_recs, may_repeat=unstored[0], never_repeat=stored_recs)
    llm = h.check_calls("LLM", fakes.llm.log, exp_steps, may_repeat=unstored[1], never_repeat=stored_steps)
    assert not fakes.llm.errors, fakes.llm.errors
    assert len(h.day_backfills(inst, DAY_POSTGRES)) == 1
    runs = h.day_runs(inst, DAY_POSTGRES)
    assert all(r.status.value == "SUCCESS" for r in runs), [(r.run_id, r.status.value) for r in runs]  # none failed
    # the API's pool and its LISTEN connection came back: the day reads through the API, and the
    # stream opened before the restart delivered the watched fiche's events, each once, in order
    day = httpx.get(f"{stack.api_url}/api/fiches/status/by-date", params={"date": DAY_POSTGRES.isoformat()}, timeout=30)
    assert day.status_code == 200, day.text
    items = {i["ficheId"]: i for i in day.json()["data"]["fiches"]}
    for fid in fiches:
        c = generator.expected_audit(fid)["compliance"]
        assert items[fid]["audit"]["latestAudit"]["niveau"] == c.niveau, fid
    follower.join(timeout=60)
    assert follower.finished and follower.error is None, (follower.error, [f["event"] for f in follower.frames])
    ids = [int(f["id"]) for f in follower.frames]
    assert ids == [r["id"] for r in channel_rows(f"fiche-{watched}") if r["id"] <= ids[-1]]
    assert follower.frames[-1]["event"] == "audit.completed"
    print(f"runs: {[(r.run_id[:8], r.status.value) for r in runs]}; the stream opened before the restart "
          f"got {len(ids)} events of fiche {watched} up to audit.completed, none lost or repeated")
    print(f"day settled {t_done - t_up:.1f}s after PostgreSQL came back ({t_done - t0:.1f}s after launch)")
    print(f"audits: {check.audits} completed = baseline, {check.step_rows} step rows; STT {stt}; LLM {llm}")


DAY_API = dt.date(2025, 10, 10)


def fiche_audits(fiche_id: str) -> list:
    from sqlalchemy import select

    from auditflow_dagster.db.models import Audit, FicheCache
    from auditflow_dagster.db.session import session_scope

    with session_scope() as s:
        return list(s.scalars(select(Audit).join(FicheCache, FicheCache.id == Audit.fiche_cache_id)
                              .where(FicheCache.fiche_id == fiche_id).order_by(Audit.id)))


def fiche_runs(instance, fiche_id: str) -> list:
    from dagster import RunsFilter

    return [r.dagster_run for r in instance.get_run_records(RunsFilter(job_name="audit_fiche",
                                                                       tags={"dagster/partition": fiche_id}))]


def post_through_dying_replica(proxy, replica, a_url: str, body: dict, mode: str,
                               path: str = "/api/audits/run") -> tuple[dict, dict]:
    """POST ``path`` (default /api/audits/run) to replica B; when its launch is held by the proxy (``mode``), SIGKILL B;
    the client, whose connection broke, sends the same request to replica A. Returns A's reply and
    timings."""
    import threading

    import httpx

    outcome: dict = {}

    def client() -> None:
        try:
            outcome["reply"] = httpx.post(f"{replica.url}{path}", json=body, timeout=60)
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    proxy.hold(mode)
    t0 = time.time()
    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    assert proxy.held.wait(60), "replica B never launched"
    os.killpg(replica.pid, signal.SIGKILL)
    t_kill = time.time()
    replica.wait(timeout=10)
    thread.join(timeout=30)
    assert "error" in outcome, f"the request to the killed replica should have broken: {outcome}"
    t_broken = time.time()
    retry = httpx.post(f"{a_url}{path}", json=body, timeout=60)
    assert retry.status_code == 200, retry.text
    t_retried = time.time()
    return retry.json(), {"kill_after_s": t_kill - t0, "client_saw": type(outcome["error"]).__name__,
                          "retry_answered_s": t_retried - t_kill, "broken_after_s": t_broken - t_kill}


def test_api_replica_killed_mid_request_client_retries_on_the_other(stack, fakes, tmp_path):
    """Two API replicas on one database; replica B reaches Dagster through a proxy that holds its
    launch. B is SIGKILLed mid-``POST /api/audits/run`` and the client sends the same request to A.

    * killed before its launch reached Dagster: nothing was written or launched by B (the route
      writes no row before the launch), A's launch is the only one — exactly one audit, = baseline;
    * killed after Dagster launched its run, before B answered: the run B launched is not lost (it
      needs no API process) and completes; the client never learnt of it, so its retry is, by the
      contract, a second audit request (spec 03 §2.5: a new tracking id per request; nothing in the
      request identifies a retry) — two audits, both complete and equal to the baseline, versions
      1 and 2, only the newer latest, the recordings transcribed once for both (per-recording lock),
      no row half-written or left running. docs/api.md says how a client avoids it."""
    from tests.fakes.server import serve_app

    fiches = [f for f in day_fiches(DAY_API) if generator.expected_audit(f)["auditable"]][:2]
    fakes.stt.log.reset()
    fakes.llm.log.reset()
    fakes.llm.expect(fiches)
    before, after = fiches
    inst = stack.instance
    n_steps = len(generator.load_checklist().steps)
    proxy = h.HoldingProxy(f"{stack.dagster_url}/graphql")
    try:
        with serve_app(proxy.app) as proxy_url:
            for fiche_id, mode in ((before, "before"), (after, "after")):
                with h.api_replica(stack, f"{proxy_url}/graphql", tmp_path) as replica:
                    body = {"fiche_id": fiche_id, "audit_config_id": 1, "user_id": f"crash-{mode}"}
                    reply, timing = post_through_dying_replica(proxy, replica, stack.api_url, body, mode)
                    print(f"\nkill B {mode} its launch: {timing}; A queued {reply['audit_id']}")
                    if mode == "before":
                        reply_before = reply
                    else:
                        reply_after = reply
    finally:
        proxy.release.set()

    def final() -> bool:
        return all(len(fiche_audits(f)) == want and all(a.status != "running" for a in fiche_audits(f))
                   and all(r.status.value not in h.UNFINISHED for r in fiche_runs(inst, f))
                   for f, want in ((before, 1), (after, 2)))

    h.wait_for(final, SETTLE_TIMEOUT, "both fiches' audits")

    # killed before the launch: one run, one audit (A's)
    [audit] = fiche_audits(before)
    assert [r.run_id for r in fiche_runs(inst, before)] == [reply_before["run_id"]]
    assert audit.tracking_id == reply_before["audit_id"] and audit.dagster_run_id == reply_before["run_id"]
    # killed after the launch: B's orphaned run and A's, two complete audits
    runs_after = fiche_runs(inst, after)
    assert len(runs_after) == 2 and all(r.status.value == "SUCCESS" for r in runs_after), runs_after
    orphan, retried = fiche_audits(after)
    assert retried.tracking_id == reply_after["audit_id"] and orphan.tracking_id != retried.tracking_id
    assert (orphan.version, orphan.is_latest, retried.version, retried.is_latest) == (1, False, 2, True)
    for fid, a in ((before, audit), (after, orphan), (after, retried)):
        c = generator.expected_audit(fid)["compliance"]
        assert a.status == "completed", (fid, a.status, a.error_message)
        assert (Decimal(a.score_percentage), a.niveau, a.critical_passed) == (c.score_percentage, c.niveau, c.critical_passed)
        assert a.successful_steps + a.failed_steps == n_steps
    exp_recs, exp_steps = h.expected_keys(fiches)
    h.check_calls("STT", fakes.stt.log, exp_recs, may_repeat=set(), never_repeat=exp_recs)
    llm = fakes.llm.log.counts()
    assert {k for k in llm if k[0] == before} == {k for k in exp_steps if k[0] == before}
    assert all(n == 1 for k, n in llm.items() if k[0] == before)
    assert all(llm[k] == 2 for k in exp_steps if k[0] == after)  # two audits asked for, two analyses
    print(f"fiche {before}: 1 audit; fiche {after}: 2 audits (versions 1, 2), recordings transcribed once")


DAY_BATCH = dt.date(2025, 10, 13)


def test_api_replica_killed_mid_batch_post_no_batch_left_hanging(stack, fakes, tmp_path):
    """``POST /api/audits/batch`` through a replica B killed mid-request, the client retrying on A.
    The route writes the batch rows, launches one backfill, then records the backfill id, so a kill
    in between leaves a batch without a backfill (before the fix it stayed ``running`` until the
    6 h TTL). The ``audit_batches_progress`` sensor settles such a batch once the launch grace is
    over (the test backdates the rows instead of waiting 5 minutes): killed before the launch, the
    batch is dropped — A's batch is the only one that ran, one audit per fiche; killed after it,
    the backfill Dagster took is recorded and that batch completes too — by the contract two
    batches were asked for (spec 04 §5: a new batch per request), so two audits per fiche, the
    recordings transcribed once."""
    from sqlalchemy import select, update

    from auditflow_dagster.db.models import AuditBatch
    from auditflow_dagster.db.session import session_scope
    from auditflow_dagster.sensors.batches import LAUNCH_GRACE
    from tests.fakes.server import serve_app

    fiches = [f for f in day_fiches(DAY_BATCH) if generator.expected_audit(f)["auditable"]][:4]
    pairs = {"before": fiches[:2], "after": fiches[2:]}
    fakes.stt.log.reset()
    fakes.llm.log.reset()
    fakes.llm.expect(fiches)
    proxy = h.HoldingProxy(f"{stack.dagster_url}/graphql")
    replies = {}
    try:
        with serve_app(proxy.app) as proxy_url:
            for mode, pair in pairs.items():
                with h.api_replica(stack, f"{proxy_url}/graphql", tmp_path) as replica:
                    body = {"fiche_ids": pair, "audit_config_id": 1, "user_id": f"crash-batch-{mode}"}
                    replies[mode], timing = post_through_dying_replica(proxy, replica, stack.api_url, body, mode,
                                                                       path="/api/audits/batch")
                    print(f"\nkill B {mode} its backfill launch: {timing}; A queued {replies[mode]['batch_id']}")
    finally:
        proxy.release.set()

    with session_scope() as s:
        rows = s.execute(select(AuditBatch.id, AuditBatch.user_id, AuditBatch.backfill_id, AuditBatch.status)).all()
        orphans = {user.rsplit("-", 1)[1]: bid for bid, user, backfill, status in rows
                   if backfill is None and status == "running"}
        assert set(orphans) == {"before", "after"}, rows  # what the kills left half-written
        s.execute(update(AuditBatch).where(AuditBatch.id.in_(orphans.values()))
                  .values(started_at=AuditBatch.started_at - LAUNCH_GRACE))
    t_backdated = time.time()

    def settled() -> bool:
        with session_scope() as s:
            statuses = dict(s.execute(select(AuditBatch.id, AuditBatch.status)).all())
        return (orphans["before"] not in statuses and statuses.get(orphans["after"]) == "completed"
                and all(statuses.get(r["batch_id"]) == "completed" for r in replies.values()))

    h.wait_for(settled, SETTLE_TIMEOUT, "every batch to settle")
    print(f"unlaunched batches settled {time.time() - t_backdated:.1f}s after their grace ended")
    with session_scope() as s:
        adopted = s.get(AuditBatch, orphans["after"])
        assert adopted.backfill_id and (adopted.succeeded, adopted.failed) == (2, 0)
    for mode, pair in pairs.items():
        for fid in pair:
            audits = fiche_audits(fid)
            assert len(audits) == (1 if mode == "before" else 2), (mode, fid, [(a.id, a.status) for a in audits])
            c = generator.expected_audit(fid)["compliance"]
            for a in audits:
                assert a.status == "completed" and a.trigger_source == "batch", (fid, a.status)
                assert (Decimal(a.score_percentage), a.niveau) == (c.score_percentage, c.niveau), fid
            assert [a.is_latest for a in audits] == [False] * (len(audits) - 1) + [True]
    exp_recs, exp_steps = h.expected_keys(fiches)
    h.check_calls("STT", fakes.stt.log, exp_recs, may_repeat=set(), never_repeat=exp_recs)
    llm = fakes.llm.log.counts()
    assert set(llm) == exp_steps
    assert all(n == (1 if k[0] in pairs["before"] else 2) for k, n in llm.items()), llm
