"""What the System page shows ADMINs: partitions, who evaluates each, their lag, and the
processes evaluating rules.

With Redis, the members' records and the leases (app/leases.py) say who evaluates what,
and the streams say how far behind each partition is; without Redis, this process alone
evaluates every partition, from its in-process streams.
"""

import os
import socket
from dataclasses import dataclass

import redis

from app import bus, leases
from app.config import get_settings
from app.streams import RULES, Lag, StreamsError


@dataclass(frozen=True)
class PartitionStatus:
    """One partition: who evaluates it and its stream's backlog (None: unreadable)."""

    number: int
    owner: str | None  # the process's name, None when no one holds it
    lag: Lag | None  # None: its stream could not be read


@dataclass(frozen=True)
class ProcessStatus:
    """A process evaluating rules, as its last heartbeat described it."""

    name: str
    host: str
    pid: int
    partitions: tuple[int, ...]
    seen_seconds: float
    this_process: bool


@dataclass(frozen=True)
class SystemStatus:
    shared: bool  # True: processes share the partitions through Redis
    partitions: list[PartitionStatus]
    processes: list[ProcessStatus]
    error: str | None = None  # why some of it could not be read

    @property
    def unowned(self) -> int:
        return sum(1 for partition in self.partitions if partition.owner is None)

    @property
    def backlog(self) -> int:
        return sum(p.lag.undelivered + p.lag.pending for p in self.partitions if p.lag)


async def system_status() -> SystemStatus:
    """Read the partitions' owners and lag, and the processes evaluating them."""
    settings = get_settings()
    count = settings.partitions
    if settings.redis_url:
        processes, owners, error = await _shared(settings.redis_url, count)
    else:
        processes, owners, error = _alone(count), {}, None
        for process in processes:
            owners.update(dict.fromkeys(process.partitions, process.name))
    lags, lag_error = await _lags(count)
    partitions = [PartitionStatus(p, owners.get(p), lags.get(p)) for p in range(count)]
    return SystemStatus(
        shared=bool(settings.redis_url),
        partitions=partitions,
        processes=processes,
        error=error or lag_error,
    )


async def _shared(
    url: str, count: int
) -> tuple[list[ProcessStatus], dict[int, str | None], str | None]:
    roster = leases.Roster(url, RULES, count)
    mine = leases.this_process()
    this_name = mine.name if isinstance(mine, leases.Leases) else None
    try:
        members = await roster.members()
        owners = await roster.owners()
    except (redis.RedisError, OSError) as exc:
        return [], {}, f"Redis could not be read: {exc}"
    finally:
        await roster.close()
    processes = [
        ProcessStatus(
            name=member.name,
            host=member.host,
            pid=member.pid,
            partitions=tuple(sorted(member.using)),
            seen_seconds=member.seen_seconds,
            this_process=member.name == this_name,
        )
        for member in members
    ]
    return processes, owners, None


def _alone(count: int) -> list[ProcessStatus]:
    """This process, evaluating every partition if its evaluator runs."""
    owner = leases.this_process()
    if owner is None:
        return []
    using = owner.usable() if owner.fresh() else frozenset()
    return [
        ProcessStatus(
            name="this process",
            host=socket.gethostname(),
            pid=os.getpid(),
            partitions=tuple(sorted(using)),
            seen_seconds=0.0,
            this_process=True,
        )
    ]


async def _lags(count: int) -> tuple[dict[int, Lag], str | None]:
    streams = bus.get_bus().streams
    if streams is None:
        return {}, None
    found: dict[int, Lag] = {}
    try:
        for partition in range(count):
            found[partition] = await streams.lag(RULES, partition)
    except StreamsError as exc:
        return found, f"the streams could not be read: {exc}"
    return found, None
