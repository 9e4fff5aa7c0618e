"""An automation run, in process, on the synthetic CRM: the job op (start CAS, selection through
the sales list, pre-filters, one backfill), the backfill's runs executed here with the backfill's
own tags and run config, and the ``automation_runs_progress`` sensor (progress, retries,
finalization). Real Postgres, real Dagster instance."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from dagster import AssetKey, build_sensor_context, materialize
from dagster._core.execution.backfill import BulkActionStatus
from sqlalchemy import func, select

from auditflow_dagster.assets.audits import audit_step_results, audits
from auditflow_dagster.assets.fiches import fiche_details
from auditflow_dagster.assets.transcripts import transcripts
from auditflow_dagster.core import automation as rules
from auditflow_dagster.db.clock import now_utc
from auditflow_dagster.db.configs import ensure_bundled_config, import_config
from auditflow_dagster.db.models import (
    Audit,
    AutomationLog,
    AutomationRun,
    AutomationRunFicheResult,
    AutomationSchedule,
    Event,
    FicheCache,
)
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.definitions import defs
from auditflow_dagster.resources.crm import CrmResource
from auditflow_dagster.resources.database import DatabaseResource
from auditflow_dagster.resources.llm import LlmResource
from auditflow_dagster.resources.stt import SttResource
from auditflow_dagster.sample import generator
from auditflow_dagster.sensors.automation_runs import automation_runs_progress

DAY = dt.date(2026, 3, 20)
CHAIN = [fiche_details, transcripts, audit_step_results, audits]


def resources(crm: CrmResource | None = None) -> dict[str, Any]:
    return {"crm": crm or CrmResource(mode="sample"), "stt": SttResource(mode="sample"),
            "llm": LlmResource(mode="offline"), "db": DatabaseResource()}


def run_job(instance, *, schedule_id: int, due_at_ms: int | None = None, run_id: int | None = None,
            crm: CrmResource | None = None) -> bool:
    job = defs.get_job_def("automation_run_job")
    cfg: dict[str, Any] = {"schedule_id": schedule_id, "trigger": "manual" if run_id else "scheduled"}
    if due_at_ms is not None:
        cfg["due_at_ms"] = due_at_ms
    if run_id is not None:
        cfg["run_id"] = run_id
    result = job.execute_in_process(run_config={"ops": {"automation_run": {"config": cfg}}}, instance=instance,
                                    resources=resources(crm), raise_on_error=False)
    return result.success


def execute_backfill(instance, backfill_id: str, crm: CrmResource | None = None) -> list[str]:
    """What the backfill daemon would do: the chain over the backfill's fiche partitions (contiguous
    key ranges, the backfill's tags and run config), then the backfill completes."""
    bf = instance.get_backfill(backfill_id)
    target = bf.asset_backfill_data.target_subset
    keys = set(target.get_partitions_subset(AssetKey("fiche_details")).get_partition_keys())
    order = [k for k in instance.get_dynamic_partitions("fiches") if k in keys]
    all_keys = list(instance.get_dynamic_partitions("fiches"))
    ranges: list[list[str]] = []
    for k in order:
        if ranges and all_keys.index(k) == all_keys.index(ranges[-1][-1]) + 1:
            ranges[-1].append(k)
        else:
            ranges.append([k])
    for part in ranges:
        tags = {**bf.tags, "dagster/backfill": backfill_id,
                "dagster/asset_partition_range_start": part[0], "dagster/asset_partition_range_end": part[-1]}
        materialize(CHAIN, instance=instance, resources=resources(crm), tags=tags, run_config=bf.run_config,
                    raise_on_error=False)
    instance.update_backfill(bf.with_status(BulkActionStatus.COMPLETED_SUCCESS))
    return order


def tick(instance) -> str:
    return automation_runs_progress(build_sensor_context(instance=instance)).skip_message


def make_schedule(**overrides: Any) -> int:
    fields: dict[str, Any] = dict(
        name="R1+R3 daily", schedule_type="DAILY", time_of_day="07:00", timezone="Europe/Paris",
        cron_expression="0 7 * * *", fiche_selection_mode="date_range", fiche_selection_date_range="custom",
        fiche_selection_custom_start_date=DAY.strftime("%d/%m/%Y"), notify_on_complete=False, notify_on_error=False)
    fields.update(overrides)
    with session_scope() as s:
        row = AutomationSchedule(**fields)
        s.add(row)
        s.flush()
        return row.id


@pytest.fixture()
def two_configs(db) -> list[int]:
    with session_scope() as s:
        first = ensure_bundled_config(s)
        spec = generator.load_checklist()
        second = import_config(s, spec.model_copy(update={"name": "Short checklist", "steps": spec.steps[:3],
                                                          "run_automatically": False})).id
    return [first, second]


def groupes_of_day() -> dict[str, str]:
    return {f["id"]: generator.fiche_details_payload(f["id"])["information"]["groupe"]
            for f in generator.fiches_for_day(DAY)}


def results(run_id: int) -> dict[str, AutomationRunFicheResult]:
    with session_scope() as s:
        return {r.fiche_id: r for r in s.scalars(select(AutomationRunFicheResult)
                                                 .where(AutomationRunFicheResult.run_id == run_id))}


def the_run(schedule_id: int) -> AutomationRun:
    with session_scope() as s:
        return s.scalars(select(AutomationRun).where(AutomationRun.schedule_id == schedule_id)
                         .order_by(AutomationRun.id.desc())).first()


def events(run_id: int) -> list[tuple[str, dict[str, Any]]]:
    with session_scope() as s:
        return [(e.name, e.payload) for e in s.scalars(
            select(Event).where(Event.channels.any(f"job-automation-run-{run_id}")).order_by(Event.id))]


def test_scheduled_run_selects_filters_audits_every_config_and_finalizes(two_configs, dagster_instance):
    instance = dagster_instance
    groupes = groupes_of_day()
    wanted = sorted(set(groupes.values()))[:2]
    sid = make_schedule(fiche_selection_groupes=wanted, fiche_selection_only_with_recordings=True,
                        fiche_selection_only_unaudited=True, fiche_selection_max_recordings_per_fiche=2,
                        fiche_selection_use_rlm=True, specific_audit_configs=[two_configs[1]],
                        use_automatic_audits=True)
    due = now_utc().replace(second=0, microsecond=0) - dt.timedelta(minutes=3)
    due_ms = int(due.replace(tzinfo=dt.UTC).timestamp() * 1000)
    assert run_job(instance, schedule_id=sid, due_at_ms=due_ms)
    run = the_run(sid)
    assert run.status == "running" and run.trigger == "scheduled" and len(run.backfill_ids) == 1
    day_ids = [f["id"] for f in generator.fiches_for_day(DAY)]
    assert run.selected_fiche_ids == day_ids  # groupes are unknown before details: nothing dropped yet
    plan = run.config_snapshot["plan"]
    assert plan["config_ids"] == [two_configs[1], two_configs[0]] and plan["use_rlm"] is True
    assert run.config_snapshot["due_at"] == due.strftime("%Y-%m-%dT%H:%M:00.000Z")
    with session_scope() as s:
        sched = s.get(AutomationSchedule, sid)
        assert sched.last_run_status == "running" and sched.last_run_at == due

    # the same occurrence again (a second sensor evaluation slipping through, a daemon restart):
    # the compare-and-set refuses it — no second run row, no second backfill
    assert run_job(instance, schedule_id=sid, due_at_ms=due_ms)
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(AutomationRun).where(AutomationRun.schedule_id == sid)) == 1
    assert len(instance.get_backfills()) == 1

    # the sales list was read through the CRM and reported as sales_list[day] by the automation run
    mats = instance.fetch_materializations(AssetKey("sales_list"), limit=10).records
    assert [m.partition_key for m in mats] == [DAY.isoformat()]

    execute_backfill(instance, run.backfill_ids[0])
    assert "finalized=1" in tick(instance)
    run = the_run(sid)
    got = results(run.id)
    # every selected fiche accounted for exactly once
    assert sorted(got) == sorted(day_ids)
    for fiche_id, r in got.items():
        payload = generator.fiche_details_payload(fiche_id)
        n = len(payload.get("recordings") or [])
        if groupes[fiche_id] not in wanted:
            assert (r.status, r.ignore_reason) == ("ignored", f"Groupe not selected ({groupes[fiche_id]})")
        elif n > 2:
            assert (r.status, r.ignore_reason, r.recordings_count) == ("ignored", f"Too many recordings ({n}>2)", n)
        elif n == 0:
            assert (r.status, r.ignore_reason) == ("ignored", rules.NO_RECORDINGS)
        else:
            assert r.status in ("successful", "failed"), (fiche_id, r.status)
    counts = {k: sum(1 for r in got.values() if r.status == k) for k in ("successful", "failed", "ignored")}
    assert counts["successful"] > 0 and counts["ignored"] > 0
    assert counts["successful"] + counts["failed"] + counts["ignored"] == len(run.selected_fiche_ids)
    assert run.total_fiches == counts["successful"] + counts["failed"]  # ignored is never counted
    assert run.successful_fiches == counts["successful"]
    assert run.status == rules.final_status(counts["successful"], counts["failed"])
    # both configs audited for every successful fiche, linked to the run, in tools mode
    with session_scope() as s:
        linked = s.execute(select(FicheCache.fiche_id, Audit.audit_config_id, Audit.status, Audit.use_rlm,
                                  Audit.trigger_source, Audit.automation_schedule_id)
                           .join(FicheCache, FicheCache.id == Audit.fiche_cache_id)
                           .where(Audit.automation_run_id == run.id)).all()
    for fiche_id in (f for f, r in got.items() if r.status == "successful"):
        assert {c for f, c, st, *_ in linked if f == fiche_id and st == "completed"} == set(two_configs)
    assert all(rlm and src == "automation" and sch == sid for *_, rlm, src, sch in linked)
    assert run.audits_run == len(linked)
    assert run.result_summary == {}
    with session_scope() as s:
        sched = s.get(AutomationSchedule, sid)
        assert (sched.total_runs, sched.last_run_status) == (1, {"completed": "success"}.get(run.status, run.status))
        messages = [m for (m,) in s.execute(select(AutomationLog.message).where(AutomationLog.run_id == run.id)
                                            .order_by(AutomationLog.id))]
    assert messages[0] == "Automation run started" and "Calculated 1 dates to query" in messages
    assert f"Final: {len(day_ids)} fiches to process" in messages and messages[-1] == "Automation run completed"
    names = [n for n, _ in events(run.id)]
    assert names[:2] == ["automation.run.started", "automation.run.selection"]
    assert "automation.run.progress" in names and names[-1] == "automation.run.completed"
    completed = events(run.id)[-1][1]
    assert completed["ignored_fiches"] == counts["ignored"] and completed["status"] == run.status

    # the next occurrence: onlyUnaudited drops what is audited by every config; nothing is re-audited
    with session_scope() as s:
        before = s.scalar(select(func.count()).select_from(Audit))
    due2 = int((now_utc() + dt.timedelta(minutes=1)).replace(tzinfo=dt.UTC).timestamp() * 1000)
    assert run_job(instance, schedule_id=sid, due_at_ms=due2)
    second = the_run(sid)
    assert second.id != run.id
    audited = {f for f, r in got.items() if r.status == "successful"}
    assert not audited & set(second.selected_fiche_ids)
    # the day's list was read moments ago: the cooldown answers from the cache (no new materialization)
    assert len(instance.fetch_materializations(AssetKey("sales_list"), limit=10).records) == 1
    if second.backfill_ids:
        execute_backfill(instance, second.backfill_ids[0])
    tick(instance)
    with session_scope() as s:
        new = s.scalars(select(Audit).join(FicheCache, FicheCache.id == Audit.fiche_cache_id)
                        .where(Audit.id > 0, FicheCache.fiche_id.in_(audited), Audit.automation_run_id == second.id)).all()
        assert new == [] and s.scalar(select(func.count()).select_from(Audit)) >= before


class FlakyCrm(CrmResource):
    """The synthetic CRM failing the detail calls of a fixed 30 % of fiches while ``failing``."""

    def client(self, auth_token: str | None = None):
        inner = super().client(auth_token)
        failing = FlakyCrm.failing

        class Flaky:
            async def __aenter__(self):
                self.c = await inner.__aenter__()
                return self

            async def __aexit__(self, *exc):
                return await inner.__aexit__(*exc)

            async def sales_with_calls(self, *a, **kw):
                return await self.c.sales_with_calls(*a, **kw)

            async def fiche_details(self, fiche_id, **kw):
                if fiche_id in failing:
                    raise RuntimeError("CRM gateway GET /fiches/by-id failed: status=503")
                return await self.c.fiche_details(fiche_id, **kw)

        return Flaky()


FlakyCrm.failing = set()


@pytest.mark.parametrize("retry", [False, True])
def test_crm_detail_failures_partial_then_retried_once(two_configs, dagster_instance, retry):
    instance = dagster_instance
    day_ids = [f["id"] for f in generator.fiches_for_day(DAY)]
    failing = set(day_ids[::3][: round(len(day_ids) * 0.3)])
    FlakyCrm.failing = failing
    crm = FlakyCrm(mode="sample")
    sid = make_schedule(name="flaky", use_automatic_audits=False, specific_audit_configs=[two_configs[1]],
                        continue_on_error=True, retry_failed=retry, max_retries=2 if retry else 0)
    assert run_job(instance, schedule_id=sid, due_at_ms=1_774_000_000_000, crm=crm)
    run = the_run(sid)
    execute_backfill(instance, run.backfill_ids[0], crm=crm)
    outcome = tick(instance)
    if not retry:
        assert "finalized=1" in outcome
        run = the_run(sid)
        got = results(run.id)
        assert run.status == "partial" and run.failed_fiches >= len(failing)
        assert {f for f, r in got.items() if r.status == "failed"} >= failing
        assert all("503" in got[f].error for f in failing)
        return
    # retryFailed: the failed fiches (only them) get a second backfill; the CRM has recovered
    assert "retried=1" in outcome
    run = the_run(sid)
    assert len(run.backfill_ids) == 2 and run.attempt == 1
    retried = execute_backfill(instance, run.backfill_ids[1])
    assert set(retried) == failing
    FlakyCrm.failing = set()
    assert "finalized=1" in tick(instance)
    run = the_run(sid)
    got = results(run.id)
    assert sorted(got) == sorted(day_ids)  # counted once each
    assert all(got[f].status != "failed" or "503" not in (got[f].error or "") for f in failing)
    with session_scope() as s:
        assert any("Retrying" in m for (m,) in s.execute(select(AutomationLog.message)
                                                         .where(AutomationLog.run_id == run.id)))
        # one completed audit per fiche and config for this run: the retry never re-audited
        dup = s.execute(select(Audit.fiche_cache_id, Audit.audit_config_id, func.count())
                        .where(Audit.automation_run_id == run.id, Audit.status == "completed")
                        .group_by(Audit.fiche_cache_id, Audit.audit_config_id).having(func.count() > 1)).all()
        assert dup == []


def test_manual_ids_early_exit_and_catastrophe(two_configs, dagster_instance):
    instance = dagster_instance
    from auditflow_dagster.db import automation_runs as runs_db

    sid = make_schedule(name="manual", schedule_type="MANUAL", cron_expression=None,
                        fiche_selection_mode="manual", fiche_selection_fiche_ids=[" , "])
    with session_scope() as s:
        run_id = runs_db.create_manual_run(s, sid, overrides=None, force=False, stale_ms=60_000).id
    assert run_job(instance, schedule_id=sid, run_id=run_id)
    run = the_run(sid)
    assert run.status == "completed" and run.result_summary == {"message": "No fiches found", "ficheIds": []}
    assert [n for n, _ in events(run.id)][-1] == "automation.run.completed"
    assert events(run.id)[-1][1]["reason"] == "no_fiches_manual"
    # a retry of the finished run stops at the terminal row
    assert run_job(instance, schedule_id=sid, run_id=run_id)
    assert the_run(sid).completed_at == run.completed_at

    # override selection with duplicates and a cap
    day_ids = [f["id"] for f in generator.fiches_for_day(DAY)]
    with session_scope() as s:
        run_id = runs_db.create_manual_run(
            s, sid, overrides={"mode": "manual", "ficheIds": [f"{day_ids[0]}, {day_ids[1]}", day_ids[0], day_ids[2]],
                               "maxFiches": 2, "onlyWithRecordings": False, "onlyUnaudited": False, "useRlm": False},
            force=False, stale_ms=60_000).id
    assert run_job(instance, schedule_id=sid, run_id=run_id)
    assert the_run(sid).selected_fiche_ids == day_ids[:2]

    # the CRM down for the sales list and no cache: the day falls back to nothing, logged
    class DownCrm(CrmResource):
        def client(self, auth_token: str | None = None):
            raise RuntimeError("boom: connection refused")

    sid2 = make_schedule(name="down", fiche_selection_custom_start_date="02/02/2026")
    assert run_job(instance, schedule_id=sid2, due_at_ms=1_774_000_000_000, crm=DownCrm(mode="sample"))
    run = the_run(sid2)
    assert run.status == "completed" and run.error_details["revalidation_failures"][0]["date"] == "2026-02-02"
    assert events(run.id)[-1][1]["reason"] == "no_fiches"


def test_continue_on_error_off_stops_new_stages_after_a_failure(two_configs, dagster_instance):
    instance = dagster_instance
    day_ids = [f["id"] for f in generator.fiches_for_day(DAY)]
    FlakyCrm.failing = {day_ids[0]}
    crm = FlakyCrm(mode="sample")
    sid = make_schedule(name="strict", use_automatic_audits=False, specific_audit_configs=[two_configs[1]],
                        continue_on_error=False)
    assert run_job(instance, schedule_id=sid, due_at_ms=1_774_000_000_000, crm=crm)
    execute_backfill(instance, the_run(sid).backfill_ids[0], crm=crm)
    FlakyCrm.failing = set()
    assert "finalized=1" in tick(instance)
    run = the_run(sid)
    got = results(run.id)
    assert got[day_ids[0]].status == "failed"
    stopped = [f for f, r in got.items() if r.ignore_reason == rules.STOPPED]
    # the details stage was in flight for every fiche; no transcription or audit started after the failure
    assert stopped and all(got[f].status == "ignored" for f in stopped)
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Audit).where(Audit.automation_run_id == run.id)) == 0
    assert run.status == "failed" and run.successful_fiches == 0


def test_deleting_the_schedule_mid_run_leaves_the_rest_of_the_backfill_idle(two_configs, dagster_instance):
    instance = dagster_instance
    sid = make_schedule(name="deleted", use_automatic_audits=False, specific_audit_configs=[two_configs[1]])
    assert run_job(instance, schedule_id=sid, due_at_ms=1_774_000_000_000)
    backfill_id = the_run(sid).backfill_ids[0]
    with session_scope() as s:  # DELETE /schedules/{id}?force=true: runs, results and logs cascade
        s.delete(s.get(AutomationSchedule, sid))
    execute_backfill(instance, backfill_id)  # the runs still go: they must not fail nor write linked audits
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Audit)) == 0
        assert s.scalar(select(func.count()).select_from(AutomationRun)) == 0
    assert "running=0" in tick(instance)
