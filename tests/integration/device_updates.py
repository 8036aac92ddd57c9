"""Count the row versions written to `devices`, with a trigger, on PostgreSQL and SQLite.

Each UPDATE of a row leaves a dead tuple behind on PostgreSQL; a trigger sees every one,
committed, at once (the statistics views lag by up to seconds).
"""

import uuid
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine, text
from sqlmodel import Session

from app.core.models import Device, DeviceStatus, as_utc

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


def stored_status(engine: Engine, device_id: uuid.UUID) -> tuple[DeviceStatus, datetime | None]:
    """A device's stored status and last contact, as the device page reads them."""
    with Session(engine) as session:
        device = session.get(Device, device_id)
        assert device is not None
        seen = as_utc(device.last_seen_at) if device.last_seen_at else None
        return DeviceStatus(device.status), seen
