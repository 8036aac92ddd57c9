"""What an ingest batch writes, whatever the fleet's size: status at once, last contact
every few seconds, one rollup mark per open hour, one bus message (issue 15)."""

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import orjson
import paho.mqtt.client as mqtt
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, event
from sqlmodel import Session, func, select

from app.core import bus
from app.core.models import (
    DeviceCreate,
    DeviceStatus,
    TelemetryPoint,
    TelemetryRollupPending,
    as_utc,
)
from app.mqtt.ingest import IngestWorker
from app.services import devices
from app.services.rollups import MARK_AGAIN_BEFORE_END, hour_of
from app.workers import jobs
from bench.services import IotdeckBroker
from tests.integration.conftest import Publish
from tests.integration.device_updates import log_device_updates, stored_status
from tests.waiting import wait_until

FLUSH = 1.0  # IOTDECK_LAST_SEEN_FLUSH of the workers that flush during a test


@pytest.fixture
def fleet(engine: Engine) -> list[uuid.UUID]:
    """Three registered devices."""
    with Session(engine) as session:
        made = [
            devices.create_device(session=session, data=DeviceCreate(name=f"d{n}", type="t"))
            for n in range(3)
        ]
        session.commit()
        return [device.id for device in made]


@contextmanager
def _worker(mosquitto: IotdeckBroker, **options: object) -> Iterator[IngestWorker]:
    worker = IngestWorker(
        mosquitto.service_address(),
        client_id=f"ingest-{uuid.uuid4().hex[:8]}",
        **{"batch_ms": 20, **options},
    )
    worker.start()
    assert worker.wait_connected(10)
    try:
        yield worker
    finally:
        worker.stop()


def _points(engine: Engine, device_id: uuid.UUID) -> int:
    with Session(engine) as session:
        query = select(func.count()).where(TelemetryPoint.device_id == device_id)
        return session.exec(query).one()


def _telemetry_published() -> float:
    return REGISTRY.get_sample_value("bus_published_total", {"kind": "telemetry"}) or 0.0


def _in_an_open_hour() -> datetime:
    """Now, or the next hour's first second when this one ends too soon for the test."""
    now = datetime.now(UTC).replace(microsecond=0)
    hour_end = hour_of(now) + timedelta(hours=1)
    if hour_end - now < MARK_AGAIN_BEFORE_END + timedelta(minutes=2):
        return hour_end + timedelta(seconds=1)  # a few minutes ahead: still accepted
    return now


def test_status_is_written_at_once_and_last_contact_within_the_flush_interval(
    engine: Engine, mosquitto: IotdeckBroker, publish: Publish, fleet: list[uuid.UUID]
) -> None:
    device_id = fleet[0]
    topic = f"devices/{device_id}/telemetry"
    updates = log_device_updates(engine)
    with _worker(mosquitto, last_seen_flush=FLUSH):
        publish(topic, {"t": 1})
        wait_until(lambda: _points(engine, device_id) == 1)
        # ONLINE in the transaction that stored the point, with its contact
        status, first = stored_status(engine, device_id)
        assert status == DeviceStatus.ONLINE and first is not None
        assert updates(device_id) == 1
        before = datetime.now(UTC)
        publish(topic, {"t": 2})
        wait_until(lambda: _points(engine, device_id) == 2)
        stored_at = time.monotonic()
        wait_until(
            lambda: (stored_status(engine, device_id)[1] or first) >= before, timeout=FLUSH + 3
        )
        assert time.monotonic() - stored_at <= FLUSH + 3
        assert updates(device_id) == 2  # the flush: one more row version, not one per batch


def test_online_devices_get_no_row_update_between_flushes_and_one_at_shutdown(
    engine: Engine, mosquitto: IotdeckBroker, publish: Publish, fleet: list[uuid.UUID]
) -> None:
    updates = log_device_updates(engine)
    worker = IngestWorker(
        mosquitto.service_address(),
        client_id=f"ingest-{uuid.uuid4().hex[:8]}",
        batch_ms=20,
        last_seen_flush=3600,  # no flush while the test runs, but the one at shutdown
    )
    worker.start()
    try:
        assert worker.wait_connected(10)
        for device_id in fleet:
            publish(f"devices/{device_id}/telemetry", {"t": 0})
        wait_until(lambda: all(_points(engine, d) == 1 for d in fleet))
        assert [updates(d) for d in fleet] == [1, 1, 1]  # UNKNOWN -> ONLINE
        before = datetime.now(UTC)
        for n in range(1, 6):
            for device_id in fleet:
                publish(f"devices/{device_id}/telemetry", {"t": n})
        wait_until(lambda: all(_points(engine, d) == 6 for d in fleet))
        # fifteen batches of ONLINE devices: not one row written
        assert [updates(d) for d in fleet] == [1, 1, 1]
        assert all(stored_status(engine, d)[1] < before for d in fleet)
    finally:
        assert worker.stop() == 0
    # stopping wrote each device's last contact, once
    assert [updates(d) for d in fleet] == [2, 2, 2]
    assert all(stored_status(engine, d)[1] >= before for d in fleet)


async def test_a_device_marked_offline_by_the_job_comes_back_online_on_its_next_message(
    hub: bus.Hub, engine: Engine, mosquitto: IotdeckBroker, publish: Publish, fleet: list[uuid.UUID]
) -> None:
    device_id = fleet[0]
    topic = f"devices/{device_id}/telemetry"
    statuses = hub.subscribe(channels=[bus.DEVICE_STATUS])

    async def next_status() -> str:
        _, message = await asyncio.wait_for(statuses.get(), 10)
        assert message["device_id"] == str(device_id)
        return message["status"]

    with _worker(mosquitto):
        await asyncio.to_thread(publish, topic, {"t": 1})
        assert await next_status() == "ONLINE"
        assert await asyncio.to_thread(jobs.mark_silent_devices, 0) == [device_id]
        assert await next_status() == "OFFLINE"
        await asyncio.to_thread(publish, topic, {"t": 2})
        assert await next_status() == "ONLINE"
        assert stored_status(engine, device_id)[0] == DeviceStatus.ONLINE


def _mark_statements(engine: Engine) -> list[str]:
    """The statements that write rollup marks from now on, as the database gets them."""
    seen: list[str] = []

    def record(_c: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().startswith("INSERT") and "telemetry_rollup_pending" in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    return seen


def test_an_open_hour_is_marked_once_and_an_hour_that_is_over_with_every_batch(
    engine: Engine, mosquitto: IotdeckBroker, publish: Publish, fleet: list[uuid.UUID]
) -> None:
    device_id = fleet[0]
    topic = f"devices/{device_id}/telemetry"
    marks = _mark_statements(engine)
    stamp = _in_an_open_hour()
    with _worker(mosquitto):
        for n in range(10):  # ten batches: each publish waits for the commit
            publish(topic, {"t": n, "ts": (stamp + timedelta(seconds=n)).isoformat()})
        wait_until(lambda: _points(engine, device_id) == 10)
        assert len(marks) == 1
        publish(topic, {"h": 1, "ts": stamp.isoformat()})  # a new metric: its own mark
        wait_until(lambda: _points(engine, device_id) == 11)
        assert len(marks) == 2
        # late points, in an hour that is over: the rollup job may take the mark any
        # time, so every batch writes it again
        late = hour_of(stamp) - timedelta(minutes=30)
        for n in range(2):
            publish(topic, {"t": n, "ts": (late + timedelta(seconds=n)).isoformat()})
        wait_until(lambda: _points(engine, device_id) == 13)
        assert len(marks) == 4
    with Session(engine) as session:
        query = select(TelemetryRollupPending.metric_name, TelemetryRollupPending.bucket)
        pending = [(metric, as_utc(bucket)) for metric, bucket in session.exec(query)]
    assert sorted(pending) == [("h", hour_of(stamp)), ("t", hour_of(late)), ("t", hour_of(stamp))]


async def test_one_bus_message_per_batch_and_each_subscriber_gets_its_device_s_points(
    hub: bus.Hub,
    mosquitto: IotdeckBroker,
    device_clients: Callable[[uuid.UUID], mqtt.Client],
    fleet: list[uuid.UUID],
) -> None:
    subscriptions = {d: hub.subscribe(channels=[bus.telemetry_channel(d)]) for d in fleet}
    stamp = datetime.now(UTC).replace(microsecond=0)
    clients = {d: device_clients(d) for d in fleet}
    before = _telemetry_published()
    with _worker(mosquitto, batch_ms=500):  # the three messages land in one batch
        sent = [
            clients[d].publish(
                f"devices/{d}/telemetry", orjson.dumps({"t": n, "ts": stamp.isoformat()}), qos=1
            )
            for n, d in enumerate(fleet)
        ]
        for info in sent:
            await asyncio.to_thread(info.wait_for_publish, 5)
        received = [await asyncio.wait_for(subscriptions[d].get(), 10) for d in fleet]
    correlations = {message.pop("correlation_id") for _, message in received}
    assert len(correlations) == 1 and None not in correlations  # one batch, named
    assert received == [
        (
            bus.telemetry_channel(d),
            {
                "v": 1,
                "device_id": str(d),
                "points": [{"metric": "t", "time": stamp.isoformat(), "value": n, "unit": None}],
            },
        )
        for n, d in enumerate(fleet)
    ]
    assert _telemetry_published() - before == 1  # one message on the bus for three devices
