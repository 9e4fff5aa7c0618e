"""``auditflow run-day`` and ``auditflow backfill``: audit sales days through a running Dagster.

A day is audited the way the daily schedule does it: a ``sales_day`` run (``sales_list[day]``)
caches the day's sales and registers its fiches as partitions; the ``sales_day_fiches_backfill``
sensor then backfills those fiches through details → transcripts → audits (runs tagged
``auditflow/sales_day=<day>``). ``backfill`` launches ONE Dagster backfill of ``sales_list`` over
the days' partitions (``launchPartitionBackfill``; its runs are tagged ``dagster/backfill``), and
the sensor does the rest day by day. Progress is read from the application database
(:func:`day_progress`): fiches with a final audit out of the day's fiches.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import click

from auditflow_dagster.cli_commands.common import (
    SALES_DAY,
    CliError,
    ProgressReport,
    dagster,
    dagster_url_option,
    database,
    no_wait_option,
    run,
    timeout_option,
)

TRIGGER = "cli"
#: a day whose fiche runs have all ended, yet is not fully audited, is declared stuck after this
#: long (a run retry, or the sensor's next backfill, may still come)
SETTLE_SECONDS = 90.0
POLL_SECONDS = 1.0
FAILED_BACKFILL = {"COMPLETED_FAILED", "FAILED", "FAILING", "CANCELED", "CANCELING"}
DONE_BACKFILL = {"COMPLETED_SUCCESS", "COMPLETED"}
ENDED_RUN = {"SUCCESS", "FAILURE", "CANCELED"}

#: ``() -> (sales lists done, error)``: the state of the run(s) that fetch the days' sales lists
SalesState = Callable[[], Awaitable[tuple[bool, str | None]]]


def day_progress(day: str) -> dict[str, Any]:
    """Counts for one sales day, read from the application database."""
    from sqlalchemy import text

    from auditflow_dagster.db.session import session_scope

    with session_scope() as s:
        row = s.execute(text("""
            SELECT
              (SELECT count(*) FROM fiche_cache f WHERE f.sales_date = :d) AS fiches,
              (SELECT count(*) FROM recordings r JOIN fiche_cache f ON f.id = r.fiche_cache_id WHERE f.sales_date = :d) AS recordings,
              (SELECT count(*) FROM recordings r JOIN fiche_cache f ON f.id = r.fiche_cache_id
                 WHERE f.sales_date = :d AND r.has_transcription) AS transcribed,
              (SELECT count(DISTINCT a.fiche_cache_id) FROM audits a JOIN fiche_cache f ON f.id = a.fiche_cache_id
                 WHERE f.sales_date = :d AND a.status IN ('completed','failed')) AS fiches_audited,
              (SELECT count(*) FROM audits a JOIN fiche_cache f ON f.id = a.fiche_cache_id
                 WHERE f.sales_date = :d AND a.status = 'completed') AS completed,
              (SELECT count(*) FROM audits a JOIN fiche_cache f ON f.id = a.fiche_cache_id
                 WHERE f.sales_date = :d AND a.status = 'failed') AS failed,
              (SELECT count(*) FROM fiche_sales_days WHERE sales_date = :d) AS day_done
        """), {"d": day}).mappings().one()
        niveaux = dict(s.execute(text("""
            SELECT a.niveau, count(*) FROM audits a JOIN fiche_cache f ON f.id = a.fiche_cache_id
            WHERE f.sales_date = :d AND a.status = 'completed' AND a.is_latest GROUP BY a.niveau ORDER BY a.niveau
        """), {"d": day}).all())
        mean = s.execute(text("""
            SELECT avg(a.score_percentage) FROM audits a JOIN fiche_cache f ON f.id = a.fiche_cache_id
            WHERE f.sales_date = :d AND a.status = 'completed' AND a.is_latest
        """), {"d": day}).scalar()
    return {**dict(row), "niveaux": niveaux, "mean_score": float(mean) if mean is not None else None}


def days_between(start: str, end: str) -> list[str]:
    """Every day from ``start`` to ``end`` included (ISO strings)."""
    first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


async def launch_day(client: Any, day: str, trigger: str = TRIGGER) -> str:
    """One ``sales_day`` run for ``day``'s partition; returns the run id."""
    return await client.launch_job("sales_day", run_config={},
                                   tags={"dagster/partition": day, "auditflow/trigger": trigger})


async def launch_days_backfill(client: Any, days: list[str], trigger: str = TRIGGER) -> str:
    """One backfill of ``sales_list`` over ``days``; returns the backfill id."""
    return await client.launch_asset_backfill(["sales_list"], days, tags={"auditflow/trigger": trigger},
                                              title=f"sales days {days[0]} … {days[-1]} ({trigger})")


def run_sales_state(client: Any, run_id: str) -> SalesState:
    """The sales phase of ``run-day``: the ``sales_day`` run."""

    async def state() -> tuple[bool, str | None]:
        status = await client.run_status(run_id)
        if status is None:
            return False, f"the sales_day run {run_id} does not exist"
        if status in ("FAILURE", "CANCELED"):
            return False, f"the sales_day run {run_id} ended {status} (see it in the Dagster UI)"
        return status == "SUCCESS", None

    return state


def backfill_sales_state(client: Any, backfill_id: str) -> SalesState:
    """The sales phase of ``backfill``: the backfill and the runs it launched."""

    async def state() -> tuple[bool, str | None]:
        runs = await client.runs_with_tags({"dagster/backfill": backfill_id})
        bad = [r for r in runs if r["status"] in ("FAILURE", "CANCELED")]
        if bad:
            return False, f"{len(bad)} sales_list run(s) of backfill {backfill_id} failed (first: {bad[0]['runId']})"
        status = await client.backfill_status(backfill_id)
        if status is None:
            return False, f"backfill {backfill_id} does not exist"
        if status in FAILED_BACKFILL:
            return False, f"backfill {backfill_id} ended {status}"
        return status in DONE_BACKFILL, None

    return state


@dataclass
class DayWatch:
    """One followed day: its progress bar, its last counts, since when all its fiche runs have ended."""

    day: str
    task: int
    progress: dict[str, Any] = field(default_factory=dict)
    ended_since: float | None = None

    @property
    def audited(self) -> bool:
        p = self.progress
        return bool(p.get("day_done")) and p["fiches_audited"] >= p["fiches"]


def _info(p: dict[str, Any]) -> str:
    return (f"fiches audited ({p['completed']} completed, {p['failed']} failed; "
            f"recordings {p['transcribed']}/{p['recordings']} transcribed)")


async def _check_stuck(client: Any, watch: DayWatch) -> None:
    """CliError when every fiche run of the day ended a while ago and the day is still not audited."""
    runs = await client.runs_with_tags({"auditflow/sales_day": watch.day})
    if not runs or any(r["status"] not in ENDED_RUN for r in runs):
        watch.ended_since = None
        return
    watch.ended_since = watch.ended_since or time.monotonic()
    if time.monotonic() - watch.ended_since > SETTLE_SECONDS:
        failed = sum(1 for r in runs if r["status"] != "SUCCESS")
        p = watch.progress
        raise CliError(f"day {watch.day}: its {len(runs)} fiche run(s) ended ({failed} failed) with "
                       f"{p['fiches_audited']}/{p['fiches']} fiches audited")


async def follow_days(client: Any, days: list[str], sales_state: SalesState, *, timeout: float,
                      report: ProgressReport, poll: float = POLL_SECONDS) -> dict[str, dict[str, Any]]:
    """Follow ``days`` until each has every fiche audited (after the sales phase succeeded); returns
    each day's :func:`day_progress`. CliError on a failed sales phase, a stuck day, or the timeout."""
    watches = [DayWatch(day, report.add(f"day {day}")) for day in days]
    overall = report.add(f"{len(days)} days") if len(days) > 1 else None
    deadline = time.monotonic() + timeout
    sales_done = False
    while True:
        if not sales_done:
            sales_done, error = await sales_state()
            if error:
                raise CliError(error)
        for w in watches:
            w.progress = day_progress(w.day)
            total = w.progress["fiches"] if w.progress["day_done"] or w.progress["fiches"] else None
            report.update(w.task, completed=w.progress["fiches_audited"], total=total, info=_info(w.progress))
        if overall is not None:
            fiches = sum(w.progress["fiches"] for w in watches)
            report.update(overall, completed=sum(w.progress["fiches_audited"] for w in watches),
                          total=fiches or None, info="fiches audited")
        if sales_done:
            pending = [w for w in watches if not w.audited]
            if not pending:
                return {w.day: w.progress for w in watches}
            for w in pending:
                await _check_stuck(client, w)
        if time.monotonic() > deadline:
            audited = sum(w.progress["fiches_audited"] for w in watches)
            fiches = sum(w.progress["fiches"] for w in watches)
            phase = "audits" if sales_done else "the sales list(s)"
            raise CliError(f"timed out after {timeout:g}s waiting for {phase}: {audited}/{fiches} fiches audited "
                           "(the runs go on in Dagster; raise --timeout to wait longer)")
        await asyncio.sleep(poll)


def day_summary(day: str, p: dict[str, Any]) -> str:
    """One line per day: fiches, audits, niveaux, mean score."""
    mean = f"{p['mean_score']:.2f} %" if p["mean_score"] is not None else "n/a"
    niveaux = ", ".join(f"{k} {v}" for k, v in p["niveaux"].items()) or "none"
    return (f"{day}: {p['fiches']} fiches, {p['recordings']} recordings ({p['transcribed']} transcribed), "
            f"audits {p['completed']} completed / {p['failed']} failed; niveau: {niveaux}; mean score: {mean}")


async def _run_day(day: str, dagster_url: str | None, timeout: float, no_wait: bool) -> None:
    async with dagster(dagster_url) as client:
        run_id = await launch_day(client, day)
        click.echo(f"launched sales_day[{day}]: run {run_id}")
        if no_wait:
            return
        with ProgressReport() as report:
            progress = await follow_days(client, [day], run_sales_state(client, run_id), timeout=timeout, report=report)
    click.echo(day_summary(day, progress[day]))


async def _backfill(days: list[str], dagster_url: str | None, timeout: float, no_wait: bool) -> None:
    async with dagster(dagster_url) as client:
        backfill_id = await launch_days_backfill(client, days)
        click.echo(f"launched backfill {backfill_id}: sales_list over {len(days)} day(s) {days[0]} … {days[-1]}")
        if no_wait:
            return
        with ProgressReport() as report:
            progress = await follow_days(client, days, backfill_sales_state(client, backfill_id), timeout=timeout,
                                         report=report)
    for day in days:
        click.echo(day_summary(day, progress[day]))


@click.command("run-day")
@click.argument("day", type=SALES_DAY)
@dagster_url_option
@timeout_option(3600)
@no_wait_option
def run_day(day: str, dagster_url: str | None, timeout: float, no_wait: bool) -> None:
    """Audit one sales DAY (YYYY-MM-DD) through a running Dagster.

    Launches the sales_day job for the day's partition (as the 06:00 schedule does); the
    sales_day_fiches_backfill sensor then audits the day's fiches. Follows the day in the
    application database with a progress bar (fiches audited / fiches, completed and failed audits,
    ETA) and exits 0 once every fiche has a final audit; exits 1 with one line when the sales_day
    run fails, the day's runs end short, Dagster is unreachable, or --timeout passes.
    """
    database()
    run(_run_day(day, dagster_url, timeout, no_wait))


@click.command("backfill")
@click.argument("start", metavar="FROM", type=SALES_DAY)
@click.argument("end", metavar="TO", type=SALES_DAY)
@dagster_url_option
@timeout_option(6 * 3600)
@no_wait_option
def backfill(start: str, end: str, dagster_url: str | None, timeout: float, no_wait: bool) -> None:
    """Audit the sales days FROM … TO as ONE Dagster backfill.

    FROM and TO are YYYY-MM-DD, both included. Launches one backfill of sales_list over the days' partitions; the sales_day_fiches_backfill
    sensor audits each day's fiches as its sales list lands. One progress bar per day and one
    overall; exits 0 once every day is audited, 1 with one line on a failed run, a stuck day,
    an unreachable Dagster or --timeout; 2 when FROM is after TO.
    """
    if start > end:
        raise click.UsageError(f"FROM ({start}) is after TO ({end})")
    database()
    run(_backfill(days_between(start, end), dagster_url, timeout, no_wait))
