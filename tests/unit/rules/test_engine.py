"""The rule engine with explicit event times: edges, `for`, cooldown, clear, nodata, restarts."""

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from rules.ast import (
    And,
    Arithmetic,
    Between,
    Comparison,
    Condition,
    Duration,
    Metric,
    Negative,
    NoData,
    Not,
    Number,
    Or,
    Rule,
    Scope,
    Window,
)
from rules.compiler import compile_rule
from rules.engine import Engine, Transition

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NO_COOLDOWN = Duration(0.0001, "0s")


def at(seconds: float) -> datetime:
    """The fake clock: T0 plus `seconds`."""
    return T0 + timedelta(seconds=seconds)


def minutes(n: float) -> Duration:
    """A duration of `n` minutes."""
    return Duration(n * 60, f"{n}m")


def hot(threshold: float = 30) -> Comparison:
    """`temperature > threshold`."""
    return Comparison(">", Metric("temperature"), Number(threshold))


def rule(when: Condition, **clauses: object) -> Rule:
    """A rule named like its test, without cooldown unless asked."""
    clauses.setdefault("cooldown", NO_COOLDOWN)
    return Rule(name="r", when=when, **clauses)  # type: ignore[arg-type]


def engine_with(*rules: Rule) -> Engine:
    """An engine with the rules as r0, r1, ..."""
    return Engine({f"r{i}": r for i, r in enumerate(rules)})


def feed(engine: Engine, seconds: float, value: float, **kwargs: str) -> list[Transition]:
    """One temperature point from device d1 (type thermostat) at T0 + seconds."""
    device = kwargs.get("device", "d1")
    kind = kwargs.get("type", "thermostat")
    metric = kwargs.get("metric", "temperature")
    return engine.on_point(device, kind, metric, at(seconds), value)


def kinds(transitions: list[Transition]) -> list[str]:
    """The kinds of the transitions, in order."""
    return [t.kind for t in transitions]


# -- edges --------------------------------------------------------------------------------


def test_threshold_fires_on_the_edge_only() -> None:
    engine = engine_with(rule(hot()))
    assert feed(engine, 0, 20) == []
    fired = feed(engine, 1, 31)
    assert kinds(fired) == ["FIRED"]
    assert (fired[0].rule_id, fired[0].device_id, fired[0].at) == ("r0", "d1", at(1))
    assert (fired[0].value, fired[0].metric) == (31, "temperature")
    engine.resolve("r0", "d1")
    assert feed(engine, 2, 35) == []  # still true: no new edge


def test_rearms_when_false_and_fires_again() -> None:
    engine = engine_with(rule(hot()))
    assert kinds(feed(engine, 0, 31)) == ["FIRED"]
    engine.resolve("r0", "d1")
    assert feed(engine, 1, 20) == []
    assert kinds(feed(engine, 2, 31)) == ["FIRED"]


# -- for ----------------------------------------------------------------------------------


def test_not_fired_before_for_elapsed() -> None:
    engine = engine_with(rule(hot(), hold=minutes(5)))
    for second in range(0, 300, 30):
        assert feed(engine, second, 31) == []


def test_fired_when_for_elapsed() -> None:
    engine = engine_with(rule(hot(), hold=minutes(5)))
    for second in range(0, 300, 30):
        feed(engine, second, 31)
    assert kinds(feed(engine, 300, 31)) == ["FIRED"]
    assert feed(engine, 330, 31) == []


def test_for_cancelled_by_a_false_point() -> None:
    engine = engine_with(rule(hot(), hold=minutes(5)))
    feed(engine, 0, 31)
    feed(engine, 240, 20)
    assert feed(engine, 300, 31) == []
    assert feed(engine, 590, 31) == []
    assert kinds(feed(engine, 600, 31)) == ["FIRED"]


def test_for_fires_on_tick_without_new_points() -> None:
    engine = engine_with(rule(hot(), hold=minutes(5)))
    feed(engine, 0, 31)
    assert engine.tick(at(299)) == []
    assert kinds(engine.tick(at(300))) == ["FIRED"]
    assert engine.tick(at(301)) == []


# -- cooldown and active alerts -----------------------------------------------------------


def test_cooldown_suppresses_a_second_alert_within_it() -> None:
    engine = engine_with(rule(hot(), cooldown=minutes(10)))
    assert kinds(feed(engine, 0, 31)) == ["FIRED"]
    engine.resolve("r0", "d1")
    feed(engine, 60, 20)
    assert feed(engine, 120, 31) == []


def test_cooldown_allows_an_alert_after_it() -> None:
    engine = engine_with(rule(hot(), cooldown=minutes(10)))
    feed(engine, 0, 31)
    engine.resolve("r0", "d1")
    feed(engine, 599, 20)
    assert kinds(feed(engine, 600, 31)) == ["FIRED"]


def test_never_a_second_active_alert_until_resolved() -> None:
    engine = engine_with(rule(hot()))
    assert kinds(feed(engine, 0, 31)) == ["FIRED"]
    assert engine.is_active("r0", "d1")
    feed(engine, 1000, 20)
    assert feed(engine, 2000, 31) == []  # cooldown long over, but the alert is still active
    engine.resolve("r0", "d1")
    assert not engine.is_active("r0", "d1")
    feed(engine, 3000, 20)
    assert kinds(feed(engine, 4000, 31)) == ["FIRED"]


def test_clear_when_emits_cleared_and_frees_the_alert() -> None:
    cool = Comparison("<", Metric("temperature"), Number(25))
    engine = engine_with(rule(hot(), clear=cool))
    assert kinds(feed(engine, 0, 31)) == ["FIRED"]
    assert feed(engine, 1, 27) == []
    cleared = feed(engine, 2, 24)
    assert kinds(cleared) == ["CLEARED"]
    assert (cleared[0].at, cleared[0].value, cleared[0].metric) == (at(2), 24, "temperature")
    assert not engine.is_active("r0", "d1")
    assert feed(engine, 3, 20) == []
    assert kinds(feed(engine, 4, 31)) == ["FIRED"]


# -- nodata -------------------------------------------------------------------------------


def test_nodata_fires_on_tick_after_silence_and_not_before() -> None:
    engine = engine_with(rule(NoData("temperature", minutes(10))))
    assert feed(engine, 0, 20) == []
    assert engine.tick(at(599)) == []
    fired = engine.tick(at(600))
    assert kinds(fired) == ["FIRED"]
    assert (fired[0].metric, fired[0].value) == ("temperature", None)
    assert engine.tick(at(700)) == []


def test_nodata_rearms_when_a_point_comes() -> None:
    engine = engine_with(rule(NoData("temperature", minutes(10))))
    feed(engine, 0, 20)
    engine.tick(at(600))
    engine.resolve("r0", "d1")
    feed(engine, 700, 20)
    assert kinds(engine.tick(at(1300))) == ["FIRED"]


def test_nodata_fires_for_a_listed_device_that_never_sent() -> None:
    engine = engine_with(rule(NoData("temperature", minutes(10))))
    assert kinds(engine.tick(at(0), [("silent", "thermostat")])) == ["FIRED"]


# -- out of order -------------------------------------------------------------------------


def test_late_point_does_not_retrigger_the_edge() -> None:
    engine = engine_with(rule(hot()))
    feed(engine, 0, 31)
    engine.resolve("r0", "d1")
    feed(engine, 10, 20)
    assert feed(engine, 5, 40) == []  # late and hot: stored, but the latest value is 20
    assert feed(engine, 11, 21) == []


def test_late_point_does_not_move_time_backwards() -> None:
    engine = engine_with(rule(hot(), hold=minutes(5)))
    feed(engine, 0, 31)
    feed(engine, 299, 31)
    assert feed(engine, 100, 31) == []
    assert kinds(engine.tick(at(1))) == []  # a tick in the past evaluates at the device's now
    assert kinds(feed(engine, 300, 31)) == ["FIRED"]


def test_late_point_counts_in_later_windows() -> None:
    average = Comparison(">", Window("avg", "temperature", minutes(1)), Number(30))
    engine = engine_with(rule(average))
    feed(engine, 0, 20)
    feed(engine, 20, 20)
    assert feed(engine, 10, 100) == []  # late: evaluates nothing
    assert kinds(feed(engine, 30, 20)) == ["FIRED"]  # avg(20, 100, 20, 20) = 40


# -- windows through the engine -----------------------------------------------------------


def test_window_rule_uses_event_time_window() -> None:
    average = Comparison(">", Window("avg", "temperature", minutes(5)), Number(30))
    engine = engine_with(rule(average))
    assert kinds(feed(engine, 0, 50)) == ["FIRED"]
    engine.resolve("r0", "d1")
    assert feed(engine, 100, 0) == []  # avg 25
    assert kinds(feed(engine, 200, 45)) == ["FIRED"]  # avg 31.67
    engine.resolve("r0", "d1")
    assert feed(engine, 300, 45) == []  # the 50 at t=0 left the window (0, 300]: avg 30
    assert kinds(feed(engine, 301, 30.1)) == ["FIRED"]  # re-armed at 300; avg 30.025


def test_window_rule_on_tick_sees_the_window_shrink() -> None:
    none = Comparison("<", Window("count", "temperature", minutes(1)), Number(1))
    engine = engine_with(rule(none))
    assert feed(engine, 0, 1) == []
    assert engine.tick(at(59)) == []
    assert kinds(engine.tick(at(60))) == ["FIRED"]


# -- scope --------------------------------------------------------------------------------


def test_type_scope_only_watches_that_type() -> None:
    engine = engine_with(rule(hot(), scope=Scope("type", "thermostat")))
    assert feed(engine, 0, 31, device="f1", type="freezer") == []
    assert kinds(feed(engine, 0, 31, device="t1", type="thermostat")) == ["FIRED"]


def test_device_scope_only_watches_that_device() -> None:
    engine = engine_with(rule(hot(), scope=Scope("device", "d2")))
    assert feed(engine, 0, 31, device="d1") == []
    assert kinds(feed(engine, 0, 31, device="d2")) == ["FIRED"]


def test_devices_have_separate_state() -> None:
    engine = engine_with(rule(hot()))
    assert kinds(feed(engine, 0, 31, device="a")) == ["FIRED"]
    assert kinds(feed(engine, 0, 31, device="b")) == ["FIRED"]


def test_point_of_an_unread_metric_evaluates_nothing() -> None:
    engine = engine_with(rule(hot()))
    assert feed(engine, 0, 99, metric="humidity") == []


# -- unknown values -----------------------------------------------------------------------


def test_no_data_yet_is_false() -> None:
    both = And(hot(), Comparison("<", Metric("humidity"), Number(20)))
    engine = engine_with(rule(both))
    assert feed(engine, 0, 31) == []
    assert kinds(feed(engine, 1, 10, metric="humidity")) == ["FIRED"]


def test_division_by_zero_is_false() -> None:
    ratio = Arithmetic("/", Metric("temperature"), Metric("humidity"))
    engine = engine_with(rule(Comparison(">", ratio, Number(1))))
    feed(engine, 0, 0, metric="humidity")
    assert feed(engine, 1, 31) == []
    assert kinds(feed(engine, 2, 1, metric="humidity")) == ["FIRED"]


def test_not_of_unknown_is_still_false() -> None:
    engine = engine_with(rule(Not(Comparison(">", Metric("humidity"), Number(20)))))
    assert engine.tick(at(0), [("d1", "thermostat")]) == []
    assert feed(engine, 1, 10, metric="humidity") != []


def test_rate_over_one_point_is_false() -> None:
    rising = Comparison(">", Window("rate", "temperature", minutes(1)), Number(-1000))
    engine = engine_with(rule(rising))
    assert feed(engine, 0, 31) == []
    assert kinds(feed(engine, 10, 32)) == ["FIRED"]


def test_logic_and_arithmetic_combine() -> None:
    scaled = Arithmetic("*", Negative(Metric("temperature")), Number(2))  # -2t
    condition = Or(
        Between(scaled, Number(-100), Number(-80)),
        Comparison("==", Arithmetic("-", Metric("temperature"), Number(1)), Number(0)),
    )
    engine = engine_with(rule(condition))
    assert feed(engine, 0, 30) == []
    assert kinds(feed(engine, 1, 45)) == ["FIRED"]
    assert fired_value(engine, 3, 1) == -2  # -2 * 1: value of the first comparison's left side


def fired_value(engine: Engine, seconds: float, value: float) -> float | None:
    """Resolve, break the condition, feed `value` and return the fired value."""
    engine.resolve("r0", "d1")
    feed(engine, seconds - 1, 30)
    (fired,) = feed(engine, seconds, value)
    return fired.value


# -- rules at runtime and restarts --------------------------------------------------------


def test_restart_mid_for_fires_at_minute_five_exactly_once() -> None:
    rules = {"overheat": rule(hot(), hold=minutes(5))}
    stored: list[tuple[datetime, float]] = []
    before = Engine(rules)
    for second in range(0, 241, 30):
        assert before.on_point("d1", "thermostat", "temperature", at(second), 31) == []
        stored.append((at(second), 31))
    snapshot = json.loads(json.dumps(before.snapshot()))

    after = Engine(rules)
    after.restore(snapshot)
    after.prime("d1", "thermostat", "temperature", stored)
    fired: list[Transition] = []
    for second in range(270, 600, 30):
        fired += after.on_point("d1", "thermostat", "temperature", at(second), 31)
    assert [(t.kind, t.at) for t in fired] == [("FIRED", at(300))]


def test_restart_keeps_active_alert_and_cooldown() -> None:
    rules = {"r0": rule(hot(), cooldown=minutes(10))}
    before = Engine(rules)
    feed(before, 0, 31)
    after = Engine(rules)
    after.restore(before.snapshot())
    assert after.is_active("r0", "d1")
    after.resolve("r0", "d1")
    feed(after, 10, 20)
    assert feed(after, 20, 31) == []  # still within the restored cooldown


def test_restore_ignores_state_of_a_changed_rule() -> None:
    before = Engine({"r0": rule(hot(), hold=minutes(5))})
    feed(before, 0, 31)
    after = Engine({"r0": rule(hot(40), hold=minutes(5))})
    after.restore(before.snapshot())
    assert feed(after, 300, 41) == []  # the `for` timer starts afresh


def test_restore_refuses_an_unknown_snapshot_version() -> None:
    with pytest.raises(ValueError, match="version"):
        Engine().restore({"version": 99, "states": []})


def test_set_rules_keeps_state_of_unchanged_rules() -> None:
    engine = engine_with(rule(hot(), hold=minutes(5)))
    feed(engine, 0, 31)
    engine.set_rules({"r0": rule(hot(), hold=minutes(5)), "r1": rule(hot(50))})
    assert kinds(feed(engine, 300, 31)) == ["FIRED"]


def test_set_rules_resets_state_of_changed_rules() -> None:
    engine = engine_with(rule(hot(), hold=minutes(5)))
    feed(engine, 0, 31)
    engine.set_rules({"r0": rule(hot(30.5), hold=minutes(5))})
    assert feed(engine, 300, 31) == []
    assert kinds(feed(engine, 600, 31)) == ["FIRED"]


def test_renaming_or_rewording_a_rule_keeps_its_running_for_timer() -> None:
    engine = engine_with(rule(hot(), hold=minutes(5)))
    feed(engine, 0, 31)
    original = rule(hot(), hold=minutes(5))
    reworded = replace(original, name="Renamed", message="now {value}", severity="critical")
    engine.set_rules({"r0": reworded})
    assert kinds(feed(engine, 300, 31)) == ["FIRED"]


def test_set_rules_drops_removed_rules() -> None:
    engine = engine_with(rule(hot()))
    engine.set_rules([])
    assert feed(engine, 0, 99) == []
    assert engine.snapshot()["states"] == []


def test_compiled_rule_reports_metrics_with_longest_window() -> None:
    condition = And(
        Comparison(">", Window("avg", "temperature", minutes(5)), Number(1)),
        Comparison(">", Window("max", "temperature", minutes(1)), Metric("limit")),
    )
    compiled = compile_rule("x", rule(condition, clear=NoData("humidity", minutes(30))))
    assert dict(compiled.metrics) == {"temperature": 300.0, "limit": 0.0, "humidity": 0.0}
    assert compiled.metric == "temperature"
    assert compiled.applies_to("any", "any")
    same = compile_rule("x", rule(condition, clear=NoData("humidity", minutes(30))))
    assert same.fingerprint == compiled.fingerprint
    assert compile_rule("x", rule(condition)).fingerprint != compiled.fingerprint
