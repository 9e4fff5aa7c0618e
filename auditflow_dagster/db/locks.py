"""Cross-process limits and locks on PostgreSQL advisory locks (DESIGN §3.1, §3.5).

* :func:`global_slot` is a counting semaphore shared by every run and process: a holder owns one
  of ``limit`` advisory locks ``(crc32(name), slot)``. Caps such as "CRM details 3" or "LLM 16"
  therefore hold however many Dagster runs execute at once.
* :func:`advisory_lock` is a named mutex (e.g. one transcription per recording, so two runs never
  pay twice for the same audio).

Locks are session-level and live on a dedicated connection, so a crashed process releases them
when its connection drops — no stale lock rows to clean up. While the server restarts, taking a
lock waits for it (a new connection, for up to ``RECONNECT_SECONDS``) instead of failing the run;
a lock held across the restart is lost with its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import zlib
from collections.abc import AsyncIterator

import psycopg

from auditflow_dagster.db.session import RECONNECT_SECONDS, app_url, is_disconnect


def _libpq_url() -> str:
    return app_url().replace("postgresql+psycopg://", "postgresql://", 1)


def lock_keys(name: str) -> tuple[int, int]:
    """Two int4 keys for ``pg_advisory_lock(int, int)``: a namespace and a sub-key."""
    ns = zlib.crc32(b"auditflow") - 2**31
    return ns, zlib.crc32(name.encode("utf-8")) - 2**31


#: idle lock connections kept per event loop; the rest are closed (each is a server backend)
IDLE_LOCK_CONNECTIONS = 4


class _ConnectionPool:
    """Idle lock connections kept per event loop (psycopg async connections are loop-bound)."""

    def __init__(self) -> None:
        self._idle: dict[int, list[psycopg.AsyncConnection]] = {}

    async def get(self) -> psycopg.AsyncConnection:
        idle = self._idle.setdefault(id(asyncio.get_running_loop()), [])
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return await _connect()

    async def put(self, conn: psycopg.AsyncConnection) -> None:
        idle = self._idle.setdefault(id(asyncio.get_running_loop()), [])
        if not conn.closed and len(idle) < IDLE_LOCK_CONNECTIONS:
            idle.append(conn)
        else:
            await conn.close()

    async def close_all(self) -> None:
        idle = self._idle.pop(id(asyncio.get_running_loop()), [])
        for conn in idle:
            await conn.close()


async def _connect() -> psycopg.AsyncConnection:
    """A new lock connection, waiting (with backoff) while the server is unreachable."""
    deadline = time.monotonic() + RECONNECT_SECONDS
    delay = 0.25
    while True:
        try:
            return await psycopg.AsyncConnection.connect(_libpq_url(), autocommit=True)
        except psycopg.OperationalError as exc:
            if not is_disconnect(exc) or time.monotonic() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _try_lock(conn: psycopg.AsyncConnection, ns: int, key: int) -> tuple[psycopg.AsyncConnection, bool]:
    """``pg_try_advisory_lock(ns, key)``; a connection the server dropped (restart) is replaced by a
    new one and the attempt repeated. Returns the connection in use and whether the lock is held."""
    deadline = time.monotonic() + RECONNECT_SECONDS
    while True:
        try:
            row = await (await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (ns, key))).fetchone()
            return conn, bool(row and row[0])
        except psycopg.OperationalError as exc:
            if not is_disconnect(exc) or time.monotonic() > deadline:
                raise
            await conn.close()
            conn = await _connect()


_pool = _ConnectionPool()
_local_gates: dict[tuple[int, str, int], asyncio.Semaphore] = {}


def _local_gate(name: str, limit: int) -> asyncio.Semaphore:
    """In-process queue in front of the Postgres slots: no more than ``limit`` coroutines of this
    process poll for a slot (each poller holds a connection), however many are waiting — 200
    waiting steps must not open 200 connections."""
    key = (id(asyncio.get_running_loop()), name, limit)
    gate = _local_gates.get(key)
    if gate is None:
        gate = _local_gates[key] = asyncio.Semaphore(limit)
    return gate


@contextlib.asynccontextmanager
async def global_slot(name: str, limit: int, poll_seconds: float = 0.02) -> AsyncIterator[int]:
    """Hold one of ``limit`` system-wide slots named ``name``; waits (never drops) when all are taken."""
    limit = max(1, int(limit))
    async with _local_gate(name, limit):
        async with _pg_slot(name, limit, poll_seconds) as slot:
            yield slot


@contextlib.asynccontextmanager
async def _pg_slot(name: str, limit: int, poll_seconds: float) -> AsyncIterator[int]:
    ns = zlib.crc32(f"slot:{name}".encode()) - 2**31
    conn = await _pool.get()
    slot = -1
    try:
        delay = poll_seconds
        while slot < 0:
            start = random.randrange(limit)
            for i in range(limit):
                candidate = (start + i) % limit
                conn, taken = await _try_lock(conn, ns, candidate)
                if taken:
                    slot = candidate
                    break
            if slot < 0:
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 1.5, 0.25)
        yield slot
    finally:
        if slot >= 0:
            try:
                await conn.execute("SELECT pg_advisory_unlock(%s, %s)", (ns, slot))
            except Exception:  # noqa: BLE001 - a broken connection released the lock anyway
                await conn.close()
        await _pool.put(conn)


@contextlib.asynccontextmanager
async def advisory_lock(name: str, *, wait: bool = True, timeout_seconds: float = 60.0) -> AsyncIterator[bool]:
    """Named mutex. Yields True when held; with ``wait=False`` (or on timeout) yields False."""
    ns, key = lock_keys(name)
    conn = await _pool.get()
    held = False
    try:
        deadline = asyncio.get_running_loop().time() + timeout_seconds
        while True:
            conn, held = await _try_lock(conn, ns, key)
            if held or not wait or asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.05)
        yield held
    finally:
        if held:
            try:
                await conn.execute("SELECT pg_advisory_unlock(%s, %s)", (ns, key))
            except Exception:  # noqa: BLE001
                await conn.close()
        await _pool.put(conn)


async def close_lock_connections() -> None:
    await _pool.close_all()
