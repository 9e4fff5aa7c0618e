"""A token bucket shared by every process through one Postgres row (see core/rate_limit.py).

Each take is one short transaction: lock the bucket row, refill from the database clock, take a
token or learn how long to wait. Waiting happens outside the transaction, so a queue of callers
never holds a lock while it sleeps.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from auditflow_dagster.core.rate_limit import BucketState, take
from auditflow_dagster.db.session import session_scope, with_reconnect


def try_take(name: str, per_minute: int, burst: int) -> float:
    """One attempt: 0.0 when a token was taken, else the seconds to wait before the next try."""
    with session_scope() as s:
        s.execute(text("INSERT INTO rate_limit_buckets (name, tokens, updated_at) "
                       "VALUES (:n, :b, clock_timestamp()) ON CONFLICT (name) DO NOTHING"), {"n": name, "b": float(burst)})
        tokens, at, now = s.execute(text(
            "SELECT tokens, extract(epoch FROM updated_at), extract(epoch FROM clock_timestamp()) "
            "FROM rate_limit_buckets WHERE name = :n FOR UPDATE"), {"n": name}).one()
        granted, state, wait = take(BucketState(float(tokens), float(at)), float(now), per_minute, burst)
        s.execute(text("UPDATE rate_limit_buckets SET tokens = :t, updated_at = to_timestamp(:at) WHERE name = :n"),
                  {"t": state.tokens, "at": state.at, "n": name})
    return 0.0 if granted else wait


async def acquire(name: str, per_minute: int, burst: int, *, max_sleep: float = 5.0) -> None:
    """Wait for a token (queued, never dropped)."""
    while True:
        wait = await asyncio.to_thread(with_reconnect, lambda: try_take(name, per_minute, burst))
        if wait <= 0:
            return
        await asyncio.sleep(min(max_sleep, max(0.01, wait)))
