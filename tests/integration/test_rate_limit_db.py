"""The provider start-rate bucket shared through Postgres: a burst, then one start per period,
across concurrent callers; excess callers wait (never dropped)."""

from __future__ import annotations

import asyncio
import time

from auditflow_dagster.db.rate_limit import acquire


def test_shared_bucket_paces_concurrent_callers(db):
    async def main() -> list[float]:
        t0 = time.monotonic()

        async def one() -> float:
            await acquire("test_bucket", per_minute=120, burst=2, max_sleep=0.05)  # 2 per second
            return time.monotonic() - t0

        return sorted(await asyncio.gather(*(one() for _ in range(6))))

    times = asyncio.run(main())
    assert len(times) == 6  # everyone got through
    assert times[1] < 0.5  # the burst
    # after the burst, 4 more at 0.5 s intervals: the last cannot start before ~2 s
    assert times[-1] >= 1.9
    assert times[-1] < 4.0
