"""Compile a rule's syntax tree once into Python closures; evaluating a point walks no AST.

Conditions use three-valued logic: an unknown value (no point yet, empty window, division by
zero, `rate` over one point) makes its comparison unknown (None); `and`/`or`/`not` follow
Kleene logic, so `not` of an unknown stays unknown; the engine treats unknown as false.
"""

import hashlib
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from rules.ast import (
    WINDOW_FUNCTIONS,
    And,
    Arithmetic,
    Between,
    Comparison,
    Condition,
    Metric,
    Negative,
    NoData,
    Not,
    Number,
    Or,
    Rule,
    Value,
    Window,
)
from rules.format import format_rule
from rules.windows import AGGREGATES, Series, seconds_to_us

SeriesMap = Mapping[str, Series]
ValueFn = Callable[[SeriesMap, int], float | None]
ConditionFn = Callable[[SeriesMap, int], bool | None]

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass
class _Reads:
    """What a condition reads, collected while compiling it."""

    metrics: dict[str, float] = field(default_factory=dict)  # metric -> longest window (s)
    first_metric: str | None = None
    time_dependent: bool = False  # reads a window or nodata: its truth can change with time

    def add(self, metric: str, seconds: float) -> None:
        self.metrics[metric] = max(self.metrics.get(metric, 0.0), seconds)
        if self.first_metric is None:
            self.first_metric = metric


@dataclass(frozen=True)
class CompiledRule:
    """A rule ready to evaluate: closures over a device's series and the evaluation time."""

    rule_id: str
    rule: Rule
    fingerprint: str  # stable across processes: a restored state only applies to the same rule
    metrics: Mapping[str, float]  # every metric read (when and clear) -> longest window (s)
    condition: ConditionFn
    value: ValueFn | None  # left-hand value of the first comparison of `when`
    metric: str | None  # first metric `when` reads
    clear: ConditionFn | None
    clear_value: ValueFn | None
    clear_metric: str | None
    hold_us: int
    cooldown_us: int
    time_dependent: bool  # worth evaluating on a tick (has `for`, a window or nodata)
    applies_to: Callable[[str, str], bool]  # (device_id, device_type) -> in scope

    def evaluate(self, series: SeriesMap, now_us: int) -> bool | None:
        """The `when` condition for one device at `now_us`: True, False or None (unknown)."""
        return self.condition(series, now_us)


@dataclass(frozen=True)
class CompiledValue:
    """A value expression ready to evaluate (a dashboard widget's `avg(t, 5m) - setpoint`)."""

    fn: ValueFn  # (series by metric, now in µs) -> the value, None when unknown
    metrics: Mapping[str, float]  # every metric read -> longest window (s); 0: latest only


def compile_value(node: Value) -> CompiledValue:
    """Turn a value's syntax tree into a closure, once, with the metrics it reads."""
    reads = _Reads()
    fn = _value(node, reads)
    return CompiledValue(fn=fn, metrics=dict(reads.metrics))


def compile_rule(rule_id: str, rule: Rule) -> CompiledRule:
    """Turn a rule's syntax tree into closures, once."""
    when_reads, clear_reads = _Reads(), _Reads()
    condition = _condition(rule.when, when_reads)
    clear = _condition(rule.clear, clear_reads) if rule.clear is not None else None
    metrics = dict(when_reads.metrics)
    for name, seconds in clear_reads.metrics.items():
        metrics[name] = max(metrics.get(name, 0.0), seconds)
    first_when = _first_comparison_left(rule.when)
    first_clear = _first_comparison_left(rule.clear) if rule.clear is not None else None
    return CompiledRule(
        rule_id=rule_id,
        rule=rule,
        fingerprint=_fingerprint(rule),
        metrics=metrics,
        condition=condition,
        value=_value(first_when, _Reads()) if first_when is not None else None,
        metric=when_reads.first_metric,
        clear=clear,
        clear_value=_value(first_clear, _Reads()) if first_clear is not None else None,
        clear_metric=clear_reads.first_metric,
        hold_us=seconds_to_us(rule.hold.seconds) if rule.hold is not None else 0,
        cooldown_us=seconds_to_us(rule.cooldown.seconds),
        time_dependent=rule.hold is not None
        or when_reads.time_dependent
        or clear_reads.time_dependent,
        applies_to=_scope(rule),
    )


def _fingerprint(rule: Rule) -> str:
    """What decides firing (scope, when, for, cooldown, clear) in canonical text, hashed:
    editing a comment, the message or the notifications keeps a running `for` timer."""
    deciding = replace(rule, name="", message=None, notify=(), command=None, severity="warning")
    return hashlib.sha256(format_rule(deciding).encode()).hexdigest()[:16]


def _scope(rule: Rule) -> Callable[[str, str], bool]:
    wanted = rule.scope.value
    if rule.scope.kind == "type":
        return lambda device_id, device_type: device_type == wanted
    if rule.scope.kind == "device":
        return lambda device_id, device_type: device_id == wanted
    return lambda device_id, device_type: True


def _first_comparison_left(node: Condition) -> Value | None:
    """The left-hand value of the leftmost comparison (or `between`'s value)."""
    match node:
        case Comparison(left=left):
            return left
        case Between(value=value):
            return value
        case And(left=left, right=right) | Or(left=left, right=right):
            found = _first_comparison_left(left)
            return found if found is not None else _first_comparison_left(right)
        case Not(operand=operand):
            return _first_comparison_left(operand)
    return None


def _condition(node: Condition, reads: _Reads) -> ConditionFn:
    match node:
        case Comparison(op=op, left=left, right=right):
            compare, lhs, rhs = _COMPARE[op], _value(left, reads), _value(right, reads)

            def comparison(series: SeriesMap, now: int) -> bool | None:
                a = lhs(series, now)
                if a is None:
                    return None
                b = rhs(series, now)
                return None if b is None else compare(a, b)

            return comparison
        case Between(value=value, low=low, high=high):
            val, lo, hi = _value(value, reads), _value(low, reads), _value(high, reads)

            def between(series: SeriesMap, now: int) -> bool | None:
                v, a, b = val(series, now), lo(series, now), hi(series, now)
                return None if v is None or a is None or b is None else a <= v <= b

            return between
        case NoData(metric=name, duration=duration):
            reads.add(name, 0.0)
            reads.time_dependent = True
            span = seconds_to_us(duration.seconds)

            def nodata(series: SeriesMap, now: int) -> bool:
                found = series.get(name)
                if found is None:
                    return True
                # a watched series that never got a point is silent since it was watched
                last = found.latest_time if found.latest_time is not None else found.since
                return last is None or last <= now - span

            return nodata
        case And(left=left, right=right):
            first, second = _condition(left, reads), _condition(right, reads)

            def both(series: SeriesMap, now: int) -> bool | None:
                a = first(series, now)
                if a is False:
                    return False
                b = second(series, now)
                if b is False:
                    return False
                return None if a is None or b is None else True

            return both
        case Or(left=left, right=right):
            first, second = _condition(left, reads), _condition(right, reads)

            def either(series: SeriesMap, now: int) -> bool | None:
                a = first(series, now)
                if a is True:
                    return True
                b = second(series, now)
                if b is True:
                    return True
                return None if a is None or b is None else False

            return either
        case Not(operand=operand):
            inner = _condition(operand, reads)

            def negation(series: SeriesMap, now: int) -> bool | None:
                a = inner(series, now)
                return None if a is None else not a

            return negation
    raise TypeError(f"not a condition: {node!r}")


def _value(node: Value, reads: _Reads) -> ValueFn:
    match node:
        case Number(value=number):
            constant = float(number)
            return lambda series, now: constant
        case Metric(name=name):
            reads.add(name, 0.0)

            def latest(series: SeriesMap, now: int) -> float | None:
                found = series.get(name)
                return None if found is None else found.latest_value

            return latest
        case Window(function=function, metric=name, duration=duration):
            if function not in WINDOW_FUNCTIONS:
                raise ValueError(f"unknown window function {function!r}")
            reads.add(name, duration.seconds)
            reads.time_dependent = True
            span, apply, empty = seconds_to_us(duration.seconds), AGGREGATES[function], None
            if function == "count":
                empty = 0.0  # no points at all is a count of zero, not unknown

            def window(series: SeriesMap, now: int) -> float | None:
                found = series.get(name)
                return empty if found is None else apply(found, now - span, now)

            return window
        case Arithmetic(op=op, left=left, right=right):
            lhs, rhs = _value(left, reads), _value(right, reads)
            return _arithmetic(op, lhs, rhs)
        case Negative(operand=operand):
            inner = _value(operand, reads)

            def negative(series: SeriesMap, now: int) -> float | None:
                a = inner(series, now)
                return None if a is None else -a

            return negative
    raise TypeError(f"not a value: {node!r}")


def _arithmetic(op: str, lhs: ValueFn, rhs: ValueFn) -> ValueFn:
    if op == "/":

        def divide(series: SeriesMap, now: int) -> float | None:
            a, b = lhs(series, now), rhs(series, now)
            return None if a is None or b is None or b == 0 else a / b

        return divide
    apply = {"+": operator.add, "-": operator.sub, "*": operator.mul}[op]

    def arithmetic(series: SeriesMap, now: int) -> float | None:
        a, b = lhs(series, now), rhs(series, now)
        return None if a is None or b is None else apply(a, b)

    return arithmetic
