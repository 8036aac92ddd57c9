"""Live widget values through a real in-process bus: one subscription per device however many
watchers, one primed evaluator per (device, expression), and the fleet's points per second."""

import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from app.core import bus
from app.core.errors import ValidationError
from app.core.models import Device, DeviceCreate, utcnow
from app.dashboards import live
from app.dashboards.live import LiveValues
from app.services import devices, telemetry
from app.services.telemetry import Point
from tests.waiting import wait_for


@pytest.fixture
async def values(hub: bus.Hub) -> AsyncIterator[LiveValues]:
    """The live values of this test, closed after it."""
    made = LiveValues(hub)
    yield made
    made.close()


@pytest.fixture
def device(engine: Engine) -> Device:
    with Session(engine, expire_on_commit=False) as session:
        created = devices.create_device(session=session, data=DeviceCreate(name="d", type="t"))
        session.commit()
    return created


def _write(engine: Engine, device: Device, at: datetime, **metrics: float) -> None:
    """Commit one message's points; the commit publishes them on the bus."""
    points = [Point(device.id, name, at, value) for name, value in metrics.items()]
    with Session(engine) as session:
        telemetry.write_points(session=session, points=points, seen_at=at)
        session.commit()


async def test_watchers_of_a_device_share_one_subscription_and_each_gets_its_metric(
    engine: Engine, hub: bus.Hub, values: LiveValues, device: Device
) -> None:
    first: list[tuple[datetime, float]] = []
    second: list[tuple[datetime, float]] = []
    other: list[tuple[datetime, float]] = []
    unwatch = [
        values.watch(str(device.id), "temperature", lambda t, v: first.append((t, v))),
        values.watch(str(device.id).upper(), "temperature", lambda t, v: second.append((t, v))),
        values.watch(str(device.id), "humidity", lambda t, v: other.append((t, v))),
    ]
    assert (values.stats()["devices"], values.stats()["watchers"], hub.subscribers) == (1, 3, 1)
    at = utcnow()
    _write(engine, device, at, temperature=21.5, humidity=40.0, pressure=1.0)
    await wait_for(lambda: first and second and other)
    assert first == second == [(at, 21.5)]
    assert other == [(at, 40.0)]
    for stop in unwatch:
        stop()
        stop()  # twice is harmless
    assert values.stats() == {**values.stats(), "devices": 0, "watchers": 0}
    assert hub.subscribers == 0


async def test_a_failing_watcher_is_logged_and_the_others_still_get_the_point(
    engine: Engine, values: LiveValues, device: Device, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[float] = []

    def broken(at: datetime, value: float) -> None:
        raise RuntimeError("widget gone")

    values.watch(str(device.id), "temperature", broken)
    values.watch(str(device.id), "temperature", lambda t, v: got.append(v))
    with caplog.at_level(logging.ERROR, logger=live.__name__):
        _write(engine, device, utcnow(), temperature=3.0)
        await wait_for(lambda: got)
    assert got == [3.0]
    assert "a watcher failed" in caplog.text


async def test_an_expression_has_one_evaluator_primed_once_then_fed_live(
    engine: Engine, hub: bus.Hub, values: LiveValues, device: Device
) -> None:
    now = utcnow()
    _write(engine, device, now - timedelta(minutes=2), temperature=10.0)
    _write(engine, device, now - timedelta(hours=2), setpoint=4.0)
    text = "avg(temperature, 5m) - setpoint"
    seen: dict[str, list[float | None]] = {"a": [], "b": [], "c": []}
    stop_a = values.watch_expression(str(device.id), text, lambda t, v: seen["a"].append(v))
    stop_b = values.watch_expression(str(device.id), text, lambda t, v: seen["b"].append(v))
    await wait_for(lambda: seen["a"] and seen["b"])
    assert seen["a"] == seen["b"] == [6.0]
    stats = values.stats()
    assert (stats["evaluators"], stats["expression_watchers"], stats["primings"]) == (1, 2, 1)
    assert (stats["devices"], hub.subscribers) == (1, 1)  # its metrics share one subscription

    _write(engine, device, utcnow(), temperature=20.0)
    await wait_for(lambda: len(seen["a"]) == 2 and len(seen["b"]) == 2)
    assert seen["a"][-1] == seen["b"][-1] == 11.0  # avg(10, 20) - 4

    # a later widget gets the current value at once, from the same evaluator
    stop_c = values.watch_expression(str(device.id), text, lambda t, v: seen["c"].append(v))
    await wait_for(lambda: seen["c"])
    assert seen["c"] == [11.0]
    assert values.stats()["primings"] == 1
    for stop in (stop_a, stop_b, stop_c):
        stop()
    assert values.stats()["evaluators"] == values.stats()["devices"] == hub.subscribers == 0


async def test_an_expression_is_unknown_until_its_metrics_have_points(
    engine: Engine, values: LiveValues, device: Device
) -> None:
    seen: list[float | None] = []
    values.watch_expression(str(device.id), "max(power, 1m) * 2", lambda t, v: seen.append(v))
    await wait_for(lambda: seen)
    assert seen == [None]
    _write(engine, device, utcnow(), power=2.5)
    await wait_for(lambda: len(seen) == 2)
    assert seen[-1] == 5.0


def _message(device: Device, *points: tuple[str, datetime, float]) -> bus.Message:
    """A telemetry message as the bus carries it."""
    return {
        "v": bus.VERSION,
        "device_id": str(device.id),
        "points": [
            {"metric": m, "time": t.isoformat(), "value": v, "unit": None} for m, t, v in points
        ],
    }


async def test_a_stored_point_that_also_comes_live_counts_once(
    engine: Engine, hub: bus.Hub, values: LiveValues, device: Device
) -> None:
    stored_at = utcnow() - timedelta(minutes=1)
    _write(engine, device, stored_at, temperature=10.0)
    seen: list[float | None] = []
    values.watch_expression(str(device.id), "count(temperature, 5m)", lambda t, v: seen.append(v))
    # while priming reads the window, its stored point comes on the bus too, with a new one
    newer = stored_at + timedelta(seconds=30)
    channel = bus.telemetry_channel(device.id)
    hub.deliver(channel, _message(device, ("temperature", stored_at, 10.0)))
    hub.deliver(channel, _message(device, ("temperature", newer, 11.0)))
    await wait_for(lambda: seen and seen[-1] == 2.0)
    # redelivered (the same point again) or stored before priming: not a new point
    hub.deliver(channel, _message(device, ("temperature", newer, 11.0)))
    hub.deliver(channel, _message(device, ("temperature", stored_at, 10.0)))
    hub.deliver(channel, _message(device, ("temperature", newer + timedelta(seconds=1), 9.0)))
    await wait_for(lambda: seen[-1] == 3.0)
    assert 1.0 not in seen[1:] and seen.count(3.0) == 1


async def test_points_per_second_counts_every_devices_points_over_the_last_minute(
    engine: Engine, hub: bus.Hub, device: Device
) -> None:
    clock = [1000.0]
    counted = LiveValues(hub, monotonic=lambda: clock[0])
    try:
        assert counted.points_per_second() == 0.0  # starts counting
        _write(engine, device, utcnow(), a=1.0, b=2.0, c=3.0)
        _write(engine, device, utcnow() + timedelta(seconds=1), a=1.0)
        await wait_for(lambda: counted.points_per_second() == 4.0)
        clock[0] += 30  # 4 points over 30 s of counting
        assert counted.points_per_second() == pytest.approx(4 / 30)
        clock[0] += 31  # they are older than a minute now
        assert counted.points_per_second() == 0.0
        assert counted.stats()["devices"] == 0  # counting takes no device subscription
    finally:
        counted.close()


async def test_without_a_hub_watching_does_nothing_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus.set_bus(bus.NullBus())
    assert live.get_live_values().hub is None
    quiet = LiveValues(None)
    device_id = "7f8a2b43-95b8-4e8e-8f0a-5b4fb0a3a6a1"
    with caplog.at_level(logging.WARNING, logger=live.__name__):
        quiet.watch(device_id, "t", lambda t, v: None)()
        quiet.watch_expression(device_id, "avg(t, 1m)", lambda t, v: None)()
        assert quiet.points_per_second() == 0.0
    assert caplog.text.count("no bus hub") == 1
    with pytest.raises(ValidationError) as refused:
        quiet.watch("not-a-device", "t", lambda t, v: None)
    assert refused.value.field == "device"
    with pytest.raises(ValidationError) as refused:
        quiet.watch_expression(device_id, "t > 3", lambda t, v: None)
    assert refused.value.field == "expression"


async def test_get_live_values_is_one_instance_per_hub(hub: bus.Hub) -> None:
    first = live.get_live_values()
    assert first is live.get_live_values()
    assert first.hub is hub
