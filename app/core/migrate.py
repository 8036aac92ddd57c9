"""Schema migrations (Alembic, revisions in `migrations/`) run from code."""

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

import migrations
from app.core import db, leadership, storage
from app.core.config import Settings
from app.core.intervals import DAY

SCRIPT_LOCATION = Path(migrations.__file__).parent


def upgrade(
    engine: Engine,
    *,
    timescaledb: storage.Mode = "auto",
    compress_after_seconds: int = 7 * DAY,
) -> storage.Layout:
    """Bring the database behind `engine` to the latest revision; returns its telemetry layout.

    The layout is checked against `timescaledb` (IOTDECK_TIMESCALEDB) before any revision
    runs, so a mismatch stops here with a ConfigError instead of half-migrating. Processes
    that start together (pods of a first install) take turns: the later ones find the
    schema current.
    """
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    # a plain connection: env.py runs each revision in its own transaction, so a revision
    # may step outside it (refreshing a continuous aggregate refuses to run inside one)
    with leadership.exclusively(engine, leadership.MIGRATIONS), engine.connect() as connection:
        layout = storage.choose_layout(connection, timescaledb)
        connection.rollback()  # the checks' implicit transaction; each revision opens its own
        config.attributes["connection"] = connection
        config.attributes["layout"] = layout
        command.upgrade(config, "head")
        connection.commit()
        if layout is storage.Layout.TIMESCALEDB:
            storage.apply_compression_policy(
                connection, compress_after_seconds=compress_after_seconds
            )
            connection.commit()
    return layout


def open_database(settings: Settings) -> storage.Layout:
    """Point the process-wide engine at IOTDECK_DATABASE_URL and migrate it; its layout."""
    return upgrade(
        db.init_engine(settings.database_url),
        timescaledb=settings.timescaledb,
        compress_after_seconds=settings.compress_after_seconds,
    )
