"""One LISTEN connection per API replica, fanning ``events`` rows out to its SSE subscribers
(spec 06 §2.4).

Publishers anywhere (Dagster runs, sensors, API handlers) insert into ``events`` and ``NOTIFY
auditflow_events`` in their transaction. The bus wakes on a notification (or every poll interval, so
a missed notification only delays), reads the rows above the settled id once and releases them
strictly in id order (:mod:`core.outbox_order`: a row behind a still-uncommitted lower id waits for
it), handing each to the subscribers whose channels it matches. A subscriber registers, replays
the table up to the settled id, then drains its queue: nothing is lost, nothing is sent twice, and
the order clients see is the id order ``Last-Event-ID`` resumes from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import psycopg

from auditflow_dagster.core.outbox_order import OrderedRelease
from auditflow_dagster.db.events import NOTIFY_CHANNEL
from auditflow_dagster.db.session import app_url

log = logging.getLogger("auditflow.api.events")

EventRow = tuple[int, str, list[str], dict[str, Any]]
_SELECT = "SELECT id, name, channels, payload FROM events WHERE id > %s {extra} ORDER BY id LIMIT %s"


def _libpq_url() -> str:
    return app_url().replace("postgresql+psycopg://", "postgresql://", 1)


@dataclass(eq=False)
class Subscription:
    channels: frozenset[str]
    queue: asyncio.Queue[EventRow] = field(default_factory=lambda: asyncio.Queue(maxsize=10_000))
    overflowed: bool = False


class EventBus:
    def __init__(self, poll_seconds: float = 1.0, gap_timeout: float = 10.0) -> None:
        self.poll_seconds = poll_seconds
        self.gap_timeout = gap_timeout
        self._subs: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._order: OrderedRelease[EventRow] | None = None

    @property
    def safe_id(self) -> int:
        """Every event id at or below this is settled: a replay from the table up to here is exact."""
        assert self._order is not None
        return self._order.safe

    # ---- reading the table (also used for replay) ----------------------------------------------
    @staticmethod
    async def rows_after(conn: psycopg.AsyncConnection, after: int, channels: frozenset[str] | None,
                         limit: int = 1000, upto: int | None = None) -> list[EventRow]:
        extra, params = "", [after]
        if channels is not None:
            extra += " AND channels && %s"
            params.append(list(channels))
        if upto is not None:
            extra += " AND id <= %s"
            params.append(upto)
        cur = await conn.execute(_SELECT.format(extra=extra), (*params, limit))
        return [(r[0], r[1], list(r[2]), r[3]) for r in await cur.fetchall()]

    @staticmethod
    async def connect() -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(_libpq_url(), autocommit=True)

    # ---- subscribers ----------------------------------------------------------------------------
    async def subscribe(self, channels: frozenset[str]) -> tuple[Subscription, int]:
        """Register, then return the settled id at that moment: the caller replays the table up to
        it; everything above arrives through the queue, in order."""
        if self._order is None:
            async with await self.connect() as conn:
                cur = await conn.execute("SELECT coalesce(max(id), 0) FROM events")
                start = (await cur.fetchone())[0]
            if self._order is None:
                self._order = OrderedRelease(safe=start, gap_timeout=self.gap_timeout)
        sub = Subscription(channels)
        self._subs.add(sub)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="auditflow-event-bus")
        return sub, self.safe_id

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def _fan_out(self, row: EventRow) -> None:
        chans = set(row[2])
        for sub in list(self._subs):
            if sub.channels & chans:
                try:
                    sub.queue.put_nowait(row)
                except asyncio.QueueFull:  # a stuck client: it will reconnect with Last-Event-ID
                    sub.overflowed = True

    async def _run(self) -> None:
        assert self._order is not None
        loop = asyncio.get_running_loop()
        while self._subs:
            try:
                async with await self.connect() as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    while self._subs:
                        rows = await self.rows_after(conn, self._order.safe, None)
                        for _, row in self._order.offer([(r[0], r) for r in rows], loop.time()):
                            self._fan_out(row)
                        if len(rows) == 1000 and not self._order.gap_since:
                            continue
                        # a held-back gap is re-checked at the poll interval even without a NOTIFY
                        async for _ in conn.notifies(timeout=self.poll_seconds, stop_after=1):
                            pass
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - reconnect; subscribers resume by id
                log.warning("event bus connection lost; reconnecting", exc_info=True)
                await asyncio.sleep(1.0)
        self._task = None

    async def aclose(self) -> None:
        self._subs.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
