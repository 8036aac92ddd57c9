"""The evaluator under a burst: what its input misses is replayed from storage, in order.

Telemetry reaches the evaluator through the streams, which drop nothing (the last test);
what can still be missed (bus messages of a full queue, stream appends that failed) is
recorded as ranges and replayed before the batch that follows. Most tests drive a real hub
subscription with a tiny queue: a burst overflows it, the hook records the dropped
ranges. The outcome must be what an engine fed every point decides.
"""

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from app.core import bus
from app.core.models import Alert, AlertStatus, DeviceCreate, TelemetryPoint, utcnow
from app.core.streams import Streams
from app.mqtt.ingest import IngestWorker
from app.services import alerts, devices, rules, telemetry
from app.services.rules import RuleInput
from app.services.telemetry import Point
from app.workers import evaluation
from app.workers.evaluation import Evaluator
from app.workers.leases import SoleOwner
from bench.services import IotdeckBroker
from rules.compiler import compile_rule
from rules.engine import Engine as RuleEngine
from rules.engine import Transition
from rules.parser import parse_rule
from tests.integration.conftest import Publish
from tests.waiting import wait_for, wait_for_async

RULES = [
    'rule "Busy"\n  when count(temperature, 1m) >= 6\n  clear when count(temperature, 1m) < 6\n'
    "  cooldown 1s\n",
    'rule "Hot"\n  when avg(temperature, 30s) > 30 for 20s\n  clear when temperature < 25\n'
    "  cooldown 1s\n",
]
# a device's temperature every 10 s: hot for a while, cool, hot again; busy in the middle
PATTERN = [20, 20, 35, 36, 37, 38, 20, 20, 39, 40, 41, 42, 43, 20, 20, 20]


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _devices(engine: Engine, count: int, *texts: str) -> list[str]:
    with Session(engine, expire_on_commit=False) as session:
        made = [
            devices.create_device(session=session, data=DeviceCreate(name=f"d{n}", type="t"))
            for n in range(count)
        ]
        for text in texts:
            rules.create_rule(session=session, data=RuleInput(expression=text))
        session.commit()
    return [str(device.id) for device in made]


def _store(engine: Engine, points: list[tuple[str, datetime, float]]) -> None:
    with Session(engine) as session:
        stored = [Point(uuid.UUID(d), "temperature", at, value) for d, at, value in points]
        telemetry.write_points(session=session, points=stored, seen_at=None)
        session.commit()


def _message(device_id: str, at: datetime, value: float) -> tuple[str, bus.Message]:
    point = {"metric": "temperature", "time": at.isoformat(), "value": value}
    return bus.telemetry_channel(device_id), {"device_id": device_id, "points": [point]}


def _after(start: datetime, unit: timedelta) -> Callable[[float], datetime]:
    return lambda count: start + count * unit


def _stream(ids: list[str], start: datetime) -> list[tuple[str, datetime, float]]:
    """Every device's PATTERN, one point each 10 s, in commit order (time, then device)."""
    return [
        (device_id, start + timedelta(seconds=10 * n), float(value + k))
        for n, value in enumerate(PATTERN)
        for k, device_id in enumerate(ids)
    ]


async def _through_a_tiny_queue(
    evaluator: Evaluator, messages: list[tuple[str, bus.Message]], size: int, burst: int
) -> list[Transition]:
    """Deliver `burst` messages at a time to a queue of `size`; evaluate as run_evaluator does."""
    hub = bus.Hub(asyncio.get_running_loop())
    queue = hub.subscribe(lambda _: True, size=size, on_drop=evaluator.drops.record)
    found: list[Transition] = []
    for first in range(0, len(messages), burst):
        for channel, message in messages[first : first + burst]:
            hub.deliver(channel, message)
        batch = await queue.get_many(1000)
        found += evaluator.on_messages(batch, evaluator.drops.take())
    assert queue.dropped > 0, "the burst must overflow the queue"
    return found


def _expected(texts: list[str], rule_ids: list[str], points: list) -> list[tuple]:
    """What an engine fed every point decides: (kind, rule, device, time)."""
    reference = RuleEngine(
        [
            compile_rule(rule_id, parse_rule(text))
            for rule_id, text in zip(rule_ids, texts, strict=True)
        ]
    )
    found = []
    for device_id, at, value in points:
        found += reference.on_point(device_id, "t", "temperature", at, value)
    return [(t.kind, t.rule_id, t.device_id, t.at) for t in found]


def _rule_ids(engine: Engine) -> list[str]:
    with Session(engine) as session:
        stored = rules.list_rules(session=session, enabled_only=True)
        by_name = {rule.name: str(rule.id) for rule in stored}
    return [by_name["Busy"], by_name["Hot"]]


def _alerts(engine: Engine) -> list[Alert]:
    with Session(engine) as session:
        far = timedelta(days=1)
        return alerts.alert_history(
            session=session, start=utcnow() - far, end=utcnow() + far, limit=1000
        )


async def test_dropped_points_are_replayed_so_windows_for_and_alerts_are_as_if_kept(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(evaluation, "REPLAY_DEVICES", 3)  # 4 devices: two queries a replay
    ids = _devices(engine, 4, *RULES)
    start = utcnow().replace(microsecond=0) - timedelta(minutes=30)
    evaluator = Evaluator(FakeClock(start))
    evaluator.start()
    points = _stream(ids, start)
    _store(engine, points)  # committed, then published: the queue keeps 3 of each 10

    found = await _through_a_tiny_queue(
        evaluator, [_message(*point) for point in points], size=3, burst=10
    )

    expected = _expected(RULES, _rule_ids(engine), points)
    # per device: "Busy" once its window holds 6 points, "Hot" twice; both "Hot" cleared
    assert [e[0] for e in expected].count("FIRED") == 12
    assert [e[0] for e in expected].count("CLEARED") == 8
    assert sorted((t.kind, t.rule_id, t.device_id, t.at) for t in found) == sorted(expected)
    assert evaluator.replayed_points == len(points) - 3 * len(range(0, len(points), 10))
    stored = _alerts(engine)
    fired = [(rule, device, at) for kind, rule, device, at in expected if kind == "FIRED"]
    assert sorted((str(a.rule_id), str(a.device_id), a.triggered_at) for a in stored) == sorted(
        fired
    )
    statuses = sorted((a.title, a.status) for a in stored)
    assert statuses == [("Busy", AlertStatus.ACTIVE)] * 4 + [("Hot", AlertStatus.RESOLVED)] * 8


async def test_replaying_again_over_what_was_evaluated_changes_nothing(engine: Engine) -> None:
    ids = _devices(engine, 2, *RULES)
    start = utcnow().replace(microsecond=0) - timedelta(minutes=30)
    evaluator = Evaluator(FakeClock(start))
    evaluator.start()
    points = _stream(ids, start)
    _store(engine, points)
    await _through_a_tiny_queue(evaluator, [_message(*p) for p in points], size=2, burst=5)
    before = [(a.id, a.status) for a in _alerts(engine)]

    # the same messages once more, as if a record had been replayed twice: all held already
    again = await _through_a_tiny_queue(evaluator, [_message(*p) for p in points], size=2, burst=5)
    assert again == []
    assert [(a.id, a.status) for a in _alerts(engine)] == before


async def test_a_tick_skips_a_device_whose_points_were_dropped_until_they_are_replayed(
    engine: Engine,
) -> None:
    ids = _devices(engine, 3, 'rule "Silent"\n  when nodata(temperature, 1m)\n')
    talking, dropped, silent = ids
    start = utcnow().replace(microsecond=0) - timedelta(minutes=30)
    at = _after(start, timedelta(seconds=1))
    clock = FakeClock(start)
    evaluator = Evaluator(clock)
    evaluator.start()
    # every device speaks at 0 and `talking` at 70; `dropped` spoke at 50, in a lost message
    live = [(d, at(0), 20.0) for d in ids] + [(talking, at(70), 20.0)]
    lost, pushing = (dropped, at(50), 20.0), (talking, at(80), 20.0)
    _store(engine, [*live, lost, pushing])
    evaluator.on_messages([_message(*p) for p in live])
    hub = bus.Hub(asyncio.get_running_loop())
    queue = hub.subscribe(lambda _: True, size=1, on_drop=evaluator.drops.record)
    hub.deliver(*_message(*lost))
    hub.deliver(*_message(*pushing))  # pushes `lost` out

    clock.now = at(85)  # a tick before the replay
    fired = {t.device_id for t in evaluator.tick()}
    assert fired == {silent}  # not `dropped`: its point at 50 is not in the engine yet
    evaluator.on_messages(await queue.get_many(10), evaluator.drops.take())
    clock.now = at(100)
    assert {t.device_id for t in evaluator.tick()} == set()  # 50 s since `dropped` spoke
    clock.now = at(111)
    assert {t.device_id for t in evaluator.tick()} == {dropped}


async def test_a_dropped_resolve_is_read_back_and_re_arms_the_rule(engine: Engine) -> None:
    (device,) = _devices(engine, 1, 'rule "Hot"\n  when temperature > 30\n  cooldown 1s\n')
    start = utcnow().replace(microsecond=0) - timedelta(minutes=30)
    at = _after(start, timedelta(minutes=1))
    evaluator = Evaluator(FakeClock(start))
    evaluator.start()
    _store(engine, [(device, at(0), 35.0)])
    assert [t.kind for t in evaluator.on_messages([_message(device, at(0), 35.0)])] == ["FIRED"]
    (alert,) = _alerts(engine)
    with Session(engine) as session:  # an operator resolves it; the message is lost below
        alerts.resolve_alert(session=session, alert_id=alert.id, user_id=None)
        session.commit()
    _store(engine, [(device, at(1), 20.0), (device, at(2), 36.0)])

    hub = bus.Hub(asyncio.get_running_loop())
    queue = hub.subscribe(lambda _: True, size=1, on_drop=evaluator.drops.record)
    resolved = {"type": "RESOLVED", "rule_id": str(alert.rule_id), "device_id": device}
    hub.deliver(bus.ALERTS, resolved)
    hub.deliver(*_message(device, at(1), 20.0))
    hub.deliver(*_message(device, at(2), 36.0))
    fired = evaluator.on_messages(await queue.get_many(10), evaluator.drops.take())

    assert [(t.kind, t.at) for t in fired] == [("FIRED", at(2))]
    assert sorted(a.status for a in _alerts(engine)) == [AlertStatus.ACTIVE, AlertStatus.RESOLVED]


async def test_an_ingest_burst_waits_in_the_streams_and_opens_every_alert_once(
    *,
    engine: Engine,
    hub: bus.Hub,
    mosquitto: IotdeckBroker,
    publish: Publish,
) -> None:
    """A backlog drained after an outage: nothing is dropped, the streams hold it all."""
    hot = 'rule "Hot"\n  when temperature > 30\n  clear when temperature < 25\n  cooldown 1s\n'
    busy = 'rule "Busy"\n  when count(temperature, 10m) >= 6\n  cooldown 1s\n'
    ids = _devices(engine, 5, hot, busy)
    streams = bus.get_bus().streams
    assert streams is not None
    dropped = _counted("evaluator_dropped_messages_total")
    # ingest's persistent session exists, then ingest stops: the burst waits in the broker
    client_id = f"ingest-{uuid.uuid4().hex[:8]}"
    _ingest(mosquitto, client_id).stop()
    start = utcnow().replace(microsecond=0) - timedelta(minutes=30)
    at = _after(start, timedelta(minutes=1))
    values = [20, 35, 36, 20, 37, 20]  # per device: "Hot" twice, "Busy" at the 6th point
    for minute, value in enumerate(values):
        for device_id in ids:
            payload = {"timestamp": at(minute).isoformat(), "temperature": value}
            publish(f"devices/{device_id}/telemetry", payload)

    evaluating = asyncio.create_task(
        evaluation.run_evaluator(hub, streams, SoleOwner(streams.partitions))
    )
    worker = None
    try:
        await wait_for(lambda: hub.subscribers)
        worker = _ingest(mosquitto, client_id)  # drains the burst, many devices a batch
        # then a last point: its alert opens once everything before it is evaluated
        await wait_for(lambda: _stored(engine) == len(values) * len(ids), timeout=30)
        payload = {"timestamp": at(6).isoformat(), "temperature": 50}
        await asyncio.to_thread(publish, f"devices/{ids[0]}/telemetry", payload)
        await wait_for(lambda: len(_alerts(engine)) >= 16, timeout=30)
        await wait_for_async(lambda: _drained(streams))
    finally:
        evaluating.cancel()
        await asyncio.gather(evaluating, return_exceptions=True)
        if worker is not None:
            worker.stop()

    expected = {(device, "Hot", at(1)) for device in ids} | {(ids[0], "Hot", at(6))}
    expected |= {(device, "Hot", at(4)) for device in ids}
    expected |= {(device, "Busy", at(5)) for device in ids}
    stored = _alerts(engine)
    assert sorted((str(a.device_id), a.title, a.triggered_at) for a in stored) == sorted(expected)
    assert _counted("evaluator_dropped_messages_total") == dropped


async def _drained(streams: Streams) -> bool:
    """Every entry read and acknowledged by the rules group, on every partition."""
    lags = [await streams.lag(evaluation.GROUP, p) for p in range(streams.partitions)]
    return all(lag.undelivered == lag.pending == 0 for lag in lags)


def _counted(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def _ingest(mosquitto: IotdeckBroker, client_id: str) -> IngestWorker:
    worker = IngestWorker(mosquitto.service_address(), client_id=client_id, batch_ms=200)
    worker.start()
    assert worker.wait_connected(10)
    return worker


def _stored(engine: Engine) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(TelemetryPoint)).one()
