"""What every ``auditflow`` command shares: expected failures as one-line errors, progress output
(a rich bar with counts, elapsed time and ETA on a terminal; plain lines otherwise), the sales-day
argument type and the connection to the Dagster webserver."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import click

T = TypeVar("T")
_YMD = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class CliError(click.ClickException):
    """An expected failure: ``Error: <message>`` on stderr and a non-zero exit, never a traceback."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _database_errors() -> tuple[type[BaseException], ...]:
    import psycopg
    import sqlalchemy.exc

    errors: tuple[type[BaseException], ...] = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                                               psycopg.OperationalError, psycopg.InterfaceError)
    try:  # the Dagster storage's driver (dagster-postgres)
        import psycopg2

        errors += (psycopg2.OperationalError, psycopg2.InterfaceError)
    except ImportError:  # pragma: no cover - installed with dagster-postgres
        pass
    return errors


def expected_failure(exc: BaseException) -> str | None:
    """The one-line message of an exception the CLI expects (database or Dagster unreachable), or
    None for anything else (a bug keeps its traceback)."""
    from api.dagster_client import DagsterUnavailable

    if isinstance(exc, DagsterUnavailable):
        return f"Dagster unavailable: {exc}"
    if isinstance(exc, _database_errors()):
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return f"database unreachable: {lines[0] if lines else exc.__class__.__name__}"
    return None


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one command's coroutine (one event loop per command: the Dagster client lives in it)."""
    return asyncio.run(coro)


def database() -> None:
    """Point the settings at the application database (the embedded server when no URL is set)."""
    from auditflow_dagster.db.embedded import ensure_database_env

    ensure_database_env()


# --------------------------------------------------------------------------------------------- #
# arguments and options
# --------------------------------------------------------------------------------------------- #


class SalesDay(click.ParamType):
    """A calendar date written ``YYYY-MM-DD`` (kept as that string: the partition key)."""

    name = "YYYY-MM-DD"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if isinstance(value, dt.date):
            return value.isoformat()
        text = str(value).strip()
        try:
            if not _YMD.match(text):
                raise ValueError
            return dt.date.fromisoformat(text).isoformat()
        except ValueError:
            self.fail(f"{value!r} is not a date written YYYY-MM-DD", param, ctx)


SALES_DAY = SalesDay()


def default_dagster_url() -> str:
    """The webserver of ``AUDITFLOW_DAGSTER_GRAPHQL_URL`` (default http://127.0.0.1:3000)."""
    from auditflow_dagster.settings import get_settings

    url = get_settings().dagster_graphql_url.rstrip("/")
    return url[: -len("/graphql")] if url.endswith("/graphql") else url


def graphql_url(url: str | None) -> str:
    """The GraphQL endpoint of a webserver URL (an URL already ending in ``/graphql`` is kept)."""
    url = (url or default_dagster_url()).rstrip("/")
    return url if url.endswith("/graphql") else f"{url}/graphql"


def dagster_url_option(fn: Any) -> Any:
    return click.option(
        "--dagster-url", metavar="URL", default=None,
        help="the Dagster webserver (default: AUDITFLOW_DAGSTER_GRAPHQL_URL without /graphql, "
             "else http://127.0.0.1:3000)")(fn)


def timeout_option(default: float) -> Any:
    return click.option("--timeout", type=click.FloatRange(min=1), default=default, show_default=True,
                        help="seconds to wait for the outcome before giving up (exit 1)")


def no_wait_option(fn: Any) -> Any:
    return click.option("--no-wait", is_flag=True, help="launch, print the Dagster id and return at once")(fn)


@contextlib.asynccontextmanager
async def dagster(url: str | None) -> AsyncIterator[Any]:
    """A :class:`api.dagster_client.DagsterClient` on the webserver at ``url``; an unreachable or
    refusing Dagster becomes a one-line :class:`CliError` naming the URL."""
    from api.dagster_client import DagsterClient, DagsterUnavailable

    endpoint = graphql_url(url)
    client = DagsterClient(endpoint, timeout=30.0)
    try:
        yield client
    except DagsterUnavailable as exc:
        raise CliError(f"Dagster at {endpoint}: {exc}") from None
    finally:
        await client.aclose()


# --------------------------------------------------------------------------------------------- #
# progress
# --------------------------------------------------------------------------------------------- #


class ProgressReport:
    """Progress of a long operation, one task per thing counted.

    On a terminal: a rich :class:`~rich.progress.Progress` (spinner, bar, ``M/N``, elapsed time, ETA
    from :class:`~rich.progress.TimeRemainingColumn`, a free-text field). Elsewhere (a pipe, a log
    file, a test capturing output): a plain line when a task changes, at most every ``min_interval``
    seconds per task, and always its last state when the report closes.
    """

    def __init__(self, *, min_interval: float = 1.0, live: bool | None = None, counted: bool = True) -> None:
        """``counted=False``: tasks have no count, only a spinner, their text and the elapsed time
        (waiting for one run)."""
        from rich.console import Console

        self.console = Console(highlight=False)  # writes to the current sys.stdout
        self.live = self.console.is_terminal if live is None else live
        self.min_interval = min_interval
        self.counted = counted
        self._progress: Any = None
        self._tasks: list[dict[str, Any]] = []

    def __enter__(self) -> ProgressReport:
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
            if self.counted:
                columns += [BarColumn(bar_width=24), MofNCompleteColumn()]
            columns.append(TimeElapsedColumn())
            if self.counted:
                columns += [TextColumn("ETA"), TimeRemainingColumn()]
            columns.append(TextColumn("{task.fields[info]}"))  # last: the first to be cut on a narrow terminal
            self._progress = Progress(*columns, console=self.console)
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            return
        for task in self._tasks:
            self._print(task, force=True)

    def add(self, description: str, total: float | None = None, info: str = "") -> int:
        """A new task; ``total`` None until it is known (the bar pulses meanwhile)."""
        task = {"description": description, "completed": 0, "total": total, "info": info, "printed": None, "at": 0.0}
        if self._progress is not None:
            task["id"] = self._progress.add_task(description, total=total, info=info)
        self._tasks.append(task)
        return len(self._tasks) - 1

    def update(self, task_id: int, *, completed: float | None = None, total: float | None = None,
               advance: float = 0, info: str | None = None) -> None:
        task = self._tasks[task_id]
        if completed is not None:
            task["completed"] = completed
        task["completed"] += advance
        if total is not None:
            task["total"] = total
        if info is not None:
            task["info"] = info
        if self._progress is not None:
            self._progress.update(task["id"], completed=task["completed"], total=task["total"], info=task["info"])
        else:
            self._print(task)

    def echo(self, message: str) -> None:
        """A line of its own (above the bars on a terminal)."""
        if self._progress is not None:
            self._progress.console.print(message, markup=False)
        else:
            click.echo(message)

    def _print(self, task: dict[str, Any], *, force: bool = False) -> None:
        done, total = task["completed"], task["total"]
        count = "" if not self.counted else f"{done:g}/{total:g}" if total is not None else f"{done:g}"
        line = f"{task['description']}:" + "".join(f" {part}" for part in (count, task["info"]) if part)
        if line == task["printed"]:
            return
        now = time.monotonic()
        finished = total is not None and done >= total
        if force or finished or now - task["at"] >= self.min_interval:
            click.echo(line)
            task["printed"], task["at"] = line, now
