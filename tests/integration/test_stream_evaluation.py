"""The rule evaluator reads the partitioned streams: nothing it must see is lost.

Its points come from the streams (app/core/streams.py), acknowledged once their alerts are
committed. What a dead evaluator read and never acknowledged is taken over by the next;
an append that failed (Redis away) comes back as a gap entry whose points are replayed
from storage; a Redis that lost its data makes the evaluator rebuild from storage. Each
test puts its points outside what an evaluator's start replays (older than its rules'
lookback), so only the path under test can find them.
"""

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine
from sqlmodel import Session

from app.core import bus
from app.core.models import utcnow
from app.core.streams import RedisStreams, Streams
from app.services import telemetry
from app.services.telemetry import Point
from app.workers import evaluation
from app.workers.leases import Leases, SoleOwner
from bench.services import RedisServer
from tests.integration.test_evaluation_burst import _alerts, _devices
from tests.waiting import wait_for, wait_for_async

HOT = 'rule "Hot"\n  when temperature > 30\n'
# a window: what a rebuild replays (a start's lookback) reaches before the last minute
WARM = 'rule "Warm"\n  when avg(temperature, 5m) > 30\n'
NEEDS_REDIS = pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")


def _write(engine: Engine, device_id: str, at: datetime, value: float) -> None:
    """Commit one point as ingest does: the bus publishes it (and appends it) after."""
    with Session(engine) as session:
        point = Point(uuid.UUID(device_id), "temperature", at, value)
        telemetry.write_points(session=session, points=[point], seen_at=at)
        session.commit()


def _opened(engine: Engine) -> list[tuple[str, datetime]]:
    return sorted((str(alert.device_id), alert.triggered_at) for alert in _alerts(engine))


async def _drained(streams: Streams) -> bool:
    lags = [await streams.lag(evaluation.GROUP, p) for p in range(streams.partitions)]
    return all(lag.undelivered == lag.pending == 0 for lag in lags)


async def _stopped(task: asyncio.Task) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_what_a_dead_evaluator_read_is_taken_over_and_alerts_once(
    engine: Engine, hub: bus.Hub
) -> None:
    (device,) = _devices(engine, 1, HOT)
    streams = bus.get_bus().streams
    assert streams is not None
    await streams.join(evaluation.GROUP, range(streams.partitions))  # as the dead one had
    old = utcnow().replace(microsecond=0) - timedelta(minutes=10)
    _write(engine, device, old, 35.0)
    await wait_for_async(lambda: _pending_or_not(streams))
    read = await streams.read(evaluation.GROUP, "dead", range(streams.partitions), 100, 1)
    # its point, and its device's coming online; then it died
    assert sorted(entry.message["kind"] for entry in read) == ["device", "telemetry"]

    evaluating = asyncio.create_task(
        evaluation.run_evaluator(hub, streams, SoleOwner(streams.partitions))
    )
    try:
        await wait_for(lambda: _opened(engine) == [(device, old)])
        await wait_for_async(lambda: _drained(streams))
    finally:
        await _stopped(evaluating)
    assert _opened(engine) == [(device, old)]


async def _pending_or_not(streams: Streams) -> bool:
    """Something appended and not read yet."""
    lags = [await streams.lag(evaluation.GROUP, p) for p in range(streams.partitions)]
    return any(lag.undelivered for lag in lags)


@pytest.fixture
async def redis_bus(tmp_path: Path, engine: Engine) -> AsyncIterator[tuple[bus.Hub, RedisServer]]:
    """A private Redis with an append-only file, and this process's bus on it."""
    del engine
    server = RedisServer(tmp_path / "redis", persistent=True).start()
    hub = bus.Hub(asyncio.get_running_loop())
    transport = bus.RedisBus(server.url, RedisStreams(server.url, 4))
    await transport.start(hub)
    bus.set_bus(transport, hub)
    yield hub, server
    bus.set_bus(bus.NullBus())
    await transport.stop()
    server.stop()


@NEEDS_REDIS
async def test_points_whose_append_failed_come_back_as_a_gap_and_alert(
    engine: Engine, redis_bus: tuple[bus.Hub, RedisServer]
) -> None:
    """Redis restarted mid-stream under partition leases: the points committed meanwhile
    are evaluated once, and the metrics show the gap held, then gone and the lag at 0."""
    hub, server = redis_bus
    hot, cold = _devices(engine, 2, HOT)
    transport = bus.get_bus()
    assert isinstance(transport, bus.RedisBus) and transport.streams is not None
    streams = transport.streams
    gaps = REGISTRY.get_sample_value("stream_gap_entries_total") or 0.0
    owner = Leases(server.url, evaluation.GROUP, streams.partitions)
    evaluating = asyncio.create_task(evaluation.run_evaluator(hub, streams, owner))
    try:
        await wait_for(lambda: REGISTRY.get_sample_value("evaluator_partitions") == 4)
        server.stop()  # Redis away; its file keeps the streams, the group and the leases
        old = utcnow().replace(microsecond=0) - timedelta(minutes=10)
        await asyncio.to_thread(_write, engine, hot, old, 35.0)  # committed, not appended
        assert REGISTRY.get_sample_value("stream_gaps_held") == 1
        server.start()
        await asyncio.to_thread(_write, engine, cold, utcnow(), 20.0)  # the gap goes first
        assert REGISTRY.get_sample_value("stream_gaps_held") == 0
        await wait_for(lambda: _opened(engine) == [(hot, old)], timeout=30)
        await wait_for_async(lambda: _drained(streams))
        await wait_for(lambda: _lag_reported(streams.partitions) == [0] * streams.partitions)
    finally:
        await _stopped(evaluating)
    assert (REGISTRY.get_sample_value("stream_gap_entries_total") or 0.0) == gaps + 1
    assert _opened(engine) == [(hot, old)]


def _lag_reported(partitions: int) -> list[float | None]:
    """Per partition, what /metrics says is undelivered plus pending."""
    found = []
    for partition in range(partitions):
        labels = {"partition": str(partition)}
        undelivered = REGISTRY.get_sample_value("stream_undelivered_entries", labels)
        pending = REGISTRY.get_sample_value("stream_pending_entries", labels)
        found.append(None if undelivered is None or pending is None else undelivered + pending)
    return found


@NEEDS_REDIS
async def test_a_redis_that_lost_its_data_makes_the_evaluator_rebuild_from_storage(
    engine: Engine, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "redis").start()  # no file: a restart loses everything
    hub = bus.Hub(asyncio.get_running_loop())
    transport = bus.RedisBus(server.url, RedisStreams(server.url, 4))
    await transport.start(hub)
    bus.set_bus(transport, hub)
    (device,) = _devices(engine, 1, WARM)
    assert transport.streams is not None
    evaluating = asyncio.create_task(
        evaluation.run_evaluator(hub, transport.streams, SoleOwner(transport.streams.partitions))
    )
    try:
        await wait_for(lambda: REGISTRY.get_sample_value("evaluator_leader") == 1)
        await wait_for_async(lambda: _drained(transport.streams))  # joined
        server.stop()
        now = utcnow().replace(microsecond=0)
        await asyncio.to_thread(_write, engine, device, now, 35.0)  # lost with the append
        server.start()  # empty: no stream, no group
        await wait_for(lambda: _opened(engine) == [(device, now)], timeout=30)
    finally:
        await _stopped(evaluating)
        bus.set_bus(bus.NullBus())
        await transport.stop()
        server.stop()
    assert _opened(engine) == [(device, now)]
