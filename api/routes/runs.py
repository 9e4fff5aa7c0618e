"""``GET /api/runs/{run_id}/events``: a Dagster run's event log relayed as SSE.

Each frame's id is the event's ordinal in the run's event log (0-based). The log is append-only, so
the ordinal names one event forever: sent back as ``Last-Event-ID`` (header or ``last_event_id``
query) it resumes exactly after that event — on this replica or any other, since the position
lives in the id, not in the process. The stream ends after the run's terminal event (success, failure or cancellation).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from api.auth import CredentialWatch, authorize_run
from api.common import authorize, dagster
from api.dagster_client import TERMINAL_EVENT_TYPES, DagsterUnavailable
from api.errors import ApiError, not_found, validation_error
from api.sse import SSE_HEADERS, frame, ping, retry
from auditflow_dagster.settings import get_settings

PAGE = 200


def _event_payload(run_id: str, ev: dict[str, Any]) -> dict[str, Any]:
    ts = ev.get("timestamp")
    try:
        ts = dt.datetime.fromtimestamp(int(ts) / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (TypeError, ValueError):
        pass
    out = {
        "run_id": run_id,
        "type": ev.get("__typename"),
        "event_type": ev.get("eventType"),
        "message": ev.get("message"),
        "timestamp": ts,
        "level": ev.get("level"),
        "step_key": ev.get("stepKey"),
    }
    if ev.get("assetKey"):
        out["asset_key"] = "/".join(ev["assetKey"]["path"])
        out["partition"] = ev.get("partition")
    if ev.get("error"):
        out["error"] = (ev["error"].get("message") or "")[:2000]
    return out


async def run_events(request: Request) -> StreamingResponse:
    await authorize(request, "audits.read")
    run_id = request.path_params["run_id"]
    if not run_id or len(run_id) > 64 or not all(c.isalnum() or c == "-" for c in run_id):
        raise validation_error("Invalid run_id")
    resume_raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if resume_raw and not (resume_raw.isdigit() and len(resume_raw) < 10):
        raise validation_error("Invalid Last-Event-ID")
    resume_after = int(resume_raw) if resume_raw else -1
    client = dagster(request)
    await authorize_run(request, run_id, client)  # non-ALL scope: the run's fiche partition, else 404
    try:
        status = await client.run_status(run_id)
    except DagsterUnavailable as exc:
        raise ApiError(503, f"Pipeline unavailable: {exc}", "SERVICE_UNAVAILABLE") from None
    if status is None:
        raise not_found(f"Run {run_id} not found")
    settings = get_settings()

    async def stream() -> AsyncIterator[str]:
        after: str | None = None
        ordinal = 0  # ordinal of the next event the Dagster cursor ``after`` points to
        yield retry()
        watch = CredentialWatch(request)
        last_sent = asyncio.get_running_loop().time()
        while True:
            if await watch.expired():
                yield frame("realtime.auth_expired", {"reason": "credential revoked or expired"})
                return
            try:
                page = await client.logs_for_run(run_id, after, PAGE)
            except DagsterUnavailable:
                await asyncio.sleep(1.0)
                continue
            if page.get("__typename") != "EventConnection":
                return
            events = page["events"]
            for ev in events:
                n, ordinal = ordinal, ordinal + 1
                if n <= resume_after:
                    continue  # already delivered before the reconnect
                yield frame(ev.get("eventType") or ev.get("__typename") or "event", _event_payload(run_id, ev), str(n))
                last_sent = asyncio.get_running_loop().time()
                if ev.get("eventType") in TERMINAL_EVENT_TYPES:
                    return  # the stream ends with the run's terminal event
            if events:
                after = page["cursor"]
            if page.get("hasMore"):
                continue
            now = asyncio.get_running_loop().time()
            if now - last_sent >= settings.sse_heartbeat_seconds:
                yield ping()
                last_sent = now
            await asyncio.sleep(settings.sse_poll_seconds)

    return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)


routes = [Route("/api/runs/{run_id}/events", run_events)]
