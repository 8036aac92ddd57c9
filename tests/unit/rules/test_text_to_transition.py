"""From rule text to a fired and cleared alert: parser, compiler and engine together."""

from datetime import UTC, datetime, timedelta

from rules.compiler import compile_rule
from rules.engine import Engine
from rules.parser import parse_rule

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
TEXT = """
rule "Overheat"
  on type "thermostat"
  when avg(temperature, 5m) > 30 and humidity < 20 for 2m
  severity critical
  cooldown 10m
  clear when temperature < 25
"""


def _feed(engine: Engine, minute: float, temperature: float, humidity: float) -> list:
    at = T0 + timedelta(minutes=minute)
    out = engine.on_point("d1", "thermostat", "humidity", at, humidity)
    return out + engine.on_point("d1", "thermostat", "temperature", at, temperature)


def test_the_spec_example_fires_after_its_for_and_clears() -> None:
    engine = Engine([compile_rule("r1", parse_rule(TEXT))])
    assert _feed(engine, 0, 35, 10) == []
    assert _feed(engine, 1, 35, 10) == []  # holding, 1 of 2 minutes
    fired = _feed(engine, 2, 35, 10)
    assert [(t.kind, t.rule_id, t.device_id) for t in fired] == [("FIRED", "r1", "d1")]
    assert _feed(engine, 3, 36, 10) == []  # already active: never a second alert
    cleared = _feed(engine, 4, 24, 10)
    assert [t.kind for t in cleared] == ["CLEARED"]


def test_other_device_types_are_out_of_scope() -> None:
    engine = Engine([compile_rule("r1", parse_rule(TEXT))])
    at = T0
    for minute in range(5):
        at = T0 + timedelta(minutes=minute)
        assert engine.on_point("p1", "power_meter", "temperature", at, 99) == []
