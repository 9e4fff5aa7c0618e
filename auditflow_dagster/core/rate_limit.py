"""Token-bucket arithmetic for provider start rates (spec 02 §2 "Throughput caps").

ElevenLabs allows ``TRANSCRIPTION_ELEVENLABS_RATE_LIMIT_PER_MINUTE`` starts per minute across the
whole system, with bursts of ``ceil(limit / 2)``. Concurrency slots alone do not bound a *rate*, so
every attempt first takes a token from a bucket shared through Postgres. The arithmetic lives here,
pure, so it can be property-tested; :mod:`auditflow_dagster.db.rate_limit` stores the bucket.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class BucketState:
    tokens: float
    at: float  # seconds (any monotonic-enough clock shared by the callers, e.g. DB epoch seconds)


def burst_for(per_minute: int) -> int:
    """The spec's burst: half the per-minute limit, rounded up (at least one)."""
    return max(1, math.ceil(max(1, per_minute) / 2))


def refill(state: BucketState, now: float, per_minute: int, burst: int) -> BucketState:
    """Tokens accrue at ``per_minute / 60`` per second up to ``burst``; a clock step back adds nothing."""
    elapsed = max(0.0, now - state.at)
    tokens = min(float(burst), state.tokens + elapsed * max(1, per_minute) / 60.0)
    return BucketState(tokens=tokens, at=max(now, state.at))


def take(state: BucketState, now: float, per_minute: int, burst: int) -> tuple[bool, BucketState, float]:
    """Try to take one token at ``now``: ``(granted, new state, seconds to wait before retrying)``.

    Excess callers are queued by the caller (they wait and retry), never dropped.
    """
    current = refill(state, now, per_minute, burst)
    if current.tokens >= 1.0:
        return True, BucketState(current.tokens - 1.0, current.at), 0.0
    wait = (1.0 - current.tokens) * 60.0 / max(1, per_minute)
    return False, current, wait
