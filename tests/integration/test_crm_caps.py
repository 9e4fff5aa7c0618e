"""The CRM caps hold across processes: 8 fiche runs + 2 sales-list runs at once, each in its own
process, against the synthetic CRM over HTTP (which counts concurrent calls per kind).

Spec 01 §1 / issue 3: never more than ``FICHE_FETCH_CONCURRENCY`` (3) detail requests and
``FICHE_SALES_SEARCH_CONCURRENCY`` (1) sales searches in flight, whatever the number of runs.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from auditflow_dagster.sample import generator
from auditflow_dagster.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
DAYS = ["2026-02-02", "2026-02-03", "2026-02-04", "2026-02-05"]


@pytest.fixture()
def crm_gateway(db):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "auditflow_dagster.sample.crm_app", "--port", str(port), "--latency-ms", "250"],
        cwd=ROOT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "synthetic CRM did not start"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_caps_hold_across_eight_concurrent_fiche_runs(crm_gateway, tmp_path):
    fiche_ids = [f["id"] for f in generator.sales_list_payload(
        dt.date(2026, 1, 12), dt.date(2026, 1, 14), False)["fiches"]][:24]
    assert len(fiche_ids) == 24
    go = tmp_path / "go"
    env = {**os.environ, "AUDITFLOW_CRM": "http", "FICHE_API_BASE_URL": f"{crm_gateway}/api",
           "FICHE_FETCH_CONCURRENCY": "3", "FICHE_SALES_SEARCH_CONCURRENCY": "1", "AUDITFLOW_FICHE_CONCURRENCY": "8"}
    workers = [[sys.executable, "-m", "tests.integration.cap_worker", str(go), "details", *fiche_ids[i:i + 3]]
               for i in range(0, 24, 3)]
    workers += [[sys.executable, "-m", "tests.integration.cap_worker", str(go), "sales", *DAYS[i:i + 2]]
                for i in (0, 2)]
    assert len(workers) == 10
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for cmd in workers]
    try:
        time.sleep(1.0)
        httpx.delete(f"{crm_gateway}/__stats")  # count only what the runs do
        go.touch()
        outputs = [p.communicate(timeout=240)[0].decode(errors="replace") for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    stats = httpx.get(f"{crm_gateway}/__stats").json()
    # every fiche fetched once, every day searched, and the calls really overlapped up to the cap
    assert stats["max_in_flight"]["details"] == 3, stats
    assert stats["max_in_flight"]["sales_search"] == 1, stats
    assert stats["requests"] >= 24 + len(DAYS)

    from sqlalchemy import func, select

    from auditflow_dagster.db import fiches
    from auditflow_dagster.db.models import FicheCache
    from auditflow_dagster.db.session import session_scope

    with session_scope() as s:
        rows = s.scalars(select(FicheCache).where(FicheCache.fiche_id.in_(fiche_ids))).all()
        assert len(rows) == 24 and not any(fiches.is_sales_list_only(r) for r in rows)
        days = s.scalar(select(func.count(func.distinct(FicheCache.sales_date))).where(FicheCache.sales_date.in_(DAYS)))
    assert days == len(DAYS)


def test_one_fetch_per_fiche_across_processes(crm_gateway, tmp_path):
    """Three runs want the same uncached fiche at once: the CRM is asked once, the others read it."""
    fiche_id = generator.sales_list_payload(dt.date(2026, 1, 20), dt.date(2026, 1, 20), False)["fiches"][0]["id"]
    go = tmp_path / "go"
    env = {**os.environ, "AUDITFLOW_CRM": "http", "FICHE_API_BASE_URL": f"{crm_gateway}/api"}
    procs = [subprocess.Popen([sys.executable, "-m", "tests.integration.cap_worker", str(go), "details", fiche_id],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(3)]
    try:
        time.sleep(1.0)
        httpx.delete(f"{crm_gateway}/__stats")
        go.touch()
        outputs = [p.communicate(timeout=240)[0].decode(errors="replace") for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    stats = httpx.get(f"{crm_gateway}/__stats").json()
    assert stats["requests"] == 1 and stats["max_in_flight"]["details"] == 1, stats
