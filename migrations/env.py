"""Alembic environment: runs on the connection handed over by auditflow_dagster.db.migrate
(which holds the advisory lock), or opens its own from the configured URL (alembic CLI)."""

from alembic import context
from sqlalchemy import create_engine

from auditflow_dagster.db.models import metadata

config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()


run()
