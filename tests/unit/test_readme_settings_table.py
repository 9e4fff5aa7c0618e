"""README's configuration table is generated from the settings object (scripts/settings_table.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from pydantic import SecretStr

from auditflow_dagster.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("settings_table", ROOT / "scripts" / "settings_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("settings_table", module)
    spec.loader.exec_module(module)
    return module


def _rows(table: str) -> dict[str, list[str]]:
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if cells[0].startswith("`"):
            rows[cells[0].split("`")[1]] = cells
    return rows


def test_readme_table_matches_settings():
    st = _script()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert st.START in readme and st.END in readme, "README.md lacks the settings-table markers"
    assert st.readme_table(readme) == st.render_table(), (
        "README.md's configuration table differs from the settings object: "
        "run `.venv/bin/python scripts/settings_table.py`")


def test_every_setting_has_a_row_and_a_description():
    st = _script()
    assert st.missing_descriptions() == [], (
        "add a `#:` comment above the field in settings.py, Field(description=…), "
        "or an entry in scripts/settings_table.py DESCRIPTIONS")
    rows = _rows(st.render_table())
    for name, field in Settings.model_fields.items():
        env = field.validation_alias.choices[0]
        assert env in rows, f"{name} ({env}) has no row"


def test_secret_defaults_render_empty(monkeypatch):
    st = _script()
    secrets = [n for n, f in Settings.model_fields.items()
               if f.annotation is SecretStr or isinstance(f.default, SecretStr)]
    assert {"openai_api_key", "api_auth_tokens", "secret_key", "smtp_pass"} <= set(secrets)
    # even a secret with a non-empty default (or one set in the environment) renders an empty cell
    field = Settings.model_fields["openai_api_key"]
    monkeypatch.setattr(field, "default", SecretStr("sk-must-never-show"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-must-never-show")
    table = st.render_table()
    assert "must-never-show" not in table
    rows = _rows(table)
    for name in secrets:
        env = Settings.model_fields[name].validation_alias.choices[0]
        assert rows[env][1] == "", f"{env}: a secret's default must render empty"
