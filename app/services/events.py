"""Bus messages that services queue in a session and that go out only after its commit.

A service calls `emit(session, channel, message)`; when the session commits, everything
it queued is published in order through this process's bus; a rollback discards it.
So a pushed point or device change can always be read back by whoever receives it.
`after_commit` does the same for what a process remembers about its own writes.
"""

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from app.core import bus
from app.core.models import Device

_OUTBOX = "bus_outbox"
_AFTER_COMMIT = "after_commit"


def emit(session: Session, channel: str, message: dict[str, Any]) -> None:
    """Publish `message` on `channel` once `session` commits."""
    session.info.setdefault(_OUTBOX, []).append((channel, message))


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Call `callback` once `session` commits; a rollback forgets it.

    For memory that must hold only what is stored (ingest's rollup marks, last contacts).
    """
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


def moment(value: datetime | None) -> str | None:
    """A time as bus messages carry it (ISO 8601), or None."""
    return None if value is None else value.isoformat()


def ident(value: uuid.UUID | None) -> str | None:
    """An id as bus messages carry it (text), or None."""
    return None if value is None else str(value)


def device_payload(device: Device) -> dict[str, Any]:
    """A device as bus messages carry it (ISO 8601 UTC times)."""
    return {
        "id": str(device.id),
        "name": device.name,
        "type": device.type,
        "status": str(device.status),
        "metadata": device.metadata_,
        "last_seen_at": moment(device.last_seen_at),
        "created_at": device.created_at.isoformat(),
        "updated_at": device.updated_at.isoformat(),
        "config": device.config,
        "rate_limited_at": moment(device.rate_limited_at),
    }


def device_event(session: Session, kind: str, device: Device, at: str) -> None:
    """Queue a CREATED, UPDATED, DELETED or STATUS_CHANGED event for `device`."""
    emit(session, bus.DEVICE_EVENTS, {"type": kind, "device": device_payload(device), "at": at})
    if kind == "STATUS_CHANGED":
        emit(
            session,
            bus.DEVICE_STATUS,
            {"device_id": str(device.id), "status": str(device.status), "at": at},
        )


@event.listens_for(Session, "after_commit")
def _publish_outbox(session: Session) -> None:
    for callback in session.info.pop(_AFTER_COMMIT, ()):
        callback()
    items = session.info.pop(_OUTBOX, None)
    if items:
        bus.get_bus().publish_many(items)


@event.listens_for(Session, "after_rollback")
def _discard_outbox(session: Session) -> None:
    session.info.pop(_OUTBOX, None)
    session.info.pop(_AFTER_COMMIT, None)
