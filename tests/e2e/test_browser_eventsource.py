"""A real browser's native ``EventSource`` against the API, end to end (issue 8, spec 06 §2.4).

Headless Debian Chromium, driven by Playwright through ``executable_path`` (Playwright's own
browser builds are never downloaded), opens ``tests/e2e/assets/eventsource.html``. The page is
handed to the browser at the API's own origin (a Playwright route answers that one URL from the
asset file; every other request goes to the real API process), so it needs no CORS: it launches an
audit with ``fetch('/api/audits/run')``, follows the audit's realtime channel with ``EventSource``
and renders the score of ``audit.completed``. The test waits for that element, checks the score
against the stored audit (``GET /api/audits/{id}``) and the synthetic ground truth, checks that the
browser got the channel's events once each in id order, and saves a screenshot.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlencode, urlparse

import httpx
import pytest

from auditflow_dagster.sample import generator

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ASSET = Path(__file__).resolve().parent / "assets" / "eventsource.html"
PAGE_PATH = "/__e2e__/eventsource.html"
DAY = dt.date(2025, 11, 5)  # a day no other e2e module touches


@pytest.fixture(scope="module")
def stack(databases, tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    from tests.e2e.running import running_stack

    # AUDITFLOW_AUTH=off: every child process inherits it (Stack.child_env)
    with running_stack(tmp_path_factory.mktemp("browser_stack_logs"), {
            "AUDITFLOW_CRM": "http", "FICHE_API_BASE_URL": None, "AUDITFLOW_AUTH": "off"}) as s:
        yield s


def channel_rows(channel: str) -> list[tuple[int, str]]:
    from sqlalchemy import select

    from auditflow_dagster.db.models import Event
    from auditflow_dagster.db.session import session_scope

    with session_scope() as s:
        return [(r[0], r[1]) for r in s.execute(
            select(Event.id, Event.name).where(Event.channels.overlap([channel])).order_by(Event.id)).all()]


def test_browser_eventsource_renders_completed_score(stack, tmp_path):
    from playwright.sync_api import sync_playwright

    fiche_id = next(f["id"] for f in generator.fiches_for_day(DAY) if generator.expected_audit(f["id"])["auditable"])
    expected = generator.expected_audit(fiche_id)["compliance"]
    page_url = f"{stack.api_url}{PAGE_PATH}?" + urlencode({"fiche_id": fiche_id, "audit_config_id": 1})
    html = ASSET.read_text(encoding="utf-8")
    shot = tmp_path / "eventsource.png"
    console: list[str] = []

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.route(lambda url: urlparse(url).path == PAGE_PATH,
                       lambda route: route.fulfill(status=200, content_type="text/html; charset=utf-8", body=html))
            t0 = time.monotonic()
            page.goto(page_url)
            try:
                page.wait_for_selector("body[data-state=completed], body[data-state=failed]", timeout=240_000)
            finally:
                page.screenshot(path=str(shot), full_page=True)
            elapsed = time.monotonic() - t0
            state = page.get_attribute("body", "data-state")
            status = page.inner_text("#status")
            assert state == "completed", f"{status}; console: {console}"
            rendered = page.inner_text("#score")
            audit_db_id = page.get_attribute("#score", "data-audit-db-id")
            overall = page.get_attribute("#score", "data-overall-score")
            niveau = page.inner_text("#niveau")
            tracking = page.inner_text("#tracking")
            events = page.evaluate("window.__events")
            errors = page.evaluate("window.__errors")
            version = browser.version
        finally:
            browser.close()

    print(f"\nChromium {version}: POST → score on the page in {elapsed:.2f}s; {len(events)} events via EventSource; "
          f"rendered {rendered} ({overall}, {niveau})")
    print(f"screenshot: {shot}")
    artifacts = os.environ.get("AUDITFLOW_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        copied = shutil.copy(shot, Path(artifacts) / "eventsource.png")
        print(f"screenshot copied to {copied}")

    # The score the page shows is the stored audit's score (and the synthetic ground truth).
    detail = httpx.get(f"{stack.api_url}/api/audits/{audit_db_id}", timeout=30).json()["data"]
    assert detail["status"] == "completed" and detail["trackingId"] == tracking
    assert detail["triggerUserId"] == "e2e-browser"
    assert rendered.endswith("%") and Decimal(rendered[:-1]) == Decimal(detail["scorePercentage"])
    assert Decimal(detail["scorePercentage"]) == expected.score_percentage
    assert niveau == detail["niveau"] == expected.niveau

    # The browser saw the audit channel's events once each, in id order, ending with audit.completed.
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(set(ids)), ids
    rows = channel_rows(f"audit-{tracking}")
    assert [(int(e["id"]), e["name"]) for e in events] == [r for r in rows if r[0] <= ids[-1]]
    assert events[-1]["name"] == "audit.completed" and events[0]["name"] == "audit.fiche_fetch_started"
    assert errors == 0, f"EventSource reported {errors} error(s); console: {console}"
    assert shot.stat().st_size > 0
