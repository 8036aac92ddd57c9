"""Ingest's commit step: one MQTT batch's points, statuses and command answers, in one
transaction, and which devices exist to receive them.

The ingest worker (`app/mqtt/ingest.py`) takes messages from the broker, validates them and
acknowledges them once `commit_batch` returned: everything about sessions and SQL is here.
"""

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from sqlmodel import Session, col, select

from app.core import db
from app.core.models import Device, DeviceStatus
from app.services import commands, device_types, devices, telemetry
from app.services.commands import Answer
from app.services.device_types import TypeOverride
from app.services.last_seen import LastSeen
from app.services.rollups import MarkedHours
from app.services.telemetry import Point

_UNKNOWN_DEVICE_TTL = 10.0  # seconds before an unknown id is looked up again
_RECHECK_SECONDS = 30.0  # how often the devices edited since the last look are read again
_RECHECK_OVERLAP = timedelta(minutes=2)  # each look reaches back over the previous one


class KnownDevices:
    """Which device ids exist and their types, kept for the life of the worker.

    An id is looked up the first time it comes (an unknown one again after
    _UNKNOWN_DEVICE_TTL: a device that published before it was registered is accepted
    within seconds). A known id stays known, however large the fleet, with no periodic
    expiry: every _RECHECK_SECONDS one query reads the devices edited since the previous
    look (`updated_at`, which every edit moves: a few rows), so a new type reaches the
    device's rate limit within that time. A deleted device is forgotten when a batch finds
    it gone (`forget`). No bus subscription is needed, so this holds in a separate
    `iotdeck ingest` process, with or without Redis. Most batches ask nothing of the
    database.
    """

    def __init__(self) -> None:
        self._known: dict[uuid.UUID, str] = {}
        self._unknown_until: dict[uuid.UUID, float] = {}
        self._recheck_at = time.monotonic() + _RECHECK_SECONDS
        self._edited_since = datetime.now(UTC) - _RECHECK_OVERLAP

    def filter_known(self, ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
        """The known devices among `ids`, with their types."""
        now = time.monotonic()
        recheck = now >= self._recheck_at
        ask = {i for i in ids - self._known.keys() if self._unknown_until.get(i, 0.0) <= now}
        if recheck or ask:
            with Session(db.get_engine()) as session:
                if recheck:
                    self._recheck(session)
                    self._recheck_at = now + _RECHECK_SECONDS
                if ask:
                    self._ask(session, ask, now)
        return {i: self._known[i] for i in ids if i in self._known}

    def _ask(self, session: Session, ask: set[uuid.UUID], now: float) -> None:
        query = select(Device.id, Device.type).where(col(Device.id).in_(ask))
        found = dict(session.exec(query).all())
        self._known.update(found)
        for device_id in found:
            self._unknown_until.pop(device_id, None)
        for missing in ask - found.keys():
            self._unknown_until[missing] = now + _UNKNOWN_DEVICE_TTL

    def _recheck(self, session: Session) -> None:
        """Read again the types of the known devices edited since the last look."""
        looked_at = datetime.now(UTC) - _RECHECK_OVERLAP
        query = select(Device.id, Device.type).where(col(Device.updated_at) >= self._edited_since)
        for device_id, device_type in session.exec(query).all():
            if device_id in self._known:
                self._known[device_id] = device_type
        self._edited_since = looked_at  # only once read: a failed look is made again

    def forget(self, ids: set[uuid.UUID]) -> None:
        """Deleted devices: asked about again if they publish."""
        for device_id in ids:
            self._known.pop(device_id, None)


def rate_overrides() -> dict[str, TypeOverride]:
    """Every device type's rate limit overrides, for ingest's rate limiter."""
    with Session(db.get_engine()) as session:
        return device_types.rate_overrides(session=session)


class Message(NamedTuple):
    """One validated message of a known device, in arrival order (one per message of the
    hot path: a tuple is the cheapest to make)."""

    device_id: uuid.UUID
    kind: str  # "telemetry" (content: its points), "status" or "ack" (an Answer)
    content: object
    arrival: datetime
    topic: str


@dataclass
class Committed:
    """What a committed batch changed."""

    points: list[Point] = field(default_factory=list)  # stored (their devices still exist)
    stored: int = 0  # rows new to storage (a redelivered point is not)
    status_changes: dict[uuid.UUID, DeviceStatus] = field(default_factory=dict)
    dropped_devices: set[uuid.UUID] = field(default_factory=set)  # deleted meanwhile
    refused_answers: list[tuple[Message, str]] = field(default_factory=list)


def commit_batch(
    *,
    messages: list[Message],
    rate_limited: set[uuid.UUID],
    arrival: datetime,
    last_seen: LastSeen,
    marked: MarkedHours,
) -> Committed:
    """Store one batch in one transaction: points, status changes, answers to commands and
    the devices refused for their rate limit (`rate_limited`); `arrival` (the batch's last)
    is its devices' last contact."""
    committed = Committed()
    if not messages and not rate_limited:
        return committed
    points: list[Point] = []
    last_telemetry: dict[uuid.UUID, int] = {}
    for index, message in enumerate(messages):
        if message.kind == "telemetry":
            points.extend(message.content)  # type: ignore[call-overload]
            last_telemetry[message.device_id] = index
    with Session(db.get_engine(), expire_on_commit=False) as session:
        written = telemetry.write_points(
            session=session, points=points, seen_at=arrival, last_seen=last_seen, marked=marked
        )
        for device_id in written.came_online:
            committed.status_changes[device_id] = DeviceStatus.ONLINE
        for index, message in enumerate(messages):
            if message.kind == "status":
                if last_telemetry.get(message.device_id, -1) > index:
                    continue  # telemetry after the status message says it is online
                status: DeviceStatus = message.content  # type: ignore[assignment]
                if devices.set_status(
                    session=session, device_id=message.device_id, status=status, at=arrival
                ):
                    committed.status_changes[message.device_id] = status
            elif message.kind == "ack":
                answer: Answer = message.content  # type: ignore[assignment]
                refused = commands.record_answer(
                    session=session, device_id=message.device_id, answer=answer, at=message.arrival
                )
                if refused is not None:
                    committed.refused_answers.append((message, refused))
        device_types.record_rate_limited(session=session, device_ids=rate_limited, at=arrival)
        session.commit()
    committed.dropped_devices = set(written.dropped_devices)
    committed.points = [p for p in points if p.device_id not in committed.dropped_devices]
    committed.stored = written.stored
    return committed
