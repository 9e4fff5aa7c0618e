"""Migrations are idempotent and safe to start concurrently; the config importer accepts the
real-world legacy files unchanged and gives them back."""

from __future__ import annotations

import json
import threading
import uuid

import psycopg
import pytest
from sqlalchemy import text

from auditflow_dagster.core.audit_config import config_to_legacy_json
from auditflow_dagster.db.configs import import_legacy_json, load_config
from auditflow_dagster.db.embedded import create_database_if_missing, database_uri
from auditflow_dagster.db.migrate import upgrade
from auditflow_dagster.db.session import (
    dispose_engines,
    get_engine,
    session_scope,
    with_driver,
)
from tests.conftest import SHARED_FIXTURES as FIXTURES


def test_concurrent_upgrades_on_a_fresh_database(pg_server):
    name = f"af_mig_{uuid.uuid4().hex[:8]}"
    create_database_if_missing(pg_server, name)
    url = with_driver(database_uri(pg_server, name), "psycopg")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            upgrade(url)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        upgrade(url)  # and once more: nothing to do
        with get_engine(url).connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
            assert conn.execute(text("SELECT to_regclass('public.audits') IS NOT NULL")).scalar()
    finally:
        dispose_engines()
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="../shared/fixtures not beside the checkout")
def test_fixture_configs_import_unchanged(db):
    for fname, n_steps in (("audit_config_18_points.json", 18), ("audit_config_with_verification_example.json", 4)):
        data = json.loads((FIXTURES / fname).read_text(encoding="utf-8"))
        with session_scope() as s:
            cid = import_legacy_json(s, data).id
        with session_scope() as s:
            _, spec = load_config(s, cid)
        assert len(spec.steps) == n_steps
        assert [st.position for st in spec.steps] == sorted(st["position"] for st in data["auditSteps"])
        exported = config_to_legacy_json(spec)
        for key in ("name", "description", "systemPrompt"):
            assert exported[key] == data[key]
        assert {k for k in data if k not in ("auditSteps", "isActive")} <= set(exported)
        by_pos = {st["position"]: st for st in data["auditSteps"]}
        for st in exported["auditSteps"]:
            src = by_pos[st["position"]]
            for key in ("name", "prompt", "controlPoints", "keywords", "severityLevel", "isCritical", "weight",
                        "verifyProductInfo"):
                assert st[key] == src[key], (fname, st["position"], key)
