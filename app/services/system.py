"""What the System page shows ADMINs: the processes alive, partitions, who evaluates each
and their lag.

With Redis, the processes' heartbeats (app/core/presence.py) say who is alive, the members'
records and the leases (app/workers/leases.py) who evaluates what, and the streams how far behind
each partition is; without Redis, this process alone does everything, from its in-process
streams.
"""

import asyncio
import os
import socket
from dataclasses import dataclass

import redis

from app.core import bus, presence
from app.core.config import get_settings
from app.core.streams import RULES, Lag, StreamsError
from app.workers import leases


@dataclass(frozen=True)
class PartitionStatus:
    """One partition: who evaluates it and its stream's backlog (None: unreadable)."""

    number: int
    owner: str | None  # the process's name, None when no one holds it
    lag: Lag | None  # None: its stream could not be read


@dataclass(frozen=True)
class ProcessStatus:
    """A process alive, as its last heartbeat described it."""

    name: str
    kind: str  # serve, ingest, worker
    host: str
    pid: int
    partitions: tuple[int, ...] | None  # those it evaluates; None: it runs no evaluator
    seen_seconds: float
    this_process: bool
    started: float | None = None  # Unix time, when known


@dataclass(frozen=True)
class SystemStatus:
    shared: bool  # True: processes share the partitions through Redis
    partitions: list[PartitionStatus]
    processes: list[ProcessStatus]
    error: str | None = None  # why some of it could not be read

    @property
    def evaluating(self) -> list[ProcessStatus]:
        """The processes that evaluate rules (some partitions, or standing by)."""
        return [p for p in self.processes if p.partitions is not None]

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
        processes, owners, error = _alone(), {}, None
        for process in processes:
            owners.update(dict.fromkeys(process.partitions or (), process.name))
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
    """The processes alive and each partition's owner, as Redis holds them."""
    roster = leases.Roster(url, RULES, count)
    mine = leases.this_process()
    this_name = mine.name if isinstance(mine, leases.Leases) else None
    try:
        alive = await asyncio.to_thread(presence.alive, url)
        members = await roster.members()
        owners = await roster.owners()
    except (redis.RedisError, OSError) as exc:
        return [], {}, f"Redis could not be read: {exc}"
    finally:
        await roster.close()
    unmatched = list(members)  # by name; one a process, except in tests
    here = (socket.gethostname(), os.getpid())
    processes = []
    for process in alive:
        where = (process.host, process.pid)
        member = next((m for m in unmatched if (m.host, m.pid) == where), None)
        if member is not None:
            unmatched.remove(member)
        processes.append(
            ProcessStatus(
                name=member.name if member else process.name,
                kind=process.kind,
                host=process.host,
                pid=process.pid,
                partitions=None if member is None else tuple(sorted(member.using)),
                seen_seconds=process.seen_seconds,
                this_process=where == here,
                started=process.started,
            )
        )
    for member in unmatched:  # evaluating without a heartbeat of its own
        processes.append(
            ProcessStatus(
                name=member.name,
                kind="evaluator",
                host=member.host,
                pid=member.pid,
                partitions=tuple(sorted(member.using)),
                seen_seconds=member.seen_seconds,
                this_process=member.name == this_name,
            )
        )
    return processes, owners, None


def _alone() -> list[ProcessStatus]:
    """This process, evaluating every partition if its evaluator runs."""
    owner = leases.this_process()
    partitions = None
    if owner is not None:
        partitions = tuple(sorted(owner.usable() if owner.fresh() else frozenset()))
    return [
        ProcessStatus(
            name="this process",
            kind="serve",
            host=socket.gethostname(),
            pid=os.getpid(),
            partitions=partitions,
            seen_seconds=0.0,
            this_process=True,
            started=presence.STARTED,
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
