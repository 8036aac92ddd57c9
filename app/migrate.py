"""Schema migrations (Alembic, revisions in `migrations/`) run from code."""

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

import migrations

SCRIPT_LOCATION = Path(migrations.__file__).parent


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database behind `engine` up to `revision`."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    # a plain connection: env.py runs each revision in its own transaction, so a revision
    # may step outside it (TimescaleDB continuous aggregates refuse to be created inside one)
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        connection.commit()
