"""The whole code location, snapshotted: an accidental change to the graph shows up here."""

from __future__ import annotations

from dagster import AssetKey

from auditflow_dagster.definitions import defs


def test_asset_graph_is_one_lineage():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {"sales_list", "fiche_details", "transcripts", "audit_step_results", "audits", "audit_step_reruns",
                    "daily_compliance_report", "weekly_compliance_report", "calibration_report"}
    chain = ["sales_list", "fiche_details", "transcripts", "audit_step_results", "audits"]
    for up, down in zip(chain, chain[1:]):
        assert AssetKey(up) in graph.get(AssetKey(down)).parent_keys, (up, down)
    assert graph.get(AssetKey("sales_list")).partitions_def.timezone == "Europe/Paris"
    for name in chain[1:]:
        node = graph.get(AssetKey(name))
        assert node.partitions_def.name == "fiches"
        assert node.backfill_policy.max_partitions_per_run == 50
    rerun = graph.get(AssetKey("audit_step_reruns"))
    assert rerun.partitions_def.name == "fiches" and AssetKey("audits") in rerun.parent_keys
    daily = graph.get(AssetKey("daily_compliance_report"))
    assert daily.parent_keys == {AssetKey("audits")} and daily.partitions_def.timezone == "Europe/Paris"
    assert graph.get(AssetKey("weekly_compliance_report")).parent_keys == {AssetKey("daily_compliance_report")}
    calibration = graph.get(AssetKey("calibration_report"))
    assert calibration.parent_keys == {AssetKey("audits"), AssetKey("audit_step_reruns")}
    assert calibration.partitions_def is None and calibration.group_name == "reports"


def test_jobs_schedules_sensors_checks():
    repo = defs.get_repository_def()
    assert {j.name for j in repo.get_all_jobs() if not j.name.startswith("__")} == {"audit_fiche", "fetch_fiche", "transcribe_fiche", "sales_day", "rerun_audit_step", "automation_run_job"}
    schedules = {s.name: s for s in repo.schedule_defs}
    assert sorted(schedules) == ["sales_day_schedule", "sales_revalidation_schedule"]
    assert schedules["sales_day_schedule"].cron_schedule == "0 6 * * *"
    assert all(s.execution_timezone == "Europe/Paris" for s in schedules.values())
    assert {"sales_day_fiches_backfill", "webhook_deliveries_sensor", "progressive_fetch_watchdog",
            "partition_lifecycle", "audit_batches_progress", "audit_watchdog", "automation_scheduler",
            "automation_runs_progress", "run_endings"} <= {s.name for s in repo.sensor_defs}
    assert {c.name for c in defs.resolve_asset_graph().asset_check_keys} == {"audit_summary_matches_rows", "audit_has_every_step", "audit_citations_pass_gating", "audit_scores_in_bounds"}
    assert set(repo.get_top_level_resources()) >= {"crm", "stt", "llm", "db"}


def test_resource_config_never_holds_a_secret(monkeypatch):
    """Keys reach resources as EnvVar references: the Dagster UI shows the name, never the value."""
    from auditflow_dagster.definitions import build_definitions
    from auditflow_dagster.settings import get_settings

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-should-not-appear-0000000000")
    monkeypatch.setenv("ELEVENLABS_API_KEY", "xi-should-not-appear-000000")
    get_settings.cache_clear()
    try:
        built = build_definitions()
        dumped = repr([r.model_dump() if hasattr(r, "model_dump") else r for r in built.resources.values()])
        assert "should-not-appear" not in dumped
    finally:
        get_settings.cache_clear()


def test_daily_schedule_targets_yesterday_in_paris():
    import datetime as dt
    from zoneinfo import ZoneInfo

    from dagster import build_schedule_context

    from auditflow_dagster.definitions import daily_sales_schedule

    # 06:00 Paris on 2026-03-30 (the day after the spring-forward change) → 2026-03-29
    tick = dt.datetime(2026, 3, 30, 6, 0, tzinfo=ZoneInfo("Europe/Paris"))
    ctx = build_schedule_context(scheduled_execution_time=tick, repository_def=defs.get_repository_def())
    req = daily_sales_schedule.evaluate_tick(ctx).run_requests[0]
    assert req.partition_key == "2026-03-29" and req.run_key == "sales-day-2026-03-29"
