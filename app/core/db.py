"""Database engine and sessions for SQLite (embedded) and PostgreSQL (psycopg 3).

PostgreSQL has a circuit breaker (`database_breaker`, one per process): connection
failures of the process-wide engine open it, and while it is open `session_scope` and
`ping` raise `DatabaseUnavailableError` at once instead of waiting for a connection that
will not come; GraphQL answers it as UNAVAILABLE, /health/ready shows why. Any connection
that works closes it again.
"""

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.pool import Pool
from sqlmodel import Session, create_engine

from app.core import metrics
from app.core.errors import DomainError
from app.core.retries import CircuitBreaker

CONNECT_TIMEOUT_SECONDS = 3  # a server that does not answer fails fast (libpq's minimum is 2)
# SQLSTATE classes meaning "cannot talk to the server": connection exceptions, refused
# logins, and the server shutting down or starting up (57P01-57P04; not 57014, a cancel)
_CONNECTION_STATES = ("08", "28", "57P")
_DETERMINISTIC_STATES = ("54",)  # program limit exceeded: the same statement fails again

_engine: Engine | None = None


class DatabaseUnavailableError(DomainError, sa_exc.SQLAlchemyError):
    """The database cannot be reached now (its circuit is open, or the connection failed).

    A domain error for the edges (GraphQL answers UNAVAILABLE) and an SQLAlchemyError for
    the code that already handles the database being away that way.
    """

    code = "UNAVAILABLE"

    def __init__(self, reason: str) -> None:
        super().__init__(f"database unavailable: {reason}")
        self.reason = reason

    def __str__(self) -> str:
        # SQLAlchemyError's own would add a documentation link built from `code`
        return str(self.args[0])


def _breaker_changed(is_open: bool) -> None:
    metrics.DATABASE_UP.set(0 if is_open else 1)


database_breaker = CircuitBreaker(
    "database",
    threshold=3,
    cooldown=timedelta(seconds=1),
    max_cooldown=timedelta(seconds=10),
    on_change=_breaker_changed,
)


def _raw(error: BaseException) -> BaseException:
    """The driver's exception inside SQLAlchemy's wrapper, or `error` itself."""
    if isinstance(error, sa_exc.DBAPIError) and error.orig is not None:
        return error.orig
    return error


def is_connection_error(error: BaseException) -> bool:
    """Whether `error` says the server cannot be talked to (down, unreachable, refusing)."""
    if isinstance(error, DatabaseUnavailableError):
        return True
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    raw = _raw(error)
    if isinstance(raw, psycopg.InterfaceError):
        return True
    if isinstance(raw, psycopg.OperationalError):
        # no SQLSTATE: the client failed (refused, timed out, connection closed)
        return raw.sqlstate is None or raw.sqlstate.startswith(_CONNECTION_STATES)
    return False


def is_transient(error: BaseException) -> bool:
    """Whether the same work may succeed later: the database away, busy, in a conflict.

    False for what fails the same way every time: a bad value, a broken constraint, a
    wrong statement, or any error that is not the database's.
    """
    if is_connection_error(error):
        return True
    if isinstance(error, sa_exc.DisconnectionError | sa_exc.TimeoutError):
        return True  # a dead pooled connection; the pool exhausted for a while
    raw = _raw(error)
    if isinstance(raw, psycopg.OperationalError):
        return not (raw.sqlstate or "").startswith(_DETERMINISTIC_STATES)
    return isinstance(raw, psycopg.InterfaceError | sqlite3.OperationalError)


def short_error(error: BaseException) -> str:
    """What went wrong in a few words, without the server's address: "Connection refused"."""
    raw = _raw(error)
    lines = str(raw).strip().splitlines()
    # libpq says 'connection to server at "host", port 5432 failed: <why>': keep the why
    return (lines[0].rsplit(": ", 1)[-1].strip() if lines else "") or type(raw).__name__


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets foreign keys, WAL and a busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        connect_args = {}
        if "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
        return create_engine(
            url, pool_pre_ping=True, pool_size=10, max_overflow=20, connect_args=connect_args
        )
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def init_engine(url: str) -> Engine:
    """Create the process-wide engine (replacing any previous one)."""
    global _engine  # noqa: PLW0603 - one engine per process, set once at start-up
    if _engine is not None:
        _engine.dispose()
    _engine = make_engine(url)
    database_breaker.success()  # a new server, or the same one configured again
    if _engine.dialect.name != "sqlite":  # the embedded file is never "away"
        event.listen(_engine, "handle_error", _failed)
        event.listen(_engine, "checkout", _checked_out)
    return _engine


def _failed(context: ExceptionContext) -> None:
    """Connection failures of the process-wide engine count toward opening its breaker."""
    # a stale pooled connection failing its ping is replaced at once: no news
    if context.is_pre_ping:
        return
    error = context.original_exception
    if is_connection_error(error) or context.is_disconnect:
        database_breaker.failure(short_error(error))


def _checked_out(_dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """A connection answered (new, or pinged from the pool): the database is there."""
    database_breaker.success()


def get_engine() -> Engine:
    """The process-wide engine; `init_engine` must have run."""
    if _engine is None:
        raise RuntimeError("database engine not initialised: call app.core.db.init_engine first")
    return _engine


@contextmanager
def _guarded() -> Iterator[None]:
    """Refuse at once while the breaker is open; turn a failed connection into the same error.

    Callers then see one error, DatabaseUnavailableError, for "the database is away".
    """
    if not database_breaker.allow():
        raise DatabaseUnavailableError(database_breaker.describe() or "circuit open")
    try:
        yield
    except DatabaseUnavailableError:
        raise
    except Exception as error:
        if is_connection_error(error):
            raise DatabaseUnavailableError(f"unreachable ({short_error(error)})") from error
        raise


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on error.

    DatabaseUnavailableError when the database cannot be reached (see `database_breaker`).
    """
    with _guarded(), Session(get_engine(), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def ping() -> None:
    """Raise if the database cannot answer a trivial query; database_up records the answer.

    DatabaseUnavailableError, saying why, when it cannot be reached or its circuit is open.
    """
    try:
        with _guarded(), get_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:
        metrics.DATABASE_UP.set(0)
        raise
    metrics.DATABASE_UP.set(1)


@event.listens_for(Pool, "connect")
def _connected(_dbapi_connection: Any, _record: Any) -> None:
    """A new connection opened, so the database answers: database_up is 1 from the start."""
    metrics.DATABASE_UP.set(1)
