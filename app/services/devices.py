"""Devices: registration, listing with filters and paging, edits, removal."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, inspect, or_, update
from sqlmodel import Session, col, select

from app.core.errors import NotFoundError
from app.core.models import Device, DeviceCreate, DeviceStatus, DeviceUpdate, utcnow
from app.services import credentials, events, validation
from app.services.validation import parse_id

_COLUMNS = inspect(Device).column_attrs


def _name(value: object) -> str:
    return validation.text(value, "name", max_length=255)


def _type(value: object) -> str:
    return validation.device_type(value, "type")


def _metadata(value: object) -> dict[str, Any]:
    return validation.json_object(value, "metadata")


@dataclass(frozen=True, kw_only=True)
class DeviceFilter:
    """Which devices a listing shows; None means no constraint."""

    type: str | None = None
    status: DeviceStatus | None = None
    search: str | None = None


def create_device(*, session: Session, data: DeviceCreate) -> Device:
    """Register a device; it starts with status UNKNOWN until it speaks."""
    device = Device(
        id=data.id or uuid.uuid4(),
        name=_name(data.name),
        type=_type(data.type),
        metadata_=_metadata(data.metadata) if data.metadata is not None else {},
    )
    session.add(device)
    session.flush()
    events.device_event(session, "CREATED", device, device.created_at.isoformat())
    return device


def _filtered(query: Any, where: DeviceFilter) -> Any:
    if where.type:
        query = query.where(Device.type == where.type)
    if where.status is not None:
        status = validation.any_of(where.status, "status", DeviceStatus)
        query = query.where(Device.status == status)
    if where.search and where.search.strip():
        needle = where.search.strip().lower()
        query = query.where(
            or_(
                func.lower(Device.name).contains(needle, autoescape=True),
                func.lower(Device.type).contains(needle, autoescape=True),
            )
        )
    return query


def list_devices(
    *,
    session: Session,
    where: DeviceFilter = DeviceFilter(),
    limit: int = 100,
    offset: int = 0,
    max_limit: int = 1000,
) -> list[Device]:
    """Devices matching `where`, by name, one page of them."""
    limit, offset = validation.page(limit, offset, max_limit=max_limit)
    query = _filtered(select(Device), where).order_by(col(Device.name), col(Device.id))
    return list(session.exec(query.offset(offset).limit(limit)))


def every_device(*, session: Session) -> list[Device]:
    """Every device, unpaged (the rule evaluator knows them all at its start)."""
    return list(session.exec(select(Device)))


def count_devices(*, session: Session, where: DeviceFilter = DeviceFilter()) -> int:
    """How many devices match `where`."""
    return session.exec(_filtered(select(func.count()).select_from(Device), where)).one()


def device_types(*, session: Session) -> list[str]:
    """The distinct device types in use, sorted."""
    query = select(Device.type).distinct().order_by(col(Device.type))
    return list(session.exec(query))


def get_device(*, session: Session, device_id: uuid.UUID | str) -> Device | None:
    """The device with this id, or None."""
    return session.get(Device, parse_id(device_id))


def _existing(session: Session, device_id: uuid.UUID | str) -> Device:
    device = get_device(session=session, device_id=device_id)
    if device is None:
        raise NotFoundError("device", device_id)
    return device


def update_device(*, session: Session, device_id: uuid.UUID | str, data: DeviceUpdate) -> Device:
    """Change a device's name, type or metadata; every field is checked before any is set."""
    device = _existing(session, device_id)
    name = _name(data.name) if data.name is not None else device.name
    type_ = _type(data.type) if data.type is not None else device.type
    metadata = _metadata(data.metadata) if data.metadata is not None else device.metadata_
    device.name, device.type, device.metadata_ = name, type_, metadata
    device.updated_at = utcnow()
    session.add(device)
    session.flush()
    events.device_event(session, "UPDATED", device, device.updated_at.isoformat())
    return device


def set_status(
    *, session: Session, device_id: uuid.UUID, status: DeviceStatus, at: datetime
) -> bool:
    """Record a status the device reported (or its last will); True when it changed."""
    device = session.get(Device, device_id)
    if device is None:
        return False
    changed = device.status != status
    device.status = status
    if status == DeviceStatus.ONLINE:
        device.last_seen_at = at
    session.add(device)
    if changed:
        events.device_event(session, "STATUS_CHANGED", device, at.isoformat())
    return changed


def mark_silent_offline(*, session: Session, silent_since: datetime) -> list[uuid.UUID]:
    """Mark OFFLINE every ONLINE device not heard from since `silent_since`; their ids.

    One UPDATE ... RETURNING on the table, not through the ORM: no object is loaded or
    written per device (docs/performance.md, "Fleet"), so objects `session` already holds
    keep the status they had. A device whose last contact a concurrent writer moves past
    `silent_since` is re-checked by the database and left ONLINE. Each marked device gets
    its STATUS_CHANGED event.
    """
    table = Device.__table__
    statement = (
        update(table)
        .where(table.c.status == DeviceStatus.ONLINE, table.c.last_seen_at < silent_since)
        .values(status=DeviceStatus.OFFLINE)
        # each column under the name of its Device attribute: what an event carries
        # (events.device_payload) reads these rows as it reads devices
        .returning(*(attribute.expression.label(attribute.key) for attribute in _COLUMNS))
    )
    silent = session.connection().execute(statement).all()
    now = utcnow().isoformat()
    for device in silent:
        events.device_event(session, "STATUS_CHANGED", device, now)
    return [device.id for device in silent]


def delete_device(*, session: Session, device_id: uuid.UUID | str) -> uuid.UUID:
    """Remove a device (its telemetry, alerts and commands go with it)."""
    device = _existing(session, device_id)
    # revoked, not deleted: the broker must cut it off, and its certificate stays on the CRL
    credentials.revoke_credentials(session=session, device_id=device.id)
    events.device_event(session, "DELETED", device, utcnow().isoformat())
    session.delete(device)
    session.flush()
    return device.id
