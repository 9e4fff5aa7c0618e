"""Progressive date-range fetch: cached days answered at once, the rest filled by sales_list runs
with per-day progress applied atomically, events on the job channel, and the reply shapes."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from dagster import materialize
from sqlalchemy import select, text
from starlette.testclient import TestClient

from api.app import create_app
from auditflow_dagster.assets.sales import sales_list
from auditflow_dagster.db import progressive
from auditflow_dagster.db.models import Event, FicheSalesDay, ProgressiveFetchJob
from auditflow_dagster.db.session import session_scope
from auditflow_dagster.resources.crm import CrmResource
from auditflow_dagster.resources.database import DatabaseResource
from auditflow_dagster.sample import generator

START = dt.date(2026, 1, 1)
END = START + dt.timedelta(days=30)  # 31 days
RESOURCES = {"crm": CrmResource(mode="sample"), "db": DatabaseResource()}


@pytest.fixture()
def client(db):
    with TestClient(create_app(dagster_url="http://127.0.0.1:9/graphql"), raise_server_exceptions=False) as c:
        yield c


def _materialize_days(instance, first: dt.date, last: dt.date) -> None:
    tags = {"dagster/asset_partition_range_start": first.isoformat(), "dagster/asset_partition_range_end": last.isoformat(),
            "auditflow/trigger": "progressive_fetch"}
    assert materialize([sales_list], instance=instance, resources=RESOURCES, tags=tags).success


def test_31_day_range_with_20_cached_days(client, dagster_instance):
    instance = dagster_instance
    _materialize_days(instance, START, START + dt.timedelta(days=19))  # 20 cached days
    r = client.get("/api/fiches/status/by-date-range", params={"startDate": START.isoformat(), "endDate": END.isoformat()})
    assert r.status_code == 200, r.text
    body = r.json()
    cached_days = progressive.day_list(START, START + dt.timedelta(days=19))
    assert body["success"] is True and "data" not in body
    assert body["meta"]["daysCached"] == 20 and body["meta"]["daysRemaining"] == 11
    assert body["meta"]["cacheCoverage"]["datesWithData"] == cached_days
    assert body["total"] == sum(len(generator.fiches_for_day(dt.date.fromisoformat(d))) for d in cached_days)
    job_id = body["meta"]["backgroundJobId"]
    assert job_id and body["meta"]["partial"] is True
    # the same request within the window reuses the job
    again = client.get("/api/fiches/status/by-date-range", params={"startDate": START.isoformat(), "endDate": END.isoformat()}).json()
    assert again["meta"]["backgroundJobId"] == job_id
    # the background days arrive (here: materialized in process instead of by the backfill)
    _materialize_days(instance, START + dt.timedelta(days=20), END)
    job = client.get(f"/api/fiches/jobs/{job_id}").json()["job"]
    assert job["status"] == "complete" and job["progress"] == 100
    assert job["datesRemaining"] == [] and job["datesFailed"] == []
    assert job["datesAlreadyFetched"] == progressive.day_list(START, END)
    assert job["totalFiches"] == sum(len(generator.fiches_for_day(START + dt.timedelta(days=i))) for i in range(31))
    poll = client.get("/api/fiches/webhooks/fiches", params={"jobId": job_id}).json()
    assert poll["event"] == "complete" and poll["data"]["dataUrl"].endswith(f"startDate={START}&endDate={END}")
    with session_scope() as s:
        names = [e.name for e in s.scalars(select(Event).where(Event.channels.any(f"job-{job_id}")).order_by(Event.id))]
    assert names[0] == "fiches.progressive_fetch.created"
    assert names.count("fiches.progressive_fetch.progress") == 11
    assert names[-1] == "fiches.progressive_fetch.complete"
    full = client.get("/api/fiches/status/by-date-range", params={"startDate": START.isoformat(), "endDate": END.isoformat()}).json()
    assert full["meta"]["complete"] is True and full["meta"]["backgroundJobId"] is None  # terminal jobs are not reused


def test_concurrent_day_outcomes_lose_nothing(db):
    days = progressive.day_list(START, START + dt.timedelta(days=9))
    with session_scope() as s:
        job = progressive.create_job(s, start=days[0], end=days[-1], days=days, cached=[], remaining=days,
                                     refresh=False, webhook_url=None, webhook_secret_sealed=None)
        job_id = job.id
    barrier = threading.Barrier(len(days))

    def worker(day: str, ok: bool) -> None:
        barrier.wait()
        with session_scope() as s:
            progressive.apply_day_outcome(s, job_id, day, ok, None if ok else "boom")

    threads = [threading.Thread(target=worker, args=(d, i != 3)) for i, d in enumerate(days)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with session_scope() as s:
        job = s.get(ProgressiveFetchJob, job_id)
        assert sorted(job.dates_already_fetched + job.dates_failed) == days
        assert job.dates_failed == [days[3]] and job.dates_remaining == []
        assert job.status == "failed" and job.error == "1 date(s) failed during progressive fetch"
        finals = s.scalar(text("SELECT count(*) FROM events WHERE name LIKE 'fiches.progressive_fetch.%' "
                               "AND name IN ('fiches.progressive_fetch.failed','fiches.progressive_fetch.complete') "
                               "AND payload->>'jobId' = :j"), {"j": job_id})
    assert finals == 1  # finalized exactly once


@pytest.mark.parametrize("params,fragment", [
    ({}, "required"),
    ({"startDate": "2026-01-01"}, "required"),
    ({"startDate": "2026-02-31", "endDate": "2026-03-01"}, "calendar date"),
    ({"startDate": "2026-13-01", "endDate": "2026-13-02"}, "calendar date"),
    ({"startDate": "2026/01/01", "endDate": "2026-01-02"}, "format"),
    ({"startDate": "2026-01-05", "endDate": "2026-01-01"}, "before"),
    ({"startDate": "2025-01-01", "endDate": "2025-12-31"}, "too long"),
    ({"startDate": "2026-01-01", "endDate": "2026-01-02", "webhookUrl": "http://169.254.169.254/latest"}, ""),
    ({"startDate": "2026-01-01", "endDate": "2026-01-02", "webhookUrl": "ftp://example.com/x"}, ""),
])
def test_range_validation(client, params, fragment):
    r = client.get("/api/fiches/status/by-date-range", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "VALIDATION_ERROR" and fragment in r.json()["error"]
    with session_scope() as s:
        assert s.scalar(select(ProgressiveFetchJob).limit(1)) is None  # nothing half-created


def test_future_range_and_unknown_jobs(client):
    future = progressive.business_today() + dt.timedelta(days=3)
    r = client.get("/api/fiches/status/by-date-range", params={"startDate": future.isoformat(), "endDate": future.isoformat()}).json()
    assert r["success"] is True and r["meta"]["complete"] is True and r["meta"]["backgroundJobId"] is None and r["total"] == 0
    assert client.get("/api/fiches/jobs/job_nope").json() == {"success": False, "error": "Job not found"}
    nf = client.get("/api/fiches/webhooks/fiches", params={"jobId": "job_nope"})
    assert nf.status_code == 404 and nf.json() == {"success": False, "error": "Notification not found", "jobId": "job_nope"}
    assert client.get("/api/fiches/webhooks/fiches").status_code == 400
    assert client.get("/api/fiches/jobs", params={"status": "weird"}).status_code == 400
    assert client.get("/api/fiches/jobs").json() == {"success": True, "jobs": [], "total": 0}


def test_zero_sale_day_counts_as_covered(client):
    day = "2026-02-01"
    with session_scope() as s:
        s.add(FicheSalesDay(sales_date=day, crm_count=0, cached_count=0))
    r = client.get("/api/fiches/status/by-date-range", params={"startDate": day, "endDate": day}).json()
    assert r["meta"]["complete"] is True and r["meta"]["backgroundJobId"] is None


def test_refresh_rereads_only_days_not_read_moments_ago(client, dagster_instance):
    """``refresh=true`` revalidates the range, but a day the CRM answered within the cooldown is not
    asked again (spec 01 §3: the legacy refresh had no cooldown)."""
    _materialize_days(dagster_instance, START, START + dt.timedelta(days=4))  # 5 days read just now
    with session_scope() as s:  # two of them were read an hour ago
        s.execute(text("UPDATE fiche_sales_days SET fetched_at = now() - interval '1 hour' "
                       "WHERE sales_date IN ('2026-01-01', '2026-01-02')"))
    params = {"startDate": START.isoformat(), "endDate": (START + dt.timedelta(days=4)).isoformat(), "refresh": "true"}
    body = client.get("/api/fiches/status/by-date-range", params=params).json()
    assert body["meta"]["cacheCoverage"]["datesMissing"] == ["2026-01-01", "2026-01-02"]
    job = client.get(f"/api/fiches/jobs/{body['meta']['backgroundJobId']}").json()["job"]
    assert job["datesRemaining"] == ["2026-01-01", "2026-01-02"] and job["progress"] == 60
    assert body["total"] == sum(len(generator.fiches_for_day(START + dt.timedelta(days=i))) for i in range(5))


def test_range_items_are_the_by_date_items_day_by_day(client, dagster_instance):
    _materialize_days(dagster_instance, START, START + dt.timedelta(days=2))
    days = progressive.day_list(START, START + dt.timedelta(days=2))
    per_day = [i for d in days for i in client.get("/api/fiches/status/by-date", params={"date": d}).json()["data"]["fiches"]]
    body = client.get("/api/fiches/status/by-date-range", params={"startDate": days[0], "endDate": days[-1]}).json()
    assert body["fiches"] == per_day and len(per_day) > 0
