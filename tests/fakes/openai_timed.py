"""The fake OpenAI Responses server with a fixed answer latency and concurrency accounting:
``peak`` is the most requests it ever held at once (global LLM cap tests, the audit bench)."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request

from tests.fakes.openai_server import FakeOpenAI


class TimedFakeOpenAI(FakeOpenAI):
    def __init__(self, *, delay: float = 0.5, **kw: Any) -> None:
        self.delay = delay
        self.in_flight = 0
        self.peak = 0
        super().__init__(**kw)

    async def _responses(self, request: Request) -> Any:
        self.in_flight += 1  # one event loop: no lock needed
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            return await super()._responses(request)
        finally:
            self.in_flight -= 1
