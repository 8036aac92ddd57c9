"""Partitioned streams: what the workers must see, kept until they say they saw it.

Devices fall in `IOTDECK_PARTITIONS` partitions by a stable hash of their id. Each
partition is one append-only stream: committed telemetry and device events go in after the
commit, a worker reads them in a consumer group and acknowledges an entry once what it
caused (alerts, notifications, commands) is committed. An entry read and never
acknowledged (its reader died) stays pending; the partition's next owner takes it over
(`claim`). Unlike pub/sub (app/core/bus.py, still what live pages and GraphQL subscriptions
use), nothing is dropped when a reader is slow or away: the entries wait, and the wait is
measured (`lag`).

Two implementations behind one interface, as for the bus:
- `RedisStreams` (`IOTDECK_REDIS_URL`): one Redis Stream a partition, consumer groups,
  `XAUTOCLAIM` for takeovers; every process that commits appends;
- `MemoryStreams` (embedded default): the same semantics inside the one process.
Appending is synchronous and thread-safe (ingest's committer thread appends); reading is
async. A stream is capped at `max_length` entries, the oldest trimmed first.
"""

import asyncio
import contextlib
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson
import redis
import redis.asyncio as aredis
from redis.exceptions import ResponseError

from app.core import retries

Message = dict[str, Any]

KEY = "iot:partition:{partition}"  # a partition's stream; pub/sub channels are another namespace
RULES = "rules"  # the rule evaluator's consumer group on every partition (and its leases')
MAX_LENGTH = 100_000  # entries a stream keeps at most (Redis trims approximately)
MEMORY_MAX_LENGTH = 10_000  # in memory: entries are whole batches, and it is one process
_FIELD = b"m"  # an entry's one field: the message, JSON


Span = tuple[datetime, datetime]  # a device's first and last point time


def widen(ranges: dict[str, Span], key: str, first: datetime, last: datetime) -> None:
    """Make `ranges[key]` span `first` to `last` too (a device's first and last point)."""
    known = ranges.get(key)
    if known is not None:
        first, last = min(known[0], first), max(known[1], last)
    ranges[key] = (first, last)


def partition_of(device_id: object, partitions: int) -> int:
    """The partition of a device: CRC-32 of its id's text, modulo the partition count.

    Stable across processes, restarts and Python versions (unlike `hash`), so every
    process puts a device in the same partition.
    """
    return zlib.crc32(str(device_id).encode()) % partitions


class StreamsError(Exception):
    """The streams cannot be reached or refused the operation."""


class StreamsReset(StreamsError):
    """A consumer group vanished (Redis restarted without its data): entries may be lost.

    The group is made again, reading from the newest entry; the reader must rebuild what
    it missed from storage.
    """


@dataclass(frozen=True)
class Entry:
    """One entry read from a partition."""

    partition: int
    id: str  # "<milliseconds>-<sequence>", increasing within a partition
    message: Message


@dataclass(frozen=True)
class Lag:
    """How far a group is behind on one partition."""

    length: int  # entries in the stream
    undelivered: int  # appended, not read by the group yet
    pending: int  # read, not acknowledged
    oldest_pending_seconds: float  # since the oldest pending entry was last delivered; 0: none


class Streams(Protocol):
    """Append after commits; read, acknowledge and take over in consumer groups."""

    partitions: int

    def append(self, items: Iterable[tuple[int, Message]]) -> None:
        """Append each message to its partition, in order (thread-safe); StreamsError."""

    async def join(self, group: str, partitions: Collection[int]) -> None:
        """Make `group` on the partitions that lack it, to read what is appended from now on
        (what came before is in storage: a new reader replays it from there)."""

    async def read(
        self, group: str, consumer: str, partitions: Collection[int], count: int, block: float
    ) -> list[Entry]:
        """New entries of `partitions` for `consumer`, at most `count` a partition, waiting
        up to `block` seconds for one; StreamsReset when a group had to be made again."""

    async def claim(self, group: str, consumer: str, partition: int, idle: float) -> list[Entry]:
        """Take over the entries pending on others for at least `idle` seconds."""

    async def ack(self, group: str, entries: Iterable[Entry]) -> None:
        """Acknowledge entries: they are done."""

    async def lag(self, group: str, partition: int, *, trim: bool = False) -> Lag:
        """How far `group` is behind on `partition`; with `trim`, first drop the entries
        every group has read and acknowledged (the length is then what is left)."""

    async def close(self) -> None:
        """Release connections."""


def _encode(message: Message) -> bytes:
    return orjson.dumps(message)


class RedisStreams:
    """One Redis Stream per partition (`prefix` + number), consumer groups on them."""

    def __init__(
        self,
        url: str,
        partitions: int,
        *,
        prefix: str = "iot:partition:",
        max_length: int = MAX_LENGTH,
        connect_timeout: float = 2.0,
    ) -> None:
        self.url = url
        self.partitions = partitions
        self.prefix = prefix
        self.max_length = max_length
        # each command retried a few times, quickly, as the bus's are (app/core/retries.py)
        self._appender = redis.Redis.from_url(
            url, retry=retries.redis_retry(), socket_connect_timeout=connect_timeout
        )
        self._reader = aredis.Redis.from_url(
            url, retry=retries.async_redis_retry(), socket_connect_timeout=connect_timeout
        )
        self._groups: set[tuple[str, int]] = set()  # made (or found) by this process

    def key(self, partition: int) -> str:
        """The Redis key of a partition's stream."""
        return f"{self.prefix}{partition}"

    def add_to(self, pipeline: redis.client.Pipeline, items: Iterable[tuple[int, Message]]) -> int:
        """Queue the XADDs of `items` on `pipeline` (the bus's: one round trip); how many."""
        added = 0
        for partition, message in items:
            pipeline.xadd(
                self.key(partition),
                {_FIELD: _encode(message)},
                maxlen=self.max_length,
                approximate=True,
            )
            added += 1
        return added

    def append(self, items: Iterable[tuple[int, Message]]) -> None:
        """Append in one round trip."""
        pipeline = self._appender.pipeline(transaction=False)
        if self.add_to(pipeline, items):
            try:
                pipeline.execute()
            except redis.RedisError as exc:
                raise StreamsError(f"append to {self.prefix}*: {exc}") from exc

    async def _ensure_group(self, group: str, partition: int, start: str = "0") -> bool:
        """Make the group on the partition (and the stream) if missing; True if it made it."""
        if (group, partition) in self._groups:
            return False
        try:
            await self._reader.xgroup_create(self.key(partition), group, id=start, mkstream=True)
            made = True
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            made = False
        self._groups.add((group, partition))
        return made

    async def join(self, group: str, partitions: Collection[int]) -> None:
        """XGROUP CREATE ... $ MKSTREAM where missing."""
        async with self._guarded(group, partitions):
            for partition in partitions:
                await self._ensure_group(group, partition, start="$")

    async def read(
        self, group: str, consumer: str, partitions: Collection[int], count: int, block: float
    ) -> list[Entry]:
        """XREADGROUP over the partitions' streams (a missing group reads from the start)."""
        async with self._guarded(group, partitions):
            for partition in partitions:
                await self._ensure_group(group, partition)
            streams = {self.key(partition): ">" for partition in partitions}
            answer = await self._reader.xreadgroup(
                group, consumer, streams, count=count, block=max(1, int(block * 1000))
            )
        return [
            Entry(self._partition(key), entry_id.decode(), orjson.loads(fields[_FIELD]))
            for key, entries in answer or ()
            for entry_id, fields in entries
            if fields  # an entry trimmed while pending comes back empty
        ]

    @contextlib.asynccontextmanager
    async def _guarded(self, group: str, partitions: Collection[int]) -> AsyncIterator[None]:
        """Redis errors as StreamsError; a vanished group made again, as StreamsReset."""
        with _errors():
            try:
                yield
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                retries.stop_if_cancelled()
                await self._remake(group, partitions)
                raise StreamsReset(f"{group}: consumer group gone, made again") from exc

    async def _remake(self, group: str, partitions: Collection[int]) -> None:
        for partition in partitions:
            self._groups.discard((group, partition))
            await self._ensure_group(group, partition, start="$")

    def _partition(self, key: bytes | str) -> int:
        text = key.decode() if isinstance(key, bytes) else key
        return int(text.removeprefix(self.prefix))

    async def claim(self, group: str, consumer: str, partition: int, idle: float) -> list[Entry]:
        """XAUTOCLAIM from the start of the partition until every stale entry is taken."""
        taken: list[Entry] = []
        cursor = "0-0"
        async with self._guarded(group, [partition]):
            await self._ensure_group(group, partition)
            while True:
                answer = await self._reader.xautoclaim(
                    self.key(partition), group, consumer, int(idle * 1000), cursor, count=1000
                )
                cursor = _text(answer[0])
                taken += [
                    Entry(partition, entry_id.decode(), orjson.loads(fields[_FIELD]))
                    for entry_id, fields in answer[1]
                    if fields
                ]
                if cursor == "0-0":
                    break
        return taken

    async def ack(self, group: str, entries: Iterable[Entry]) -> None:
        """XACK, one call per partition, pipelined."""
        by_partition: dict[int, list[str]] = {}
        for entry in entries:
            by_partition.setdefault(entry.partition, []).append(entry.id)
        if not by_partition:
            return
        with _errors():
            async with self._reader.pipeline(transaction=False) as pipeline:
                for partition, ids in by_partition.items():
                    pipeline.xack(self.key(partition), group, *ids)
                await pipeline.execute()

    async def lag(self, group: str, partition: int, *, trim: bool = False) -> Lag:
        """One XINFO GROUPS: the group's `lag`, and XPENDING's oldest entry; with `trim`,
        XTRIM MINID first, to the oldest entry a group still needs (its oldest pending one,
        or the one after its last read). Then XLEN."""
        key = self.key(partition)
        with contextlib.suppress(_NoStream), _errors():
            groups = {_text(info["name"]): info for info in await self._reader.xinfo_groups(key)}
            oldest: dict[str, dict] = {}  # a group's oldest pending entry
            for name, info in groups.items():
                if info["pending"] and (trim or name == group):
                    first = await self._reader.xpending_range(key, name, "-", "+", 1)
                    if first:  # else acknowledged meanwhile
                        oldest[name] = first[0]
            if trim and groups:
                low = min(_floor(info, oldest.get(name)) for name, info in groups.items())
                await self._reader.xtrim(key, minid=f"{low[0]}-{low[1]}", approximate=False)
            length = await self._reader.xlen(key)
            info = groups.get(group)
            if info is None:
                return Lag(length, length, 0, 0.0)
            first = oldest.get(group)
            waited = first["time_since_delivered"] / 1000 if first else 0.0
            return Lag(length, int(info.get("lag") or 0), int(info["pending"]), waited)
        return Lag(0, 0, 0, 0.0)  # no such stream yet

    async def close(self) -> None:
        """Close both connections."""
        self._appender.close()
        await self._reader.aclose()


class _NoStream(StreamsError):
    """XINFO on a stream that does not exist yet."""


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Redis errors as StreamsError (a missing stream as _NoStream), and a cancel that
    redis-py swallowed raised again (app/core/retries.py `stop_if_cancelled`)."""
    try:
        yield
    except ResponseError as exc:
        retries.stop_if_cancelled()
        if "no such key" in str(exc).lower():
            raise _NoStream from exc
        raise StreamsError(str(exc)) from exc
    except (redis.RedisError, OSError) as exc:
        retries.stop_if_cancelled()
        raise StreamsError(str(exc)) from exc
    retries.stop_if_cancelled()


def _floor(info: dict, oldest_pending: dict | None) -> tuple[int, int]:
    """The oldest entry a group still needs: its oldest pending one, else the next unread."""
    if oldest_pending is not None:
        return _entry_id(oldest_pending["message_id"])
    last = _entry_id(info["last-delivered-id"])
    return (last[0], last[1] + 1)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entry_id(value: bytes | str) -> tuple[int, int]:
    milliseconds, sequence = _text(value).split("-")
    return int(milliseconds), int(sequence)


@dataclass
class _Pending:
    consumer: str
    delivered: float  # time.monotonic() of the last delivery


@dataclass
class _Group:
    delivered: int = 0  # sequence of the last entry read
    pending: "OrderedDict[int, _Pending]" = field(default_factory=OrderedDict)


@dataclass
class _Stream:
    entries: "OrderedDict[int, Message]" = field(default_factory=OrderedDict)
    appended: int = 0  # sequence of the newest entry
    groups: dict[str, _Group] = field(default_factory=dict)


class MemoryStreams:
    """The same streams inside one process (the embedded default and the demo).

    Entries are numbered per partition ("0-<n>"). An entry every group has acknowledged
    goes at once, so memory holds only what is still to be done.
    """

    def __init__(self, partitions: int, *, max_length: int = MAX_LENGTH) -> None:
        self.partitions = partitions
        self.max_length = max_length
        self._lock = threading.Lock()
        self._streams = [_Stream() for _ in range(partitions)]
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def append(self, items: Iterable[tuple[int, Message]]) -> None:
        """Append, then wake the readers (from any thread)."""
        with self._lock:
            for partition, message in items:
                stream = self._streams[partition]
                stream.appended += 1
                stream.entries[stream.appended] = message
                while len(stream.entries) > self.max_length:
                    dropped, _ = stream.entries.popitem(last=False)
                    for group in stream.groups.values():
                        group.pending.pop(dropped, None)
            waiters = list(self._waiters)
        for loop, event in waiters:
            loop.call_soon_threadsafe(event.set)

    async def join(self, group: str, partitions: Collection[int]) -> None:
        """A missing group starts after the newest entry."""
        with self._lock:
            for partition in partitions:
                stream = self._streams[partition]
                stream.groups.setdefault(group, _Group(delivered=stream.appended))
                _drop_done(stream, list(stream.entries))  # appended before any group

    async def read(
        self, group: str, consumer: str, partitions: Collection[int], count: int, block: float
    ) -> list[Entry]:
        """Entries after the group's last read, waiting up to `block` seconds for one."""
        deadline = time.monotonic() + block
        event = asyncio.Event()
        waiter = (asyncio.get_running_loop(), event)
        with self._lock:
            self._waiters.add(waiter)
        try:
            while True:
                event.clear()
                if taken := self._take(group, consumer, partitions, count):
                    return taken
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                try:
                    # not wait_for: on 3.11 it can swallow a cancel that comes as the event is set
                    async with asyncio.timeout(left):
                        await event.wait()
                except TimeoutError:
                    return []
        finally:
            with self._lock:
                self._waiters.discard(waiter)

    def _take(
        self, group_name: str, consumer: str, partitions: Collection[int], count: int
    ) -> list[Entry]:
        now = time.monotonic()
        taken: list[Entry] = []
        with self._lock:
            for partition in partitions:
                stream = self._streams[partition]
                group = stream.groups.setdefault(group_name, _Group())
                fresh = [s for s in stream.entries if s > group.delivered][:count]
                for sequence in fresh:
                    group.pending[sequence] = _Pending(consumer, now)
                    taken.append(Entry(partition, f"0-{sequence}", stream.entries[sequence]))
                if fresh:
                    group.delivered = fresh[-1]
        return taken

    async def claim(self, group: str, consumer: str, partition: int, idle: float) -> list[Entry]:
        """The group's entries pending for `idle` seconds or more, now `consumer`'s."""
        now = time.monotonic()
        taken: list[Entry] = []
        with self._lock:
            stream = self._streams[partition]
            pending = stream.groups.setdefault(group, _Group()).pending
            for sequence, holder in pending.items():
                if now - holder.delivered >= idle and sequence in stream.entries:
                    pending[sequence] = _Pending(consumer, now)
                    taken.append(Entry(partition, f"0-{sequence}", stream.entries[sequence]))
        return taken

    async def ack(self, group: str, entries: Iterable[Entry]) -> None:
        """Forget the entries as pending; drop those every group is done with."""
        with self._lock:
            for entry in entries:
                stream = self._streams[entry.partition]
                sequence = int(entry.id[2:])
                stream.groups.setdefault(group, _Group()).pending.pop(sequence, None)
                _drop_done(stream, [sequence])

    async def lag(self, group: str, partition: int, *, trim: bool = False) -> Lag:
        """Counted from the partition's state (nothing to trim: an entry goes once every
        group acknowledged it)."""
        del trim
        now = time.monotonic()
        with self._lock:
            stream = self._streams[partition]
            state = stream.groups.get(group, _Group())
            undelivered = sum(1 for sequence in stream.entries if sequence > state.delivered)
            oldest = min((p.delivered for p in state.pending.values()), default=now)
            return Lag(len(stream.entries), undelivered, len(state.pending), now - oldest)

    async def close(self) -> None:
        """Nothing to release."""


def _drop_done(stream: _Stream, sequences: Iterable[int]) -> None:
    """Forget the entries among `sequences` that every group has read and acknowledged."""
    for sequence in sequences:
        if (
            all(
                sequence <= group.delivered and sequence not in group.pending
                for group in stream.groups.values()
            )
            and stream.groups
        ):
            stream.entries.pop(sequence, None)
