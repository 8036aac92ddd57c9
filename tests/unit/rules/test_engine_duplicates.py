"""A point the engine already holds changes nothing: replays over live points count once."""

from datetime import UTC, datetime, timedelta

from rules.compiler import compile_rule
from rules.engine import Engine
from rules.parser import parse_rule

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _engine(text: str) -> Engine:
    return Engine([compile_rule("r", parse_rule(text))])


def _feed(engine: Engine, seconds: float, value: float) -> list[str]:
    at = T0 + timedelta(seconds=seconds)
    return [t.kind for t in engine.on_point("d1", "thermostat", "temperature", at, value)]


def test_a_window_counts_a_point_seen_twice_once() -> None:
    engine = _engine('rule "many"\n  when count(temperature, 1m) >= 3\n')
    assert _feed(engine, 0, 20) == []
    assert _feed(engine, 10, 20) == []
    assert _feed(engine, 10, 20) == []  # the same point again: still two in the window
    assert _feed(engine, 0, 20) == []  # an older one again: also held already
    assert _feed(engine, 20, 20) == ["FIRED"]  # the third distinct point


def test_a_point_seen_twice_keeps_its_first_value_as_storage_does() -> None:
    engine = _engine('rule "hot"\n  when temperature > 30\n')
    assert _feed(engine, 0, 20) == []
    assert _feed(engine, 0, 35) == []  # storage keeps the first point of a (metric, time)
    assert _feed(engine, 5, 35) == ["FIRED"]


def test_a_late_point_not_held_still_joins_the_windows_once() -> None:
    engine = _engine('rule "four"\n  when count(temperature, 1m) == 4\n')
    assert _feed(engine, 0, 20) == []
    assert _feed(engine, 20, 20) == []
    assert _feed(engine, 10, 20) == []  # late: evaluates nothing, but is in the window now
    assert _feed(engine, 10, 20) == []  # and is held: a second copy does not count
    assert _feed(engine, 30, 20) == ["FIRED"]
