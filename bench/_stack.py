"""What the whole-stack benchmarks share: throw-away databases for the app and Dagster, an
18-step audit config, and a sampler of the stack's processes (peak RSS, CPU seconds)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from bench._db import BenchDatabase

FIXTURE_18 = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "audit_config_18_points.json"


@contextlib.contextmanager
def stack_databases(server_url: str | None) -> Iterator[tuple[str, str]]:
    """``(app_url, dagster_url)``: a migrated throw-away app database and an empty one for Dagster's
    storage (it keeps its own ``alembic_version`` table), both dropped at the end."""
    from auditflow_dagster.db.embedded import create_database_if_missing, database_uri

    with BenchDatabase(server_url) as app_db:
        dagster_name = f"{app_db.name}_dagster"
        create_database_if_missing(app_db.server_url, dagster_name)
        try:
            yield app_db.url, database_uri(app_db.server_url, dagster_name)
        finally:
            import psycopg

            with psycopg.connect(app_db.server_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dagster_name}" WITH (FORCE)')


def eighteen_step_config(s: Any, *, automatic: bool = False) -> int:
    """An 18-step audit config: the shared fixture when it sits beside the repo, else the bundled
    checklist's steps repeated to 18. ``automatic`` makes it the only config the daily pipeline runs."""
    from sqlalchemy import update

    from auditflow_dagster.db.configs import import_config, import_legacy_json
    from auditflow_dagster.db.models import AuditConfig
    from auditflow_dagster.sample import generator

    if FIXTURE_18.exists():
        row = import_legacy_json(s, json.loads(FIXTURE_18.read_text(encoding="utf-8")))
    else:
        from auditflow_dagster.core.audit_config import AuditConfigSpec

        base = generator.load_checklist()
        steps = [st.model_copy(update={"position": i + 1}) for i, st in enumerate((base.steps * 2)[:18])]
        row = import_config(s, AuditConfigSpec(name="bench 18", steps=steps))
    if automatic:
        s.execute(update(AuditConfig).values(run_automatically=False))
        row.run_automatically = True
        row.is_active = True
    s.flush()
    return row.id


class ProcessTreeSampler:
    """Samples the processes under ``roots`` (and their descendants: run workers come and go) every
    ``interval`` seconds: peak summed RSS, and CPU seconds as the sum over every process seen of its
    last sampled user+system time (a process that exits loses at most one interval)."""

    def __init__(self, roots: list[int], interval: float = 0.5) -> None:
        self.roots = roots
        self.interval = interval
        self.peak_rss = 0
        self.cpu: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _procs(self) -> list[psutil.Process]:
        out: list[psutil.Process] = []
        for pid in self.roots:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                out.append(root)
                out.extend(root.children(recursive=True))
        return out

    def _loop(self) -> None:
        while not self._stop.is_set():
            rss = 0
            for p in self._procs():
                with contextlib.suppress(psutil.Error):
                    with p.oneshot():
                        rss += p.memory_info().rss
                        t = p.cpu_times()
                        self.cpu[(p.pid, p.create_time())] = t.user + t.system
            self.peak_rss = max(self.peak_rss, rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> ProcessTreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())
