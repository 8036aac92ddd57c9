"""The circuit breaker's states on a fake clock, and which database errors are worth a retry."""

import sqlite3
from datetime import UTC, datetime, timedelta

import psycopg
import psycopg.errors
import pytest
from sqlalchemy import exc as sa_exc

from app.core import db
from app.core.retries import CircuitBreaker, broker_reconnect_delays
from app.workers.circuits import target_key

START = datetime(2026, 1, 1, 14, 3, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def breaker(clock: Clock, changes: list[bool] | None = None) -> CircuitBreaker:
    record = changes.append if changes is not None else lambda _is_open: None
    return CircuitBreaker(
        "test",
        threshold=3,
        cooldown=timedelta(seconds=10),
        max_cooldown=timedelta(seconds=25),
        clock=clock,
        on_change=record,
    )


def test_opens_after_threshold_failures_in_a_row_only() -> None:
    clock, changes = Clock(), []
    circuit = breaker(clock, changes)
    circuit.failure("refused")
    circuit.failure("refused")
    circuit.success()  # the row is broken: counting starts over
    circuit.failure("refused")
    circuit.failure("refused")
    assert circuit.allow() and not circuit.is_open and changes == []
    circuit.failure("HTTP 503 Service Unavailable")
    assert circuit.is_open and not circuit.allow()
    assert changes == [True]
    assert circuit.describe() == (
        "circuit open since 14:03:00 UTC, 3 failures in a row, "
        "last error: HTTP 503 Service Unavailable; next try at 14:03:10 UTC"
    )


def test_half_open_lets_one_call_through_per_cooldown() -> None:
    clock = Clock()
    circuit = breaker(clock)
    for _ in range(3):
        circuit.failure("refused")
    clock.advance(9.9)
    assert not circuit.allow()
    clock.advance(0.1)
    assert circuit.allow()  # the probe
    assert not circuit.allow()  # ...and only one
    clock.advance(10)
    assert circuit.allow()  # a probe that never reported does not keep it shut


def test_a_failed_probe_doubles_the_cooldown_up_to_the_cap() -> None:
    clock = Clock()
    circuit = breaker(clock)
    for _ in range(3):
        circuit.failure("refused")
    waits = []
    for _ in range(3):
        clock.advance(30)
        assert circuit.allow()
        circuit.failure("refused")
        assert circuit.retry_at is not None
        waits.append((circuit.retry_at - clock.now).total_seconds())
    assert waits == [20, 25, 25]
    assert circuit.failures == 6


def test_failures_of_calls_from_before_the_opening_do_not_lengthen_it() -> None:
    clock = Clock()
    circuit = breaker(clock)
    for _ in range(5):  # three open it, two more were already under way
        circuit.failure("refused")
    assert circuit.retry_at == START + timedelta(seconds=10)


def test_a_success_closes_it_and_resets_the_cooldown() -> None:
    clock, changes = Clock(), []
    circuit = breaker(clock, changes)
    for _ in range(3):
        circuit.failure("refused")
    clock.advance(10)
    assert circuit.allow()
    circuit.failure("refused")  # cooldown now 20 s
    clock.advance(20)
    assert circuit.allow()
    circuit.success()
    assert changes == [True, False]
    assert not circuit.is_open and circuit.allow() and circuit.describe() == ""
    for _ in range(3):
        circuit.failure("refused")
    assert circuit.retry_at == clock.now + timedelta(seconds=10)


def test_broker_reconnect_delays_differ_between_clients() -> None:
    drawn = {broker_reconnect_delays() for _ in range(20)}
    assert len(drawn) > 1
    assert all(0.5 <= low <= 1.5 and 20 <= high <= 30 for low, high in drawn)


def _wrapped(raw: Exception) -> sa_exc.DBAPIError:
    # as SQLAlchemy hands a driver's error over: OperationalError for an OperationalError...
    return sa_exc.DBAPIError.instance("SELECT 1", {}, raw, Exception)


@pytest.mark.parametrize(
    ("error", "connection", "transient"),
    [
        (psycopg.OperationalError("connection failed: ... failed: Connection refused"), 1, 1),
        (psycopg.errors.AdminShutdown("terminating connection"), 1, 1),
        (psycopg.errors.CannotConnectNow("the database system is starting up"), 1, 1),
        (psycopg.errors.InvalidPassword("password authentication failed"), 1, 1),
        (psycopg.InterfaceError("the connection is closed"), 1, 1),
        (psycopg.errors.DeadlockDetected("deadlock detected"), 0, 1),
        (psycopg.errors.QueryCanceled("canceling statement"), 0, 1),
        (psycopg.errors.ProgramLimitExceeded("index row size exceeds maximum"), 0, 0),
        (psycopg.errors.RaiseException("poison value"), 0, 0),
        (psycopg.errors.UniqueViolation("duplicate key"), 0, 0),
        (psycopg.errors.InvalidTextRepresentation("invalid input syntax"), 0, 0),
        (sqlite3.OperationalError("database is locked"), 0, 1),
        (TypeError("a bug"), 0, 0),
    ],
)
def test_which_errors_are_the_database_being_away(
    error: Exception, connection: int, transient: int
) -> None:
    for seen in (error, _wrapped(error)):
        assert db.is_connection_error(seen) is bool(connection), seen
        assert db.is_transient(seen) is bool(transient), seen


def test_pool_timeouts_are_transient_and_unavailability_is_a_connection_error() -> None:
    assert db.is_transient(sa_exc.TimeoutError("QueuePool limit reached"))
    assert not db.is_connection_error(sa_exc.TimeoutError("QueuePool limit reached"))
    assert db.is_connection_error(db.DatabaseUnavailableError("circuit open"))


def test_short_errors_keep_the_why_and_drop_the_address() -> None:
    refused = psycopg.OperationalError(
        'connection failed: connection to server at "10.0.0.7", port 5432 failed: '
        "Connection refused\n\tIs the server running on that host?"
    )
    assert db.short_error(_wrapped(refused)) == "Connection refused"
    assert db.short_error(psycopg.OperationalError("timeout expired")) == "timeout expired"
    assert db.short_error(psycopg.OperationalError("")) == "OperationalError"


def test_unavailable_reads_as_said_and_is_both_kinds_of_error() -> None:
    error = db.DatabaseUnavailableError("circuit open since 14:03:00 UTC")
    assert str(error) == "database unavailable: circuit open since 14:03:00 UTC"
    assert error.code == "UNAVAILABLE"
    assert isinstance(error, sa_exc.SQLAlchemyError)


@pytest.mark.parametrize(
    ("channel", "target", "key"),
    [
        (
            "webhook",
            "https://user:pw@Hooks.Example.com/x/y?token=1",
            "webhook hooks.example.com/x/y",
        ),
        ("webhook", "https://hooks.example.com:8443/x?token=2", "webhook hooks.example.com:8443/x"),
        ("webhook", "https://hooks.example.com", "webhook hooks.example.com/"),
        ("email", " Ops@Example.com ", "email ops@example.com"),
    ],
)
def test_a_target_is_its_channel_and_destination(channel: str, target: str, key: str) -> None:
    assert target_key(channel, target) == key
