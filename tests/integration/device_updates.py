"""Count the row versions written to `devices`, with a trigger, on PostgreSQL and SQLite.

Each UPDATE of a row leaves a dead tuple behind on PostgreSQL; a trigger sees every one,
committed, at once (the statistics views lag by up to seconds).
"""

import uuid
from collections.abc import Callable

from sqlalchemy import Engine, text

_POSTGRES = (
    "CREATE TABLE device_updates (device_id uuid)",
    "CREATE FUNCTION log_device_update() RETURNS trigger LANGUAGE plpgsql AS"
    " $$ BEGIN INSERT INTO device_updates VALUES (NEW.id); RETURN NULL; END $$",
    "CREATE TRIGGER log_device_update AFTER UPDATE ON devices"
    " FOR EACH ROW EXECUTE FUNCTION log_device_update()",
)
_SQLITE = (
    "CREATE TABLE device_updates (device_id TEXT)",
    "CREATE TRIGGER log_device_update AFTER UPDATE ON devices"
    " BEGIN INSERT INTO device_updates VALUES (NEW.id); END",
)


def log_device_updates(engine: Engine) -> Callable[[uuid.UUID], int]:
    """From now on, log each row update of `devices`; returns: how many a device got."""
    with engine.begin() as connection:
        postgres = connection.dialect.name == "postgresql"
        for statement in _POSTGRES if postgres else _SQLITE:
            connection.execute(text(statement))

    def updates(device_id: uuid.UUID) -> int:
        # SQLite stores a uuid as 32 hex digits
        key = str(device_id) if postgres else device_id.hex
        with engine.connect() as connection:
            query = text("SELECT count(*) FROM device_updates WHERE device_id = :id")
            return connection.execute(query, {"id": key}).scalar_one()

    return updates
