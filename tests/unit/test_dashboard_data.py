"""A widget's value expression: parsed as the rule language reads it, compiled once, evaluated
over window buffers; a dashboard's time range made absolute."""

from datetime import UTC, datetime, timedelta

import pytest

from app.core.errors import ValidationError
from app.dashboards.data import resolve_range
from app.dashboards.expressions import check_expression, parse_expression
from app.dashboards.spec import TimeRange
from rules import ast
from rules.compiler import compile_value
from rules.parser import parse_condition
from rules.windows import Series, seconds_to_us, to_us

NOW = datetime(2026, 12, 6, 10, 37, 12, 345678, tzinfo=UTC)


def _series(window_seconds: float, points: list[tuple[timedelta, float]]) -> Series:
    """A buffer holding `points` given as (age before NOW, value)."""
    series = Series(seconds_to_us(window_seconds))
    series.extend((to_us(NOW - age), value) for age, value in points)
    return series


def test_parse_expression_gives_the_value_a_rule_comparing_it_would_hold() -> None:
    text = "avg(temperature, 5m) - setpoint  # drift"
    rule_side = parse_condition("avg(temperature, 5m) - setpoint > 0")
    assert isinstance(rule_side, ast.Comparison)
    assert parse_expression(text) == rule_side.left


@pytest.mark.parametrize(
    "text",
    [
        "temperature > 30",
        "",
        "avgg(temperature, 5m)",
        "max(humidity, 0m)",
        "(temperature",
        "a) + (b",
    ],
)
def test_parse_expression_refuses_what_check_expression_refuses_with_its_reason(
    text: str,
) -> None:
    with pytest.raises(ValidationError) as refused:
        parse_expression(text)
    assert refused.value.field == "expression"
    assert refused.value.reason == check_expression(text)


def test_compile_value_reads_each_metric_over_its_longest_window() -> None:
    compiled = compile_value(parse_expression("max(t, 1h) - avg(t, 5m) + setpoint * 0"))
    assert compiled.metrics == {"t": 3600.0, "setpoint": 0.0}


def test_a_compiled_value_evaluates_windows_and_latest_values_over_series() -> None:
    compiled = compile_value(parse_expression("avg(temperature, 5m) - setpoint"))
    temperature = _series(
        300,
        [(timedelta(minutes=9), 100.0), (timedelta(minutes=4), 20.0), (timedelta(0), 22.0)],
    )
    setpoint = _series(0, [(timedelta(days=3), 4.5)])
    buffers = {"temperature": temperature, "setpoint": setpoint}
    assert compiled.fn(buffers, to_us(NOW)) == pytest.approx(21.0 - 4.5)
    # later, the window holds only the newest point
    assert compiled.fn(buffers, to_us(NOW + timedelta(minutes=2))) == pytest.approx(22.0 - 4.5)


def test_a_compiled_value_is_unknown_without_data_and_never_divides_by_zero() -> None:
    ratio = compile_value(parse_expression("a / b"))
    assert ratio.fn({}, to_us(NOW)) is None
    zero = {"a": _series(0, [(timedelta(0), 1.0)]), "b": _series(0, [(timedelta(0), 0.0)])}
    assert ratio.fn(zero, to_us(NOW)) is None
    assert compile_value(parse_expression("count(a, 1m)")).fn({}, to_us(NOW)) == 0.0


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("now-15m", "now", (NOW - timedelta(minutes=15), NOW)),
        ("now-6h", "now-1h", (NOW - timedelta(hours=6), NOW - timedelta(hours=1))),
        ("now-7d", "now", (NOW - timedelta(days=7), NOW)),
        (
            "2026-12-01T00:00:00+01:00",
            "2026-12-02T00:00:00",  # no zone: UTC
            (
                datetime(2026, 11, 30, 23, tzinfo=UTC),
                datetime(2026, 12, 2, tzinfo=UTC),
            ),
        ),
    ],
)
def test_resolve_range_makes_relative_and_absolute_times_absolute(
    start: str, end: str, expected: tuple[datetime, datetime]
) -> None:
    time = TimeRange.model_validate({"from": start, "to": end})
    assert resolve_range(time, NOW) == expected
