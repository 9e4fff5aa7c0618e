"""The one way to reach the application database.

``app_url()`` resolves the database URL (env, set by the entry point that started the embedded
server, see :mod:`auditflow_dagster.db.embedded`), ``get_engine()`` keeps one pooled engine per URL
and process, and ``session_scope()`` is the only transaction helper: commit on success, rollback on
error, always close. ``with_reconnect()`` reruns a whole transaction while the server is unreachable
(a restart, a failover): pipeline code survives a database restart instead of failing its run.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from auditflow_dagster.settings import get_settings

T = TypeVar("T")
log = logging.getLogger(__name__)

#: how long :func:`with_reconnect` keeps retrying while the server is unreachable; longer than a
#: PostgreSQL restart, shorter than anything a run would rather wait for than fail
RECONNECT_SECONDS = 120.0
#: SQLSTATEs of a server going away: admin/crash shutdown, "the database system is starting up"
_SHUTDOWN_STATES = frozenset({"57P01", "57P02", "57P03"})

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_makers: dict[str, sessionmaker[Session]] = {}


def with_driver(url: str, driver: str) -> str:
    """Force a SQLAlchemy driver on a ``postgresql://`` URL (``psycopg`` for the app,
    ``psycopg2`` for Dagster's storage, see DESIGN §3.2)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("database URL must look like postgresql://…")
    base = scheme.split("+", 1)[0]
    if base not in ("postgres", "postgresql"):
        raise ValueError(f"unsupported database scheme {base!r}: PostgreSQL only")
    return f"postgresql+{driver}://{rest}"


def app_url() -> str:
    url = get_settings().database_url
    if not url:
        raise RuntimeError(
            "AUDITFLOW_DATABASE_URL is not set; entry points call "
            "auditflow_dagster.db.embedded.ensure_database_env() first"
        )
    return with_driver(url, "psycopg")


def get_engine(url: str | None = None) -> Engine:
    url = url or app_url()
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            # bounded per process: 4 concurrent runs + daemon + webserver + API must fit the server's
            # max_connections (100 by default); a busy thread waits for a connection instead
            settings = get_settings()
            engine = create_engine(url, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow,
                                   pool_timeout=60, pool_pre_ping=True, pool_recycle=1800)
            _engines[url] = engine
            _makers[url] = sessionmaker(bind=engine, expire_on_commit=False)
        return engine


@contextlib.contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    url = url or app_url()
    get_engine(url)
    session = _makers[url]()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def is_disconnect(exc: BaseException) -> bool:
    """True for a lost or refused connection (server restarting, shutting down, unreachable):
    nothing the transaction did was committed, so running it again is safe. Any other error
    (constraint, bad SQL, a lock timeout) is the caller's."""
    import psycopg

    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in _SHUTDOWN_STATES


def with_reconnect(fn: Callable[[], T], *, seconds: float = RECONNECT_SECONDS, what: str = "transaction") -> T:
    """``fn()`` — a whole transaction, e.g. ``session_scope`` and its work — run again while the
    database is unreachable, with backoff, for at most ``seconds``. The pool's pre-ping replaces
    the dead connections. A commit whose acknowledgement was lost may run twice: callers pass
    idempotent work (upserts, lookups by natural key), as every pipeline transaction is."""
    deadline = time.monotonic() + seconds
    delay = 0.25
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_disconnect(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("database unreachable during %s (%s); retrying in %.2fs",
                        what, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def dispose_engines() -> None:
    """Drop pooled connections (tests that drop databases, or after a fork)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _makers.clear()
