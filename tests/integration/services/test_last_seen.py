"""Last contact kept in memory and written every few seconds; status changes at once."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from app.core import db
from app.core.models import DeviceCreate, DeviceStatus
from app.services import devices, telemetry
from app.services.last_seen import LastSeen
from app.services.rollups import MarkedHours, hour_of
from app.services.telemetry import Point
from app.workers import jobs
from tests.integration.device_updates import log_device_updates, stored_status

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _device(session: Session) -> uuid.UUID:
    made = devices.create_device(session=session, data=DeviceCreate(name="d", type="t"))
    session.commit()
    return made.id


def _write(session: Session, device_id: uuid.UUID, at: datetime, **options: object) -> None:
    point = Point(device_id, "t", at, 1.0)
    telemetry.write_points(session=session, points=[point], seen_at=at, **options)
    session.commit()


def test_history_import_touches_no_device(session: Session, engine: Engine) -> None:
    device_id = _device(session)
    updates = log_device_updates(engine)
    telemetry.write_points(session=session, points=[Point(device_id, "t", T0, 1.0)], seen_at=None)
    session.commit()
    assert updates(device_id) == 0
    assert stored_status(engine, device_id) == (DeviceStatus.UNKNOWN, None)


def test_online_devices_are_written_once_per_flush_not_once_per_batch(
    session: Session, engine: Engine
) -> None:
    device_id = _device(session)
    updates = log_device_updates(engine)
    clock = Clock()
    last_seen = LastSeen(5.0, clock=clock)
    _write(session, device_id, T0, last_seen=last_seen)
    # coming ONLINE is written at once, with the contact
    assert stored_status(engine, device_id) == (DeviceStatus.ONLINE, T0)
    assert updates(device_id) == 1
    for second in range(1, 6):
        _write(session, device_id, T0 + timedelta(seconds=second), last_seen=last_seen)
    assert updates(device_id) == 1  # five batches of an ONLINE device: no row written
    assert last_seen.flush(engine) == 0  # not due yet
    clock.now += 5.0
    assert last_seen.flush(engine) == 1
    assert stored_status(engine, device_id) == (DeviceStatus.ONLINE, T0 + timedelta(seconds=5))
    assert updates(device_id) == 2
    assert last_seen.flush(engine, force=True) == 0  # nothing new: nothing written


def test_a_flush_only_moves_last_contact_forward(session: Session, engine: Engine) -> None:
    device_id = _device(session)
    _write(session, device_id, T0 + timedelta(seconds=10))  # ONLINE, seen at T0 + 10 s
    slower = LastSeen(5.0)  # another worker, which saw the device earlier
    slower.saw([device_id], T0)
    assert slower.flush(engine, force=True) == 0
    assert stored_status(engine, device_id) == (DeviceStatus.ONLINE, T0 + timedelta(seconds=10))


def test_contacts_survive_a_failed_flush(session: Session, engine: Engine) -> None:
    device_id = _device(session)
    _write(session, device_id, T0)
    last_seen = LastSeen(5.0)
    last_seen.saw([device_id], T0 + timedelta(seconds=3))
    away = db.make_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere?connect_timeout=2")
    with pytest.raises(Exception, match="refused"):
        last_seen.flush(away, force=True)
    assert last_seen.flush(engine, force=True) == 1
    assert stored_status(engine, device_id)[1] == T0 + timedelta(seconds=3)


def test_a_rolled_back_batch_leaves_nothing_in_memory(session: Session, engine: Engine) -> None:
    device_id = _device(session)
    last_seen, marked = LastSeen(5.0), MarkedHours()
    point = Point(device_id, "t", datetime.now(UTC), 1.0)
    telemetry.write_points(
        session=session, points=[point], seen_at=point.time, last_seen=last_seen, marked=marked
    )
    session.rollback()
    assert last_seen.flush(engine, force=True) == 0
    mark = (device_id, "t", hour_of(point.time))
    assert marked.unmarked({mark}) == {mark}  # the retried batch marks its hour again


def test_the_offline_job_allows_for_the_flush_lag(session: Session, engine: Engine) -> None:
    device_id = _device(session)
    _write(session, device_id, datetime.now(UTC) - timedelta(seconds=302))
    assert jobs.mark_silent_devices(300, last_seen_lag=5.0) == []  # it may have spoken since
    assert stored_status(engine, device_id)[0] == DeviceStatus.ONLINE
    assert jobs.mark_silent_devices(300) == [device_id]
    assert stored_status(engine, device_id)[0] == DeviceStatus.OFFLINE
