"""The evaluator forgets nothing: restarts mid-`for`, operator resolves, silent devices."""

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from app.core import bus
from app.core.models import Alert, AlertStatus, Device, DeviceCreate, utcnow
from app.services import alerts, commands, devices, rules, telemetry
from app.services.rules import RuleInput
from app.services.telemetry import Point
from app.workers.evaluation import Evaluator

pytestmark = pytest.mark.all_backends

HOLD = """
rule "Hot for 5 minutes"
  when temperature > 30 for 5m
"""


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _setup(engine: Engine, expression: str, **device: str) -> tuple[Device, str]:
    with Session(engine, expire_on_commit=False) as session:
        made = devices.create_device(
            session=session, data=DeviceCreate(name="d", type=device.get("type", "thermostat"))
        )
        rule = rules.create_rule(session=session, data=RuleInput(expression=expression))
        session.commit()
    return made, str(rule.id)


def _store(engine: Engine, device: Device, metric: str, at: datetime, value: float) -> dict:
    """Commit one point; return the bus message the evaluator would receive for it."""
    with Session(engine) as session:
        telemetry.write_points(
            session=session, points=[Point(device.id, metric, at, value)], seen_at=at
        )
        session.commit()
    return {
        "device_id": str(device.id),
        "points": [{"metric": metric, "time": at.isoformat(), "value": value}],
    }


def _alerts(engine: Engine) -> list[Alert]:
    with Session(engine) as session:
        far = timedelta(days=1)
        return alerts.alert_history(session=session, start=utcnow() - far, end=utcnow() + far)


def _minutes(start: datetime) -> Callable[[float], datetime]:
    return lambda minutes: start + timedelta(minutes=minutes)


def test_a_restart_four_minutes_into_for_5m_fires_at_minute_5_once(engine: Engine) -> None:
    device, _ = _setup(engine, HOLD)
    at = _minutes(utcnow().replace(microsecond=0) - timedelta(minutes=30))
    clock = FakeClock(at(0))
    first = Evaluator(clock)
    first.start()
    for minute in range(5):  # hot from minute 0 to minute 4, one point a minute
        clock.now = at(minute)
        assert first.on_telemetry(_store(engine, device, "temperature", at(minute), 35)) == []
        assert first.tick() == []
    del first  # stopped 4 minutes into `for 5m`

    second = Evaluator(clock)
    assert second.start() == []  # nothing is due yet
    clock.now = at(4.5)
    assert second.tick() == []
    clock.now = at(5)
    fired = second.tick()
    assert [(t.kind, t.at) for t in fired] == [("FIRED", at(5))]
    clock.now = at(6)
    assert second.on_telemetry(_store(engine, device, "temperature", at(6), 36)) == []
    assert second.tick() == []
    assert [(a.status, a.triggered_at) for a in _alerts(engine)] == [(AlertStatus.ACTIVE, at(5))]


def test_a_restart_keeps_an_open_alert_open_and_fires_nothing_twice(engine: Engine) -> None:
    device, _ = _setup(engine, HOLD)
    at = _minutes(utcnow().replace(microsecond=0) - timedelta(minutes=30))
    clock = FakeClock(at(0))
    first = Evaluator(clock)
    first.start()
    for minute in range(7):
        clock.now = at(minute)
        first.on_telemetry(_store(engine, device, "temperature", at(minute), 35))
    assert len(_alerts(engine)) == 1

    second = Evaluator(clock)
    assert second.start() == []
    for minute in range(7, 20):
        clock.now = at(minute)
        assert second.on_telemetry(_store(engine, device, "temperature", at(minute), 35)) == []
        assert second.tick() == []
    assert len(_alerts(engine)) == 1


def test_an_open_alert_whose_condition_cleared_before_the_start_is_resolved(
    engine: Engine,
) -> None:
    """A takeover: the point that clears was committed before the new evaluator's replay,
    and the engine, holding it from the replay, will not clear on it when it comes live."""
    hot = 'rule "Hot"\n  when temperature > 30\n  clear when temperature < 25\n  cooldown 10s\n'
    device, _ = _setup(engine, hot)
    at = _minutes(utcnow().replace(microsecond=0) - timedelta(minutes=1))
    clock = FakeClock(at(0))
    first = Evaluator(clock)
    first.start()
    first.on_telemetry(_store(engine, device, "temperature", at(0), 35))
    assert [a.status for a in _alerts(engine)] == [AlertStatus.ACTIVE]
    del first  # killed; then the clearing point is committed
    cold = _store(engine, device, "temperature", at(0.5), 20)

    clock.now = at(0.6)
    second = Evaluator(clock)
    assert [t.kind for t in second.start()] == ["CLEARED"]
    assert [a.status for a in _alerts(engine)] == [AlertStatus.RESOLVED]
    assert second.on_telemetry(cold) == []  # live, late: held already
    clock.now = at(0.8)
    assert [
        t.kind for t in second.on_telemetry(_store(engine, device, "temperature", at(0.8), 36))
    ] == ["FIRED"]
    assert sorted(a.status for a in _alerts(engine)) == [AlertStatus.ACTIVE, AlertStatus.RESOLVED]


def test_a_violation_that_began_while_no_evaluator_ran_opens_its_alert_at_start(
    engine: Engine,
) -> None:
    device, _ = _setup(engine, HOLD)
    at = _minutes(utcnow().replace(microsecond=0) - timedelta(minutes=30))
    for minute in range(8):  # ingest kept writing; no evaluator was running
        _store(engine, device, "temperature", at(minute), 35)
    evaluator = Evaluator(FakeClock(at(8)))
    assert [t.kind for t in evaluator.start()] == ["FIRED"]
    assert [a.status for a in _alerts(engine)] == [AlertStatus.ACTIVE]
    assert Evaluator(FakeClock(at(9))).start() == []  # and a second start does not repeat it


def test_an_operator_resolve_re_arms_the_rule(engine: Engine) -> None:
    device, rule_id = _setup(engine, 'rule "Hot"\n  when temperature > 30\n  cooldown 1s\n')
    at = _minutes(utcnow().replace(microsecond=0) - timedelta(minutes=30))
    clock = FakeClock(at(0))
    evaluator = Evaluator(clock)
    evaluator.start()
    assert [
        t.kind for t in evaluator.on_telemetry(_store(engine, device, "temperature", at(0), 35))
    ] == ["FIRED"]
    (alert,) = _alerts(engine)
    with Session(engine) as session:
        resolved = alerts.resolve_alert(session=session, alert_id=alert.id, user_id=None)
        session.commit()
        message = {"type": "RESOLVED", "rule_id": rule_id, "device_id": str(device.id)}
        assert resolved.status == AlertStatus.RESOLVED
    evaluator.on_messages([(bus.ALERTS, message)])
    # still hot, but the edge was consumed: a new alert needs a new crossing
    assert evaluator.on_telemetry(_store(engine, device, "temperature", at(1), 36)) == []
    evaluator.on_telemetry(_store(engine, device, "temperature", at(2), 20))
    fired = evaluator.on_telemetry(_store(engine, device, "temperature", at(3), 37))
    assert [t.kind for t in fired] == ["FIRED"]
    assert sorted(a.status for a in _alerts(engine)) == [AlertStatus.ACTIVE, AlertStatus.RESOLVED]


def test_nodata_fires_for_a_device_that_went_silent_before_the_start(engine: Engine) -> None:
    device, _ = _setup(engine, 'rule "Silent"\n  when nodata(temperature, 10m)\n')
    quiet, _ = _setup(engine, 'rule "unused"\n  when humidity > 1000\n')
    now = utcnow().replace(microsecond=0)
    _store(engine, device, "temperature", now - timedelta(hours=2), 20)
    _store(engine, quiet, "temperature", now - timedelta(minutes=1), 20)
    evaluator = Evaluator(FakeClock(now))
    evaluator.start()
    fired = evaluator.tick()
    assert [(t.kind, t.device_id) for t in fired] == [("FIRED", str(device.id))]
    with Session(engine) as session:
        assert [a.device_id for a in alerts.active_alerts(session=session)] == [device.id]


def test_nodata_counts_a_never_seen_device_from_its_creation(engine: Engine) -> None:
    device, _ = _setup(engine, 'rule "Silent"\n  when nodata(temperature, 10m)\n')
    created = device.created_at
    clock = FakeClock(created + timedelta(minutes=1))
    evaluator = Evaluator(clock)
    evaluator.start()
    assert evaluator.tick() == []  # one minute after creation: not silent for 10m yet
    clock.now = created + timedelta(minutes=11)
    assert [t.device_id for t in evaluator.tick()] == [str(device.id)]


def test_a_deleted_device_is_no_longer_evaluated(engine: Engine) -> None:
    device, _ = _setup(engine, 'rule "Silent"\n  when nodata(temperature, 10m)\n')
    clock = FakeClock(device.created_at + timedelta(minutes=1))
    evaluator = Evaluator(clock)
    evaluator.start()
    with Session(engine) as session:
        devices.delete_device(session=session, device_id=device.id)
        session.commit()
    deleted = {"type": "DELETED", "device": {"id": str(device.id), "type": "x"}}
    evaluator.on_messages([(bus.DEVICE_EVENTS, deleted)])
    clock.now = device.created_at + timedelta(hours=1)
    assert evaluator.tick() == []


def test_a_burst_at_one_instant_opens_exactly_one_alert(engine: Engine) -> None:
    device, _ = _setup(engine, 'rule "Hot"\n  when temperature > 30\n')
    now = utcnow().replace(microsecond=0)
    clock = FakeClock(now)
    # eight evaluators (as if eight processes believed they led) get the same burst at once
    evaluators = [Evaluator(clock) for _ in range(8)]
    for evaluator in evaluators:
        evaluator.start()
    burst = {
        "device_id": str(device.id),
        "points": [
            {"metric": "temperature", "time": now.isoformat(), "value": 31.0 + i} for i in range(50)
        ],
    }
    barrier = threading.Barrier(len(evaluators))

    def evaluate(evaluator: Evaluator) -> int:
        barrier.wait()
        return len(evaluator.on_telemetry(burst))

    with ThreadPoolExecutor(len(evaluators)) as pool:
        fired = list(pool.map(evaluate, evaluators))
    assert fired == [1] * len(evaluators)  # every engine saw the edge once...
    with Session(engine) as session:  # ...but the database holds one open alert
        assert len(alerts.active_alerts(session=session, device_id=device.id)) == 1


def test_a_queued_batch_is_taken_in_order_around_a_rule_change(engine: Engine) -> None:
    device, rule_id = _setup(engine, 'rule "Hot"\n  when temperature > 30\n')
    at = _minutes(utcnow().replace(microsecond=0) - timedelta(minutes=30))
    evaluator = Evaluator(FakeClock(at(0)))
    evaluator.start()
    with Session(engine) as session:  # the rule is switched off between the two points
        rules.update_rule(session=session, rule_id=rule_id, data=RuleInput(enabled=False))
        session.commit()
    batch = [
        ("iot:telemetry:x", _store(engine, device, "temperature", at(1), 35)),
        (bus.RULES, {"type": "UPDATED", "rule_id": rule_id}),
        ("iot:telemetry:x", _store(engine, device, "temperature", at(2), 20)),
        ("iot:telemetry:x", _store(engine, device, "temperature", at(3), 36)),
    ]
    fired = evaluator.on_messages(batch)
    assert [(t.kind, t.at) for t in fired] == [("FIRED", at(1))]  # not at(3): disabled by then
    assert [a.triggered_at for a in _alerts(engine)] == [at(1)]


def test_an_alert_open_for_hours_is_not_taken_for_a_missed_one(engine: Engine) -> None:
    device, rule_id = _setup(engine, HOLD)
    at = _minutes(utcnow().replace(microsecond=0) - timedelta(hours=2))
    with Session(engine) as session:
        rule = rules.get_rule(session=session, rule_id=rule_id)
        assert rule is not None
        alerts.open_alert(session=session, rule=rule, device_id=device.id, at=at(0))
        session.commit()
    for minute in range(6):  # still hot two hours later: the replay sees `for 5m` elapse
        _store(engine, device, "temperature", at(114.5 + minute), 35)
    assert Evaluator(FakeClock(at(120))).start() == []
    assert [a.triggered_at for a in _alerts(engine)] == [at(0)]


def test_a_rule_command_is_sent_when_it_fires_recorded_as_the_rule_s(engine: Engine) -> None:
    text = 'rule "Fan"\n  when temperature > 30\n  command set_fan {"speed": 3}\n'
    device, rule_id = _setup(engine, text)
    at = _minutes(utcnow().replace(microsecond=0) - timedelta(minutes=5))
    evaluator = Evaluator(FakeClock(at(0)))
    evaluator.start()
    evaluator.on_telemetry(_store(engine, device, "temperature", at(1), 35))
    evaluator.on_telemetry(_store(engine, device, "temperature", at(2), 36))  # same episode
    (alert,) = _alerts(engine)
    with Session(engine) as session:
        (sent,) = commands.device_commands(session=session, device_id=device.id)
    assert (sent.action, sent.params, sent.status) == ("set_fan", {"speed": 3}, "PENDING")
    assert (str(sent.rule_id), sent.alert_id, sent.created_by) == (rule_id, alert.id, None)


def test_a_rebalance_rebuilds_only_the_devices_taken_over(engine: Engine) -> None:
    """Two evaluators split two devices hot since minute 0 under `for 5m`; the second dies
    at minute 3 and the first takes its device over: it replays that device's points only,
    its own device keeps its state, and each fires once, at minute 5."""
    kept, _ = _setup(engine, HOLD)
    with Session(engine, expire_on_commit=False) as session:
        taken = devices.create_device(
            session=session, data=DeviceCreate(name="t", type="thermostat")
        )
        session.commit()
    at = _minutes(utcnow().replace(microsecond=0) - timedelta(minutes=30))
    clock = FakeClock(at(0))
    first = Evaluator(clock, owns=lambda device_id: device_id == str(kept.id))
    second = Evaluator(clock, owns=lambda device_id: device_id == str(taken.id))
    first.start()
    second.start()
    for minute in range(4):
        clock.now = at(minute)
        assert first.on_telemetry(_store(engine, kept, "temperature", at(minute), 35)) == []
        assert second.on_telemetry(_store(engine, taken, "temperature", at(minute), 35)) == []
    del second  # killed at minute 3

    before = first.rebuilt_points
    first.own(lambda device_id: device_id in {str(kept.id), str(taken.id)})
    assert first.start(fresh=lambda device_id: device_id == str(taken.id)) == []
    assert first.rebuilt_points - before == 4  # the taken device's points, not its own

    clock.now = at(4)
    assert first.tick() == []
    clock.now = at(5)
    fired = {(t.device_id, t.kind, t.at) for t in first.tick()}
    assert fired == {(str(kept.id), "FIRED", at(5)), (str(taken.id), "FIRED", at(5))}
    assert first.tick() == []
    assert sorted(str(a.device_id) for a in _alerts(engine)) == sorted(
        [str(kept.id), str(taken.id)]
    )


def test_a_rebalance_drops_the_devices_given_away(engine: Engine) -> None:
    """A device whose partition went to another evaluator leaves this one's state: its
    `for` no longer fires here."""
    given, _ = _setup(engine, HOLD)
    at = _minutes(utcnow().replace(microsecond=0) - timedelta(minutes=30))
    clock = FakeClock(at(0))
    evaluator = Evaluator(clock)
    evaluator.start()
    for minute in range(3):
        clock.now = at(minute)
        assert evaluator.on_telemetry(_store(engine, given, "temperature", at(minute), 35)) == []

    evaluator.own(lambda _device_id: False)
    assert evaluator.start(fresh=lambda _device_id: False) == []
    assert evaluator.engine.states() == []
    clock.now = at(5)
    assert evaluator.tick() == []
    assert _alerts(engine) == []
