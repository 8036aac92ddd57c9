"""Rule evaluation: committed points in, alerts out.

The evaluator reads committed points and device events from the partitioned streams
(app/core/streams.py), so it sees exactly the points that were committed, whichever ingest
process wrote them, at least once: it acknowledges a read once the alerts it caused are
committed, and takes over what a dead evaluator left unacknowledged. Each partition has
one evaluating process at a time, its owner (app/workers/leases.py: Redis leases shared among the
worker processes, or the holder of an advisory lock when there is no Redis); a process
evaluates the devices of the partitions it owns, and a partition whose owner died or gave
it back goes to another within seconds.
Transitions become alerts through the alerts service in one transaction per batch,
announced on `iot:alerts` after the commit; rule and alert changes come from the bus.

Nothing is forgotten across a restart or a change of owner: before it takes live points,
the new evaluator replays the stored telemetry each rule can still see (its longest window
plus its `for`), which rebuilds the windows and the `for` timers, then aligns each
(rule, device) with the stored alerts (open ones stay open, cooldowns keep running). A
violation that is still going on but has no alert (no evaluator ran when it began) opens
one then. On a change of partitions only the devices of the partitions taken over are
rebuilt so; those of the partitions kept keep their state. That is also why a graceful
stop has no state to save: the batch (or tick) in progress ends whole, its alerts
committed, before the lock goes; entries not acknowledged are taken over by the next
evaluator. A Redis that lost its data makes it do the same rebuild.

What its input can still miss (a stream append that failed, a rule or alert message its
bounded bus queue dropped) is noted per device in `app/workers/evaluation_drops.py` and replayed
from storage before the entries that follow, so each device's points still reach the
engine in commit order. The engine ignores a point it already holds, so a replay over
points also seen live counts them once, and alert opening is idempotent.
"""

import asyncio
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlmodel import Session

from app.core import bus, db, logs, metrics, retries, tracing
from app.core.errors import ValidationError
from app.core.models import Alert, AlertRule, Device
from app.core.shutdown import finish_first
from app.core.streams import RULES, Entry, Span, Streams, StreamsError, StreamsReset, partition_of
from app.services import alerts, commands, devices, notifications, rules, telemetry
from app.workers import leases
from app.workers.evaluation_drops import TELEMETRY_PREFIX, BurstLog, DropLog, Dropped, from_gap
from rules.ast import CommandAction
from rules.compiler import CompiledRule, compile_rule
from rules.engine import Engine, Transition
from rules.parser import parse_rule

logger = logging.getLogger(__name__)

# a replayed firing this close to a stored alert's time is that alert (ticks vs points)
SAME_FIRING = timedelta(minutes=1)
_MICROSECOND = timedelta(microseconds=1)
# a replay of dropped points reads this many devices a query (bind parameters are limited;
# only each device's own order matters, so groups of devices replay one after the other)
REPLAY_DEVICES = 500

Clock = Callable[[], datetime]
T = TypeVar("T")


def _now() -> datetime:
    return datetime.now(UTC)


def _compiled(stored: Iterable[AlertRule]) -> list[CompiledRule]:
    compiled = []
    for rule in stored:
        try:
            compiled.append(compile_rule(str(rule.id), parse_rule(rule.expression)))
        except Exception:  # a stored rule that no longer compiles must not stop the others
            logger.exception("rule %s (%s) skipped: it does not compile", rule.name, rule.id)
    return compiled


def lookback(compiled: Iterable[CompiledRule]) -> timedelta:
    """How much history rebuilds every rule's state: its longest window plus its `for`."""
    seconds = [max(rule.metrics.values(), default=0.0) + rule.hold_us / 1e6 for rule in compiled]
    return timedelta(seconds=max(seconds, default=0.0)) + SAME_FIRING


class Evaluator:
    """One rule engine fed with committed points; writes the alerts it decides."""

    def __init__(self, clock: Clock = _now, owns: Callable[[str], bool] | None = None) -> None:
        self.engine = Engine([])
        self._clock = clock
        # which devices are this evaluator's (those of its partitions); all by default
        self._owns = owns or (lambda _device_id: True)
        self._types: dict[str, str] = {}
        self._rules: dict[str, AlertRule] = {}
        self._newest: datetime | None = None  # of the points evaluated since the last lag
        self.drops = DropLog()  # its bus subscription's `on_drop` records there
        self.replayed_points = 0  # read back from storage after drops, since it was made
        self.rebuilt_points = 0  # read back from storage by `start`, since it was made
        # the partitions whose devices' state it holds, built from storage (`run_evaluator`)
        self.held: frozenset[int] = frozenset()
        self._burst = BurstLog(clock)

    def load(self) -> None:
        """Read the enabled rules and the devices (at start, and when rules change)."""
        with Session(db.get_engine(), expire_on_commit=False) as session:
            stored = rules.list_rules(session=session, enabled_only=True)
            known = [d for d in devices.every_device(session=session) if self._owns(str(d.id))]
        self._rules = {str(rule.id): rule for rule in stored}
        self.engine.set_rules(_compiled(stored))
        types = {str(device.id): device.type for device in known}
        # deleted (its event maybe dropped), or of a partition no longer this evaluator's
        self.engine.forget(*(self._types.keys() - types.keys()))
        self._types = types
        for device in known:
            self.engine.watch(str(device.id), device.type, _silent_since(device))
        logger.info("rule engine: %d enabled rule(s)", len(self._rules))

    def own(self, owns: Callable[[str], bool]) -> None:
        """Evaluate the devices `owns` accepts from now on; `start(fresh=...)` next."""
        self._owns = owns

    def start(self, fresh: Callable[[str], bool] | None = None) -> list[Transition]:
        """Load, replay recent history, align with the stored alerts (before live points).

        `fresh`: only the devices it accepts are rebuilt (those of partitions just taken
        over); the others keep their state, re-armed where an alert was closed meanwhile.
        Returns what the replay found that no evaluator acted on: violations still going on
        without an alert (now opened), and open alerts whose condition cleared meanwhile
        (now resolved, as the rule's `clear when` would have).
        """
        self.load()
        now = self._clock()
        since = now - lookback(self.engine.rules.values())
        if fresh is None:
            replayed, fed = self._replay(since, now + SAME_FIRING)
            fresh = self._owns
        else:
            self._resync_alerts()
            span = (since, now + SAME_FIRING)
            replayed, fed = self._replay_devices({d: span for d in self._types if fresh(d)})
        self.rebuilt_points += fed
        logger.info("rule engine: %d point(s) replayed from storage", fed)
        with Session(db.get_engine()) as session:
            stored = alerts.last_triggered(session=session, since=since - SAME_FIRING)
            still_open = {pair for pair in self._open_pairs(session) if fresh(pair[1])}
        last = {
            (str(rule), str(device)): at
            for (rule, device), at in stored.items()
            if fresh(str(device))  # this evaluator's, and to be rebuilt
        }
        missed = [
            t
            for t in replayed
            if t.kind == "FIRED"
            and self.engine.is_active(t.rule_id, t.device_id)
            and (t.rule_id, t.device_id) not in still_open
            and last.get((t.rule_id, t.device_id), since) < t.at - SAME_FIRING
        ]
        # the last clear of an open alert whose condition the replay ends cleared: committed
        # points no evaluator saw (a takeover, points stored before this replay's query)
        cleared = {
            (t.rule_id, t.device_id): t
            for t in replayed
            if t.kind == "CLEARED" and (t.rule_id, t.device_id) in still_open
        }
        cleared = {pair: t for pair, t in cleared.items() if not self.engine.is_active(*pair)}
        still_open -= cleared.keys()
        pairs = {pair for pair in self.engine.states() if fresh(pair[1])}
        for rule_id, device_id in pairs | set(last) | still_open:
            self.engine.set_alert(
                rule_id,
                device_id,
                active=(rule_id, device_id) in still_open,
                last_fired=last.get((rule_id, device_id)),
            )
        if missed:
            logger.warning("rule engine: %d violation(s) found without an alert", len(missed))
        if cleared:
            logger.warning("rule engine: %d open alert(s) found cleared", len(cleared))
        found = missed + list(cleared.values())
        self.apply(found)
        return found

    def _replay(
        self, start: datetime, end: datetime, ranges: Mapping[str, Span] | None = None
    ) -> tuple[list[Transition], int]:
        """Feed the stored points of the rules' metrics to the engine; nothing is applied.

        With `ranges` (device id -> first and last time), only those devices' points within
        their own range. Returns the transitions and how many points were fed.
        """
        metrics = {metric for rule in self.engine.rules.values() for metric in rule.metrics}
        device_ids = None if ranges is None else [uuid.UUID(device_id) for device_id in ranges]
        found: list[Transition] = []
        fed = 0
        with Session(db.get_engine()) as session:
            for point in telemetry.history(
                session=session, metrics=metrics, start=start, end=end, device_ids=device_ids
            ):
                device_id = str(point.device_id)
                device_type = self._types.get(device_id)
                if device_type is None:
                    continue
                if ranges is not None:
                    first, last = ranges[device_id]
                    if not first <= point.time <= last:
                        continue
                fed += 1
                found += self.engine.on_point(
                    device_id, device_type, point.metric_name, point.time, point.value
                )
        return found, fed

    def _replay_devices(self, ranges: Mapping[str, Span]) -> tuple[list[Transition], int]:
        """`_replay` of each device's own range, REPLAY_DEVICES devices a query."""
        found: list[Transition] = []
        points = 0
        spans = list(ranges.items())
        for first in range(0, len(spans), REPLAY_DEVICES):
            group = dict(spans[first : first + REPLAY_DEVICES])
            start = min(begin for begin, _ in group.values())
            end = max(last for _, last in group.values()) + _MICROSECOND
            more, fed = self._replay(start, end, group)
            found += more
            points += fed
        return found, points

    def recover(self, dropped: Dropped) -> list[Transition]:
        """Replay from storage what the bus queue dropped, and apply what it fires or clears.

        Called before the batch taken with `dropped`: those points were committed before
        the batch's, so each device's points reach the engine in order, as if nothing had
        been dropped (a tick meanwhile skips the devices still behind).
        """
        if dropped.events:  # a rule, alert or device change went too: read them again
            self.load()
            self._resync_alerts()
        evaluations = self.engine.evaluations
        found, points = self._replay_devices(dropped.ranges)
        metrics.RULE_EVALUATIONS.inc(self.engine.evaluations - evaluations)
        self.apply(found, trigger="replay")
        self.drops.replayed()
        self.replayed_points += points
        self._burst.replayed(dropped, points)
        return found

    def _resync_alerts(self) -> None:
        """Re-arm the (rule, device) pairs whose alert was closed by a message that was dropped."""
        with Session(db.get_engine()) as session:
            still_open = self._open_pairs(session)
        for rule_id, device_id in self.engine.states():
            if (rule_id, device_id) not in still_open and self.engine.is_active(rule_id, device_id):
                self.engine.resolve(rule_id, device_id)

    def _open_pairs(self, session: Session) -> set[tuple[str, str]]:
        """(rule id, device id) of the open alerts of this evaluator's devices."""
        return {
            (str(alert.rule_id), str(alert.device_id))
            for alert in alerts.active_alerts(session=session)
            if self._owns(str(alert.device_id))
        }

    def _device_type(self, device_id: str) -> str | None:
        if not self._owns(device_id):
            return None
        if device_id not in self._types:
            with Session(db.get_engine()) as session:
                device = devices.get_device(session=session, device_id=device_id)
                if device is None:
                    return None
                self._types[device_id] = device.type
        return self._types[device_id]

    def on_messages(
        self, batch: list[tuple[str, bus.Message]], dropped: Dropped | None = None
    ) -> list[Transition]:
        """Take what the bus queued, in order; the alerts of a run of points in one commit.

        A run is the points of one ingest batch (one correlation id), evaluated in one
        rules.evaluate span. A rule, alert or device event between two runs applies after
        the first: its points are decided under the rules and devices as they were.
        `dropped`: what the queue dropped before this batch, replayed first; if that fails
        (the database is away), the batch is not evaluated and waits with it for the next.
        """
        found: list[Transition] = []
        if dropped:
            try:
                found += self.recover(dropped)
            except Exception:
                self.drops.put_back(batch)
                raise
        elif not self.drops.behind():
            self._burst.quiet()
        for (is_telemetry, cause), run in itertools.groupby(batch, _run_key):
            if is_telemetry:
                found += self._evaluate_run(cause, [message for _, message in run])
                continue
            for channel, message in run:
                self._on_event(channel, message)
        self._report_lag()
        return found

    def on_entries(self, entries: list[Entry]) -> list[Transition]:
        """Evaluate entries read from the streams, in order; their gaps replayed first.

        A gap entry stands for appends that failed (app/core/bus.py `Gaps`): its devices' points
        are read back from storage before the entries that follow it.
        """
        batch: list[tuple[str, bus.Message]] = []
        for entry in entries:
            if entry.message.get("kind") == "gap":
                self.drops.add(from_gap(entry.message))
                metrics.STREAM_GAPS.inc()
            else:
                batch += bus.entry_messages(entry.message)
        return self.on_messages(batch, self.drops.take())

    def _evaluate_run(self, cause: str | None, messages: list[bus.Message]) -> list[Transition]:
        """Evaluate the points of one ingest batch (`cause`: its id), then apply the result."""
        begins = cause is None  # points that came with no id: their trace begins here
        cause = cause or logs.new_id()
        points = sum(len(message["points"]) for message in messages)
        with tracing.span("rules.evaluate", cause, begins=begins, trigger="points", points=points):
            found = [transition for message in messages for transition in self._evaluate(message)]
            tracing.annotate(transitions=len(found))
            self.apply(found, cause)
        return found

    def _report_lag(self) -> None:
        """evaluator_lag_seconds: the age of the newest point evaluated, its alerts written."""
        if self._newest is not None:
            lag = (self._clock() - self._newest).total_seconds()
            metrics.EVALUATOR_LAG.set(max(0.0, lag))  # a device clock ahead is no lag
            self._newest = None

    def _on_event(self, channel: str, message: bus.Message) -> None:
        """A rule change, an alert change or a device event."""
        if channel == bus.RULES:
            self.load()
        elif channel == bus.ALERTS:
            if message.get("type") == "RESOLVED" and message.get("rule_id"):
                # resolved by an operator (or by the rule): the next true edge fires again
                self.engine.resolve(message["rule_id"], message["device_id"])
        elif channel == bus.DEVICE_EVENTS:
            self._on_device_event(message)

    def _on_device_event(self, message: bus.Message) -> None:
        device = message["device"]
        if not self._owns(device["id"]):
            return
        if message["type"] == "DELETED":
            self._types.pop(device["id"], None)
            self.engine.forget(device["id"])
        elif message["type"] in ("CREATED", "UPDATED"):
            self._types[device["id"]] = device["type"]
            if message["type"] == "CREATED":
                created = datetime.fromisoformat(device["created_at"])
                self.engine.watch(device["id"], device["type"], created)

    def on_telemetry(self, message: bus.Message) -> list[Transition]:
        """Evaluate one bus telemetry message; apply what fired or cleared."""
        return self._evaluate_run(message.get("correlation_id"), [message])

    def _evaluate(self, message: bus.Message) -> list[Transition]:
        device_id = message["device_id"]
        device_type = self._device_type(device_id)
        if device_type is None:
            return []
        found: list[Transition] = []
        evaluations = self.engine.evaluations
        for point in message["points"]:
            at = datetime.fromisoformat(point["time"])
            found += self.engine.on_point(
                device_id, device_type, point["metric"], at, float(point["value"])
            )
            if self._newest is None or at > self._newest:
                self._newest = at
        metrics.RULE_EVALUATIONS.inc(self.engine.evaluations - evaluations)
        return found

    def tick(self, now: datetime | None = None) -> list[Transition]:
        """Time-driven evaluation (`for`, windows, `nodata`) of every known device.

        Devices with dropped points not replayed yet wait for the next tick: their windows
        and timers are behind, and judging them now could fire what those points would not.
        """
        behind = self.drops.behind()
        devices = None
        if behind:
            devices = [(d, kind) for d, kind in self._types.items() if d not in behind]
        else:
            self._burst.quiet()
        found = self.engine.tick(self._clock() if now is None else now, devices)
        self.apply(found)
        return found

    def apply(
        self, transitions: list[Transition], cause: str | None = None, trigger: str = "clock"
    ) -> None:
        """Open an alert per FIRED, resolve the open one per CLEARED, in one transaction.

        `cause` is the correlation id of the ingest batch whose points made the transitions:
        the alerts store it, and their log lines, notifications and commands carry it. A
        time-driven evaluation (a tick, the replay at start) or a replay of dropped points
        (`trigger` "replay") has none: it gets a new one, whose trace begins with its own
        rules.evaluate span (app/core/tracing.py).
        """
        if not transitions:
            return
        if cause is not None:  # in the rules.evaluate span of the run of points
            with logs.bind(correlation_id=cause):
                self._apply(transitions)
            return
        cause = logs.new_id()
        with (
            logs.bind(correlation_id=cause),
            tracing.span(
                "rules.evaluate", cause, begins=True, trigger=trigger, transitions=len(transitions)
            ),
        ):
            self._apply(transitions)

    def _apply(self, transitions: list[Transition]) -> None:
        opened: list[Alert] = []
        with db.session_scope() as session:
            for transition in transitions:
                stored = self._rules.get(transition.rule_id)
                if stored is None:
                    continue
                device_id = uuid.UUID(transition.device_id)
                if transition.kind == "FIRED":
                    if (alert := self._fire(session, stored, device_id, transition)) is not None:
                        opened.append(alert)
                else:
                    open_one = alerts.open_alert_for(
                        session=session, rule_id=stored.id, device_id=device_id
                    )
                    if open_one is not None:
                        alerts.resolve_alert(
                            session=session,
                            alert_id=open_one.id,
                            user_id=None,
                            message="cleared by the rule",
                        )
        for alert in opened:  # counted once committed
            metrics.ALERTS_TRIGGERED.labels(str(alert.severity).lower()).inc()

    @staticmethod
    def _fire(
        session: Session, stored: AlertRule, device_id: uuid.UUID, t: Transition
    ) -> Alert | None:
        """Open the alert with its message; its notifications go in the same transaction.

        The alert opened, or None (one is already open, or the device is gone).
        """
        device = devices.get_device(session=session, device_id=device_id)
        if device is None:
            return None  # deleted meanwhile
        message = notifications.render_message(
            t.rule.message,
            rule_name=stored.name,
            device_name=device.name,
            device_id=device_id,
            value=t.value,
            metric=t.metric,
            severity=stored.severity,
            at=t.at,
        )
        alert = alerts.open_alert(
            session=session,
            rule=stored,
            device_id=device_id,
            at=t.at,
            message=message,
            metric_name=t.metric,
            metric_value=t.value,
        )
        if alert is None:
            return None
        with (
            logs.bind(alert_id=alert.id, device_id=device_id),  # its command's lines too
            tracing.span(
                "alert.open",
                logs.correlation_id(),
                alert_id=alert.id,
                rule_id=stored.id,
                device_id=device_id,
                severity=stored.severity,
            ),
        ):
            logger.info(
                "alert %s opened: rule %s on device %s (%s = %s)",
                alert.id, stored.name, device.name, t.metric, t.value,
            )  # fmt: skip
            notifications.schedule(session, alert=alert, notify=t.rule.notify)
            if t.rule.command is not None:
                _command(session, stored, alert, device_id, t.rule.command)
        return alert


def _command(
    session: Session,
    stored: AlertRule,
    alert: Alert,
    device_id: uuid.UUID,
    action: CommandAction,
) -> None:
    """Send the rule's `command` clause to the device, recorded as sent by the rule."""
    data = commands.CommandInput(device_id=device_id, action=action.action, params=action.params)
    try:
        commands.send_command(session=session, data=data, rule_id=stored.id, alert_id=alert.id)
    except ValidationError as refused:  # the alert stands; the command is logged as refused
        logger.error("rule %s could not send command %s: %s", stored.name, action.action, refused)


def _run_key(item: tuple[str, bus.Message]) -> tuple[bool, str | None]:
    """Telemetry of one ingest batch (its correlation id) runs together; events apart."""
    channel, message = item
    if channel.startswith(TELEMETRY_PREFIX):
        return True, message.get("correlation_id")
    return False, None


def _silent_since(device: Device) -> datetime:
    """From when a device counts as silent for `nodata`: its last message, else its creation."""
    return device.last_seen_at or device.created_at


TICK_SECONDS = 10.0
# rule, alert and device messages wait in the evaluator's bus queue (telemetry comes from
# the streams); the queue drops its oldest when full, and a drop makes it reload
QUEUE_SIZE = 100_000
BATCH_MESSAGES = 5_000  # bus messages taken in one turn
# a read takes at most this many entries a partition: an entry is one ingest batch's
# devices of that partition, so a read is many batches, evaluated in one thread hop
READ_ENTRIES = 200
READ_BLOCK = 1.0  # seconds a read waits for a new entry
LAG_EVERY = 5.0  # seconds between two readings of the streams' lag for /metrics
GROUP = RULES  # the evaluator's consumer group on every partition
_WATCHED = (bus.RULES, bus.ALERTS)


async def run_evaluator(
    hub: bus.Hub, streams: Streams, owner: leases.Owner, queue_size: int = QUEUE_SIZE
) -> None:
    """Evaluate the partitions `owner` holds for this process, following its changes.

    Telemetry and device events come from the partitioned streams (app/core/streams.py), read
    in the `rules` consumer group and acknowledged once the alerts they caused are
    committed; rule and alert changes come from the bus (`queue_size`: how many may wait
    before the oldest go, then the rules and alerts are read again). When the partitions
    this process may evaluate change (a worker joined or left), the evaluation stops at the
    end of its batch, the partitions it no longer owns go back (their devices' state with
    them), and the evaluation goes on with the new set: the devices of the partitions it
    kept keep their state, those of the partitions it took are rebuilt from storage, as a
    new leader would (app/workers/leases.py).
    """
    metrics.PARTITIONS_CONFIGURED.set(streams.partitions)
    holding = asyncio.create_task(owner.run(), name="partition-leases")
    evaluating: asyncio.Task | None = None
    evaluator: Evaluator | None = None  # kept across changes: its `held` partitions' state
    using: frozenset[int] = frozenset()
    try:
        while True:
            await _next_change(owner, evaluating)
            wanted = owner.usable()
            if evaluating is not None and not evaluating.done():
                if wanted == using:
                    continue
                evaluating.cancel()
                await asyncio.wait([evaluating])  # its batch ends whole, its alerts committed
            elif evaluating is not None and not evaluating.cancelled():
                evaluator = None  # it failed: its state is not to be trusted, rebuild all
            if not await owner.use(wanted):  # not recorded: nothing starts (next round again)
                wanted = frozenset()
                await owner.use(wanted)
            kept = evaluator.held & wanted if evaluator is not None else frozenset()
            using = wanted
            evaluating = None
            if not using:
                evaluator = None  # what it held may change hands: all rebuilt if they come back
                continue
            evaluator = evaluator or Evaluator()
            evaluating = asyncio.create_task(
                _evaluate(hub, streams, owner, evaluator, using, kept=kept, queue_size=queue_size),
                name="rule-evaluation",
            )
    finally:
        for task in (evaluating, holding):
            if task is not None:
                task.cancel()
                await asyncio.wait([task])
        await owner.close()


async def _next_change(owner: leases.Owner, evaluating: asyncio.Task | None) -> None:
    """Until the owner's partitions may have changed, or the evaluation ended by itself
    (it should not: it is logged, and a new one starts)."""
    changed = asyncio.create_task(owner.changed.wait())
    try:
        await asyncio.wait(
            [changed] if evaluating is None else [changed, evaluating],
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        changed.cancel()
    owner.changed.clear()
    if evaluating is not None and evaluating.done() and not evaluating.cancelled():
        if (error := evaluating.exception()) is not None:
            logger.error("rule evaluation stopped; starting again", exc_info=error)
            await asyncio.sleep(leases.ROUND_SECONDS)


async def _evaluate(
    hub: bus.Hub,
    streams: Streams,
    owner: leases.Owner,
    evaluator: Evaluator,
    partitions: frozenset[int],
    *,
    kept: frozenset[int],
    queue_size: int,
) -> None:
    """`evaluator` on the devices of `partitions`, from storage then from their streams;
    those of `kept` keep the state it holds."""
    count = streams.partitions
    evaluator.own(lambda device_id: partition_of(device_id, count) in partitions)
    evaluator.held = kept  # the others' state goes (`load`) or is not built yet
    taken = partitions - kept
    logger.info(
        "rule evaluator: partitions %s (%d rebuilt from storage)", sorted(partitions), len(taken)
    )
    metrics.EVALUATOR_LEADER.set(1)
    metrics.EVALUATOR_PARTITIONS.set(len(partitions))
    watched = hub.subscribe(
        lambda c: c in _WATCHED, size=queue_size, on_drop=evaluator.drops.record
    )
    metrics.EVALUATOR_QUEUE_DEPTH.set_function(lambda: watched.waiting)  # read at scrape
    turn = asyncio.Lock()
    helpers: list[asyncio.Task] = []
    try:
        # the groups exist before the replay: what is committed meanwhile waits in them
        await _until_done(lambda: streams.join(GROUP, partitions), "join the streams")
        fresh = None if not kept else lambda device_id: partition_of(device_id, count) in taken
        if await _run(turn, evaluator.start, fresh) is None:
            evaluator.held = partitions
        helpers = [
            asyncio.create_task(_tick(evaluator, turn), name="rule-evaluator-tick"),
            asyncio.create_task(_events(watched, evaluator, turn), name="rule-evaluator-events"),
            asyncio.create_task(_lag(streams, partitions), name="rule-evaluator-lag"),
        ]
        await _consume(streams, owner, partitions, evaluator, turn)
    finally:
        watched.close()
        for helper in helpers:
            helper.cancel()
        if helpers:
            await asyncio.wait(helpers)  # a tick in progress ends whole before the lease goes
        for partition in partitions:  # another process reports them now
            metrics.forget_partition(str(partition))
        metrics.EVALUATOR_LEADER.set(0)
        metrics.EVALUATOR_PARTITIONS.set(0)
        metrics.EVALUATOR_QUEUE_DEPTH.set_function(lambda: 0)


async def _consume(
    streams: Streams,
    owner: leases.Owner,
    partitions: frozenset[int],
    evaluator: Evaluator,
    turn: asyncio.Lock,
) -> None:
    """Evaluate the streams' entries, acknowledging each read once its alerts are committed.

    First what the previous owner of these partitions read and never acknowledged (it gave
    their leases back or died): those entries are taken over. Nothing is evaluated while
    the leases are not surely held (Redis unreachable, this process paused): the owner
    renews them or gives them up, which stops this evaluation. An evaluation that
    fails because the database is away is tried again with the same entries; one that
    fails for another reason is logged and acknowledged, so one bad entry stops nothing.
    """
    consumer = leases.member_name()

    async def rebuild(reset: StreamsReset) -> None:
        """Entries were lost with Redis's data: the state comes from storage, as at a start."""
        logger.warning("rule evaluator: %s; rebuilding its state from storage", reset)
        await _run(turn, evaluator.start)

    async def take_over() -> list[Entry]:
        """Every entry of the group read and not acknowledged, now this consumer's."""
        entries: list[Entry] = []
        for partition in sorted(partitions):
            entries += await streams.claim(GROUP, consumer, partition, idle=0)
        return entries

    entries = await _until_done(take_over, "take over", rebuild)
    if entries:
        logger.info("rule evaluator: %d unacknowledged entr(ies) taken over", len(entries))
    failures = 0
    while True:
        if not entries:
            entries = await _until_done(
                lambda: streams.read(
                    GROUP, consumer, partitions, count=READ_ENTRIES, block=READ_BLOCK
                ),
                "read the streams",
                rebuild,
            )
            continue
        if not owner.fresh():
            await asyncio.sleep(leases.ROUND_SECONDS)
            continue
        failed = await _run(turn, evaluator.on_entries, entries)
        if failed is not None and db.is_transient(failed):
            await _wait_after_error(failures := failures + 1, "the database is away")
            continue  # the same entries again
        failures = 0
        try:
            await streams.ack(GROUP, entries)
        except StreamsError as exc:  # evaluated: taken over and evaluated again (idempotent)
            logger.warning("rule evaluator: %d entr(ies) not acknowledged: %s", len(entries), exc)
        entries = []


async def _until_done(
    attempt: Callable[[], Awaitable[T]],
    what: str,
    rebuild: Callable[[StreamsReset], Awaitable[None]] | None = None,
) -> T:
    """`attempt` until it does not raise StreamsError, waiting more after each failure; a
    StreamsReset (Redis lost its data) is `rebuild`'s to handle first, when given."""
    failures = 0
    while True:
        try:
            return await attempt()
        except StreamsReset as reset:
            if rebuild is None:
                raise
            await rebuild(reset)
        except StreamsError as exc:
            await _wait_after_error(failures := failures + 1, f"cannot {what} ({exc})")


async def _wait_after_error(failures: int, why: str) -> None:
    delay = retries.jittered(failures)
    logger.warning("rule evaluator: %s; next try in %.1f s", why, delay)
    await asyncio.sleep(delay)


async def _events(watched: bus.Subscription, evaluator: Evaluator, turn: asyncio.Lock) -> None:
    """Rule and alert changes from the bus, in turn with the batches."""
    while True:
        batch = await watched.get_many(BATCH_MESSAGES)
        # taken with the batch, at once: exactly what was dropped before it
        await _run(turn, evaluator.on_messages, batch, evaluator.drops.take())


async def _lag(streams: Streams, partitions: frozenset[int]) -> None:
    """The streams' lag on /metrics, and done entries trimmed, every LAG_EVERY seconds (a
    partition that cannot be read is skipped that time)."""
    while True:
        for partition in sorted(partitions):
            try:
                lag = await streams.lag(GROUP, partition, trim=True)
            except StreamsError:
                continue
            label = str(partition)
            metrics.STREAM_LENGTH.labels(label).set(lag.length)
            metrics.STREAM_UNDELIVERED.labels(label).set(lag.undelivered)
            metrics.STREAM_PENDING.labels(label).set(lag.pending)
            metrics.STREAM_OLDEST_PENDING.labels(label).set(lag.oldest_pending_seconds)
        await asyncio.sleep(LAG_EVERY)


async def _tick(evaluator: Evaluator, turn: asyncio.Lock) -> None:
    while True:
        await asyncio.sleep(TICK_SECONDS)
        await _run(turn, evaluator.tick)


async def _run(turn: asyncio.Lock, work: Callable[..., object], *args: object) -> Exception | None:
    """Run `work` off the loop in its turn; the error it raised (logged), or None."""
    async with turn:
        try:
            # stopped meanwhile: the batch still ends whole, its alerts committed
            await finish_first(asyncio.to_thread(work, *args))
        except Exception as failed:  # one bad message or a database blip must not stop evaluation
            logger.exception("rule evaluation failed; carrying on")
            return failed
    return None
