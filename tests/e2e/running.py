"""One way for the e2e tests to start the whole system with their own environment."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def running_stack(log_dir: Path, env: dict[str, str | None]) -> Iterator[object]:
    """A started :class:`auditflow_dagster.stack.Stack` with ``env`` applied to this process's
    environment first (the child processes inherit it; ``None`` unsets a variable). The previous
    values and the settings cache are restored afterwards."""
    from auditflow_dagster.settings import get_settings
    from auditflow_dagster.stack import Stack

    saved = {k: os.environ.get(k) for k in env}
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    get_settings.cache_clear()
    try:
        with Stack(log_dir=log_dir) as stack:
            yield stack
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()
