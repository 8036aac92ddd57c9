"""Telemetry storage and queries against a Python reference, on SQLite and PostgreSQL."""

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, select

from app.core.errors import ValidationError
from app.core.models import Device, DeviceCreate, DeviceStatus, TelemetryHourly
from app.services import devices, rollups, telemetry
from app.services.telemetry import Point
from tests.aggregates import aggregated, reference

pytestmark = pytest.mark.all_backends

T0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)


@pytest.fixture
def device(session: Session) -> Device:
    """One registered device."""
    created = devices.create_device(session=session, data=DeviceCreate(name="d", type="t"))
    session.commit()
    return created


def _write(session: Session, points: list[Point]) -> telemetry.WriteResult:
    result = telemetry.write_points(session=session, points=points, seen_at=datetime.now(UTC))
    session.commit()
    return result


def test_duplicates_are_stored_once_and_devices_marked_online(
    session: Session, device: Device
) -> None:
    points = [
        Point(device.id, "temperature", T0 + timedelta(seconds=i), 20.0 + i, "°C") for i in range(5)
    ]
    first = _write(session, points)
    again = _write(session, [*points, points[0]])
    assert (first.stored, again.stored) == (5, 0)
    assert first.came_online == {device.id} and again.came_online == frozenset()
    session.refresh(device)
    assert device.status == DeviceStatus.ONLINE and device.last_seen_at is not None
    stored = telemetry.series(
        session=session,
        device_id=device.id,
        metric_name="temperature",
        start=T0,
        end=T0 + timedelta(minutes=1),
    )
    assert [(s.time, s.value, s.unit) for s in stored] == [(p.time, p.value, "°C") for p in points]


def test_points_of_a_deleted_device_are_dropped_not_failed(
    session: Session, device: Device
) -> None:
    ghost = uuid.uuid4()
    result = _write(session, [Point(ghost, "x", T0, 1.0), Point(device.id, "x", T0, 2.0)])
    assert result.stored == 1 and result.dropped_devices == {ghost}


def test_latest_and_metric_names(session: Session, device: Device) -> None:
    _write(
        session,
        [
            Point(device.id, "humidity", T0, 40.0, "%"),
            Point(device.id, "temperature", T0, 20.0),
            Point(device.id, "temperature", T0 + timedelta(minutes=5), 21.5),
            Point(device.id, "battery", T0 - timedelta(days=1), 99.0),
        ],
    )
    assert telemetry.metric_names(session=session, device_id=device.id) == [
        "battery",
        "humidity",
        "temperature",
    ]
    latest = telemetry.latest(session=session, device_id=device.id, metric_name="temperature")
    assert latest is not None and (latest.time, latest.value) == (T0 + timedelta(minutes=5), 21.5)
    assert telemetry.latest(session=session, device_id=device.id, metric_name="nope") is None
    values = telemetry.latest_values(session=session, device_id=device.id)
    assert {name: s.value for name, s in values.items()} == {
        "battery": 99.0,
        "humidity": 40.0,
        "temperature": 21.5,
    }


def test_series_limit_and_range_checks(session: Session, device: Device) -> None:
    _write(session, [Point(device.id, "m", T0 + timedelta(seconds=i), float(i)) for i in range(10)])
    first3 = telemetry.series(
        session=session,
        device_id=device.id,
        metric_name="m",
        start=T0,
        end=T0 + timedelta(hours=1),
        limit=3,
    )
    assert [s.value for s in first3] == [0.0, 1.0, 2.0]
    with pytest.raises(ValidationError) as caught:
        telemetry.series(session=session, device_id=device.id, metric_name="m", start=T0, end=T0)
    assert caught.value.field == "from"


@pytest.mark.parametrize("width", [60, 900, 3600, 86400])
def test_aggregates_match_a_python_reference_with_late_points(
    session: Session, device: Device, width: int
) -> None:
    rng = random.Random(width)
    span = int(timedelta(days=3).total_seconds())

    def batch(n: int) -> list[Point]:
        return [
            Point(
                device.id,
                "t",
                T0 + timedelta(seconds=rng.randrange(span), microseconds=rng.randrange(10**6)),
                rng.uniform(-50, 50),
            )
            for _ in range(n)
        ]

    on_time = batch(1500)
    _write(session, on_time)
    assert rollups.refresh(engine=session.get_bind()) > 0
    late = batch(300)  # lands in hours that already have rollups
    _write(session, late)
    everything = on_time + late
    start = T0 + timedelta(minutes=17, seconds=3)  # not on an hour boundary
    end = T0 + timedelta(days=2, hours=5, minutes=41)
    expected = reference(everything, start, end, width)

    def check() -> None:
        assert aggregated(session, device.id, "t", start, end, width=width) == expected

    check()  # late hours still pending: read from raw points
    rollups.refresh(engine=session.get_bind())
    check()  # every whole hour from the rollups


def test_rollup_table_equals_raw_hours(session: Session, device: Device) -> None:
    points = [
        Point(device.id, "t", T0 + timedelta(minutes=7 * i), float(i % 13)) for i in range(500)
    ]
    _write(session, points)
    rollups.refresh(engine=session.get_bind())
    assert rollups.refresh(engine=session.get_bind()) == 0
    rows = session.exec(select(TelemetryHourly).order_by(TelemetryHourly.bucket)).all()
    expected = reference(points, T0, T0 + timedelta(days=30), 3600)
    assert [
        (r.bucket, r.avg_value, r.min_value, r.max_value, r.sample_count) for r in rows
    ] == expected


def test_aggregate_bounds(session: Session, device: Device) -> None:
    with pytest.raises(ValidationError) as caught:
        telemetry.aggregate(
            session=session,
            device_id=device.id,
            metric_name="t",
            start=T0,
            end=T0 + timedelta(days=30),
            bucket_seconds=60,
        )
    assert caught.value.field == "interval"


def test_retention_forgets_whole_hours_of_points_and_rollups(
    session: Session, device: Device
) -> None:
    now = T0 + timedelta(minutes=20)
    cutoff = T0 - timedelta(days=90)  # the hour `now - 90 days` falls in starts here
    points = [
        Point(device.id, "t", cutoff - timedelta(days=10), 1.0),
        Point(device.id, "t", cutoff - timedelta(minutes=1), 2.0),
        Point(device.id, "t", cutoff, 3.0),
        Point(device.id, "t", cutoff + timedelta(minutes=59), 4.0),
        Point(device.id, "t", T0 - timedelta(hours=2), 5.0),
    ]
    _write(session, points)
    rollups.refresh(engine=session.get_bind(), now=now)
    deleted = rollups.apply_retention(engine=session.get_bind(), retention_days=90, now=now)
    assert deleted == 2
    kept = points[2:]
    start, end = cutoff - timedelta(days=30), now
    stored = telemetry.series(
        session=session, device_id=device.id, metric_name="t", start=start, end=end
    )
    assert [s.value for s in stored] == [3.0, 4.0, 5.0]
    hourly = aggregated(session, device.id, "t", start, end, width=3600)
    assert hourly == reference(kept, start, end, 3600)
    rows = session.exec(select(TelemetryHourly.bucket).order_by(TelemetryHourly.bucket)).all()
    assert rows == [cutoff, T0 - timedelta(hours=2)]
