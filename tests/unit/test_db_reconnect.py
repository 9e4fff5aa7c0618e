"""Which database errors mean "the server went away" (worth running the transaction again) and the
bounded retry around a transaction (``db.session.with_reconnect``). The real restart is
tests/e2e/test_crash_safety.py::test_postgres_restart_mid_run."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from auditflow_dagster.db import session as db_session
from auditflow_dagster.db.session import is_disconnect, with_reconnect


def wrapped(orig: Exception, *, invalidated: bool = False) -> DBAPIError:
    return OperationalError("SELECT 1", {}, orig, connection_invalidated=invalidated)


@pytest.mark.parametrize("exc", [
    psycopg.OperationalError("connection failed: Connection refused"),  # no SQLSTATE: no connection at all
    psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
    psycopg.errors.CannotConnectNow("the database system is starting up"),
    psycopg.errors.ConnectionFailure("connection failure"),
    wrapped(psycopg.errors.AdminShutdown("terminating connection")),
    wrapped(psycopg.OperationalError("server closed the connection unexpectedly")),
    DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True),
])
def test_lost_connections_are_disconnects(exc):
    assert is_disconnect(exc)


@pytest.mark.parametrize("exc", [
    psycopg.errors.LockNotAvailable("could not obtain lock"),  # an OperationalError, but the caller's
    psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
    psycopg.errors.UniqueViolation("duplicate key"),
    IntegrityError("INSERT", {}, psycopg.errors.UniqueViolation("duplicate key")),
    wrapped(psycopg.errors.LockNotAvailable("could not obtain lock")),
    ValueError("not a database error"),
])
def test_other_errors_are_not(exc):
    assert not is_disconnect(exc)


@pytest.fixture()
def no_sleep(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(db_session.time, "sleep", slept.append)
    return slept


def test_the_transaction_runs_again_until_the_server_is_back(no_sleep):
    calls = []

    def tx():
        calls.append(1)
        if len(calls) < 4:
            raise wrapped(psycopg.errors.AdminShutdown("terminating connection"), invalidated=True)
        return "done"

    assert with_reconnect(tx) == "done"
    assert len(calls) == 4 and no_sleep == [0.25, 0.5, 1.0]  # backoff, capped at 5 s


def test_other_errors_propagate_at_once(no_sleep):
    calls = []

    def tx():
        calls.append(1)
        raise IntegrityError("INSERT", {}, psycopg.errors.UniqueViolation("duplicate key"))

    with pytest.raises(IntegrityError):
        with_reconnect(tx)
    assert len(calls) == 1 and no_sleep == []


def test_gives_up_after_the_window(no_sleep, monkeypatch):
    clock = iter(range(0, 10_000, 10))  # every look at the clock: 10 s later
    monkeypatch.setattr(db_session.time, "monotonic", lambda: next(clock))

    def tx():
        raise psycopg.OperationalError("connection refused")

    with pytest.raises(psycopg.OperationalError):
        with_reconnect(tx, seconds=35)
    assert 1 <= len(no_sleep) <= 4
