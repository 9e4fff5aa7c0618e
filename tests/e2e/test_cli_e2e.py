"""The installed ``auditflow`` entry point against a whole running stack (synthetic CRM over HTTP,
Dagster webserver + daemon, API; one stack for the module).

``run-day`` audits a day, ``backfill`` two more days as one Dagster backfill, ``rerun`` reruns a
step and a whole audit — each a subprocess, asserted on its exit code, its output and what landed
in the database. The failure paths (unknown audit, unreachable Dagster, FROM after TO) exit
non-zero with one ``Error:`` line and no traceback.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from auditflow_dagster.db.models import Audit, AuditStepResultRerunEvent, FicheCache

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
AUDITFLOW = str(Path(sys.executable).parent / "auditflow")
FICHES_PER_DAY = 6
RUN_DAY = "2025-10-20"  # days no other e2e module touches
BACKFILL_DAYS = ["2025-10-21", "2025-10-22"]


@pytest.fixture(scope="module")
def stack(databases, tmp_path_factory):
    from tests.e2e.running import running_stack

    with running_stack(tmp_path_factory.mktemp("cli_stack_logs"), {
            "AUDITFLOW_CRM": "http", "FICHE_API_BASE_URL": None,
            "AUDITFLOW_SAMPLE_CRM_FICHES_PER_DAY": str(FICHES_PER_DAY)}) as s:
        yield s


def auditflow(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """The real console script, output captured (not a terminal: plain progress lines)."""
    t0 = time.monotonic()
    proc = subprocess.run([AUDITFLOW, *args], cwd=REPO, env=dict(os.environ), capture_output=True, text=True,
                          timeout=timeout)
    print(f"\n$ auditflow {' '.join(args)}  → exit {proc.returncode} in {time.monotonic() - t0:.1f}s\n{proc.stdout}"
          f"{proc.stderr}")
    return proc


def assert_day_audited(day: str) -> dict:
    from auditflow_dagster.cli_commands.days import day_progress

    p = day_progress(day)
    assert p["day_done"] and p["fiches"] == FICHES_PER_DAY
    assert p["fiches_audited"] == p["fiches"] and p["completed"] >= 1
    return p


def test_run_day_audits_the_day(stack):
    proc = auditflow("run-day", RUN_DAY, "--dagster-url", stack.dagster_url, "--timeout", "600")
    assert proc.returncode == 0, proc.stderr
    assert re.search(rf"launched sales_day\[{RUN_DAY}\]: run [0-9a-f-]{{36}}", proc.stdout)
    assert f"day {RUN_DAY}: {FICHES_PER_DAY}/{FICHES_PER_DAY} fiches audited" in proc.stdout  # the last progress line
    p = assert_day_audited(RUN_DAY)
    assert f"{RUN_DAY}: {FICHES_PER_DAY} fiches" in proc.stdout.splitlines()[-1]
    assert f"audits {p['completed']} completed / {p['failed']} failed" in proc.stdout


def test_backfill_audits_two_days_as_one_backfill(stack):
    import asyncio

    from api.dagster_client import DagsterClient

    proc = auditflow("backfill", *BACKFILL_DAYS, "--dagster-url", stack.dagster_url, "--timeout", "900")
    assert proc.returncode == 0, proc.stderr
    backfill_id = re.search(r"launched backfill (\w+): sales_list over 2 day\(s\)", proc.stdout).group(1)
    for day in BACKFILL_DAYS:
        assert_day_audited(day)
    assert f"2 days: {2 * FICHES_PER_DAY}/{2 * FICHES_PER_DAY} fiches audited" in proc.stdout

    async def sales_runs() -> list[dict]:
        client = DagsterClient(f"{stack.dagster_url}/graphql")
        try:
            return await client.runs_with_tags({"dagster/backfill": backfill_id})
        finally:
            await client.aclose()

    runs = asyncio.run(sales_runs())
    assert runs and all(r["status"] == "SUCCESS" for r in runs)  # ONE backfill fetched both days


def _completed_audit(day: str) -> Audit:
    from auditflow_dagster.db.session import session_scope

    with session_scope() as s:
        audit = s.scalars(select(Audit).join(FicheCache, FicheCache.id == Audit.fiche_cache_id)
                          .where(FicheCache.sales_date == day, Audit.status == "completed").order_by(Audit.id)).first()
        assert audit is not None
        s.expunge(audit)
        return audit


def test_rerun_a_step_then_the_whole_audit(stack):
    from auditflow_dagster.db.session import session_scope

    audit = _completed_audit(RUN_DAY)
    proc = auditflow("rerun", str(audit.id), "--step", "1", "--dagster-url", stack.dagster_url, "--timeout", "600")
    assert proc.returncode == 0, proc.stderr
    run_id = re.search(r"launched rerun_audit_step run ([0-9a-f-]{36})", proc.stdout).group(1)
    assert re.search(rf"audit {audit.id} step 1 rerun: score \S+ → \S+, conforme \S+ → \S+", proc.stdout)
    assert re.search(rf"audit {audit.id} now: score [\d.]+ %, niveau [A-Z_]+", proc.stdout)
    with session_scope() as s:
        trail = s.scalars(select(AuditStepResultRerunEvent).where(AuditStepResultRerunEvent.audit_id == audit.id)).all()
        assert [t.event_id for t in trail] == [run_id] and trail[0].step_position == 1  # a new step version

    proc = auditflow("rerun", str(audit.id), "--dagster-url", stack.dagster_url, "--timeout", "600")
    assert proc.returncode == 0, proc.stderr
    tracking_id = re.search(r"\(audit (audit-\S+)\)", proc.stdout).group(1)
    with session_scope() as s:
        new = s.scalars(select(Audit).where(Audit.tracking_id == tracking_id)).one()
        assert new.id != audit.id and new.fiche_cache_id == audit.fiche_cache_id
        assert (new.status, new.trigger_source, new.audit_config_id) == ("completed", "cli", audit.audit_config_id)
        assert f"audit {new.id} ({tracking_id}) completed: score {new.score_percentage} %, niveau {new.niveau}" \
            in proc.stdout


def test_failures_exit_non_zero_with_one_line(stack):
    unknown = auditflow("rerun", "999999", "--dagster-url", stack.dagster_url)
    assert unknown.returncode == 1 and unknown.stderr.strip() == "Error: no audit 999999"

    dead = auditflow("run-day", RUN_DAY, "--dagster-url", "http://127.0.0.1:9")
    assert dead.returncode == 1
    assert dead.stderr.strip() == "Error: Dagster at http://127.0.0.1:9/graphql: Dagster GraphQL unreachable (ConnectError)"

    reversed_range = auditflow("backfill", BACKFILL_DAYS[1], BACKFILL_DAYS[0], "--dagster-url", stack.dagster_url)
    assert reversed_range.returncode == 2
    assert f"Error: FROM ({BACKFILL_DAYS[1]}) is after TO ({BACKFILL_DAYS[0]})" in reversed_range.stderr
    for proc in (unknown, dead, reversed_range):
        assert "Traceback" not in proc.stderr
