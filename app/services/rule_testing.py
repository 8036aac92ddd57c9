"""Try a draft rule on stored telemetry: when would it have fired and cleared, per device.

The replay runs the real engine over the stored points in event time, with the periodic
tick the live evaluator has, so `for`, windows and `nodata` behave as they would have. No
alert is written. Nobody resolves alerts during a replay, so a rule without `clear when`
is shown cleared when its condition stopped holding: the earliest an operator could have
resolved it, and the moment it could fire again.

Any signed-in user may replay, so a replay is bounded (SPEC 8.2): at most 31 days and
MAX_DEVICES devices (more is refused, naming `deviceIds`, or `expression` when the rule's
scope holds more); it stops after BUDGET_SECONDS of work or MAX_FIRINGS firings and says
up to when it got (`truncated`, `replayed_until`); and each user runs one replay at a time
(per process), a second one being refused with RATE_LIMITED.
"""

import threading
import time
import uuid
from collections.abc import Callable, Collection, Generator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import psycopg
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select

from app.core.errors import RateLimitedError, ValidationError
from app.core.models import Device
from app.services import rules, telemetry, validation
from app.services.telemetry import Point
from rules import ast
from rules.compiler import CompiledRule, compile_rule
from rules.engine import Engine, Transition

MAX_RANGE = timedelta(days=31)
MAX_TICKS = 2000  # per replay: a 24 h replay ticks every 43 s, a 1 h one every 10 s
MIN_TICK = timedelta(seconds=10)  # the live evaluator's tick
MAX_DEVICES = 200
MAX_FIRINGS = 10_000  # over all devices: a replay's answer stays a few MB at most
BUDGET_SECONDS = 10.0  # of work (the database's included) before a replay stops
CHECK_EVERY = 256  # points between two looks at the clock
ALREADY_RUNNING = "a rule test of this account is already running: wait for it to finish"
_RULE_ID = "draft"

_running: set[uuid.UUID] = set()
_running_lock = threading.Lock()  # replays run in worker threads


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
    # how far the replay got: `end`, or the last point replayed when it stopped early
    replayed_until: datetime | None = None
    truncated: bool = False  # stopped at the time budget or MAX_FIRINGS


@contextmanager
def one_at_a_time(user_id: uuid.UUID | None) -> Iterator[None]:
    """Hold the user's replay slot; RateLimitedError while another replay of theirs runs."""
    if user_id is None:
        yield
        return
    with _running_lock:
        if user_id in _running:
            raise RateLimitedError(ALREADY_RUNNING)
        _running.add(user_id)
    try:
        yield
    finally:
        with _running_lock:
            _running.discard(user_id)


def replay(
    *,
    session: Session,
    expression: str,
    start: datetime,
    end: datetime,
    device_ids: Collection[uuid.UUID | str] | None = None,
    user_id: uuid.UUID | None = None,
    budget_seconds: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[DeviceReplay]:
    """Replay `expression` over start <= time < end on the devices in its scope, by name.

    With `user_id`, refused (RATE_LIMITED) while that user's previous replay runs.
    """
    with one_at_a_time(user_id):
        compiled, scope = _compile(expression, start, end)
        targets = _targets(session, compiled, scope, device_ids)
        budget = BUDGET_SECONDS if budget_seconds is None else budget_seconds
        run = _Replay(compiled, targets, start, end, deadline=clock() + budget, clock=clock)
        _limit_statements(session, budget)
        points = telemetry.history(
            session=session,
            metrics=compiled.metrics,
            start=start,
            end=end,
            device_ids=[device.id for device in targets],
        )
        _feed(session, run, points)
        return run.results()


def _feed(session: Session, run: "_Replay", points: Iterator[Point]) -> None:
    """Play `points` into `run`; a statement timeout ends it early, keeping what it replayed."""
    try:
        try:
            run.play(points)
        finally:
            if isinstance(points, Generator):  # stopped early: close the server-side cursor
                points.close()
        _limit_statements(session, None)
    except OperationalError as error:
        # out of time while reading, or a cancel landing just after the last read
        if not isinstance(error.orig, psycopg.errors.QueryCanceled):
            raise
        session.rollback()
        if not run.complete:
            run.stop()


def _compile(expression: str, start: datetime, end: datetime) -> tuple[CompiledRule, ast.Scope]:
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
    return compile_rule(_RULE_ID, rule), rule.scope


def _targets(
    session: Session,
    compiled: CompiledRule,
    scope: ast.Scope,
    device_ids: Collection[uuid.UUID | str] | None,
) -> list[Device]:
    """The devices to replay, by name: those chosen, or the rule's scope; at most MAX_DEVICES."""
    query = select(Device).order_by(col(Device.name), col(Device.id))
    if device_ids is None:
        if scope.kind == "type":
            query = query.where(Device.type == scope.value)
        elif scope.kind == "device":
            query = query.where(Device.id == validation.parse_id(scope.value, "expression"))
        found = list(session.exec(query.limit(MAX_DEVICES + 1)))
        if len(found) > MAX_DEVICES:
            raise ValidationError(
                "expression",
                f"its scope holds more than {MAX_DEVICES} devices, the most one test replays: "
                "narrow it (`on type`, `on device`) or choose the devices (deviceIds)",
            )
    else:
        if len(device_ids) > MAX_DEVICES:
            raise ValidationError("deviceIds", f"at most {MAX_DEVICES} devices per test")
        wanted = {validation.parse_id(device_id, "deviceIds") for device_id in device_ids}
        found = list(session.exec(query.where(col(Device.id).in_(wanted))))
        missing = wanted - {device.id for device in found}
        if missing:
            first = sorted(map(str, missing))[0]
            raise ValidationError("deviceIds", f"no device with id {first}")
    return [device for device in found if compiled.applies_to(str(device.id), device.type)]


def _limit_statements(session: Session, seconds: float | None) -> None:
    """On PostgreSQL, cancel a statement that outlives the budget (None: back to normal).

    The points come sorted by time: the database may sort a month of a fleet's telemetry
    before the first one arrives, and only a statement timeout interrupts that.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    # 0 would mean "no timeout"; the setting ends with the transaction anyway
    value = "DEFAULT" if seconds is None else str(max(1, int(seconds * 1000)))
    session.connection().exec_driver_sql(f"SET LOCAL statement_timeout = {value}")


class _Replay:
    """The engine, the results and the bounds of one replay."""

    def __init__(
        self,
        compiled: CompiledRule,
        targets: list[Device],
        start: datetime,
        end: datetime,
        *,
        deadline: float,
        clock: Callable[[], float],
    ) -> None:
        self.engine = Engine([compiled])
        self.results_by_id = {
            str(d.id): DeviceReplay(d.id, d.name, compiled.metric) for d in targets
        }
        self.types = {str(device.id): device.type for device in targets}
        for device in targets:
            self.engine.watch(str(device.id), device.type, start)
        self.start, self.end = start, end
        self.step = max(MIN_TICK, (end - start) / MAX_TICKS)
        self.next_tick = start + self.step
        self.deadline, self.clock = deadline, clock
        self.firings = 0
        self.reached = start  # every point before this time was replayed
        self.stopped = False

    def play(self, points: Iterable[Point]) -> None:
        """Feed the points in time order with the ticks between them, within the bounds."""
        for count, point in enumerate(points):
            if self._over(count):
                self.stop()
                return
            self._tick_until(point.time)
            device_id = str(point.device_id)
            found = self.engine.on_point(
                device_id, self.types[device_id], point.metric_name, point.time, point.value
            )
            self._record(found)
            self.reached = point.time
        if self._over(0):
            self.stop()
            return
        self._tick_until(self.end)
        self.reached = self.end

    @property
    def complete(self) -> bool:
        """True once every point and tick of the range was replayed."""
        return self.reached >= self.end

    def stop(self) -> None:
        """End early: the results cover the range up to the last point replayed."""
        self.stopped = True

    def results(self) -> list[DeviceReplay]:
        """One result per device, saying how far the replay got."""
        for result in self.results_by_id.values():
            result.replayed_until, result.truncated = self.reached, self.stopped
        return list(self.results_by_id.values())

    def _over(self, count: int) -> bool:
        if self.firings >= MAX_FIRINGS:
            return True
        return count % CHECK_EVERY == 0 and self.clock() >= self.deadline

    def _tick_until(self, moment: datetime) -> None:
        while self.next_tick < moment:
            self._record(self.engine.tick(self.next_tick))
            self.next_tick += self.step

    def _record(self, transitions: list[Transition]) -> None:
        for transition in transitions:
            firings = self.results_by_id[transition.device_id].firings
            if transition.kind == "FIRED":
                firings.append(Firing(transition.at, transition.value))
                self.firings += 1
            elif firings and firings[-1].cleared_at is None:
                firings[-1].cleared_at = transition.at
