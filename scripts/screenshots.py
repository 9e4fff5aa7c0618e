"""Refresh the README screenshots: the Dagster asset graph and a daily compliance report.

    .venv/bin/python scripts/screenshots.py                 # own offline stack (like `make demo`), ~3 min
    .venv/bin/python scripts/screenshots.py --dagster-url http://127.0.0.1:3000 --day 2026-11-27

Without ``--dagster-url`` it starts the offline stack (embedded Postgres unless
``AUDITFLOW_DATABASE_URL`` is set, synthetic CRM, sample STT, offline auditor), audits ``--day``
(default: yesterday) and waits for the ``compliance_reports_trigger`` sensor to materialize the
day's ``daily_compliance_report`` (settle time shortened to 5 s). With ``--dagster-url`` it uses a
running stack whose day already has a report.

Headless Debian Chromium (``/usr/bin/chromium``) driven by Playwright (no browser download) opens the
Dagster UI and writes ``docs/images/asset-graph.png``, ``docs/images/daily-report.png`` (the report's tables) and
``docs/images/daily-report-chart.png`` (one of its charts, opened from the metadata).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "images"
CHROMIUM = Path(os.environ.get("AUDITFLOW_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1600, "height": 1000}


def wait_for_report(dagster_graphql: str, day: str, timeout: float) -> None:
    """Until the day's ``daily_compliance_report`` partition is materialized (read from Dagster)."""
    query = """query($key: AssetKeyInput!, $p: [String!]) { assetOrError(assetKey: $key) {
                 ... on Asset { assetMaterializations(partitions: $p, limit: 1) { runId } } } }"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = httpx.post(dagster_graphql, json={"query": query, "variables": {
            "key": {"path": ["daily_compliance_report"]}, "p": [day]}}, timeout=30).json()
        if (data.get("data", {}).get("assetOrError") or {}).get("assetMaterializations"):
            return
        time.sleep(3)
    raise TimeoutError(f"daily_compliance_report[{day}] not materialized after {timeout:.0f}s")


def launch_day(dagster_graphql: str, day: str) -> str:
    from api.dagster_client import DagsterClient

    async def go() -> str:
        client = DagsterClient(dagster_graphql)
        try:
            return await client.launch_job("sales_day", run_config={},
                                           tags={"dagster/partition": day, "auditflow/trigger": "screenshots"})
        finally:
            await client.aclose()

    return asyncio.run(go())


def _dismiss_dialogs(page) -> None:
    """The UI greets a new browser profile with a newsletter dialog: skip it."""
    skip = page.get_by_role("button", name="Skip")
    if skip.count():
        skip.first.click()
        page.wait_for_timeout(500)


def capture(dagster_url: str, day: str) -> list[Path]:
    """Open the UI pages and save the PNGs: the global asset lineage with every group expanded, the
    report's materialization (its markdown tables), and one of its charts opened."""
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
            page.goto(f"{dagster_url}/asset-groups", wait_until="networkidle", timeout=120_000)
            page.wait_for_timeout(2_000)
            _dismiss_dialogs(page)
            page.mouse.click(VIEWPORT["width"] - 300, VIEWPORT["height"] - 150, button="right")  # graph menu
            page.locator("text=Expand all groups >> visible=true").first.click()
            page.wait_for_timeout(3_000)
            page.screenshot(path=str(OUT / "asset-graph.png"))
            written.append(OUT / "asset-graph.png")

            page.goto(f"{dagster_url}/assets/daily_compliance_report?view=events&partition={day}",
                      wait_until="networkidle", timeout=120_000)
            page.get_by_text("niveau_counts").first.wait_for(timeout=60_000)
            page.wait_for_timeout(2_000)
            _dismiss_dialogs(page)
            page.screenshot(path=str(OUT / "daily-report.png"))
            written.append(OUT / "daily-report.png")
            # a chart is long markdown (a data: PNG): the UI shows it in a dialog behind "[Show Markdown]"
            row = page.locator("tr", has=page.get_by_text("chart_groupes", exact=True))
            row.scroll_into_view_if_needed(timeout=30_000)
            row.get_by_text("[Show Markdown]").click()
            page.locator("img[src^='data:image/png']").first.wait_for(timeout=30_000)
            page.wait_for_timeout(1_000)
            page.screenshot(path=str(OUT / "daily-report-chart.png"))
            written.append(OUT / "daily-report-chart.png")
        finally:
            browser.close()
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dagster-url", help="a running stack's Dagster UI (default: start an offline stack)")
    ap.add_argument("--day", help="sales day YYYY-MM-DD (default: yesterday, Europe/Paris)")
    ap.add_argument("--fiches", type=int, default=40)
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"error: {CHROMIUM} is missing (apt-get install -y chromium, or set AUDITFLOW_CHROMIUM)", file=sys.stderr)
        return 2
    day = args.day or (dt.datetime.now(ZoneInfo("Europe/Paris")).date() - dt.timedelta(days=1)).isoformat()
    if args.dagster_url:
        wait_for_report(f"{args.dagster_url}/graphql", day, args.timeout)
        paths = capture(args.dagster_url, day)
    else:
        for k, v in {"AUDITFLOW_AUTH": "off", "AUDITFLOW_CRM": "http", "AUDITFLOW_STT": "sample",
                     "AUDITFLOW_LLM": "offline", "AUDITFLOW_REPORT_SETTLE_SECONDS": "5"}.items():
            os.environ.setdefault(k, v)
        from auditflow_dagster.settings import get_settings
        from auditflow_dagster.stack import Stack

        get_settings.cache_clear()
        with Stack(crm_options=["--fiches-per-day", str(args.fiches)]) as stack:
            print(f"stack ready; auditing {day} ({args.fiches} fiches), logs in {stack.log_dir}", flush=True)
            launch_day(f"{stack.dagster_url}/graphql", day)
            wait_for_report(f"{stack.dagster_url}/graphql", day, args.timeout)
            paths = capture(stack.dagster_url, day)
    for p in paths:
        print(f"wrote {p.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
