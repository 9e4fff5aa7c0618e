"""Webhook secrets are stored encrypted (Fernet) with a configured or a generated development key."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from auditflow_dagster.db import secret_box
from auditflow_dagster.db.secret_box import SecretKeyError, seal, unseal
from auditflow_dagster.settings import get_settings


@pytest.fixture()
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("AUDITFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AUDITFLOW_SECRET_KEY", raising=False)
    monkeypatch.delenv("NODE_ENV", raising=False)
    monkeypatch.setenv("APP_ENV", "development")
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_roundtrip_with_configured_key(env):
    key = Fernet.generate_key().decode()
    env.setenv("AUDITFLOW_SECRET_KEY", f"  '{key}' ")  # normalized like every secret
    get_settings.cache_clear()
    token = seal("whsec-abc")
    assert "whsec-abc" not in token and token != seal("whsec-abc")  # random IV
    assert unseal(token) == "whsec-abc"
    assert Fernet(key.encode()).decrypt(token.encode()) == b"whsec-abc"
    assert not (get_settings().home_dir / "secret.key").exists()


def test_dev_key_is_generated_once_with_mode_0600(env):
    token = seal("s1")
    path = get_settings().home_dir / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_text().strip()
    assert unseal(token) == "s1"
    assert seal("s2") and path.read_text().strip() == key
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # no temp file left


def _create(home: str) -> str:
    return secret_box._load_or_create_key_file(Path(home))


def test_concurrent_creation_yields_one_key(tmp_path):
    home = tmp_path / "race"
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(max_workers=8, mp_context=ctx) as pool:
        keys = list(pool.map(_create, [str(home)] * 32))
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        keys += list(pool.map(_create, [str(home)] * 16))
    assert len(set(keys)) == 1
    assert (home / "secret.key").read_text().strip() == keys[0]
    assert sorted(p.name for p in home.iterdir()) == ["secret.key"]


def test_production_requires_a_key(env):
    env.setenv("APP_ENV", "production")
    get_settings.cache_clear()
    with pytest.raises(SecretKeyError, match="AUDITFLOW_SECRET_KEY must be set in production"):
        seal("x")
    assert not (get_settings().home_dir / "secret.key").exists()


def test_bad_key_and_foreign_token_give_clear_errors(env):
    env.setenv("AUDITFLOW_SECRET_KEY", "not-a-fernet-key")
    get_settings.cache_clear()
    with pytest.raises(SecretKeyError, match="not a valid Fernet key"):
        seal("x")
    env.setenv("AUDITFLOW_SECRET_KEY", Fernet.generate_key().decode())
    get_settings.cache_clear()
    foreign = Fernet(Fernet.generate_key()).encrypt(b"x").decode()
    with pytest.raises(SecretKeyError, match="cannot be decrypted") as info:
        unseal(foreign)
    assert foreign not in str(info.value)
