"""Settings per device type (the ingest rate limit) and the record of refused devices.

A type's `rate_limit` (`limits` notation) and `rate_burst` override the environment's
IOTDECK_DEVICE_RATE_LIMIT and IOTDECK_DEVICE_RATE_BURST; None keeps the default. Ingest
reads every override at most every 30 s (`rate_overrides`), so a change applies within
that time.
"""

import uuid
from collections.abc import Collection
from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, col, select

from app.core.errors import ValidationError
from app.core.models import Device, DeviceTypeSettings, utcnow
from app.mqtt.rate_limit import TypeOverride, per_second
from app.services import validation

MAX_NOTATION = 50  # the column's width
MAX_BURST = 2**31 - 1  # GraphQL's Int


def _type(value: object) -> str:
    # as devices are registered: settings for a type no device can have are a mistake
    return validation.device_type(value, "type")


def _rate_limit(value: object) -> str | None:
    if value is None:
        return None
    notation = validation.text(value, "rateLimit", max_length=MAX_NOTATION)
    try:
        per_second(notation)
    except ValueError as exc:
        raise ValidationError("rateLimit", str(exc)) from None
    return notation


def _rate_burst(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BURST:
        raise ValidationError("rateBurst", f"must be a whole number from 1 to {MAX_BURST}")
    return value


def get_type_settings(*, session: Session, type: str) -> DeviceTypeSettings:
    """The settings of a device type; an unsaved one without overrides when none are stored."""
    device_type = _type(type)
    stored = session.get(DeviceTypeSettings, device_type)
    return stored if stored is not None else DeviceTypeSettings(type=device_type)


def set_type_settings(
    *, session: Session, type: str, rate_limit: str | None, rate_burst: int | None
) -> DeviceTypeSettings:
    """Store a type's overrides (None clears one); every field is checked before any is set."""
    device_type = _type(type)
    notation, burst = _rate_limit(rate_limit), _rate_burst(rate_burst)
    settings = session.get(DeviceTypeSettings, device_type) or DeviceTypeSettings(type=device_type)
    settings.rate_limit, settings.rate_burst = notation, burst
    settings.updated_at = utcnow()
    session.add(settings)
    session.flush()
    return settings


def rate_overrides(*, session: Session) -> dict[str, TypeOverride]:
    """Every type's (rate limit, burst) overrides, for ingest's rate limiter (one query)."""
    query = select(
        DeviceTypeSettings.type, DeviceTypeSettings.rate_limit, DeviceTypeSettings.rate_burst
    )
    return {kind: (notation, burst) for kind, notation, burst in session.exec(query)}


def record_rate_limited(
    *, session: Session, device_ids: Collection[uuid.UUID], at: datetime
) -> None:
    """Note on these devices that ingest refused a message of theirs for its rate limit."""
    if device_ids:
        session.exec(
            update(Device).where(col(Device.id).in_(device_ids)).values(rate_limited_at=at)
        )
