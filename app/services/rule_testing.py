"""Try a draft rule on stored telemetry: when would it have fired and cleared, per device.

The replay runs the real engine over the stored points in event time, with the periodic
tick the live evaluator has, so `for`, windows and `nodata` behave as they would have. No
alert is written. Nobody resolves alerts during a replay, so a rule without `clear when`
is shown cleared when its condition stopped holding: the earliest an operator could have
resolved it, and the moment it could fire again.
"""

import uuid
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from app.errors import ValidationError
from app.models import Device
from app.services import rules, telemetry, validation
from rules import ast
from rules.compiler import compile_rule
from rules.engine import Engine, Transition

MAX_RANGE = timedelta(days=31)
MAX_TICKS = 2000  # per replay: a 24 h replay ticks every 43 s, a 1 h one every 10 s
MIN_TICK = timedelta(seconds=10)  # the live evaluator's tick
_RULE_ID = "draft"


@dataclass
class Firing:
    """One alert the rule would have opened."""

    fired_at: datetime
    value: float | None
    cleared_at: datetime | None = None  # None: still open at the end of the range


@dataclass
class DeviceReplay:
    """What the rule would have done on one device."""

    device_id: uuid.UUID
    device_name: str
    metric: str | None  # the metric the rule's condition reads first (to chart)
    firings: list[Firing] = field(default_factory=list)


def replay(
    *,
    session: Session,
    expression: str,
    start: datetime,
    end: datetime,
    device_ids: Collection[uuid.UUID | str] | None = None,
) -> list[DeviceReplay]:
    """Replay `expression` over start <= time < end on the devices in its scope, by name."""
    name = None if rules.is_rule_text(expression) else "draft"  # a bare condition is fine too
    rule, _ = rules.build_rule(rules.RuleInput(expression=expression, name=name))
    if start.tzinfo is None or end.tzinfo is None:
        raise ValidationError("from", "times need a time zone")
    if start >= end:
        raise ValidationError("from", "must be before 'to'")
    if end - start > MAX_RANGE:
        raise ValidationError("to", f"a replay covers at most {MAX_RANGE.days} days")
    if rule.clear is None:
        rule = replace(rule, clear=ast.Not(rule.when))
    compiled = compile_rule(_RULE_ID, rule)
    targets = [
        device
        for device in _devices(session, device_ids)
        if compiled.applies_to(str(device.id), device.type)
    ]
    results = {str(d.id): DeviceReplay(d.id, d.name, compiled.metric) for d in targets}
    engine = Engine([compiled])
    for device in targets:
        engine.watch(str(device.id), device.type, start)
    step = max(MIN_TICK, (end - start) / MAX_TICKS)
    next_tick = start + step
    points = telemetry.history(
        session=session,
        metrics=compiled.metrics,
        start=start,
        end=end,
        device_ids=[device.id for device in targets],
    )
    types = {str(device.id): device.type for device in targets}
    for point in points:
        while next_tick < point.time:
            _record(results, engine.tick(next_tick))
            next_tick += step
        device_id = str(point.device_id)
        found = engine.on_point(
            device_id, types[device_id], point.metric_name, point.time, point.value
        )
        _record(results, found)
    while next_tick < end:
        _record(results, engine.tick(next_tick))
        next_tick += step
    return list(results.values())


def _devices(session: Session, device_ids: Collection[uuid.UUID | str] | None) -> list[Device]:
    query = select(Device).order_by(col(Device.name), col(Device.id))
    if device_ids is None:
        return list(session.exec(query))
    wanted = {validation.parse_id(device_id, "deviceIds") for device_id in device_ids}
    found = list(session.exec(query.where(col(Device.id).in_(wanted))))
    missing = wanted - {device.id for device in found}
    if missing:
        raise ValidationError("deviceIds", f"no device with id {sorted(map(str, missing))[0]}")
    return found


def _record(results: dict[str, DeviceReplay], transitions: list[Transition]) -> None:
    for transition in transitions:
        firings = results[transition.device_id].firings
        if transition.kind == "FIRED":
            firings.append(Firing(transition.at, transition.value))
        elif firings and firings[-1].cleared_at is None:
            firings[-1].cleared_at = transition.at
