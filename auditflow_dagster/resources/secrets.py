"""Secrets in Dagster resources without leaking them into the Dagster UI.

A plain string given to a ``ConfigurableResource`` field is part of the repository snapshot and is
displayed (as a "configured value") on the resource page of the webserver. When the secret comes from
an environment variable we therefore hand Dagster an :class:`dagster.EnvVar` instead (the UI then
shows only the variable *name*), and :func:`resolve_secret` turns either form back into the
normalised value — inside a run Dagster has already resolved it, outside a run (API process, CLI,
tests calling ``resource.client()`` directly) we read the environment ourselves.
"""

from __future__ import annotations

import os
from typing import Any

from dagster import EnvVar

from auditflow_dagster.settings import normalize_secret


def secret_field_value(settings_value: Any, env_name: str) -> str:
    """``EnvVar(env_name)`` when the environment holds exactly this secret, else the plain value."""
    value = settings_value.get_secret_value() if hasattr(settings_value, "get_secret_value") else settings_value
    value = normalize_secret(value if isinstance(value, str) else "")
    if value and normalize_secret(os.environ.get(env_name)) == value:
        return EnvVar(env_name)
    return value


def resolve_secret(value: Any) -> str:
    """The normalised secret behind a field value (plain string or unresolved ``EnvVar``)."""
    if isinstance(value, EnvVar):
        return normalize_secret(os.environ.get(value.env_var_name))
    return normalize_secret(value if isinstance(value, str) else "")
