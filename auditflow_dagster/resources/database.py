"""The ``db`` resource: where the application database is, for assets and sensors.

It resolves the URL once per process (embedded server or ``AUDITFLOW_DATABASE_URL``) and applies
migrations, so a run worker started by the daemon on a fresh database is never ahead of its schema.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from dagster import ConfigurableResource, InitResourceContext
from sqlalchemy.orm import Session

from auditflow_dagster.db.session import session_scope


class DatabaseResource(ConfigurableResource):
    """Application database access; URL comes from the process environment (settings)."""

    apply_migrations: bool = True

    def setup_for_execution(self, context: InitResourceContext) -> None:
        from auditflow_dagster.db.embedded import ensure_database_env
        from auditflow_dagster.db.migrate import upgrade

        ensure_database_env()
        if self.apply_migrations:
            upgrade()

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        with session_scope() as s:
            yield s
