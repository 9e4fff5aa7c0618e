"""The ``auditflow`` CLI (issue 10 §3) in-process (click's CliRunner) on the real PostgreSQL.

Every command and subgroup of the click tree answers ``--help`` (walked programmatically, so a new
command is covered without touching this file). The main commands run against a database
populated like the demo (the synthetic CRM's day materialized through the real assets):
``migrate``, ``api-key``, ``inspect-fiche``, ``renormalize``, ``prune`` (dry run, then for real);
``rerun``, ``run-day`` and ``backfill`` launch against a fake Dagster GraphQL endpoint here
(``--no-wait``; the real runs are in ``tests/e2e/test_cli_e2e.py``), and their failure paths
(unknown audit, Dagster unreachable, bad dates, FROM after TO) exit non-zero with one line.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import psycopg
import pytest
from click.testing import CliRunner
from dagster import DagsterRunStatus
from dagster._core.test_utils import create_run_for_test
from sqlalchemy import func, select, update

from auditflow_dagster.cli import auditflow, main
from auditflow_dagster.db import api_keys
from auditflow_dagster.db.events import emit
from auditflow_dagster.db.models import ApiKey, Audit, AuditConfig, Event, FicheCache
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.partitions import FICHES_PARTITIONS_NAME
from tests.fakes.dagster_graphql import FakeDagsterGraphQL
from tests.fakes.server import serve_app

REPO = Path(__file__).resolve().parents[2]


def command_tree(cmd: click.Command = auditflow, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command and group under ``cmd`` with the words that invoke it."""
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in sorted(cmd.commands.items()):
            yield from command_tree(sub, (*path, name))


COMMANDS = list(command_tree())


def invoke(*args: str) -> click.testing.Result:
    return CliRunner().invoke(auditflow, list(args), prog_name="auditflow")


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=[" ".join(p) or "auditflow" for p, _ in COMMANDS])
def test_every_command_has_help(path):
    cmd = dict(COMMANDS)[path]
    assert (cmd.help or "").strip(), f"{' '.join(path)} has no docstring"
    result = invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: {' '.join(('auditflow', *path))} ")
    assert "--help" in result.output


def test_the_tree_has_every_command():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"stack", "demo", "run-day", "backfill", "rerun", "inspect-fiche", "renormalize", "api-key",
            "api-key create", "api-key list", "api-key revoke", "prune", "migrate", "import-config"} <= names
    assert main(["--help"]) == 0  # the console script's entry point: help is exit 0, not an exception


# --------------------------------------------------------------------------------------------- #
# database commands
# --------------------------------------------------------------------------------------------- #


def test_migrate_and_import_config(db, tmp_path):
    result = invoke("migrate")
    assert result.exit_code == 0, result.output
    assert "migrations applied" in result.output
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(AuditConfig)) >= 1  # the bundled checklist
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = invoke("import-config", str(bad))
    assert result.exit_code == 1 and "is not a JSON file" in result.output
    assert invoke("import-config", str(tmp_path / "missing.json")).exit_code == 2


def test_api_key_create_list_revoke(db):
    result = invoke("api-key", "create", "--name", "ops", "-p", "audits.read,audits.run", "--scope", "ALL",
                    "--token-only")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    with session_scope() as s:
        grant = api_keys.verify_key(s, token)  # the printed token is the stored hash's pre-image
        assert grant is not None and set(grant.permissions) == {"audits.read", "audits.run"}
        key_id = s.scalar(select(ApiKey.id))
    listed = invoke("api-key", "list", "--json")
    assert listed.exit_code == 0 and json.loads(listed.stdout)[0]["name"] == "ops" and token not in listed.stdout
    assert invoke("api-key", "revoke", str(key_id)).exit_code == 0
    with session_scope() as s:
        assert api_keys.verify_key(s, token) is None
    missing = invoke("api-key", "revoke", "999")
    assert missing.exit_code == 1 and "Error: no API key 999" in missing.stderr
    refused = invoke("api-key", "create", "--name", "x", "-p", "audits.delete")
    assert refused.exit_code == 2 and "unknown permission" in refused.stderr


@pytest.fixture()
def demo_day(db, dagster_instance) -> tuple[str, str, int]:
    """The synthetic CRM's day as the pipeline writes it: sales list, one fiche audited (completed)."""
    from tests.integration.test_reruns import DAY, build_completed_audit

    fiche_id, audit_id = build_completed_audit(dagster_instance)
    return DAY, fiche_id, audit_id


def test_inspect_renormalize_and_day_progress(demo_day):
    from auditflow_dagster.cli_commands.days import day_progress

    day, fiche_id, _ = demo_day
    result = invoke("inspect-fiche", fiche_id)
    assert result.exit_code == 0, result.output
    assert f"fiche {fiche_id}" in result.output and "kind: full details" in result.output
    assert f"API GET /api/fiches/{fiche_id}?include_mail_devis=true: " in result.output
    plain = invoke("inspect-fiche", fiche_id, "--no-mail-devis", "--payload")
    assert f"API GET /api/fiches/{fiche_id}: fresh → 200" in plain.output and '"information": {' in plain.output
    assert "not cached" in invoke("inspect-fiche", "900000001").output

    with session_scope() as s:
        stored = s.scalar(select(func.count()).select_from(FicheCache))
    result = invoke("renormalize", "--batch-size", "7")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert f"renormalize: {stored}/{stored} fiches" in result.stdout  # the plain progress line, not a bar
    assert json.loads(lines[-1])["processed"] == stored

    progress = day_progress(day)
    assert progress["fiches"] == stored and progress["day_done"] == 1
    assert progress["fiches_audited"] == progress["completed"] == 1


@pytest.fixture()
def fake_dagster() -> Iterator[FakeDagsterGraphQL]:
    fake = FakeDagsterGraphQL()
    with serve_app(fake.app) as url:
        fake.url = url
        yield fake


def _launched(fake: FakeDagsterGraphQL) -> list[dict]:
    out = []
    for run_id, run in fake.runs.items():
        params = run["params"]
        out.append({"run_id": run_id, "job": params["selector"]["jobName"],
                    "run_config": json.loads(params["runConfigData"]),
                    "tags": {t["key"]: t["value"] for t in params["executionMetadata"]["tags"]}})
    return out


def test_rerun_launches_exactly_what_the_api_launches(demo_day, fake_dagster):
    _, fiche_id, audit_id = demo_day
    result = invoke("rerun", str(audit_id), "--step", "2", "--prompt", "strict", "--no-wait",
                    "--dagster-url", fake_dagster.url)
    assert result.exit_code == 0, result.output
    [step] = _launched(fake_dagster)
    assert f"launched rerun_audit_step run {step['run_id']}" in result.output
    assert step["job"] == "rerun_audit_step" and fiche_id in fake_dagster.partitions
    assert step["run_config"] == {"ops": {"audit_step_reruns": {"config": {
        "audit_id": audit_id, "step_position": 2, "custom_prompt": "strict", "replace_human_review": False}}}}
    assert step["tags"] == {"dagster/partition": fiche_id, "auditflow/rerun_audit_id": str(audit_id),
                            "auditflow/rerun_scope": "step", "auditflow/step_position": "2"}

    result = invoke("rerun", str(audit_id), "--no-wait", "--dagster-url", fake_dagster.url)
    assert result.exit_code == 0, result.output
    whole = next(r for r in _launched(fake_dagster) if r["job"] == "audit_fiche")
    config = whole["run_config"]["ops"]["audit_step_results"]["config"]
    with session_scope() as s:
        config_id = s.get(Audit, audit_id).audit_config_id
    assert config["audit_config_ids"] == [config_id] and config["trigger_source"] == "cli"
    assert whole["tags"]["dagster/partition"] == fiche_id and whole["tags"]["auditflow/trigger"] == "cli"

    # refusals come from the API's own checks, as one line
    point = invoke("rerun", str(audit_id), "--step", "99", "--no-wait", "--dagster-url", fake_dagster.url)
    assert point.exit_code == 1 and point.stderr.strip() == "Error: Audit step result not found"
    unknown = invoke("rerun", "999999", "--dagster-url", fake_dagster.url)
    assert unknown.exit_code == 1 and unknown.stderr.strip() == "Error: no audit 999999"
    assert invoke("rerun", str(audit_id), "--control-point", "1").exit_code == 2  # needs --step
    assert len(fake_dagster.runs) == 2


def test_run_day_and_backfill_launch(db, fake_dagster):
    result = invoke("run-day", "2026-03-16", "--no-wait", "--dagster-url", fake_dagster.url)
    assert result.exit_code == 0, result.output
    [run] = _launched(fake_dagster)
    assert run["job"] == "sales_day" and run["tags"] == {"dagster/partition": "2026-03-16", "auditflow/trigger": "cli"}

    result = invoke("backfill", "2026-03-16", "2026-03-18", "--no-wait", "--dagster-url", fake_dagster.url)
    assert result.exit_code == 0, result.output
    [backfill] = fake_dagster.backfills
    params = backfill["params"]
    assert params["partitionNames"] == ["2026-03-16", "2026-03-17", "2026-03-18"]
    assert params["assetSelection"] == [{"path": ["sales_list"]}]
    assert f"launched backfill {backfill['id']}" in result.output


def test_failures_are_one_line_and_non_zero(db):
    unreachable = "http://127.0.0.1:9"
    result = invoke("run-day", "2026-03-16", "--dagster-url", unreachable)
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: Dagster at http://127.0.0.1:9/graphql: Dagster GraphQL unreachable (ConnectError)"
    assert invoke("backfill", "2026-03-16", "2026-03-17", "--dagster-url", unreachable).exit_code == 1
    reversed_range = invoke("backfill", "2026-03-18", "2026-03-16")
    assert reversed_range.exit_code == 2 and "FROM (2026-03-18) is after TO (2026-03-16)" in reversed_range.stderr
    bad = invoke("run-day", "2026-02-30")
    assert bad.exit_code == 2 and "'2026-02-30' is not a date written YYYY-MM-DD" in bad.stderr


def test_database_unreachable_is_one_line():
    """The real entry point, in a subprocess: a dead database URL is an error line, not a traceback."""
    env = {**os.environ, "AUDITFLOW_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere"}
    proc = subprocess.run([str(Path(sys.executable).parent / "auditflow"), "api-key", "list"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("Error: database unreachable: ") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------------------------- #
# prune
# --------------------------------------------------------------------------------------------- #


def _days_ago(n: int) -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=n)


def _old_fiche(fiche_id: str, days: int, config_id: int) -> None:
    sold = (dt.date.today() - dt.timedelta(days=days)).isoformat()
    with session_scope() as s:
        row = FicheCache(fiche_id=fiche_id, sales_date=sold, fetched_at=_days_ago(days),
                         last_revalidated_at=_days_ago(days), expires_at=_days_ago(days - 10))
        s.add(row)
        s.flush()
        s.add(Audit(fiche_cache_id=row.id, audit_config_id=config_id, tracking_id=f"audit-{fiche_id}",
                    status="completed", created_at=_days_ago(days), updated_at=_days_ago(days),
                    completed_at=_days_ago(days)))


def _aged_runs(instance, n: int, days: int) -> list[str]:
    ids = [create_run_for_test(instance, job_name="__ASSET_JOB", status=DagsterRunStatus.SUCCESS).run_id
           for _ in range(n)]
    url = os.environ["AUDITFLOW_DAGSTER_STORAGE_URL"].replace("postgresql+psycopg2://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE runs SET create_timestamp = %s, update_timestamp = %s WHERE run_id = ANY(%s)",
                     (_days_ago(days), _days_ago(days), ids))
    return ids


def test_prune_dry_run_then_for_real(db, dagster_instance):
    instance = dagster_instance
    with session_scope() as s:
        cfg = AuditConfig(name="prune test")
        s.add(cfg)
        s.flush()
        config_id = cfg.id
    _old_fiche("7001", 90, config_id)   # old, final: retired
    _old_fiche("7002", 5, config_id)    # recent: kept
    instance.add_dynamic_partitions(FICHES_PARTITIONS_NAME, ["7001", "7002"])
    old_runs = _aged_runs(instance, 2, 40)
    [recent_run] = _aged_runs(instance, 1, 1)
    with session_scope() as s:
        for i in range(3):
            emit(s, "test.old", {"i": i})
        emit(s, "test.recent", {})
        s.execute(update(Event).where(Event.name == "test.old").values(created_at=_days_ago(10)))
    retention = ["--partition-retention-days", "60", "--run-retention-days", "30", "--event-retention-hours", "168"]

    dry = invoke("prune", "--dry-run", *retention)
    assert dry.exit_code == 0, dry.output
    assert "fiche partitions: 1 of 2 to retire" in dry.stdout
    assert "runs: 2 finished run(s) to delete" in dry.stdout and "events: 3 realtime event(s) to delete" in dry.stdout
    assert "  partitions: 7001\n" in dry.stdout
    assert all(r in dry.stdout for r in old_runs) and recent_run not in dry.stdout
    assert "dry run: nothing deleted" in dry.stdout
    assert sorted(instance.get_dynamic_partitions(FICHES_PARTITIONS_NAME)) == ["7001", "7002"]
    assert all(instance.get_run_by_id(r) for r in old_runs)

    real = invoke("prune", *retention)
    assert real.exit_code == 0, real.output
    assert "retiring fiche partitions: 1/1" in real.stdout and "deleting runs: 2/2" in real.stdout
    assert "deleting events: 3/3" in real.stdout
    assert "pruned: 1 fiche partition(s) retired, 2 run(s) deleted, 3 event(s) deleted" in real.stdout
    assert list(instance.get_dynamic_partitions(FICHES_PARTITIONS_NAME)) == ["7002"]
    assert not any(instance.get_run_by_id(r) for r in old_runs) and instance.get_run_by_id(recent_run)
    with session_scope() as s:
        assert [e.name for e in s.scalars(select(Event))] == ["test.recent"]
        assert s.scalar(select(func.count()).select_from(FicheCache)) == 2  # app rows are kept

    again = invoke("prune", *retention)
    assert "pruned: 0 fiche partition(s) retired, 0 run(s) deleted, 0 event(s) deleted" in again.stdout
