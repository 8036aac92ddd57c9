"""What only TimescaleDB has: compressed chunks and a refresh that runs beside ingest."""

import random
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session, select

from app.core.models import DeviceCreate, TelemetryHourly
from app.services import devices, rollups, telemetry
from app.services.telemetry import Point
from bench.services import run_compression_policy
from tests.aggregates import aggregated, reference
from tests.waiting import wait_until

pytestmark = pytest.mark.parametrize("database_url", ["timescaledb"], indirect=True)


def _write(session: Session, points: list[Point]) -> int:
    stored = telemetry.write_points(session=session, points=points, seen_at=None).stored
    session.commit()
    return stored


def _compressed_chunks(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(
            text(
                "SELECT count(*) FROM timescaledb_information.chunks"
                " WHERE hypertable_name = 'device_telemetry' AND is_compressed"
            )
        ).scalar_one()


def test_compressed_chunks_take_late_points_once_and_stay_exact(
    session: Session, engine: Engine
) -> None:
    device_id = devices.create_device(session=session, data=DeviceCreate(name="d", type="t")).id
    session.commit()
    now = datetime.now(UTC)
    start = rollups.hour_of(now) - timedelta(days=20)
    rng = random.Random(20)
    points = [
        Point(device_id, "t", start + timedelta(minutes=10 * i, seconds=3), rng.uniform(-5, 5))
        for i in range(20 * 144)
    ]
    assert _write(session, points) == len(points)
    rollups.refresh(engine=engine)
    run_compression_policy(engine)  # IOTDECK_COMPRESS_AFTER's default: 7 days
    assert _compressed_chunks(engine) >= 12

    # a late point and a redelivered one, both in compressed chunks, in one batch
    late = Point(device_id, "t", start + timedelta(days=3, minutes=5), 99.0)
    redelivered = points[500]
    assert _write(session, [late, redelivered]) == 1
    assert _write(session, [late]) == 0
    everything = [*points, late]
    with engine.connect() as connection:
        copies = connection.execute(
            text("SELECT count(*) FROM device_telemetry WHERE time IN (:a, :b)"),
            {"a": late.time, "b": redelivered.time},
        ).scalar_one()
    assert copies == 2

    for stage in ("late hour read raw", "late hour refreshed"):
        for width in (900, 3600, 86400):
            expected = reference(everything, start, now, width)
            assert aggregated(session, device_id, "t", start, now, width=width) == expected, (
                stage,
                width,
            )
        rollups.refresh(engine=engine)
    series = telemetry.series(
        session=session,
        device_id=device_id,
        metric_name="t",
        start=start + timedelta(days=3),
        end=start + timedelta(days=3, hours=1),
    )
    assert [s.value for s in series] == [
        p.value
        for p in sorted(everything, key=lambda p: p.time)
        if start + timedelta(days=3) <= p.time < start + timedelta(days=3, hours=1)
    ]

    session.commit()  # end this test's read: dropping a chunk waits for its readers
    # retention cuts through compressed chunks: points and rollups go together, by the hour
    deleted = rollups.apply_retention(engine=engine, retention_days=10, now=now)
    cutoff = rollups.hour_of(now - timedelta(days=10))
    kept = [p for p in everything if p.time >= cutoff]
    assert deleted == len(everything) - len(kept)
    for width in (3600, 86400):
        assert aggregated(session, device_id, "t", start, now, width=width) == reference(
            kept, start, now, width
        )
    oldest = session.exec(select(TelemetryHourly.bucket).order_by(TelemetryHourly.bucket)).first()
    assert oldest == cutoff


def test_a_batch_committed_during_a_refresh_keeps_its_mark(
    session: Session, engine: Engine
) -> None:
    device_id = devices.create_device(session=session, data=DeviceCreate(name="d", type="t")).id
    session.commit()
    hour = rollups.hour_of(datetime.now(UTC)) - timedelta(hours=5)
    first = Point(device_id, "t", hour + timedelta(minutes=1), 1.0)
    during = Point(device_id, "t", hour + timedelta(minutes=2), 3.0)
    _write(session, [first])

    # an ingest batch into the same hour, holding its transaction open
    batch = Session(engine)
    telemetry.write_points(session=batch, points=[during], seen_at=None)
    cleared: list[int] = []
    refresher = threading.Thread(target=lambda: cleared.append(rollups.refresh(engine=engine)))
    refresher.start()

    def refresher_waits_for_the_batch() -> bool:
        with engine.connect() as connection:
            return bool(
                connection.execute(
                    text(
                        "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND query LIKE 'DELETE FROM telemetry_rollup_pending%'"
                    )
                ).first()
            )

    wait_until(refresher_waits_for_the_batch)  # refreshed without the batch's point
    batch.commit()
    batch.close()
    refresher.join(30)
    # the first round refreshed without the batch's point, so it kept the mark the batch had
    # touched; the next round refreshed the hour again, with it
    assert cleared == [1]
    row = session.exec(select(TelemetryHourly)).one()
    assert (row.bucket, row.sample_count, row.max_value) == (hour, 2, 3.0)
    assert aggregated(session, device_id, "t", hour, hour + timedelta(hours=1), width=3600) == [
        (hour, 2.0, 1.0, 3.0, 2)
    ]
