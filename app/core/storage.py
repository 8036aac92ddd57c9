"""Where telemetry lives: TimescaleDB or plain tables, chosen once per database.

`IOTDECK_TIMESCALEDB` (auto, on, off) picks the layout when the telemetry tables are
created. From then on the schema itself records the choice: on TimescaleDB
`telemetry_hourly` is a continuous aggregate (a view), elsewhere a table. A setting that
contradicts the recorded layout, or a TimescaleDB database on a server that no longer
preloads the extension, stops the process before anything is migrated or written.

Availability is the wrong test: once TimescaleDB is installed on a server, every cluster
of it lists the extension, but only a cluster that preloads it can create it
(`shared_preload_libraries`).
"""

from enum import StrEnum
from typing import Literal

from sqlalchemy import Connection, Engine, text

from app.core.config import ConfigError

Mode = Literal["auto", "on", "off"]
_PRELOAD_FIX = (
    "add 'timescaledb' to shared_preload_libraries in postgresql.conf and restart PostgreSQL"
)


class Layout(StrEnum):
    """How a database stores telemetry."""

    TIMESCALEDB = "timescaledb"  # hypertable, continuous aggregate, compression
    PLAIN = "plain"  # tables, rollups kept by iotdeck's own job (PostgreSQL or SQLite)


def preloaded(connection: Connection) -> bool:
    """True when this PostgreSQL server preloads the TimescaleDB library."""
    libraries = connection.execute(text("SELECT current_setting('shared_preload_libraries')"))
    names = [item.strip().strip("'\"") for item in (libraries.scalar() or "").split(",")]
    return any(name.rsplit("/", 1)[-1] == "timescaledb" for name in names)


def recorded_layout(connection: Connection) -> Layout | None:
    """The layout this database was migrated with; None before its telemetry tables exist."""
    if connection.dialect.name != "postgresql":
        return Layout.PLAIN if _sqlite_table_exists(connection) else None
    kind = connection.execute(
        text("SELECT relkind FROM pg_class WHERE oid = to_regclass('telemetry_hourly')")
    ).scalar()
    if kind is None:
        return None
    return Layout.PLAIN if kind == "r" else Layout.TIMESCALEDB


def _sqlite_table_exists(connection: Connection) -> bool:
    query = text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'telemetry_hourly'")
    return connection.execute(query).first() is not None


def choose_layout(connection: Connection, mode: Mode) -> Layout:
    """The layout to migrate to and run with under `mode`; ConfigError naming the fix."""
    if mode not in ("auto", "on", "off"):
        raise ConfigError(f"IOTDECK_TIMESCALEDB must be auto, on or off, not {mode!r}")
    if connection.dialect.name != "postgresql":
        if mode == "on":
            raise ConfigError(
                "IOTDECK_TIMESCALEDB=on needs PostgreSQL with TimescaleDB, but "
                "IOTDECK_DATABASE_URL is not PostgreSQL: set it to auto or off"
            )
        return Layout.PLAIN
    recorded = recorded_layout(connection)
    if recorded is Layout.PLAIN:
        if mode == "on":
            raise ConfigError(
                "IOTDECK_TIMESCALEDB=on, but this database was migrated without TimescaleDB "
                "(plain tables); it is not converted in place: set IOTDECK_TIMESCALEDB=auto "
                "or off, or migrate into a new database (docs/deployment.md)"
            )
        return Layout.PLAIN
    if recorded is Layout.TIMESCALEDB:
        if mode == "off":
            raise ConfigError(
                "IOTDECK_TIMESCALEDB=off, but this database was migrated with TimescaleDB "
                "(telemetry is a hypertable): set IOTDECK_TIMESCALEDB=auto or on"
            )
        if not preloaded(connection):
            raise ConfigError(
                "this database stores telemetry in TimescaleDB, but the server does not "
                f"preload it: {_PRELOAD_FIX}"
            )
        return Layout.TIMESCALEDB
    if mode == "off":
        return Layout.PLAIN
    if preloaded(connection):
        return Layout.TIMESCALEDB
    if mode == "on" or _has_extension(connection):
        reason = "IOTDECK_TIMESCALEDB=on" if mode == "on" else "this database has TimescaleDB"
        raise ConfigError(f"{reason}, but the server does not preload it: {_PRELOAD_FIX}")
    return Layout.PLAIN


def verify(engine: Engine, mode: Mode) -> Layout:
    """Check, without migrating, that this database can run under `mode`; its layout."""
    with engine.connect() as connection:
        return choose_layout(connection, mode)


def _has_extension(connection: Connection) -> bool:
    query = text("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
    return connection.execute(query).first() is not None


def apply_compression_policy(connection: Connection, *, compress_after_seconds: int) -> None:
    """Keep TimescaleDB's compression policy in step with IOTDECK_COMPRESS_AFTER."""
    current = connection.execute(
        text(
            "SELECT (config->>'compress_after')::interval FROM timescaledb_information.jobs"
            " WHERE proc_name = 'policy_compression' AND hypertable_name = 'device_telemetry'"
        )
    ).scalar()
    # justified: the policy then reads "7 days", not "168:00:00"
    wanted = connection.execute(
        text("SELECT justify_interval(make_interval(secs => :seconds))"),
        {"seconds": compress_after_seconds},
    ).scalar()
    if current == wanted:
        return
    connection.execute(text("SELECT remove_compression_policy('device_telemetry', true)"))
    connection.execute(
        text("SELECT add_compression_policy('device_telemetry', CAST(:after AS interval))"),
        {"after": wanted},
    )
