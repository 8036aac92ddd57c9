"""`replay`: a draft rule run over stored telemetry, without writing any alert."""

import uuid
from datetime import datetime, timedelta

import pytest
from sqlmodel import Session, select

from app.core.errors import ValidationError
from app.core.models import Alert, DeviceCreate, utcnow
from app.services import devices, telemetry
from app.services.rule_testing import replay
from app.services.telemetry import Point

pytestmark = pytest.mark.all_backends

START = utcnow().replace(second=0, microsecond=0) - timedelta(hours=3)


def _at(minutes: float) -> datetime:
    return START + timedelta(minutes=minutes)


def _device(session: Session, name: str, kind: str = "thermostat") -> uuid.UUID:
    return devices.create_device(session=session, data=DeviceCreate(name=name, type=kind)).id


def _store(session: Session, device_id: uuid.UUID, values: dict[float, float]) -> None:
    points = [Point(device_id, "temperature", _at(m), v) for m, v in values.items()]
    telemetry.write_points(session=session, points=points, seen_at=_at(0))


def test_for_fires_once_the_condition_held_and_clears_when_it_stops(session: Session) -> None:
    hot = _device(session, "a-hot")
    cool = _device(session, "b-cool")
    # hot from minute 10 to 12 (too short: 2 minutes), then 30 to 40 (long enough for `for 3m`)
    values = {m: 20.0 for m in range(60)} | {m: 35.0 for m in range(10, 12)}
    values |= {m: 36.0 for m in range(30, 41)}
    _store(session, hot, values)
    _store(session, cool, {m: 20.0 for m in range(60)})
    session.commit()

    result = replay(
        session=session,
        expression='rule "r" when temperature > 30 for 3m',
        start=_at(0),
        end=_at(60),
    )
    assert [(r.device_name, r.metric) for r in result] == [
        ("a-hot", "temperature"),
        ("b-cool", "temperature"),
    ]
    (firing,) = result[0].firings
    assert firing.value == 36.0
    assert _at(33) <= firing.fired_at <= _at(34)  # held from 30, due at 33: the next point
    assert firing.cleared_at == _at(41)
    assert result[1].firings == []
    assert session.exec(select(Alert)).all() == []  # a replay writes nothing


def test_clear_when_and_cooldown_are_honoured(session: Session) -> None:
    device = _device(session, "d")
    values = {m: 35.0 if m % 10 < 2 else 20.0 for m in range(60)}  # crosses every 10 minutes
    _store(session, device, values)
    session.commit()
    text = 'rule "r" when temperature > 30 cooldown 25m clear when temperature < 25'
    (result,) = replay(session=session, expression=text, start=_at(0), end=_at(60))
    assert [(f.fired_at, f.cleared_at) for f in result.firings] == [
        (_at(0), _at(2)),
        (_at(30), _at(32)),
    ]


def test_nodata_fires_for_a_gap_and_scope_limits_the_devices(session: Session) -> None:
    device = _device(session, "gappy")
    _device(session, "other", kind="meter")
    _store(session, device, {m: 20.0 for m in range(60) if not 20 <= m < 40})
    session.commit()
    text = 'rule "r" on type "thermostat" when nodata(temperature, 5m)'
    (result,) = replay(session=session, expression=text, start=_at(0), end=_at(60))
    (firing,) = result.firings
    assert _at(24) <= firing.fired_at <= _at(26)
    assert firing.cleared_at == _at(40)


def test_device_ids_choose_the_devices_and_bad_input_names_the_field(session: Session) -> None:
    first = _device(session, "first")
    _device(session, "second")
    session.commit()
    text = 'rule "r" when temperature > 30'
    chosen = replay(session=session, expression=text, start=_at(0), end=_at(1), device_ids=[first])
    assert [r.device_id for r in chosen] == [first]
    cases = [
        ({"expression": "rule 'r' when temperature = 30"}, "expression"),
        ({"device_ids": ["nope"]}, "deviceIds"),
        ({"device_ids": [uuid.uuid4()]}, "deviceIds"),
        ({"start": _at(1), "end": _at(0)}, "from"),
        ({"end": _at(0) + timedelta(days=40)}, "to"),
    ]
    for change, field in cases:
        arguments = {"expression": text, "start": _at(0), "end": _at(1)} | change
        with pytest.raises(ValidationError) as caught:
            replay(session=session, **arguments)
        assert caught.value.field == field
