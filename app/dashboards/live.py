"""Live values for dashboard widgets: one bus subscription per device, fanned out in-process.

Each process subscribes once per device that any open widget watches and calls every
watcher of a (device, metric) for each point of its telemetry messages. An expression has
one evaluator per (device, expression) in the process, primed once from the database off
the loop and then fed by the live points. So no viewer makes the server query the database
per live point, however many pages show the same value. Everything runs on the event loop
of the hub (`iotdeck serve`); nothing here knows the UI.
"""

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

from app.core import bus, db
from app.core.models import utcnow
from app.dashboards import data
from app.dashboards.expressions import parse_expression
from app.services import validation
from rules.compiler import CompiledValue, compile_value
from rules.windows import Series, from_us, seconds_to_us, to_us

logger = logging.getLogger(__name__)

PointCallback = Callable[[datetime, float], None]
ValueCallback = Callable[[datetime, float | None], None]
Unwatch = Callable[[], None]
RATE_WINDOW = 60.0  # seconds of telemetry `points_per_second` averages over
_COUNTER_QUEUE = 10_000  # messages; the counter does little per message and rarely lags
_TELEMETRY_PREFIX = bus.telemetry_channel("")


def _nothing() -> None:
    """The unwatch of a watch that could not start."""


class _Feed:
    """One device's hub subscription, its reading task, and the watchers of its metrics."""

    def __init__(self, subscription: bus.Subscription, task: asyncio.Task) -> None:
        self.subscription = subscription
        self.task = task
        self.watchers: dict[str, dict[int, PointCallback]] = {}  # metric -> token -> callback

    def close(self) -> None:
        self.subscription.close()
        self.task.cancel()


class _Evaluator:
    """One expression of one device: its window buffers and who shows its value."""

    def __init__(self, device_id: str, compiled: CompiledValue) -> None:
        self.device_id = device_id
        self.compiled = compiled
        self.series = {m: Series(seconds_to_us(s)) for m, s in compiled.metrics.items()}
        self.callbacks: dict[int, ValueCallback] = {}
        self.pending: list[tuple[str, int, float]] | None = []  # points met while priming
        self.loaded_until: dict[str, int] = {}  # metric -> newest time priming read
        self.now_us: int | None = None  # evaluation time: the newest point (event time)
        self.last: tuple[datetime, float | None] | None = None
        self.unwatch: list[Unwatch] = []
        self.priming: asyncio.Task | None = None

    def on_point(self, metric: str, at: datetime, value: float) -> None:
        at_us = to_us(at)
        if self.pending is not None:
            self.pending.append((metric, at_us, value))
        elif self._add(metric, at_us, value):
            self.evaluate(self.now_us)

    def primed(self, loaded: dict[str, Series], now_us: int) -> None:
        """Take the buffers read from storage, then the live points that came meanwhile."""
        self.series.update(loaded)
        self.loaded_until = {
            metric: series.latest_time
            for metric, series in loaded.items()
            if series.latest_time is not None
        }
        pending, self.pending = self.pending or [], None
        for metric, at_us, value in pending:
            self._add(metric, at_us, value)
        self.evaluate(now_us)

    def _add(self, metric: str, at_us: int, value: float) -> bool:
        """Take a live point unless storage gave it already; False when it was dropped.

        A point committed just before priming read the windows is in them and may still
        come on the bus afterwards; a redelivered message is announced again.
        """
        series = self.series[metric]
        stored = self.loaded_until.get(metric)
        if (stored is not None and at_us <= stored) or at_us == series.latest_time:
            return False
        series.add(at_us, value)
        self.now_us = at_us if self.now_us is None else max(self.now_us, at_us)
        return True

    def evaluate(self, now_us: int | None) -> None:
        at_us = max(now_us or 0, self.now_us or 0)
        self.now_us = at_us
        at, value = from_us(at_us), self.compiled.fn(self.series, at_us)
        self.last = (at, value)
        for callback in list(self.callbacks.values()):
            _call(callback, at, value)


def _call(callback: Callable[..., None], *args: Any) -> None:
    """Call one watcher; its failure is logged and never stops the others."""
    try:
        callback(*args)
    except Exception:
        logger.exception("live values: a watcher failed")


class LiveValues:
    """The process's live values: device subscriptions, shared evaluators, a point counter."""

    def __init__(
        self,
        hub: bus.Hub | None,
        *,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hub = hub
        self._clock = clock
        self._monotonic = monotonic
        self._tokens = itertools.count()
        self._feeds: dict[str, _Feed] = {}
        self._evaluators: dict[tuple[str, str], _Evaluator] = {}
        self._primings = 0
        self._counter: bus.Subscription | None = None
        self._counter_task: asyncio.Task | None = None
        self._counted: deque[list[float]] = deque()  # [second, points] of the last minute
        self._counting_since = 0.0
        self._said_no_hub = False

    # -- metrics -------------------------------------------------------------------------
    def watch(self, device_id: str, metric: str, callback: PointCallback) -> Unwatch:
        """Call `callback(time, value)` for each live point of the device's metric."""
        device = str(validation.parse_id(device_id, "device"))
        if self.hub is None:
            self._no_hub()
            return _nothing
        feed = self._feeds.get(device)
        if feed is None:
            channel = bus.telemetry_channel(device)
            subscription = self.hub.subscribe(channels=[channel])
            task = self.hub.loop.create_task(self._read(device, subscription))
            feed = self._feeds[device] = _Feed(subscription, task)
        token = next(self._tokens)
        feed.watchers.setdefault(metric, {})[token] = callback

        def unwatch() -> None:
            watchers = feed.watchers.get(metric, {})
            if watchers.pop(token, None) is None:
                return  # unwatched before
            if not watchers:
                del feed.watchers[metric]
            if not feed.watchers and self._feeds.get(device) is feed:
                del self._feeds[device]
                feed.close()

        return unwatch

    async def _read(self, device: str, subscription: bus.Subscription) -> None:
        async for _channel, message in subscription:
            feed = self._feeds.get(device)
            if feed is not None:
                _dispatch(feed, message)

    # -- expressions ---------------------------------------------------------------------
    def watch_expression(self, device_id: str, expression: str, callback: ValueCallback) -> Unwatch:
        """Call `callback(time, value)` with the expression's value after each point it reads.

        Its current value comes first (once the windows are primed); `value` is None while
        unknown. ValidationError when the expression is not a value of the rule language.
        """
        device = str(validation.parse_id(device_id, "device"))
        compiled = compile_value(parse_expression(expression))
        if self.hub is None:
            self._no_hub()
            return _nothing
        key = (device, expression)
        evaluator = self._evaluators.get(key)
        if evaluator is None:
            evaluator = self._evaluators[key] = self._start(self.hub, device, compiled)
        elif evaluator.last is not None:
            self.hub.loop.call_soon(_call, callback, *evaluator.last)
        token = next(self._tokens)
        evaluator.callbacks[token] = callback

        def unwatch() -> None:
            if evaluator.callbacks.pop(token, None) is None or evaluator.callbacks:
                return
            if self._evaluators.get(key) is evaluator:
                del self._evaluators[key]
            for stop in evaluator.unwatch:
                stop()
            if evaluator.priming is not None:
                evaluator.priming.cancel()

        return unwatch

    def _start(self, hub: bus.Hub, device: str, compiled: CompiledValue) -> _Evaluator:
        """A new evaluator: watching its metrics at once, its windows read from storage."""
        evaluator = _Evaluator(device, compiled)
        for metric in compiled.metrics:
            evaluator.unwatch.append(self.watch(device, metric, _feeder(evaluator, metric)))
        evaluator.priming = hub.loop.create_task(self._prime(evaluator))
        return evaluator

    async def _prime(self, evaluator: _Evaluator) -> None:
        self._primings += 1
        now = self._clock()
        metrics = evaluator.compiled.metrics

        def load() -> dict[str, Series]:
            with db.session_scope() as session:
                return data.recent_series(
                    session=session, device_id=evaluator.device_id, metrics=metrics, now=now
                )

        try:
            loaded = await asyncio.to_thread(load) if metrics else {}
        except Exception:
            # the live points still come: the value fills in as the windows do
            logger.exception("live values: priming %s failed", evaluator.device_id)
            loaded = {}
        evaluator.primed(loaded, to_us(now))

    # -- the fleet's rate ----------------------------------------------------------------
    def points_per_second(self) -> float:
        """Telemetry points per second this process received over the last minute."""
        if self.hub is None:
            self._no_hub()
            return 0.0
        if self._counter is None:
            self._counter = self.hub.subscribe(_is_telemetry, size=_COUNTER_QUEUE)
            self._counter_task = self.hub.loop.create_task(self._count(self._counter))
            self._counting_since = self._monotonic()
        now = self._monotonic()
        self._forget_before(now - RATE_WINDOW)
        counted = sum(points for _, points in self._counted)
        return counted / min(RATE_WINDOW, max(1.0, now - self._counting_since))

    async def _count(self, subscription: bus.Subscription) -> None:
        async for _channel, message in subscription:
            second = float(int(self._monotonic()))
            points = len(message.get("points") or ())
            if self._counted and self._counted[-1][0] == second:
                self._counted[-1][1] += points
            else:
                self._counted.append([second, points])
                self._forget_before(second - RATE_WINDOW)

    def _forget_before(self, moment: float) -> None:
        while self._counted and self._counted[0][0] <= moment:
            self._counted.popleft()

    # -- upkeep ------------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """Counts: device subscriptions, watchers (evaluators' own too), evaluators, primings."""
        return {
            "devices": len(self._feeds),
            "watchers": sum(
                len(w) for feed in self._feeds.values() for w in feed.watchers.values()
            ),
            "evaluators": len(self._evaluators),
            "expression_watchers": sum(len(e.callbacks) for e in self._evaluators.values()),
            "primings": self._primings,
        }

    def close(self) -> None:
        """Stop every subscription and task (at shutdown, and after a test)."""
        for evaluator in self._evaluators.values():
            if evaluator.priming is not None:
                evaluator.priming.cancel()
        for feed in self._feeds.values():
            feed.close()
        if self._counter is not None and self._counter_task is not None:
            self._counter.close()
            self._counter_task.cancel()
        self._feeds, self._evaluators, self._counter = {}, {}, None

    def _no_hub(self) -> None:
        if not self._said_no_hub:
            self._said_no_hub = True
            logger.warning("live values: no bus hub in this process; widgets will not update")


def _is_telemetry(channel: str) -> bool:
    return channel.startswith(_TELEMETRY_PREFIX)


def _feeder(evaluator: _Evaluator, metric: str) -> PointCallback:
    return lambda at, value: evaluator.on_point(metric, at, value)


def _dispatch(feed: _Feed, message: bus.Message) -> None:
    """Hand each point of a telemetry message to the watchers of its metric."""
    for point in message.get("points") or ():
        watchers = feed.watchers.get(point.get("metric"))
        if not watchers:
            continue
        try:
            at, value = datetime.fromisoformat(point["time"]), float(point["value"])
        except (KeyError, TypeError, ValueError):
            logger.warning("live values: a point without a time or value: %r", point)
            continue
        for callback in list(watchers.values()):
            _call(callback, at, value)


_live: LiveValues | None = None


def get_live_values() -> LiveValues:
    """This process's live values, made on first use on the running loop.

    Outside `iotdeck serve` there is no hub: watches then do nothing (said once in the log).
    """
    global _live  # noqa: PLW0603 - one fan-out per process, as there is one hub
    try:
        hub: bus.Hub | None = bus.get_hub()
    except RuntimeError:
        hub = None
    if _live is None or _live.hub is not hub:
        _live = LiveValues(hub)
    return _live
