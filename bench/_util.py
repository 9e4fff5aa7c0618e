"""Small helpers shared by the benchmarks: latency statistics, the API under test as a real uvicorn
process, and SQL statement accounting through SQLAlchemy engine events."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from auditflow_dagster.stack import REPO_ROOT, free_port


def pct(values: list[float], p: float) -> float:
    """Percentile with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values_ms: list[float], prefix: str) -> dict[str, float]:
    return {
        f"{prefix}_p50_ms": round(pct(values_ms, 50), 3),
        f"{prefix}_p95_ms": round(pct(values_ms, 95), 3),
        f"{prefix}_p99_ms": round(pct(values_ms, 99), 3),
        f"{prefix}_max_ms": round(max(values_ms), 3) if values_ms else math.nan,
        f"{prefix}_mean_ms": round(sum(values_ms) / len(values_ms), 3) if values_ms else math.nan,
    }


class ApiServer:
    """``uvicorn api.app:create_app --factory`` exactly as ``auditflow_dagster.stack`` starts it, in
    its own process group, against the database in ``os.environ``. Dagster is a closed port: any
    path that needs it fails fast instead of hiding in the timings."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        fd, path = tempfile.mkstemp(prefix="af_bench_api_", suffix=".log")
        os.close(fd)
        self.log_path = Path(path)

    def __enter__(self) -> ApiServer:
        env = dict(os.environ)
        env["AUDITFLOW_DAGSTER_GRAPHQL_URL"] = f"http://127.0.0.1:{free_port()}/graphql"  # nothing listens
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("AUDITFLOW_AUTH", "off")  # the benches call the API without credentials
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "warning"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"API exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"API not ready after 60 s:\n{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        pid = self.proc.pid
        if self.proc.poll() is None:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(pid, signal.SIGKILL)  # anything left in the group
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.proc = None

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)


class SqlCounter:
    """Counts statements and client-side execute time on an engine; optionally keeps the statements."""

    def __init__(self, engine: Any, keep: bool = False) -> None:
        from sqlalchemy import event

        self.engine, self.keep = engine, keep
        self.count = 0
        self.seconds = 0.0
        self.statements: list[tuple[str, Any]] = []
        self._event = event

    def _before(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        conn.info["_bench_t0"] = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        self.seconds += time.perf_counter() - conn.info.pop("_bench_t0", time.perf_counter())
        self.count += 1
        if self.keep:
            self.statements.append((statement, parameters))

    def __enter__(self) -> SqlCounter:
        self._event.listen(self.engine, "before_cursor_execute", self._before)
        self._event.listen(self.engine, "after_cursor_execute", self._after)
        return self

    def __exit__(self, *exc: object) -> None:
        self._event.remove(self.engine, "before_cursor_execute", self._before)
        self._event.remove(self.engine, "after_cursor_execute", self._after)

    def reset(self) -> None:
        self.count, self.seconds, self.statements = 0, 0.0, []
