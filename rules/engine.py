"""Evaluate compiled rules against telemetry points: edges, `for`, cooldown, active alerts.

Time is event time: a device's "now" is the newest point time seen for it (never moves back);
a tick evaluates at max(tick time, device now) without advancing the device. A point older than
the newest of its metric is stored in the windows but evaluates nothing, so it can neither move
time backwards nor re-trigger an edge. A point it already holds (same device, metric and time:
storage keeps one such point) changes nothing, so stored points replayed over what was seen live
count once. No clock of its own: callers pass every time.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from rules.ast import Rule
from rules.compiler import CompiledRule, compile_rule
from rules.windows import DEFAULT_MAX_POINTS, Series, from_us, seconds_to_us, to_us

SNAPSHOT_VERSION = 1


@dataclass(frozen=True)
class Transition:
    """An alert fired or cleared for one (rule, device)."""

    kind: Literal["FIRED", "CLEARED"]
    rule_id: str
    device_id: str
    at: datetime
    value: float | None
    metric: str | None
    rule: Rule


class _Device:
    __slots__ = ("device_id", "device_type", "now", "series")

    def __init__(self, device_id: str, device_type: str) -> None:
        self.device_id = device_id
        self.device_type = device_type
        self.now: int | None = None
        self.series: dict[str, Series] = {}


class _State:
    """Per (rule, device): where the condition's current true run started, and the alert."""

    __slots__ = ("active", "fired", "last_fired", "pending")

    def __init__(self) -> None:
        self.pending: int | None = None  # start of the current true run (the `for` timer)
        self.fired = False  # this true run's edge is consumed (fired or suppressed)
        self.active = False
        self.last_fired: int | None = None


RulesArg = Mapping[str, CompiledRule | Rule] | Iterable[CompiledRule]


class Engine:
    """Rule evaluation state for many devices; compile once, evaluate per point."""

    def __init__(self, rules: RulesArg = (), *, max_points: int = DEFAULT_MAX_POINTS) -> None:
        self._max_points = max_points
        self._rules: dict[str, CompiledRule] = {}
        self._by_metric: dict[str, list[CompiledRule]] = {}
        self._retention: dict[str, int] = {}
        self._devices: dict[str, _Device] = {}
        self._states: dict[tuple[str, str], _State] = {}
        self.evaluations = 0  # (point, rule) evaluations so far, for whoever counts them
        self.set_rules(rules)

    @property
    def rules(self) -> Mapping[str, CompiledRule]:
        """The compiled rules by id."""
        return self._rules

    def set_rules(self, rules: RulesArg) -> None:
        """Replace the rules, keeping the state of rules whose id and text are unchanged."""
        compiled = _compile_all(rules)
        kept = {
            rule_id
            for rule_id, rule in compiled.items()
            if rule_id in self._rules and self._rules[rule_id].fingerprint == rule.fingerprint
        }
        self._states = {key: s for key, s in self._states.items() if key[0] in kept}
        self._rules = compiled
        self._by_metric = {}
        self._retention = {}
        for rule in compiled.values():
            for metric, seconds in rule.metrics.items():
                self._by_metric.setdefault(metric, []).append(rule)
                span = seconds_to_us(seconds)
                self._retention[metric] = max(self._retention.get(metric, 0), span)
        for device in self._devices.values():
            for metric in list(device.series):
                if metric in self._retention:
                    device.series[metric].set_retention(self._retention[metric])
                else:
                    del device.series[metric]

    def on_point(
        self, device_id: str, device_type: str, metric: str, time: datetime, value: float
    ) -> list[Transition]:
        """Take one point and evaluate the in-scope rules that read its metric."""
        time_us = to_us(time)
        device = self._device(device_id, device_type)
        device.now = time_us if device.now is None else max(device.now, time_us)
        rules = self._by_metric.get(metric)
        if not rules:
            return []
        series = self._series(device, metric)
        if _holds(series, time_us):
            return []  # the same point again (a replay from storage over live points)
        if not series.add(time_us, float(value)):
            return []  # late point: it is in the windows now, but evaluates nothing
        transitions: list[Transition] = []
        for rule in rules:
            if rule.applies_to(device_id, device.device_type):
                self.evaluations += 1
                self._evaluate(rule, device, device.now, transitions)
        return transitions

    def tick(
        self, now: datetime, devices: Iterable[tuple[str, str]] | None = None
    ) -> list[Transition]:
        """Evaluate time-dependent rules (`for`, windows, nodata) at `now` for the devices."""
        now_us = to_us(now)
        if devices is None:
            targets = list(self._devices.values())
        else:
            targets = [self._device(device_id, device_type) for device_id, device_type in devices]
        timed = [rule for rule in self._rules.values() if rule.time_dependent]
        transitions: list[Transition] = []
        for device in targets:
            at = now_us if device.now is None else max(now_us, device.now)
            for rule in timed:
                if rule.applies_to(device.device_id, device.device_type):
                    self._evaluate(rule, device, at, transitions)
        return transitions

    def resolve(self, rule_id: str, device_id: str) -> None:
        """Mark the (rule, device) alert inactive (resolved from outside); no transition."""
        state = self._states.get((rule_id, device_id))
        if state is not None:
            state.active = False

    def is_active(self, rule_id: str, device_id: str) -> bool:
        """Whether the (rule, device) has an active alert."""
        state = self._states.get((rule_id, device_id))
        return state is not None and state.active

    def watch(self, device_id: str, device_type: str, silent_since: datetime) -> None:
        """Know a device before its first point: `nodata` counts its silence from `silent_since`.

        Gives every metric the rules read an (empty) series starting then, unless it has one.
        A device the engine never heard of is otherwise only evaluated once a point arrives.
        """
        device = self._device(device_id, device_type)
        since = to_us(silent_since)
        for metric in self._retention:
            if metric not in device.series:
                series = self._series(device, metric)
                series.since = since

    def forget(self, *device_ids: str) -> None:
        """Drop devices (deleted, or no longer this engine's) with their windows and states."""
        gone = set(device_ids)
        for device_id in gone:
            self._devices.pop(device_id, None)
        self._states = {key: s for key, s in self._states.items() if key[1] not in gone}

    def set_alert(
        self, rule_id: str, device_id: str, *, active: bool, last_fired: datetime | None
    ) -> None:
        """Align a (rule, device) with the stored alerts (after priming from history)."""
        state = self._states.get((rule_id, device_id))
        if state is None:
            if not active and last_fired is None:
                return
            state = self._states[(rule_id, device_id)] = _State()
        state.active = active
        state.last_fired = None if last_fired is None else to_us(last_fired)
        if active:
            state.fired = True  # the alert is open: its true run's edge is consumed

    def states(self) -> list[tuple[str, str]]:
        """The (rule, device) pairs with evaluation state."""
        return list(self._states)

    def prime(
        self,
        device_id: str,
        device_type: str,
        metric: str,
        points: Iterable[tuple[datetime, float]],
    ) -> None:
        """Refill a device's window of `metric` from stored points (after a restart); no alerts."""
        device = self._device(device_id, device_type)
        stored = [(to_us(time), float(value)) for time, value in points]
        if not stored or metric not in self._retention:
            return
        self._series(device, metric).extend(stored)
        newest = max(time for time, _ in stored)
        device.now = newest if device.now is None else max(device.now, newest)

    def snapshot(self) -> dict[str, Any]:
        """The per (rule, device) state as JSON-serialisable data, for `restore` after a restart."""
        states = []
        for (rule_id, device_id), state in self._states.items():
            if state.pending is None and not state.active and state.last_fired is None:
                continue
            states.append(
                {
                    "rule_id": rule_id,
                    "device_id": device_id,
                    "fingerprint": self._rules[rule_id].fingerprint,
                    "pending_since": _iso(state.pending),
                    "fired": state.fired,
                    "active": state.active,
                    "last_fired": _iso(state.last_fired),
                }
            )
        return {"version": SNAPSHOT_VERSION, "states": states}

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Load state from `snapshot()`; entries for rules now missing or changed are ignored."""
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported rule engine snapshot version {snapshot.get('version')}")
        for entry in snapshot.get("states", ()):
            rule = self._rules.get(entry["rule_id"])
            if rule is None or rule.fingerprint != entry.get("fingerprint"):
                continue
            state = _State()
            state.pending = _parse_us(entry.get("pending_since"))
            state.fired = bool(entry.get("fired", False))
            state.active = bool(entry.get("active", False))
            state.last_fired = _parse_us(entry.get("last_fired"))
            self._states[(entry["rule_id"], entry["device_id"])] = state

    # -- internals ------------------------------------------------------------------------

    def _device(self, device_id: str, device_type: str) -> _Device:
        device = self._devices.get(device_id)
        if device is None:
            device = self._devices[device_id] = _Device(device_id, device_type)
        else:
            device.device_type = device_type
        return device

    def _series(self, device: _Device, metric: str) -> Series:
        series = device.series.get(metric)
        if series is None:
            series = device.series[metric] = Series(self._retention[metric], self._max_points)
        return series

    def _evaluate(
        self, rule: CompiledRule, device: _Device, now: int, out: list[Transition]
    ) -> None:
        key = (rule.rule_id, device.device_id)
        state = self._states.get(key)
        series = device.series
        if state is not None and state.active and rule.clear is not None:
            if rule.clear(series, now):
                state.active = False
                value = rule.clear_value(series, now) if rule.clear_value else None
                out.append(_transition("CLEARED", rule, device, now, (value, rule.clear_metric)))
        if not rule.condition(series, now):  # False or unknown: cancel `for`, re-arm
            if state is not None:
                state.pending, state.fired = None, False
            return
        if state is None:
            state = self._states[key] = _State()
        if state.pending is None:
            state.pending = now
        if state.fired or now - state.pending < rule.hold_us:
            return
        state.fired = True  # the edge is consumed even when cooldown or an active alert hides it
        if state.active:
            return
        if state.last_fired is not None and now - state.last_fired < rule.cooldown_us:
            return
        state.active, state.last_fired = True, now
        value = rule.value(series, now) if rule.value else None
        out.append(_transition("FIRED", rule, device, now, (value, rule.metric)))


def _transition(
    kind: Literal["FIRED", "CLEARED"],
    rule: CompiledRule,
    device: _Device,
    now: int,
    reading: tuple[float | None, str | None],
) -> Transition:
    value, metric = reading
    return Transition(kind, rule.rule_id, device.device_id, from_us(now), value, metric, rule.rule)


def _holds(series: Series, time_us: int) -> bool:
    """Whether the series already has a point at this time (the newest, or one in its windows)."""
    if series.latest_time is None or time_us > series.latest_time:
        return False  # newer than anything held: the common case, answered at once
    if time_us == series.latest_time:
        return True
    first, end = series.bounds(time_us - 1, time_us)
    return end > first


def _compile_all(rules: RulesArg) -> dict[str, CompiledRule]:
    if isinstance(rules, Mapping):
        rules = [
            rule if isinstance(rule, CompiledRule) else compile_rule(rule_id, rule)
            for rule_id, rule in rules.items()
        ]
    return {rule.rule_id: rule for rule in rules}


def _iso(micros: int | None) -> str | None:
    return None if micros is None else from_us(micros).isoformat()


def _parse_us(text: str | None) -> int | None:
    return None if text is None else to_us(datetime.fromisoformat(text))
