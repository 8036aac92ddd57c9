"""The bar widget over a large type reads a bounded number of devices, chosen sensibly."""

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert
from sqlmodel import Session

from app.core.models import Device, DeviceStatus
from app.dashboards import data
from app.services import telemetry
from app.services.telemetry import Point

NOW = datetime.now(UTC).replace(microsecond=0)
BOUND = 10


def _devices(session: Session, count: int) -> list[uuid.UUID]:
    """`count` thermostats "d00".."d<count-1>", each heard from one minute after the last,
    each with a temperature that grows with its number."""
    ids = [uuid.uuid4() for _ in range(count)]
    rows = [
        {
            "id": device_id,
            "name": f"d{n:02d}",
            "type": "thermostat",
            "status": DeviceStatus.ONLINE,
            "metadata_": {},
            "last_seen_at": NOW - timedelta(minutes=count - n),
            "created_at": NOW,
            "updated_at": NOW,
        }
        for n, device_id in enumerate(ids)
    ]
    session.exec(insert(Device), params=rows)
    points = [Point(device_id, "temperature", NOW, float(n)) for n, device_id in enumerate(ids)]
    telemetry.write_points(session=session, points=points, seen_at=None)
    session.commit()
    return ids


def test_by_value_the_bars_rank_the_devices_heard_from_most_recently(session: Session) -> None:
    _devices(session, 3 * BOUND)
    ask = {"session": session, "device_type": "thermostat", "metric": "temperature"}

    rows = data.bar(**ask, sort="asc", limit=100, max_devices=BOUND)

    # the BOUND most recently seen are the last BOUND by number: d20..d29
    assert [row.name for row in rows] == [f"d{n}" for n in range(2 * BOUND, 3 * BOUND)]
    top = data.bar(**ask, sort="desc", limit=3, max_devices=BOUND)
    assert [row.value for row in top] == [29.0, 28.0, 27.0]


def test_by_name_the_bars_are_the_first_names(session: Session) -> None:
    _devices(session, 3 * BOUND)
    ask = {"session": session, "device_type": "thermostat", "metric": "temperature"}

    rows = data.bar(**ask, sort="name", limit=100, max_devices=BOUND)

    assert [row.name for row in rows] == [f"d{n:02d}" for n in range(BOUND)]


def test_the_default_bound_keeps_every_device_of_a_small_type(session: Session) -> None:
    _devices(session, 3 * BOUND)
    rows = data.bar(
        session=session, device_type="thermostat", metric="temperature", sort="desc", limit=100
    )
    assert len(rows) == 3 * BOUND
    assert data.MAX_TYPE_DEVICES >= 1000
