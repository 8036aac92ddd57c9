"""Who evaluates which partition: leases held in Redis, or one process holding them all.

With Redis (the streams live there), every evaluating process is a *member*: each round
(ROUND_SECONDS) it writes its heartbeat into a hash (`iot:members:<group>`, expiring
LEASE_SECONDS later by Redis's clock), reads the live members, and takes its share of the
partitions: partition p goes to the live members, sorted, in turn (p mod their number),
an even split every member computes alike (a join or a leave may move most partitions:
each move costs its new owner a replay from storage, see app/workers/evaluation.py). A partition
is held with a lease, a key (`iot:lease:<group>:<p>`) set with NX and an expiry, renewed
each round by a script that checks the holder first; it goes by itself when its holder
dies. Redis rather than PostgreSQL: a lease is one command there with its own expiry, the
members' heartbeats sit beside it, and losing Redis stops the streams the leases guard
anyway.

Each partition has one owner at a time because a process takes a lease only when it is
free, and gives one back only after it stopped reading the partition: the evaluator says
what it reads now (`use`), written into its member record *before* it starts on new
partitions and *after* it stopped on the old ones; the rounds release only leases it no
longer uses. A process that cannot renew (Redis away) drops its partitions before their
leases can expire, so a stalled owner stops before another may start. A process paused
longer than a lease (a VM frozen) may still finish one batch after its lease went: alert
opening is idempotent (the unique index on open alerts), so that batch makes no duplicate.

Without Redis (the one-process demo, in-memory streams) the process holding the
evaluator's PostgreSQL advisory lock owns every partition (`SoleOwner`).
"""

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import orjson
import redis
import redis.asyncio as aredis

from app.core import leadership, presence, retries

logger = logging.getLogger(__name__)

LEASE_SECONDS = 6.0  # a dead owner's partitions are free this long after its last round
ROUND_SECONDS = 1.0  # between two heartbeats, renewals and claims
MEMBERS = "iot:members:{group}"
LEASE = "iot:lease:{group}:{partition}"

# renew each lease still ours (KEYS), for ARGV[2] ms; which ones were (1) or not (0)
_RENEW = """
local kept = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    kept[i] = 1
  else
    kept[i] = 0
  end
end
return kept
"""
# take each lease (KEYS) that is free or still ours (held before a Redis blip); which (1/0)
_TAKE = """
local taken = {}
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) then
    taken[i] = 1
  elseif redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    taken[i] = 1
  else
    taken[i] = 0
  end
end
return taken
"""
# give back each lease still ours (KEYS)
_RELEASE = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 0
"""


def share(members: Iterable[str], partitions: int, member: str) -> frozenset[int]:
    """The partitions `member` should own among the live `members`: dealt in turn."""
    ordered = sorted(set(members) | {member})
    mine = ordered.index(member)
    return frozenset(p for p in range(partitions) if p % len(ordered) == mine)


def member_name() -> str:
    """A name for this process among the members: host, pid and a random tail."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Member:
    """A live member as its last heartbeat described it."""

    name: str
    host: str
    pid: int
    using: frozenset[int]  # the partitions it evaluates
    seen_seconds: float  # since its last heartbeat


class Owner(Protocol):
    """The partitions this process may evaluate, and what changes them.

    The rule evaluator decides what is used (`use`); the command dispatcher works on the
    same partitions (`in_use`), each of its rounds under `lock`, which `use` takes too: a
    partition leaves this process only once the round working on it has ended.
    """

    changed: asyncio.Event  # set when `usable()` may differ from what is used
    lock: asyncio.Lock

    async def run(self) -> None:
        """Hold this process's share for as long as it runs (cancelled to stop)."""

    def usable(self) -> frozenset[int]:
        """The partitions held now and meant to be this process's."""

    def fresh(self) -> bool:
        """Whether what is held is still surely held (renewed recently enough)."""

    async def use(self, partitions: frozenset[int]) -> bool:
        """The partitions the evaluator reads from now on (none: it stopped); False if that
        could not be recorded, and then it must start on no new partition."""

    async def close(self) -> None:
        """Give everything back (the process stops)."""

    def in_use(self) -> frozenset[int]:
        """The partitions used now (what `use` last recorded), if still surely held."""


class SoleOwner:
    """Every partition, for the process holding the evaluator's advisory lock."""

    def __init__(self, partitions: int) -> None:
        self._all = frozenset(range(partitions))
        self._held = False
        self._using: frozenset[int] = frozenset()
        self.changed = asyncio.Event()
        self.lock = asyncio.Lock()

    async def run(self) -> None:
        async with leadership.leading(leadership.EVALUATOR, "rule evaluator"):
            self._held = True
            self.changed.set()
            try:
                await asyncio.Event().wait()
            finally:
                self._held = False
                self.changed.set()

    def usable(self) -> frozenset[int]:
        return self._all if self._held else frozenset()

    def fresh(self) -> bool:
        return self._held

    async def use(self, partitions: frozenset[int]) -> bool:
        async with self.lock:
            self._using = partitions
        return True

    def in_use(self) -> frozenset[int]:
        return self._using if self._held else frozenset()

    async def close(self) -> None:
        async with self.lock:
            self._using = frozenset()
        _forget(self)


class Roster:
    """What the members' records and the leases say (read only: the System page's view)."""

    def __init__(
        self, url: str, group: str, partitions: int, *, lease_seconds: float = LEASE_SECONDS
    ) -> None:
        self.group = group
        self.partitions = partitions
        self.lease_seconds = lease_seconds
        self._redis = aredis.Redis.from_url(
            url, retry=retries.async_redis_retry(), socket_connect_timeout=2.0
        )
        self._members_key = MEMBERS.format(group=group)

    def _lease(self, partition: int) -> str:
        return LEASE.format(group=self.group, partition=partition)

    async def _now_ms(self) -> int:
        return presence.milliseconds(await self._redis.time())

    async def members(self, now_ms: int | None = None) -> list[Member]:
        """The live members (heartbeat not expired), by name; expired records are removed."""
        if now_ms is None:
            now_ms = await self._now_ms()
        records = await self._redis.hgetall(self._members_key)
        found, expired = presence.live_records(records, now_ms, self.lease_seconds)
        live = [
            Member(
                name=name,
                host=record["host"],
                pid=record["pid"],
                using=frozenset(record["using"]),
                seen_seconds=seen,
            )
            for name, record, seen in found
        ]
        if expired:
            await self._redis.hdel(self._members_key, *expired)
        return sorted(live, key=lambda member: member.name)

    async def owners(self) -> dict[int, str | None]:
        """Each partition's lease holder (None: free)."""
        held = await self._redis.mget([self._lease(p) for p in range(self.partitions)])
        return {p: None if name is None else name.decode() for p, name in enumerate(held)}

    async def close(self) -> None:
        await self._redis.aclose()


class Leases(Roster):
    """This process's share of the partitions, held with Redis leases (see the module)."""

    def __init__(
        self,
        url: str,
        group: str,
        partitions: int,
        *,
        name: str | None = None,
        lease_seconds: float = LEASE_SECONDS,
        round_seconds: float = ROUND_SECONDS,
    ) -> None:
        super().__init__(url, group, partitions, lease_seconds=lease_seconds)
        self.name = name or member_name()
        self.round_seconds = round_seconds
        self.changed = asyncio.Event()
        self.lock = asyncio.Lock()
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)
        self._take = self._redis.register_script(_TAKE)
        self._held: set[int] = set()
        self._target: frozenset[int] = frozenset()
        self._using: frozenset[int] = frozenset()
        self._renewed = float("-inf")  # monotonic time the last round began, if it went through

    async def run(self) -> None:
        failures = 0
        while True:
            began = time.monotonic()
            try:
                await self._round()
            except redis.RedisError as exc:
                failures += 1
                logger.warning("partition leases: round failed (%s)", exc)
                if self._held and not self.fresh():
                    logger.warning("partition leases: not renewed in time, partitions dropped")
                    self._held.clear()
                    self.changed.set()
            else:
                failures = 0
                self._renewed = began
            retries.stop_if_cancelled()
            await asyncio.sleep(self.round_seconds if not failures else retries.jittered(failures))

    async def _round(self) -> None:
        """Heartbeat, renew, give back what is no longer ours, take what is free and ours."""
        now_ms = await self._now_ms()
        lease_ms = int(self.lease_seconds * 1000)
        await self._heartbeat(now_ms + lease_ms)
        live = [member.name for member in await self.members(now_ms)]
        self._target = share(live, self.partitions, self.name)
        held = sorted(self._held)
        if held:
            keys = [self._lease(p) for p in held]
            kept = await self._renew(keys=keys, args=[self.name, lease_ms])
            lost = {p for p, ok in zip(held, kept, strict=True) if not ok}
            if lost:
                logger.warning("partition leases: lost %s", sorted(lost))
                self._held -= lost
        free = self._held - self._target - self._using
        if free:
            await self._release(keys=[self._lease(p) for p in sorted(free)], args=[self.name])
            self._held -= free
            logger.info("partition leases: gave back %s", sorted(free))
        wanted = sorted(self._target - self._held)
        taken = []
        if wanted:
            keys = [self._lease(p) for p in wanted]
            answers = await self._take(keys=keys, args=[self.name, lease_ms])
            taken = [p for p, ok in zip(wanted, answers, strict=True) if ok]
            self._held.update(taken)
        if taken:
            logger.info("partition leases: took %s", taken)
        if self.usable() != self._using:
            self.changed.set()

    async def _heartbeat(self, expires_ms: int) -> None:
        record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "using": sorted(self._using),
            "expires": expires_ms,
        }
        await self._redis.hset(self._members_key, self.name, orjson.dumps(record))

    def usable(self) -> frozenset[int]:
        return frozenset(self._held & self._target)

    def fresh(self) -> bool:
        # a margin of one round: the owner stops before its leases can expire
        return time.monotonic() - self._renewed < self.lease_seconds - self.round_seconds

    def in_use(self) -> frozenset[int]:
        return self._using if self.fresh() else frozenset()

    async def use(self, partitions: frozenset[int]) -> bool:
        """Record what the evaluator reads now, at once (before it starts, after it stopped),
        once the command round in progress ended (`lock`).

        Kept here even when Redis is away: each round's heartbeat writes it before any lease
        goes back.
        """
        async with self.lock:
            self._using = partitions
        try:
            await self._heartbeat(await self._now_ms() + int(self.lease_seconds * 1000))
        except redis.RedisError as exc:
            retries.stop_if_cancelled()
            logger.warning("partition leases: what is used not recorded (%s)", exc)
            return False
        retries.stop_if_cancelled()
        return True

    async def close(self) -> None:
        async with self.lock:  # the command round in progress ends first
            self._using = frozenset()
        try:
            if self._held:
                await self._release(
                    keys=[self._lease(p) for p in sorted(self._held)], args=[self.name]
                )
            await self._redis.hdel(self._members_key, self.name)
        except redis.RedisError as exc:  # the leases expire by themselves
            logger.warning("partition leases: not given back (%s)", exc)
        finally:
            self._held.clear()
            _forget(self)
            await super().close()


_made: list[Owner] = []  # the owner of this process's evaluator, once made


def make_owner(redis_url: str, partitions: int, group: str) -> Owner:
    """Leases shared with the other processes on Redis, or the whole set without Redis."""
    owner: Owner = Leases(redis_url, group, partitions) if redis_url else SoleOwner(partitions)
    _made[:] = [owner]
    return owner


def _forget(owner: Owner) -> None:
    if _made and _made[0] is owner:
        _made.clear()


def this_process() -> Owner | None:
    """The owner `make_owner` made for this process's evaluator (None: it runs none)."""
    return _made[0] if _made else None
