"""Partition leases (app/workers/leases.py) on a private Redis: shares, takeover, a lost Redis.

Short leases (1 s, rounds of 0.2 s) keep these quick; the processes' own figures are
tested end to end in tests/integration/test_partition_ownership.py.
"""

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from app.workers import leases
from bench.services import RedisServer
from tests.waiting import wait_for, wait_for_async

pytestmark = pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")
PARTITIONS = 16


def test_shares_are_even_disjoint_and_cover_every_partition() -> None:
    for count in range(1, 6):
        members = [f"m{n}" for n in range(count)]
        shares = [leases.share(members, PARTITIONS, member) for member in members]
        assert sorted(p for share in shares for p in share) == list(range(PARTITIONS))
        sizes = {len(share) for share in shares}
        assert max(sizes) - min(sizes) <= 1
    # a member not yet in the list (its first round) counts itself
    assert leases.share([], PARTITIONS, "m0") == frozenset(range(PARTITIONS))


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


class Member:
    """Leases held the way the evaluator holds them: what is usable is used at once."""

    def __init__(self, url: str, name: str) -> None:
        self.leases = leases.Leases(
            url, "rules", PARTITIONS, name=name, lease_seconds=1.0, round_seconds=0.2
        )
        self._tasks: list[asyncio.Task] = []
        self._closed = False

    def start(self) -> "Member":
        self._tasks = [asyncio.create_task(self.leases.run()), asyncio.create_task(self._use())]
        return self

    async def _use(self) -> None:
        while True:
            await self.leases.changed.wait()
            self.leases.changed.clear()
            await self.leases.use(self.leases.usable())

    async def stop(self, *, gracefully: bool) -> None:
        """Stop its rounds; `gracefully`: give its leases back too (else they expire)."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._tasks = []
        if gracefully and not self._closed:
            self._closed = True
            await self.leases.close()


@pytest.fixture
async def members(redis_server: RedisServer) -> AsyncIterator[list[Member]]:
    made = [Member(redis_server.url, f"member-{n}") for n in range(3)]
    yield made
    for member in made:
        await member.stop(gracefully=True)


async def _split(members: list[Member]) -> bool:
    """The members' usable partitions: disjoint, all of them, and the owners Redis names."""
    usable = [member.leases.usable() for member in members]
    owners = await members[0].leases.owners()
    named = all(
        owners[p] == m.leases.name for m, share in zip(members, usable, strict=True) for p in share
    )
    every = sorted(p for share in usable for p in share) == list(range(PARTITIONS))
    return every and named and all(usable)


async def test_members_split_the_partitions_and_take_over_a_dead_ones(
    members: list[Member],
) -> None:
    first, second, third = members
    first.start()
    await wait_for_async(lambda: _split([first]))
    second.start()
    third.start()
    await wait_for_async(lambda: _split(members))
    assert sorted(len(m.leases.usable()) for m in members) == [5, 5, 6]
    live = await first.leases.members()
    assert [m.name for m in live] == ["member-0", "member-1", "member-2"]
    assert [m.using for m in live] == [m.leases.usable() for m in members]

    await third.stop(gracefully=False)  # dies: its leases and heartbeat expire
    await wait_for_async(lambda: _split([first, second]))
    assert sorted(len(m.leases.usable()) for m in (first, second)) == [8, 8]
    assert [m.name for m in await first.leases.members()] == ["member-0", "member-1"]

    await second.stop(gracefully=True)  # gives its leases back: taken without waiting
    await wait_for_async(lambda: _split([first]))


async def test_a_member_that_cannot_renew_stops_before_its_leases_expire(
    redis_server: RedisServer, members: list[Member]
) -> None:
    member = members[0].start()
    await wait_for_async(lambda: _split([member]))
    assert member.leases.fresh()
    redis_server.stop()
    await wait_for(lambda: not member.leases.usable() and not member.leases.fresh())
    redis_server.start()  # same port, nothing kept: the leases are taken again
    await wait_for_async(lambda: _split([member]), timeout=30)
