"""The event bus: what happened, pushed to every process that shows it.

Publishing is synchronous and thread-safe (the ingest committer thread and request
threads publish). Two transports behind one interface:
- `RedisBus` (`IOTDECK_REDIS_URL`): Redis pub/sub between any number of processes; each
  web process holds ONE pattern subscription (`iot:*`) and fans messages out itself;
- `LocalBus` (embedded default): the same fan-out, inside the one process.
Inside a process a `Hub` hands each message to the subscribers whose channel filter
matches, through bounded queues: a slow subscriber loses its oldest messages (counted in
`bus_dropped_total`), never slows anyone else. Messages are JSON objects with a version and
the correlation id of the work that published them, if any (`app.core.logs`).

An ingest batch's points travel as ONE message (`TELEMETRY_BATCH`) whatever the number of
devices in it; the receiving hub splits it into the per-device messages subscribers get on
`iot:telemetry:{device_id}`, exactly as if each had been published on its own.

What the workers must not miss goes to the partitioned streams too (app/core/streams.py), with
the same publish: a batch's telemetry split by partition, and device events
(`work_items`). Pub/sub may drop; the streams keep each entry until a worker acknowledges
it. An append that fails (Redis away longer than the command retries) is remembered as a
gap, each device with the times of the points it lost; the next append that goes through
puts a `gap` entry first in each partition concerned, and the worker replays those points
from storage (they were committed before they were published).
"""

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson
import redis
import redis.asyncio as aredis
from redis.asyncio.client import PubSub
from tenacity import RetryCallState

from app.core import logs, metrics, retries
from app.core.redaction import redacted
from app.core.streams import (
    MEMORY_MAX_LENGTH,
    MemoryStreams,
    RedisStreams,
    Span,
    Streams,
    partition_of,
    widen,
)

logger = logging.getLogger(__name__)

VERSION = 1
TELEMETRY = "iot:telemetry:{device_id}"
TELEMETRY_BATCH = "iot:telemetry-batch"  # on the wire only: hubs deliver it per device
DEVICE_STATUS = "iot:device:status"
DEVICE_EVENTS = "iot:device:events"
ALERTS = "iot:alerts"
COMMANDS = "iot:commands"
RULES = "iot:rules"  # a rule was created, changed or deleted: evaluators reload
PATTERN = "iot:*"
QUEUE_SIZE = 1000
REDIS_CONNECT_TIMEOUT = 2.0  # seconds: an unreachable Redis must not hold up a publisher

Message = dict[str, Any]


def telemetry_channel(device_id: object) -> str:
    """The channel of one device's telemetry."""
    return TELEMETRY.format(device_id=device_id)


def telemetry_batch(points: Mapping[object, list[Message]]) -> Message:
    """One message carrying the points of many devices (device id -> its points)."""
    return {"devices": [{"device_id": str(d), "points": p} for d, p in points.items()]}


def _envelope(batch: Message) -> Message:
    """A telemetry batch without its devices: version, correlation id."""
    return {key: value for key, value in batch.items() if key != "devices"}


def _per_device(batch: Message) -> Iterator[tuple[str, Message]]:
    """A telemetry batch as its per-device messages: the batch's envelope (version,
    correlation id) plus one device's id and points, on that device's channel."""
    envelope = _envelope(batch)
    for part in batch.get("devices", ()):
        yield telemetry_channel(part["device_id"]), {**envelope, **part}


_TELEMETRY_PREFIX = telemetry_channel("")
_KINDS = {
    ALERTS: "alerts",
    COMMANDS: "commands",
    DEVICE_STATUS: "status",
    TELEMETRY_BATCH: "telemetry",
}
# labelled children resolved once: labels() costs microseconds per call on the hot path
_PUBLISHED = {kind: metrics.BUS_PUBLISHED.labels(kind) for kind in metrics.BUS_KINDS}


def _count_published(channels: Iterable[str]) -> None:
    """Add a sent batch to bus_published_total, by kind of channel."""
    counts = dict.fromkeys(_PUBLISHED, 0)
    for channel in channels:
        kind = "telemetry" if channel.startswith(_TELEMETRY_PREFIX) else _KINDS.get(channel)
        counts[kind or "other"] += 1
    for kind, count in counts.items():
        if count:
            _PUBLISHED[kind].inc(count)


def work_items(items: Iterable[tuple[str, Message]], partitions: int) -> list[tuple[int, Message]]:
    """What of published messages the workers must see, as (partition, entry) pairs.

    A telemetry batch becomes one entry per partition it touches (`kind` "telemetry", the
    batch's envelope, that partition's devices); a device event goes to its device's
    partition (`kind` "device"). Nothing else is partitioned work (yet).
    """
    entries: list[tuple[int, Message]] = []
    for channel, message in items:
        if channel == TELEMETRY_BATCH:
            envelope = _envelope(message)
            by_partition: dict[int, list[Message]] = {}
            for part in message.get("devices", ()):
                by_partition.setdefault(partition_of(part["device_id"], partitions), []).append(
                    part
                )
            entries += [
                (partition, {**envelope, "kind": "telemetry", "devices": devices})
                for partition, devices in by_partition.items()
            ]
        elif channel == DEVICE_EVENTS:
            partition = partition_of(message["device"]["id"], partitions)
            entries.append((partition, {**message, "kind": "device"}))
    return entries


def entry_messages(entry: Message) -> list[tuple[str, Message]]:
    """A stream entry as the bus messages it came from (a gap entry has none)."""
    kind = entry.get("kind")
    body = {key: value for key, value in entry.items() if key != "kind"}
    if kind == "telemetry":
        return list(_per_device(body))
    if kind == "device":
        return [(DEVICE_EVENTS, body)]
    return []


class Gaps:
    """Appends that failed, per partition, until one goes through (thread-safe).

    Each device keeps the first and last time of the points lost (ISO 8601 text, as the
    messages carry them), and each partition how many events were lost with them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lost: dict[int, _Gap] = {}

    def record(self, entries: Iterable[tuple[int, Message]]) -> None:
        """Remember the entries an append lost (gap entries included: merged back)."""
        with self._lock:
            for partition, entry in entries:
                gap = self._lost.setdefault(partition, _Gap())
                if entry.get("kind") == "gap":
                    gap.events += entry["events"]
                    for device_id, (first, last) in entry["ranges"].items():
                        widen(
                            gap.ranges,
                            device_id,
                            datetime.fromisoformat(first),
                            datetime.fromisoformat(last),
                        )
                elif entry.get("kind") == "telemetry":
                    for part in entry["devices"]:
                        times = [datetime.fromisoformat(point["time"]) for point in part["points"]]
                        if times:
                            widen(gap.ranges, part["device_id"], min(times), max(times))
                else:
                    gap.events += 1

    def take(self) -> list[tuple[int, Message]]:
        """The gap entries to append before the next entries; forgotten here."""
        with self._lock:
            taken, self._lost = self._lost, {}
        return [
            (
                partition,
                {
                    "v": VERSION,
                    "kind": "gap",
                    "events": gap.events,
                    "ranges": {
                        device_id: [first.isoformat(), last.isoformat()]
                        for device_id, (first, last) in gap.ranges.items()
                    },
                },
            )
            for partition, gap in taken.items()
        ]

    def __bool__(self) -> bool:
        return bool(self._lost)

    def __len__(self) -> int:
        """How many partitions have a gap waiting (read from any thread, for metrics)."""
        return len(self._lost)


@dataclass
class _Gap:
    """A partition's lost appends: events counted, each device's first and last time."""

    events: int = 0
    ranges: dict[str, Span] = field(default_factory=dict)


class Subscription:
    """One subscriber's bounded queue; iterate it (async) to receive (channel, message)."""

    def __init__(
        self,
        hub: "Hub",
        accepts: Callable[[str], bool],
        size: int,
        on_drop: Callable[[str, Message], None] | None = None,
    ) -> None:
        self._hub = hub
        self._accepts = accepts
        self._on_drop = on_drop  # told of each message dropped, before it goes (on the loop)
        self._queue: deque[tuple[str, Message]] = deque(maxlen=size)
        self._ready = asyncio.Event()
        self.channels: frozenset[str] = frozenset()  # set by the hub when indexed
        self.dropped = 0
        self.closed = False

    def offer(self, channel: str, message: Message) -> bool:
        """Queue the message if this subscriber wants it (on the hub's loop); True if queued."""
        if not self._accepts(channel):
            return False
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1  # the deque drops the oldest on append
            metrics.BUS_DROPPED.inc()
            if self._on_drop is not None:
                self._on_drop(*self._queue[0])
        self._queue.append((channel, message))
        self._ready.set()
        return True

    @property
    def waiting(self) -> int:
        """How many messages wait to be taken (read from any thread, for metrics)."""
        return len(self._queue)

    async def get(self) -> tuple[str, Message]:
        """The next message, waiting for one."""
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    async def get_many(self, limit: int) -> list[tuple[str, Message]]:
        """Everything queued (at most `limit`, oldest first), waiting for at least one."""
        first = await self.get()
        taken = [first]
        while self._queue and len(taken) < limit:
            taken.append(self._queue.popleft())
        return taken

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> tuple[str, Message]:
        if self.closed:
            raise StopAsyncIteration
        return await self.get()

    def close(self) -> None:
        """Stop receiving; safe to call twice."""
        self.closed = True
        self._hub.remove(self)


class Hub:
    """Fan-out inside one process, on its event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # subscriptions to exact channels are indexed: a thousand subscribers, each on its
        # own device, cost one dictionary lookup per message, not a thousand filter calls
        self._by_channel: dict[str, set[Subscription]] = {}
        self._filtered: set[Subscription] = set()

    def subscribe(
        self,
        accepts: Callable[[str], bool] | None = None,
        *,
        channels: Iterable[str] = (),
        size: int = QUEUE_SIZE,
        on_drop: Callable[[str, Message], None] | None = None,
    ) -> Subscription:
        """A new subscription to `channels`, or to whatever channel `accepts` says yes to.

        `on_drop(channel, message)` hears of each message the full queue pushes out.
        """
        wanted = frozenset(channels)
        subscription = Subscription(self, accepts or wanted.__contains__, size, on_drop)
        subscription.channels = wanted if accepts is None else frozenset()
        if subscription.channels:
            for channel in subscription.channels:
                self._by_channel.setdefault(channel, set()).add(subscription)
        else:
            self._filtered.add(subscription)
        return subscription

    def remove(self, subscription: Subscription) -> None:
        """Forget a subscription."""
        self._filtered.discard(subscription)
        for channel in subscription.channels:
            members = self._by_channel.get(channel)
            if members is not None:
                members.discard(subscription)
                if not members:
                    del self._by_channel[channel]

    @property
    def subscribers(self) -> int:
        """How many subscriptions are open."""
        indexed = {s for members in self._by_channel.values() for s in members}
        return len(self._filtered) + len(indexed)

    def deliver(self, channel: str, message: Message) -> None:
        """Offer one message to every interested subscription (call on the hub's loop).

        A telemetry batch is offered as its per-device messages.
        """
        metrics.BUS_RECEIVED.inc()
        if channel == TELEMETRY_BATCH:
            delivered = sum(self._offer(*part) for part in _per_device(message))
        else:
            delivered = self._offer(channel, message)
        if delivered:  # one increment per message, not per subscriber: the hot path
            metrics.BUS_DELIVERED.inc(delivered)

    def _offer(self, channel: str, message: Message) -> int:
        """Offer to the subscriptions of `channel`; how many took it."""
        delivered = 0
        for subscription in list(self._by_channel.get(channel, ())):
            delivered += subscription.offer(channel, message)
        for subscription in list(self._filtered):
            delivered += subscription.offer(channel, message)
        return delivered

    def deliver_threadsafe(self, items: list[tuple[str, Message]]) -> None:
        """Deliver from any thread."""
        self.loop.call_soon_threadsafe(self._deliver_all, items)

    def _deliver_all(self, items: list[tuple[str, Message]]) -> None:
        for channel, message in items:
            self.deliver(channel, message)


class Bus(Protocol):
    """Publishes after commits; the web process also listens."""

    streams: Streams | None  # where partitioned work goes too (None: nowhere)

    def publish_many(self, items: Iterable[tuple[str, Message]]) -> None:
        """Send messages in order (thread-safe)."""

    async def start(self, hub: Hub | None) -> None:
        """Begin delivering to `hub` (None: publish only)."""

    async def stop(self) -> None:
        """Stop listening and release connections."""

    @property
    def healthy(self) -> bool:
        """True when messages flow."""


def _versioned(message: Message) -> Message:
    # the correlation id of the work publishing it (an ingest batch, a request) goes along:
    # the evaluator opens the alerts of a batch's points under its id (SPEC 11)
    correlation = logs.correlation_id()
    if correlation is None:
        return {"v": VERSION, **message}
    return {"v": VERSION, "correlation_id": correlation, **message}


class NullBus:
    """Where messages go in processes nobody watches (CLI commands, plain tests)."""

    healthy = True
    streams = None

    def publish_many(self, items: Iterable[tuple[str, Message]]) -> None:
        """Drop them."""
        del items

    async def start(self, hub: Hub | None) -> None:
        """Nothing to start."""
        del hub

    async def stop(self) -> None:
        """Nothing to stop."""


class LocalBus:
    """In-process delivery for the embedded default (one process, no Redis)."""

    healthy = True

    def __init__(self, streams: MemoryStreams | None = None) -> None:
        self._hub: Hub | None = None
        self.streams = streams

    def publish_many(self, items: Iterable[tuple[str, Message]]) -> None:
        """Hand the messages to this process's hub, and the work to its streams."""
        batch = [(channel, _versioned(message)) for channel, message in items]
        if self._hub is not None and batch:
            if self.streams is not None:  # first: a worker told by the hub finds its entry
                self.streams.append(work_items(batch, self.streams.partitions))
            self._hub.deliver_threadsafe(batch)
            _count_published(channel for channel, _ in batch)

    async def start(self, hub: Hub | None) -> None:
        """Deliver to `hub` from now on."""
        self._hub = hub

    async def stop(self) -> None:
        """Stop delivering."""
        self._hub = None


class RedisBus:
    """Redis pub/sub: pipelined publishes, one pattern subscription per listening process."""

    def __init__(self, url: str, streams: RedisStreams | None = None) -> None:
        self.url = url
        self._publisher = redis.Redis.from_url(
            url, retry=retries.redis_retry(), socket_connect_timeout=REDIS_CONNECT_TIMEOUT
        )
        self._task: asyncio.Task | None = None
        self._listening = False
        self.streams = streams
        self.gaps = Gaps()
        metrics.STREAM_GAPS_HELD.set_function(lambda: len(self.gaps))  # read at scrape

    @property
    def healthy(self) -> bool:
        """True while the subscription is up (or when this process only publishes)."""
        return self._task is None or self._listening

    def publish_many(self, items: Iterable[tuple[str, Message]]) -> None:
        """One round trip for the whole batch, its stream entries included.

        A Redis outage costs the pub/sub messages, not ingest; the stream entries it cost
        are remembered as gaps, appended first next time (see the module's docstring).
        """
        batch = [(channel, _versioned(message)) for channel, message in items]
        if not batch:
            return
        pipeline = self._publisher.pipeline(transaction=False)
        for channel, message in batch:
            pipeline.publish(channel, orjson.dumps(message))
        work: list[tuple[int, Message]] = []
        if self.streams is not None:
            work = self.gaps.take() + work_items(batch, self.streams.partitions)
            self.streams.add_to(pipeline, work)
        try:
            pipeline.execute()
        except redis.RedisError as exc:
            self.gaps.record(work)
            logger.warning(
                "bus: %d message(s) not published, %d stream entr(ies) kept as gaps: %s",
                len(batch), len(work), exc,
            )  # fmt: skip
            return
        _count_published(channel for channel, _ in batch)

    async def start(self, hub: Hub | None) -> None:
        """Listen on `iot:*` and deliver to `hub`, reconnecting when Redis goes away."""
        if hub is not None:
            self._task = asyncio.create_task(self._listen(hub), name="bus-listener")

    async def _listen(self, hub: Hub) -> None:
        while True:
            client, pubsub = await retries.reconnect_redis(self._unreachable)(self._subscribe)
            self._listening = True
            logger.info("bus: listening on %s (%s)", redacted(self.url), PATTERN)
            try:
                async for raw in pubsub.listen():
                    retries.stop_if_cancelled()
                    if raw["type"] == "pmessage":
                        channel = raw["channel"].decode()
                        hub.deliver(channel, orjson.loads(raw["data"]))
            except (redis.RedisError, OSError) as exc:
                retries.stop_if_cancelled()
                # a dropped subscription loses what was published meanwhile: say so
                shown = redacted(self.url)
                logger.warning("bus: subscription to %s lost (%s); reconnecting", shown, exc)
            finally:
                self._listening = False
                await pubsub.aclose()
                await client.aclose()

    async def _subscribe(self) -> tuple[aredis.Redis, PubSub]:
        """A new connection and its pattern subscription (one attempt)."""
        client = aredis.Redis.from_url(
            self.url,
            retry=retries.async_redis_retry(),
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
        )
        pubsub = client.pubsub()
        try:
            await pubsub.psubscribe(PATTERN)
        except BaseException:
            await pubsub.aclose()
            await client.aclose()
            raise
        return client, pubsub

    def _unreachable(self, state: RetryCallState) -> None:
        """Before each wait for Redis to come back: say why and for how long."""
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        shown = redacted(self.url)
        logger.warning("bus: cannot subscribe on %s (%s); next try in %.1f s", shown, error, wait)

    async def stop(self) -> None:
        """Cancel the listener and close the publishing connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._publisher.close()
        if self.streams is not None:
            await self.streams.close()


_bus: Bus = NullBus()
_hub: Hub | None = None


def get_bus() -> Bus:
    """This process's bus (a NullBus until `set_bus`)."""
    return _bus


def set_bus(bus: Bus, hub: Hub | None = None) -> None:
    """Make `bus` the one this process publishes to, and `hub` where it delivers."""
    global _bus, _hub  # one bus and hub per process, chosen at start-up
    _bus, _hub = bus, hub


def get_hub() -> Hub:
    """This process's fan-out hub; only web processes have one."""
    if _hub is None:
        raise RuntimeError("no bus hub in this process: it starts with `iotdeck serve`")
    return _hub


def make_bus(redis_url: str, partitions: int) -> Bus:
    """Redis when configured, else the in-process bus; either with its streams."""
    if redis_url:
        return RedisBus(redis_url, RedisStreams(redis_url, partitions))
    return LocalBus(MemoryStreams(partitions, max_length=MEMORY_MAX_LENGTH))
