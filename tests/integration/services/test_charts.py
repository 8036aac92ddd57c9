"""Chart series and tiles, on SQLite and PostgreSQL: raw when sparse, exact buckets when dense."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session

from app.core.errors import ValidationError
from app.core.models import Device, DeviceCreate
from app.services import charts, devices, rollups, telemetry
from app.services.telemetry import Point

pytestmark = pytest.mark.all_backends

# "now" deliberately off every bucket boundary
NOW = datetime(2026, 11, 29, 10, 37, 12, 345678, tzinfo=UTC)


@pytest.fixture
def device(session: Session) -> Device:
    """One registered device."""
    created = devices.create_device(session=session, data=DeviceCreate(name="d", type="t"))
    session.commit()
    return created


def _write(session: Session, points: list[Point]) -> None:
    telemetry.write_points(session=session, points=points, seen_at=NOW)
    session.commit()


def _spread(device: Device, metric: str, start: datetime, end: datetime, count: int) -> list[Point]:
    step = (end - start) / count
    return [
        Point(device.id, metric, start + step * i, float((i * 37) % 101) - 50.0, "°C")
        for i in range(count)
    ]


@pytest.mark.parametrize("max_points", [30, 500, charts.MAX_POINTS, 10_000])
def test_bucket_width_never_gives_more_than_max_points(max_points: int) -> None:
    spans = [*charts.RANGES.values(), timedelta(days=365), timedelta(days=3650)]
    for span in spans:
        width = charts.bucket_width(span, max_points)
        assert width in charts.BUCKET_WIDTHS or width % charts.DAY == 0
        assert span.total_seconds() // width + 1 <= max_points  # buckets an unaligned range hits


def test_presets_use_the_expected_round_widths() -> None:
    widths = {name: charts.bucket_width(span) for name, span in charts.RANGES.items()}
    assert widths == {"15 min": 10, "1 h": 10, "24 h": 60, "7 d": 900, "30 d": 3600}


def test_every_range_is_bucketed_within_max_points_and_equals_aggregate(
    session: Session, device: Device
) -> None:
    max_points = 40
    for index, (name, span) in enumerate(charts.RANGES.items()):
        metric = f"m{index}"
        start = NOW - span
        _write(session, _spread(device, metric, start, NOW, 3 * max_points))
        data = charts.chart_data(
            session=session,
            device_id=device.id,
            metric_name=metric,
            start=start,
            end=NOW,
            max_points=max_points,
        )
        assert data.bucketed, name
        assert data.bucket_seconds in charts.BUCKET_WIDTHS
        assert 0 < len(data.aggregates) <= max_points, name
        assert data.unit == "°C" and data.samples == []
        expected = telemetry.aggregate(
            session=session,
            device_id=device.id,
            metric_name=metric,
            start=start,
            end=NOW,
            bucket_seconds=data.bucket_seconds,
        )
        assert data.aggregates == expected, name
        assert sum(a.count for a in data.aggregates) == 3 * max_points


def test_bucketed_values_equal_aggregate_after_rollups(session: Session, device: Device) -> None:
    start = NOW - charts.RANGES["30 d"]
    _write(session, _spread(device, "power", start, NOW, 2500))
    rollups.refresh(engine=session.get_bind())
    _write(session, _spread(device, "power", NOW - timedelta(hours=5), NOW, 50))  # pending hours
    data = charts.chart_data(
        session=session, device_id=device.id, metric_name="power", start=start, end=NOW
    )
    assert data.bucket_seconds == charts.HOUR
    assert len(data.aggregates) <= charts.MAX_POINTS
    expected = telemetry.aggregate(
        session=session,
        device_id=device.id,
        metric_name="power",
        start=start,
        end=NOW,
        bucket_seconds=charts.HOUR,
    )
    assert [(a.bucket, a.count, a.min, a.max) for a in data.aggregates] == [
        (a.bucket, a.count, a.min, a.max) for a in expected
    ]
    assert [a.avg for a in data.aggregates] == pytest.approx([a.avg for a in expected])
    assert sum(a.count for a in data.aggregates) == 2550


def test_sparse_data_is_raw_for_every_range(session: Session, device: Device) -> None:
    _write(session, _spread(device, "temperature", NOW - timedelta(minutes=10), NOW, 12))
    for name, span in charts.RANGES.items():
        data = charts.chart_data(
            session=session,
            device_id=device.id,
            metric_name="temperature",
            start=NOW - span,
            end=NOW,
        )
        assert not data.bucketed and data.bucket_seconds is None, name
        assert len(data.samples) == 12 and data.aggregates == []
        assert data.unit == "°C"
        assert [s.time for s in data.samples] == sorted(s.time for s in data.samples)


def test_exactly_max_points_stays_raw_one_more_is_bucketed(
    session: Session, device: Device
) -> None:
    start = NOW - timedelta(hours=1)
    _write(session, _spread(device, "x", start, NOW, 100))
    where = {"session": session, "device_id": device.id, "metric_name": "x"}
    assert not charts.chart_data(**where, start=start, end=NOW, max_points=100).bucketed
    assert charts.chart_data(**where, start=start, end=NOW, max_points=99).bucketed


def test_empty_range_is_raw_with_the_unit_of_the_newest_point(
    session: Session, device: Device
) -> None:
    _write(session, [Point(device.id, "humidity", NOW - timedelta(days=2), 40.0, "%")])
    data = charts.chart_data(
        session=session,
        device_id=device.id,
        metric_name="humidity",
        start=NOW - timedelta(hours=1),
        end=NOW,
    )
    assert (data.bucketed, data.samples, data.unit) == (False, [], "%")


def test_samples_after_returns_only_the_new_tail(session: Session, device: Device) -> None:
    points = _spread(device, "t", NOW - timedelta(minutes=5), NOW, 10)
    _write(session, points)
    tail = charts.samples_after(
        session=session, device_id=device.id, metric_name="t", after=points[6].time, end=NOW
    )
    assert [s.time for s in tail] == [p.time for p in points[7:]]
    assert (
        charts.samples_after(
            session=session, device_id=device.id, metric_name="t", after=NOW, end=NOW
        )
        == []
    )


def test_tiles_hold_the_newest_value_unit_and_time_per_metric(
    session: Session, device: Device
) -> None:
    assert charts.tiles(session=session, device_id=device.id) == []
    _write(
        session,
        [
            Point(device.id, "temperature", NOW - timedelta(minutes=2), 21.0, "°C"),
            Point(device.id, "temperature", NOW - timedelta(minutes=1), 21.5, "°C"),
            Point(device.id, "battery", NOW - timedelta(hours=3), 97.0, "%"),
            Point(device.id, "door_open", NOW, 1.0),
        ],
    )
    assert charts.tiles(session=session, device_id=device.id) == [
        charts.Tile("battery", 97.0, "%", NOW - timedelta(hours=3)),
        charts.Tile("door_open", 1.0, None, NOW),
        charts.Tile("temperature", 21.5, "°C", NOW - timedelta(minutes=1)),
    ]


def test_custom_range_parses_as_utc_and_names_the_bad_field() -> None:
    start, end = charts.parse_custom_range("2026-11-29T08:00", "2026-11-29T10:30")
    assert (start, end) == (
        datetime(2026, 11, 29, 8, tzinfo=UTC),
        datetime(2026, 11, 29, 10, 30, tzinfo=UTC),
    )
    cases = [
        (("2026-11-29T10:30", "2026-11-29T08:00"), "from", "must be before"),
        (("2026-11-29T10:30", "2026-11-29T10:30"), "from", "must be before"),
        (("", "2026-11-29T10:30"), "from", "is required"),
        (("2026-11-29T08:00", "tomorrow"), "to", "is not a date"),
    ]
    for (start_text, end_text), field, reason in cases:
        with pytest.raises(ValidationError) as caught:
            charts.parse_custom_range(start_text, end_text)
        assert caught.value.field == field and caught.value.reason.startswith(reason)
