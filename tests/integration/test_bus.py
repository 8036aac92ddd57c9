"""The bus on Redis and in-process: delivery after commit, to every listening process."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine
from sqlmodel import Session

from app.core import bus, logs
from app.core.models import DeviceCreate, DeviceUpdate, utcnow
from app.services import devices, telemetry
from app.services.telemetry import Point

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["local", "redis"])
async def hub(request: pytest.FixtureRequest) -> AsyncIterator[bus.Hub]:
    """This process's hub behind a LocalBus or a RedisBus, set as the process bus."""
    hub = bus.Hub(asyncio.get_running_loop())
    transport = bus.LocalBus() if request.param == "local" else bus.RedisBus(REDIS_URL)
    await transport.start(hub)
    if isinstance(transport, bus.RedisBus):
        await _until(lambda: transport.healthy)
    bus.set_bus(transport, hub)
    yield hub
    bus.set_bus(bus.NullBus())
    await transport.stop()


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def _next(subscription: bus.Subscription) -> tuple[str, dict]:
    return await asyncio.wait_for(subscription.get(), 10)


async def test_device_events_go_out_after_commit_only(hub: bus.Hub, engine: Engine) -> None:
    events = hub.subscribe(lambda channel: channel == bus.DEVICE_EVENTS)
    with Session(engine) as session:
        created = devices.create_device(session=session, data=DeviceCreate(name="a", type="t"))
        session.rollback()  # never committed: never announced
        created = devices.create_device(session=session, data=DeviceCreate(name="b", type="t"))
        session.commit()
        devices.update_device(session=session, device_id=created.id, data=DeviceUpdate(name="c"))
        session.commit()
        devices.delete_device(session=session, device_id=created.id)
        session.commit()
    received = [await _next(events) for _ in range(3)]
    assert [(m["v"], m["type"], m["device"]["name"]) for _, m in received] == [
        (1, "CREATED", "b"),
        (1, "UPDATED", "c"),
        (1, "DELETED", "c"),
    ]
    assert received[0][1]["device"]["id"] == str(created.id)


async def test_points_are_pushed_per_device_with_status_changes(
    hub: bus.Hub, engine: Engine
) -> None:
    with Session(engine, expire_on_commit=False) as session:
        device = devices.create_device(session=session, data=DeviceCreate(name="d", type="t"))
        session.commit()
    channel = bus.telemetry_channel(device.id)
    points = hub.subscribe(lambda c: c == channel)
    statuses = hub.subscribe(lambda c: c == bus.DEVICE_STATUS)
    at = utcnow()
    with Session(engine) as session:
        telemetry.write_points(
            session=session,
            points=[Point(device.id, "t", at, 1.5, "°C"), Point(device.id, "h", at, 40.0)],
            seen_at=at,
        )
        session.commit()
    _, message = await _next(points)
    assert message["device_id"] == str(device.id)
    assert [(p["metric"], p["value"], p["unit"]) for p in message["points"]] == [
        ("t", 1.5, "°C"),
        ("h", 40.0, None),
    ]
    _, status = await _next(statuses)
    assert (status["device_id"], status["status"]) == (str(device.id), "ONLINE")


async def test_a_batch_of_many_devices_is_one_message_but_each_subscriber_gets_its_own(
    hub: bus.Hub, engine: Engine
) -> None:
    with Session(engine, expire_on_commit=False) as session:
        made = [
            devices.create_device(session=session, data=DeviceCreate(name=f"d{n}", type="t"))
            for n in range(3)
        ]
        session.commit()
    ids = [device.id for device in made]
    subscriptions = [hub.subscribe(channels=[bus.telemetry_channel(i)]) for i in ids]
    published = REGISTRY.get_sample_value("bus_published_total", {"kind": "telemetry"}) or 0.0
    at = utcnow()
    with logs.bind(correlation_id="batch-1"), Session(engine) as session:
        points = [Point(i, "t", at, float(n)) for n, i in enumerate(ids)]
        telemetry.write_points(session=session, points=points, seen_at=at)
        session.commit()
    for n, (device_id, subscription) in enumerate(zip(ids, subscriptions, strict=True)):
        assert await _next(subscription) == (
            bus.telemetry_channel(device_id),
            {
                "v": 1,
                "correlation_id": "batch-1",
                "device_id": str(device_id),
                "points": [{"metric": "t", "time": at.isoformat(), "value": n, "unit": None}],
            },
        )
    after = REGISTRY.get_sample_value("bus_published_total", {"kind": "telemetry"})
    assert after == published + 1  # one message on Redis (or in-process) for three devices


async def test_redis_reaches_every_listening_process() -> None:
    loop = asyncio.get_running_loop()
    hubs = [bus.Hub(loop), bus.Hub(loop)]
    listeners = [bus.RedisBus(REDIS_URL) for _ in hubs]
    for listener, hub in zip(listeners, hubs, strict=True):
        await listener.start(hub)
    publisher = bus.RedisBus(REDIS_URL)  # like a separate `iotdeck ingest`: publish only
    try:
        await _until(lambda: all(listener.healthy for listener in listeners))
        channel = bus.telemetry_channel(uuid.uuid4())
        subscriptions = [hub.subscribe(lambda c: c == channel) for hub in hubs]
        await asyncio.to_thread(publisher.publish_many, [(channel, {"points": []})])
        for subscription in subscriptions:
            assert await _next(subscription) == (channel, {"v": 1, "points": []})
    finally:
        for listener in [*listeners, publisher]:
            await listener.stop()
