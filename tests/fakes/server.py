"""Run an ASGI app on a real loopback socket in a background thread (for protocol-level fakes)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any, Iterator

import uvicorn


@contextlib.contextmanager
def serve_app(app: Any, *, startup_timeout: float = 10.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on ``127.0.0.1:<free port>``; yields ``http://127.0.0.1:<port>``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("fake server failed to start")
        if time.monotonic() > deadline:
            raise RuntimeError("fake server did not start in time")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def free_port_refusing() -> str:
    """A loopback URL on a port nobody listens on (connection refused)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


class Reply:
    """A scripted HTTP answer for the fakes (``json`` or ``text`` body, optional headers/delay)."""

    def __init__(
        self,
        status: int = 200,
        *,
        json: Any = None,
        text: str | None = None,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> None:
        self.status = status
        self.json = json
        self.text = text
        self.headers = headers or {}
        self.delay = delay

    async def render(self) -> Any:
        import asyncio

        from starlette.responses import JSONResponse, PlainTextResponse

        if self.delay:
            await asyncio.sleep(self.delay)
        if self.text is not None:
            return PlainTextResponse(self.text, status_code=self.status, headers=self.headers)
        return JSONResponse(self.json if self.json is not None else {}, status_code=self.status, headers=self.headers)
