"""Aggregates equal the raw points however they arrive: a day backfilled at once, points
six hours late, on SQLite, PostgreSQL and TimescaleDB, against a Python reference.

On TimescaleDB the seed's refresh policy only ever materialised [now - 3 h, now - 1 h]:
a day inserted at once came back as 4 hourly buckets holding 47 of 288 points.
"""

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from app.core.models import DeviceCreate
from app.services import charts, devices, rollups, telemetry
from app.services.rule_testing import replay
from app.services.telemetry import Point
from tests.aggregates import aggregated, reference

pytestmark = pytest.mark.all_backends

WIDTHS = (900, 3600, 3 * 3600, 86400)


def _device(session: Session) -> uuid.UUID:
    made = devices.create_device(session=session, data=DeviceCreate(name="d", type="thermostat"))
    session.commit()
    return made.id


def _write(session: Session, points: list[Point]) -> None:
    telemetry.write_points(session=session, points=points, seen_at=datetime.now(UTC))
    session.commit()


def _check_every_bucket(
    session: Session, device_id: uuid.UUID, points: list[Point], start: datetime, end: datetime
) -> None:
    for width in WIDTHS:
        expected = reference(points, start, end, width)
        assert aggregated(session, device_id, "temperature", start, end, width=width) == expected, (
            width
        )


def test_a_day_backfilled_at_once_is_exact_in_every_bucket(
    session: Session, engine: Engine
) -> None:
    device_id = _device(session)
    now = datetime.now(UTC)
    rng = random.Random(288)
    # 288 points over the last 24 h (one every 5 min), uploaded in one batch; hot (40) for
    # the half hour before 20, 12 and 5 hours ago, all older than the seed's refresh window
    hot_hours = (20, 12, 5)
    minutes_ago = [5 * i + 1 for i in range(288)]

    def hot(ago: int) -> bool:
        return any(60 * h - 30 <= ago < 60 * h for h in hot_hours)

    points = [
        Point(device_id, "temperature", now - timedelta(minutes=ago), 40.0)
        if hot(ago)
        else Point(device_id, "temperature", now - timedelta(minutes=ago), rng.uniform(15, 30))
        for ago in minutes_ago
    ]
    _write(session, points)
    start, end = now - timedelta(hours=24), now
    _check_every_bucket(session, device_id, points, start, end)  # before any refresh
    assert rollups.refresh(engine=engine) > 0
    _check_every_bucket(session, device_id, points, start, end)  # after the rollup job
    assert rollups.refresh(engine=engine) == 0  # nothing left but the hour in progress

    # the device page's 24 h chart: every point, whichever way it is drawn
    chart = charts.chart_data(
        session=session, device_id=device_id, metric_name="temperature", start=start, end=end
    )
    assert len(chart.samples) == 288
    dense = charts.chart_data(
        session=session,
        device_id=device_id,
        metric_name="temperature",
        start=start,
        end=end,
        max_points=20,
    )
    assert sum(a.count for a in dense.aggregates) == 288

    # the rule tester sees the backfilled day too: one firing per hot half hour
    (replayed,) = replay(
        session=session,
        expression="temperature > 35",
        start=start,
        end=end,
        device_ids=[device_id],
    )
    first_hot = sorted(
        now - timedelta(minutes=max(ago for ago in minutes_ago if 60 * h - 30 <= ago < 60 * h))
        for h in hot_hours
    )
    assert [f.fired_at for f in replayed.firings] == first_hot


def test_points_six_hours_late_are_exact_before_and_after_the_refresh(
    session: Session, engine: Engine
) -> None:
    device_id = _device(session)
    now = datetime.now(UTC)
    rng = random.Random(6)
    start = rollups.hour_of(now) - timedelta(hours=12)
    # live: one point a minute for 12 h, the rollup job running as each hour ends
    live: list[Point] = []
    for hour in range(12):
        batch = [
            Point(device_id, "temperature", start + timedelta(hours=hour, minutes=m, seconds=7), v)
            for m, v in ((m, rng.uniform(0, 10)) for m in range(60))
        ]
        _write(session, batch)
        live += batch
        rollups.refresh(engine=engine, now=start + timedelta(hours=hour + 1))
    _check_every_bucket(session, device_id, live, start, now)
    # a device that was offline uploads what it buffered, six hours late, into hours that
    # the rollups already cover
    late = [
        Point(device_id, "temperature", start + timedelta(hours=h, minutes=m, seconds=31), v)
        for h in range(6)
        for m, v in ((m, rng.uniform(50, 60)) for m in range(0, 60, 2))
    ]
    _write(session, late)
    everything = live + late
    _check_every_bucket(session, device_id, everything, start, now)  # late hours read raw
    assert rollups.refresh(engine=engine) >= 6
    _check_every_bucket(session, device_id, everything, start, now)  # rolled up again
    redelivered = telemetry.write_points(session=session, points=late[:10], seen_at=now)
    session.commit()
    assert redelivered.stored == 0
    _check_every_bucket(session, device_id, everything, start, now)
