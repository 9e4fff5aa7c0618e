"""Realtime SSE (spec 06 §2.4, §4.9): the ``events`` outbox streamed per logical channel.

``GET /api/realtime/stream?channels=audit-1,fiche-2,job-x,global`` (names with or without the
legacy ``private-`` prefix) and the shortcuts ``/api/realtime/{audits,fiches,jobs}/{id}`` and
``/api/realtime/global``. Frames: ``id: <events.id>``, ``event: <name>``, ``data: <payload>``;
``retry: 3000`` first, ``: ping`` heartbeats. ``Last-Event-ID`` (or ``last_event_id``) resumes
after that id — on any replica, since the id is the table's; an id older than what the table still
holds gets ``realtime.reset`` ``{reason:"gap"}`` first so the client refetches. An event on several
requested channels is sent once.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from api.auth import CredentialWatch, authorize_channels
from api.errors import validation_error
from api.event_bus import EventBus
from api.sse import SSE_HEADERS, frame, ping, retry
from auditflow_dagster.settings import get_settings

CHANNEL = re.compile(r"^(?:(?:audit|fiche|job)-[A-Za-z0-9_.:@=-]{1,150}|global)$")
MAX_CHANNELS = 50
#: frames written at once when a client's queue holds a backlog
MAX_BATCH = 256
_FRAME_CACHE_SIZE = 4096
_frames: dict[int, tuple[object, str]] = {}


def event_frame(row_id: int, name: str, payload: object) -> str:
    """The SSE frame of one ``events`` row, encoded once: the bus hands the same row object to
    every subscriber of its channels, so a shared channel would otherwise serialize it once per
    client. The cache holds the payload object it encoded and only answers for that very object
    (a replayed row is a new object: encoded again; ids are never trusted alone)."""
    hit = _frames.get(row_id)
    if hit is not None and hit[0] is payload:
        return hit[1]
    text = frame(name, payload, str(row_id))
    if len(_frames) >= _FRAME_CACHE_SIZE:
        del _frames[next(iter(_frames))]
    _frames[row_id] = (payload, text)
    return text


def parse_channels(raw: list[str]) -> frozenset[str]:
    names: list[str] = []
    for item in raw:
        for part in item.split(","):
            part = part.strip()
            if part.startswith("private-"):
                part = part[len("private-"):]
            if not part:
                continue
            if not CHANNEL.match(part):
                raise validation_error(f"Invalid channel name: {part[:200]}")
            names.append(part)
    if not names:
        raise validation_error("Query parameter 'channels' is required (e.g. audit-1,job-x,global)")
    if len(set(names)) > MAX_CHANNELS:
        raise validation_error(f"Too many channels (max {MAX_CHANNELS})")
    return frozenset(names)


def _resume_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise validation_error("Invalid Last-Event-ID")
    return int(raw)


def bus(request: Request) -> EventBus:
    app = request.app
    if getattr(app.state, "event_bus", None) is None:
        settings = get_settings()
        app.state.event_bus = EventBus(poll_seconds=max(0.05, settings.sse_poll_seconds * 4),
                                       gap_timeout=settings.sse_gap_timeout_seconds)
    return app.state.event_bus


async def _stream(request: Request, channels: frozenset[str]) -> StreamingResponse:
    await authorize_channels(request, channels)  # 401/403 before the stream opens (api/auth.py)
    after = _resume_id(request)
    event_bus = bus(request)
    heartbeat = get_settings().sse_heartbeat_seconds

    async def body() -> AsyncIterator[str]:
        watch = CredentialWatch(request)
        sub, settled = await event_bus.subscribe(channels)
        try:
            yield retry()
            sent = settled  # a fresh subscriber starts live, after the settled id
            if after is not None:
                sent = after
                async with await EventBus.connect() as conn:
                    cur = await conn.execute("SELECT min(id) FROM events")
                    oldest = (await cur.fetchone())[0]
                    if after > 0 and (oldest is None or oldest > after + 1):
                        yield frame("realtime.reset", {"reason": "gap"})
                    while True:  # replay what the client missed, up to the settled id
                        rows = await EventBus.rows_after(conn, sent, channels, upto=settled)
                        for row_id, name, _chans, payload in rows:
                            yield event_frame(row_id, name, payload)
                            sent = row_id
                        if len(rows) < 1000:
                            break
                sent = max(sent, settled) if after <= settled else sent
            while True:
                if await request.is_disconnected():
                    return
                if sub.overflowed:
                    return  # the client reconnects with its Last-Event-ID and replays
                if await watch.expired():
                    yield frame("realtime.auth_expired", {"reason": "credential revoked or expired"})
                    return
                try:
                    async with asyncio.timeout(heartbeat):
                        batch = [await sub.queue.get()]
                except TimeoutError:
                    yield ping()
                    continue
                while len(batch) < MAX_BATCH and not sub.queue.empty():  # a backlog leaves in one write
                    batch.append(sub.queue.get_nowait())
                out = []
                for row_id, name, _chans, payload in batch:
                    if row_id <= sent:
                        continue
                    out.append(event_frame(row_id, name, payload))
                    sent = row_id
                if out:
                    yield "".join(out)
        finally:
            event_bus.unsubscribe(sub)

    return StreamingResponse(body(), media_type="text/event-stream", headers=SSE_HEADERS)


async def stream(request: Request) -> StreamingResponse:
    return await _stream(request, parse_channels(request.query_params.getlist("channels")))


def _shortcut(prefix: str):
    async def endpoint(request: Request) -> StreamingResponse:
        return await _stream(request, parse_channels([f"{prefix}-{request.path_params['key']}"]))

    return endpoint


async def global_stream(request: Request) -> StreamingResponse:
    return await _stream(request, frozenset({"global"}))


routes = [
    Route("/api/realtime/stream", stream),
    Route("/api/realtime/audits/{key}", _shortcut("audit")),
    Route("/api/realtime/fiches/{key}", _shortcut("fiche")),
    Route("/api/realtime/jobs/{key}", _shortcut("job")),
    Route("/api/realtime/global", global_stream),
]
