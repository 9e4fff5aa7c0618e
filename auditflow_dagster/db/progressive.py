"""Progressive date-range fetch jobs (spec 01 §4).

A job covers a date range; its days are a partition of completed / failed / remaining. Day outcomes
arrive from ``sales_list`` runs (possibly several at once): each is applied under ``SELECT … FOR
UPDATE`` on the job row, so concurrent days never lose an update and a job finalizes exactly once.
Every change appends its ``fiches.progressive_fetch.*`` event and, when the job has a webhook, its
delivery rows — in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import uuid
import zlib
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from auditflow_dagster.db import fiches as fiche_db
from auditflow_dagster.db.clock import iso, now_utc
from auditflow_dagster.db.events import emit
from auditflow_dagster.db.models import (
    FicheCache,
    FicheSalesDay,
    ProgressiveFetchJob,
    WebhookDelivery,
)
from auditflow_dagster.settings import get_settings

TERMINAL = ("complete", "failed")


def business_today() -> dt.date:
    return dt.datetime.now(ZoneInfo(get_settings().business_timezone)).date()


def day_list(start: dt.date, end: dt.date) -> list[str]:
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def job_days(job: ProgressiveFetchJob) -> list[str]:
    """All days of the job, clamped to today (spec 01 §4.5 step 2)."""
    end = min(dt.date.fromisoformat(job.end_date), business_today())
    start = dt.date.fromisoformat(job.start_date)
    return day_list(start, end) if start <= end else []


def derived_status(job: ProgressiveFetchJob) -> str:
    """``processing`` + progress 100 + nothing remaining reads as complete/failed (applied everywhere)."""
    if job.status == "processing" and job.progress >= 100 and not job.dates_remaining:
        return "failed" if job.dates_failed else "complete"
    return job.status


def days_with_data(session: Session, days: list[str]) -> set[str]:
    """A day is covered when it was fetched (a day marker without error, zero-sale days included)
    or already has cached fiches."""
    if not days:
        return set()
    marked = set(
        session.scalars(
            select(FicheSalesDay.sales_date).where(FicheSalesDay.sales_date.in_(days), FicheSalesDay.last_error.is_(None))
        )
    )
    with_rows = set(session.scalars(select(FicheCache.sales_date).where(FicheCache.sales_date.in_(days)).distinct()))
    return marked | with_rows


def recently_fetched(session: Session, days: list[str], within: dt.timedelta) -> set[str]:
    """Days read successfully from the CRM within ``within`` (the range-refresh cooldown)."""
    if not days or within <= dt.timedelta(0):
        return set()
    return set(session.scalars(
        select(FicheSalesDay.sales_date).where(
            FicheSalesDay.sales_date.in_(days), FicheSalesDay.last_error.is_(None),
            FicheSalesDay.fetched_at > now_utc() - within)
    ))


def count_fiches(session: Session, start: str, end: str) -> int:
    return session.scalar(
        select(func.count()).select_from(FicheCache).where(FicheCache.sales_date >= start, FicheCache.sales_date <= end)
    ) or 0


def partial_fiches(session: Session, start: str, end: str, limit: int = 500) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(FicheCache)
        .where(FicheCache.sales_date >= start, FicheCache.sales_date <= end)
        .order_by(FicheCache.sales_date, FicheCache.id)
        .limit(limit)
    )
    return [
        {
            "ficheId": r.fiche_id,
            "groupe": r.groupe,
            "prospectNom": r.prospect_nom,
            "prospectPrenom": r.prospect_prenom,
            "recordingsCount": r.recordings_count or 0,
            "createdAt": iso(r.created_at),
        }
        for r in rows
    ]


def event_payload(job: ProgressiveFetchJob, *, latest_date: str | None = None) -> dict[str, Any]:
    body = {
        "jobId": job.id,
        "status": derived_status(job),
        "startDate": job.start_date,
        "endDate": job.end_date,
        "progress": job.progress,
        "completedDays": job.completed_days,
        "totalDays": job.total_days,
        "totalFiches": job.total_fiches,
        "datesCompleted": list(job.dates_already_fetched),
        "datesRemaining": list(job.dates_remaining),
        "datesFailed": list(job.dates_failed),
    }
    if latest_date:
        body["latestDate"] = latest_date
    return body


def _range_lock(session: Session, start: str, end: str) -> None:
    session.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"),
                    {"a": zlib.crc32(b"progressive-fetch") - 2**31, "b": zlib.crc32(f"{start}:{end}".encode()) - 2**31})


def find_reusable_job(session: Session, start: str, end: str) -> ProgressiveFetchJob | None:
    """A non-terminal job for the same range created within the dedup window (spec 01 §6)."""
    window = dt.timedelta(milliseconds=get_settings().progressive_fetch_dedup_window_ms)
    candidates = session.scalars(
        select(ProgressiveFetchJob)
        .where(ProgressiveFetchJob.start_date == start, ProgressiveFetchJob.end_date == end,
               ProgressiveFetchJob.created_at >= now_utc() - window)
        .order_by(ProgressiveFetchJob.created_at.desc())
    )
    for job in candidates:
        if derived_status(job) not in TERMINAL:
            return job
    return None


def create_job(
    session: Session,
    *,
    start: str,
    end: str,
    days: list[str],
    cached: list[str],
    remaining: list[str],
    refresh: bool,
    webhook_url: str | None,
    webhook_secret_sealed: str | None,
) -> ProgressiveFetchJob:
    total = len(days)
    left = set(remaining)
    done = [d for d in days if d not in left]  # cached days, or (refresh) days read moments ago
    job = ProgressiveFetchJob(
        id="job_" + uuid.uuid4().hex[:24],
        start_date=start,
        end_date=end,
        status="processing",
        total_days=total,
        completed_days=len(done),
        progress=round(100 * len(done) / max(1, total)),
        total_fiches=count_fiches(session, start, end),
        dates_already_fetched=done,
        dates_remaining=remaining,
        dates_failed=[],
        webhook_url=webhook_url,
        webhook_secret_encrypted=webhook_secret_sealed,
        webhook_events=["progress", "complete", "failed"] if webhook_url else [],
    )
    session.add(job)
    session.flush()
    emit(session, "fiches.progressive_fetch.created", event_payload(job))
    return job


def mark_dispatched(session: Session, job_id: str, run_or_backfill_id: str) -> None:
    job = session.get(ProgressiveFetchJob, job_id)
    if job is not None:
        job.last_dispatched_at = now_utc()
        job.dagster_run_id = run_or_backfill_id


def _enqueue_webhook(session: Session, job: ProgressiveFetchJob, event: str, data: dict[str, Any],
                     partial: list[dict[str, Any]]) -> None:
    if not job.webhook_url or event not in (job.webhook_events or []):
        return
    from auditflow_dagster.db.webhooks import enqueue_job_webhook

    enqueue_job_webhook(session, job, event, data, partial)


def apply_day_outcome(session: Session, job_id: str, day: str, ok: bool, error: str | None = None) -> bool:
    """The updater of spec 01 §4.5 for one day of one job; returns True when it changed the job."""
    job = session.get(ProgressiveFetchJob, job_id, with_for_update=True)
    if job is None or job.status in TERMINAL:
        return False
    all_days = job_days(job)
    completed = set(job.dates_already_fetched)
    failed = set(job.dates_failed)
    if ok:
        completed.add(day)
        failed.discard(day)
    else:
        failed.add(day)
    completed_l = [d for d in all_days if d in completed]
    failed_l = [d for d in all_days if d in failed and d not in completed]
    remaining_l = [d for d in all_days if d not in completed and d not in failed]
    processed = len(completed_l) + len(failed_l)
    progress = round(100 * processed / max(1, len(all_days)))
    unchanged = (completed_l == list(job.dates_already_fetched) and failed_l == list(job.dates_failed)
                 and remaining_l == list(job.dates_remaining))
    if unchanged and remaining_l:
        return False  # duplicate signal while work remains
    settings = get_settings()
    job.dates_already_fetched = completed_l
    job.dates_failed = failed_l
    job.dates_remaining = remaining_l
    job.completed_days = len(completed_l)
    job.total_days = len(all_days)
    job.progress = progress
    job.total_fiches = count_fiches(session, job.start_date, job.end_date)
    job.status = "processing"
    if ok:
        job.error = None
    partial = partial_fiches(session, job.start_date, job.end_date)
    if not unchanged:
        emit(session, "fiches.progressive_fetch.progress", event_payload(job, latest_date=day))
        if processed % settings.progressive_fetch_webhook_frequency == 0 or not remaining_l:
            _enqueue_webhook(session, job, "progress", {
                "status": "processing", "progress": job.progress, "completedDays": job.completed_days,
                "totalDays": job.total_days, "totalFiches": job.total_fiches, "currentFichesCount": len(partial),
                "latestDate": day}, partial)
    if not remaining_l:
        job.status = "failed" if failed_l else "complete"
        job.progress = 100
        job.completed_at = now_utc()
        job.error = f"{len(failed_l)} date(s) failed during progressive fetch" if failed_l else None
        emit(session, f"fiches.progressive_fetch.{job.status}", event_payload(job))
        data_url = (f"{settings.api_base_url}/api/fiches/status/by-date-range"
                    f"?startDate={job.start_date}&endDate={job.end_date}")
        if job.status == "complete":
            _enqueue_webhook(session, job, "complete", {
                "status": "complete", "progress": 100, "completedDays": job.completed_days,
                "totalDays": job.total_days, "totalFiches": job.total_fiches, "dataUrl": data_url}, [])
        else:
            _enqueue_webhook(session, job, "failed", {"status": "failed", "error": job.error}, [])
    return True


def jobs_waiting_for(session: Session, day: str) -> list[str]:
    return list(
        session.scalars(
            select(ProgressiveFetchJob.id).where(
                ProgressiveFetchJob.status == "processing", ProgressiveFetchJob.dates_remaining.any(day)
            ).order_by(ProgressiveFetchJob.created_at)
        )
    )


def apply_day_to_all_jobs(session: Session, day: str, ok: bool, error: str | None = None) -> int:
    """A processed day advances every processing job that still waits for it."""
    return sum(1 for job_id in jobs_waiting_for(session, day) if apply_day_outcome(session, job_id, day, ok, error))


def fail_remaining_days(session: Session, job_id: str, error: str) -> None:
    """Failure hook: a dead run must not leave its job processing forever."""
    job = session.get(ProgressiveFetchJob, job_id)
    if job is None:
        return
    for day in list(job.dates_remaining):
        apply_day_outcome(session, job_id, day, False, error)


def _deliveries(session: Session, job_id: str, limit: int) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.job_id == job_id).order_by(WebhookDelivery.created_at.desc()).limit(limit)
    )
    return [{"id": d.id, "event": d.event, "status": d.status, "statusCode": d.status_code, "attempt": d.attempt,
             "sentAt": iso(d.sent_at), "createdAt": iso(d.created_at)} for d in rows]


def job_detail(session: Session, job: ProgressiveFetchJob) -> dict[str, Any]:
    return {
        "id": job.id, "status": derived_status(job), "progress": job.progress, "completedDays": job.completed_days,
        "totalDays": job.total_days, "totalFiches": job.total_fiches, "startDate": job.start_date,
        "endDate": job.end_date, "datesAlreadyFetched": list(job.dates_already_fetched),
        "datesRemaining": list(job.dates_remaining), "datesFailed": list(job.dates_failed), "error": job.error,
        "createdAt": iso(job.created_at), "updatedAt": iso(job.updated_at), "completedAt": iso(job.completed_at),
        "webhookDeliveries": _deliveries(session, job.id, 10),
    }


def list_jobs(session: Session, status: str | None, limit: int) -> list[dict[str, Any]]:
    q = select(ProgressiveFetchJob).order_by(ProgressiveFetchJob.created_at.desc()).limit(limit)
    if status:
        q = q.where(ProgressiveFetchJob.status == status)
    jobs = list(session.scalars(q))
    counts = dict(session.execute(
        select(WebhookDelivery.job_id, func.count()).where(WebhookDelivery.job_id.in_([j.id for j in jobs]))
        .group_by(WebhookDelivery.job_id)).all()) if jobs else {}
    return [{"id": j.id, "status": j.status, "progress": j.progress, "startDate": j.start_date, "endDate": j.end_date,
             "completedDays": j.completed_days, "totalDays": j.total_days, "totalFiches": j.total_fiches,
             "datesFailed": list(j.dates_failed), "createdAt": iso(j.created_at), "completedAt": iso(j.completed_at),
             "webhookDeliveriesCount": counts.get(j.id, 0)} for j in jobs]


def polling_view(session: Session, job: ProgressiveFetchJob) -> dict[str, Any]:
    """``GET /api/fiches/webhooks/fiches?jobId=`` (spec 01 §4.6)."""
    status = derived_status(job)
    partial = partial_fiches(session, job.start_date, job.end_date, limit=10_000)
    data: dict[str, Any] = {
        "status": status, "progress": job.progress, "completedDays": job.completed_days, "totalDays": job.total_days,
        "totalFiches": len(partial), "currentFichesCount": len(partial),
        "datesCompleted": list(job.dates_already_fetched), "datesRemaining": list(job.dates_remaining),
        "datesFailed": list(job.dates_failed), "error": job.error, "partialData": partial,
    }
    if status in TERMINAL:
        data["dataUrl"] = (f"{get_settings().api_base_url}/api/fiches/status/by-date-range"
                           f"?startDate={job.start_date}&endDate={job.end_date}")
    return {"success": True, "jobId": job.id, "event": "progress" if status not in TERMINAL else status,
            "timestamp": iso(job.updated_at), "data": data}


def range_items(session: Session, days: list[str]) -> list[dict[str, Any]]:
    return fiche_db.status_by_dates(session, days)
