"""The devices service over a fleet of thousands: the offline job in one statement."""

import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert
from sqlmodel import Session, select

from app.core import bus
from app.core.models import Device, DeviceStatus
from app.services import devices

FLEET = 5_000


class RecordingBus(bus.NullBus):
    """Keeps what commits publish, in order."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bus.Message]] = []

    def publish_many(self, items: Iterable[tuple[str, bus.Message]]) -> None:
        """Keep them."""
        self.items += list(items)


@pytest.fixture
def recorded() -> Iterator[RecordingBus]:
    """This process's bus for the test: a recording one."""
    recording = RecordingBus()
    bus.set_bus(recording)
    yield recording
    bus.set_bus(bus.NullBus())


def _fleet(session: Session, now: datetime) -> dict[str, set[uuid.UUID]]:
    """5,000 devices by one INSERT: silent and recent ONLINE ones, OFFLINE and UNKNOWN ones."""
    groups: dict[str, set[uuid.UUID]] = {"silent": set(), "recent": set(), "offline": set()}
    groups["unknown"] = set()
    rows = []
    for n in range(FLEET):
        group = ("silent", "silent", "recent", "offline", "unknown")[n % 5]
        device_id = uuid.uuid4()
        groups[group].add(device_id)
        status = {"offline": DeviceStatus.OFFLINE, "unknown": DeviceStatus.UNKNOWN}.get(
            group, DeviceStatus.ONLINE
        )
        seen = {
            "silent": now - timedelta(minutes=10),
            "recent": now - timedelta(seconds=30),
            "offline": now - timedelta(hours=2),  # silent too, but already OFFLINE
        }.get(group)
        rows.append(
            {
                "id": device_id,
                "name": f"fleet {n:05d}",
                "type": "t",
                "status": status,
                "metadata_": {},
                "last_seen_at": seen,
                "created_at": now,
                "updated_at": now,
            }
        )
    session.exec(insert(Device), params=rows)
    session.commit()
    return groups


def test_only_the_silent_online_devices_go_offline_each_with_its_events(
    session: Session, recorded: RecordingBus
) -> None:
    now = datetime.now(UTC)
    groups = _fleet(session, now)

    marked = devices.mark_silent_offline(session=session, silent_since=now - timedelta(minutes=5))
    session.commit()

    assert len(marked) == len(set(marked)) == 2_000
    assert set(marked) == groups["silent"]
    stored = dict(session.exec(select(Device.id, Device.status)).all())
    expected = {
        "silent": DeviceStatus.OFFLINE,
        "recent": DeviceStatus.ONLINE,
        "offline": DeviceStatus.OFFLINE,
        "unknown": DeviceStatus.UNKNOWN,
    }
    for group, ids in groups.items():
        assert {stored[i] for i in ids} == {expected[group]}, group
    changes = [m for c, m in recorded.items if c == bus.DEVICE_EVENTS]
    statuses = [m for c, m in recorded.items if c == bus.DEVICE_STATUS]
    assert len(changes) == len(statuses) == 2_000
    assert {m["type"] for m in changes} == {"STATUS_CHANGED"}
    assert {uuid.UUID(m["device"]["id"]) for m in changes} == groups["silent"]
    assert {m["device"]["status"] for m in changes} == {"OFFLINE"}
    assert all(m["device"]["name"].startswith("fleet ") for m in changes)
    assert {uuid.UUID(m["device_id"]) for m in statuses} == groups["silent"]
    assert {m["status"] for m in statuses} == {"OFFLINE"}

    # a second run finds nobody: the marked ones are OFFLINE now
    recorded.items.clear()
    again = devices.mark_silent_offline(session=session, silent_since=now - timedelta(minutes=5))
    session.commit()
    assert again == []
    assert recorded.items == []
