"""Bring the whole system up as child processes: synthetic CRM, Dagster webserver + daemon, API.

Used by ``auditflow demo`` and by the end-to-end tests, so both exercise exactly the deployment
shape of DESIGN §5. Every child gets its own process group (``dagster dev``-style processes ignore
SIGTERM when detached), and :meth:`Stack.stop` terminates each group, then kills what is left.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from auditflow_dagster.settings import get_settings

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_dagster_home() -> Path:
    """``$DAGSTER_HOME`` with our ``dagster.yaml`` (storage URL read from the environment)."""
    home = get_settings().dagster_home
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def prepare_database() -> tuple[str, str]:
    """Embedded or configured Postgres, migrations applied, bundled checklist installed."""
    from auditflow_dagster.db.configs import ensure_bundled_config
    from auditflow_dagster.db.embedded import ensure_database_env
    from auditflow_dagster.db.migrate import upgrade
    from auditflow_dagster.db.session import session_scope

    urls = ensure_database_env()
    upgrade()
    with session_scope() as s:
        ensure_bundled_config(s)
    return urls


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log_path: Path
    args: list[str] = field(default_factory=list)


@dataclass
class Stack:
    """Ports, URLs and the child processes of one running system."""

    crm_port: int = field(default_factory=free_port)
    dagster_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    log_dir: Path = field(default_factory=lambda: get_settings().home_dir / "logs")
    crm_options: list[str] = field(default_factory=list)
    children: list[Child] = field(default_factory=list)
    #: process groups of respawned children: what they left running (a killed daemon's code server
    #: and run workers finish their runs) is ended with the stack
    old_groups: list[int] = field(default_factory=list)

    @property
    def crm_url(self) -> str:
        return f"http://127.0.0.1:{self.crm_port}"

    @property
    def dagster_url(self) -> str:
        return f"http://127.0.0.1:{self.dagster_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("AUDITFLOW_CRM", "http")
        if env["AUDITFLOW_CRM"] == "http" and not env.get("FICHE_API_BASE_URL"):
            env["FICHE_API_BASE_URL"] = f"{self.crm_url}/api"
        env["AUDITFLOW_DAGSTER_GRAPHQL_URL"] = f"{self.dagster_url}/graphql"
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _spawn(self, name: str, args: list[str]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        log = open(log_path, "ab")
        proc = subprocess.Popen(
            args, cwd=REPO_ROOT, env=self.child_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.children.append(Child(name, proc, log_path, list(args)))

    def start(self, *, with_crm: bool = True) -> None:
        prepare_database()
        prepare_dagster_home()
        py = sys.executable
        bindir = Path(py).parent
        if with_crm and self.child_env()["AUDITFLOW_CRM"] == "http":
            self._spawn("crm", [py, "-m", "auditflow_dagster.sample.crm_app", "--host", "127.0.0.1",
                                "--port", str(self.crm_port), *self.crm_options])
        workspace = str(REPO_ROOT / "workspace.yaml")
        self._spawn("dagster-webserver", [str(bindir / "dagster-webserver"), "-h", "127.0.0.1", "-p",
                                          str(self.dagster_port), "-w", workspace])
        self._spawn("dagster-daemon", [str(bindir / "dagster-daemon"), "run", "-w", workspace])
        self._spawn("api", [py, "-m", "uvicorn", "api.app:create_app", "--factory", "--host", "127.0.0.1",
                            "--port", str(self.api_port), "--log-level", "warning"])

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def respawn(self, name: str) -> Child:
        """Start child ``name`` again with the same command (after it died or was killed), in a new
        process group, appending to the same log. The crash tests restart the daemon this way."""
        old = self.child(name)
        if old.proc.poll() is None:
            raise RuntimeError(f"{name} is still running (pid {old.proc.pid})")
        self.children.remove(old)
        self.old_groups.append(old.proc.pid)
        self._spawn(name, old.args)
        return self.children[-1]

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        checks = {"api": f"{self.api_url}/health/ready"}
        if any(c.name == "crm" for c in self.children):
            checks["crm"] = f"{self.crm_url}/health"
        pending = dict(checks)
        while pending:
            for child in self.children:
                if child.proc.poll() is not None:
                    tail = child.log_path.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{tail}")
            for name, url in list(pending.items()):
                try:
                    if httpx.get(url, timeout=2.0).status_code == 200:
                        del pending[name]
                except httpx.HTTPError:
                    pass
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {timeout:.0f}s: {', '.join(pending)} (logs in {self.log_dir})")
            if pending:
                time.sleep(0.5)

    def stop(self, grace: float = 10.0) -> None:
        for pgid in self.old_groups:
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for child in self.children:
            if child.proc.poll() is None:
                try:
                    os.killpg(child.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for child in self.children:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                child.proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(child.proc.pid, signal.SIGKILL)  # the whole group: run workers included
            except ProcessLookupError:
                pass
        for pgid in self.old_groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.children.clear()
        self.old_groups.clear()

    def __enter__(self) -> "Stack":
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
