"""Async plumbing shared by the fiche assets.

Assets fan work out with ``asyncio`` inside one in-process run (DESIGN §3.4): fiches of a run,
recordings of a fiche, steps of an audit. Blocking database calls go to a thread pool sized for
that fan-out (the default pool has ``cpu+4`` threads, which would serialize 16 LLM slots on a
2-core box), and lock connections are closed when the loop ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from auditflow_dagster.db.locks import close_lock_connections
from auditflow_dagster.db.session import session_scope, with_reconnect

T = TypeVar("T")


def run_async(main: Callable[[], Awaitable[T]], *, threads: int = 48) -> T:
    async def _wrapped() -> T:
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="auditflow-db")
        loop.set_default_executor(executor)
        try:
            return await main()
        finally:
            await close_lock_connections()

    return asyncio.run(_wrapped())


async def in_tx(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn(session, *args, **kwargs)`` in its own transaction on a worker thread; the whole
    transaction runs again if the database went away meanwhile (``with_reconnect``)."""

    def _once() -> T:
        with session_scope() as s:
            return fn(s, *args, **kwargs)

    return await asyncio.to_thread(with_reconnect, _once)


async def bounded_gather(limit: int, items: list[Any], fn: Callable[[Any], Awaitable[T]]) -> list[T]:
    """``fn`` over ``items`` with at most ``limit`` in flight, results in input order."""
    sem = asyncio.Semaphore(max(1, limit))

    async def _one(item: Any) -> T:
        async with sem:
            return await fn(item)

    return await asyncio.gather(*(_one(i) for i in items))


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A markdown table for materialization metadata (the Dagster UI renders it)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def png_markdown(title: str, png: bytes) -> Any:
    """A chart in materialization metadata: markdown with the PNG as a base64 data URI (the
    Dagster UI's markdown renderer shows ``data:`` images)."""
    import base64

    from dagster import MetadataValue

    return MetadataValue.md(f"![{title}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})")
