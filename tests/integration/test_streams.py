"""The partitioned streams (app/core/streams.py): one contract, in memory and on a real Redis."""

import asyncio
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import pytest
import redis

from app.core.streams import (
    Entry,
    MemoryStreams,
    RedisStreams,
    Streams,
    StreamsError,
    StreamsReset,
    partition_of,
)

REDIS_URL = "redis://127.0.0.1:6379/0"
GROUP = "rules"


@pytest.fixture(params=["memory", "redis"])
async def streams(request: pytest.FixtureRequest) -> AsyncIterator[Streams]:
    """Four partitions; on Redis under a prefix of this test's own, deleted after it."""
    if request.param == "memory":
        yield MemoryStreams(4, max_length=50)
        return
    prefix = f"test:streams:{uuid.uuid4().hex[:10]}:"
    made = RedisStreams(REDIS_URL, 4, prefix=prefix, max_length=50)
    yield made
    await made.close()
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def _values(entries: list[Entry]) -> list[int]:
    return [entry.message["n"] for entry in entries]


def test_a_device_always_lands_in_the_same_partition_and_partitions_share_the_fleet() -> None:
    device = uuid.UUID("6f1c1a8e-8f4b-4c35-9a55-0d5d1d2a9f10")
    assert partition_of(device, 16) == partition_of(str(device), 16) == 3  # CRC-32, fixed
    counts = Counter(partition_of(uuid.uuid4(), 16) for _ in range(16_000))
    assert set(counts) == set(range(16))
    assert all(800 <= count <= 1200 for count in counts.values()), counts


async def test_entries_come_back_in_order_once_per_group(streams: Streams) -> None:
    streams.append([(1, {"n": n}) for n in range(5)] + [(2, {"n": 10})])

    first = await streams.read(GROUP, "a", [1, 2], count=100, block=1)
    assert _values([e for e in first if e.partition == 1]) == [0, 1, 2, 3, 4]
    assert _values([e for e in first if e.partition == 2]) == [10]
    assert await streams.read(GROUP, "a", [1, 2], count=100, block=0.05) == []
    # another group reads the same entries on its own
    assert _values(await streams.read("audit", "x", [1], count=100, block=1)) == [0, 1, 2, 3, 4]


async def test_count_limits_each_read_and_the_rest_follows(streams: Streams) -> None:
    streams.append([(0, {"n": n}) for n in range(7)])
    assert _values(await streams.read(GROUP, "a", [0], count=3, block=1)) == [0, 1, 2]
    assert _values(await streams.read(GROUP, "a", [0], count=3, block=1)) == [3, 4, 5]
    assert _values(await streams.read(GROUP, "a", [0], count=3, block=1)) == [6]


async def test_consumers_of_a_group_share_the_entries(streams: Streams) -> None:
    streams.append([(3, {"n": n}) for n in range(4)])
    one = await streams.read(GROUP, "a", [3], count=2, block=1)
    two = await streams.read(GROUP, "b", [3], count=10, block=1)
    assert _values(one) == [0, 1] and _values(two) == [2, 3]


async def test_a_read_waits_for_an_append_from_another_thread(streams: Streams) -> None:
    await streams.read(GROUP, "a", [0], count=1, block=0.01)  # the group exists from here
    reading = asyncio.create_task(streams.read(GROUP, "a", [0], count=10, block=10))
    await asyncio.sleep(0.05)  # the read is waiting
    threading.Thread(target=streams.append, args=([(0, {"n": 42})],)).start()
    assert _values(await reading) == [42]


async def test_what_a_dead_consumer_left_unacknowledged_is_taken_over(streams: Streams) -> None:
    streams.append([(2, {"n": n}) for n in range(4)])
    dead = await streams.read(GROUP, "dead", [2], count=10, block=1)
    await streams.ack(GROUP, dead[:2])  # it finished two before it died

    assert await streams.claim(GROUP, "heir", 2, idle=60) == []  # not stale yet
    await asyncio.sleep(0.05)
    taken = await streams.claim(GROUP, "heir", 2, idle=0.01)
    assert _values(taken) == [2, 3]
    assert [e.id for e in taken] == [e.id for e in dead[2:]]
    await streams.ack(GROUP, taken)
    assert await streams.claim(GROUP, "other", 2, idle=0) == []


async def test_lag_counts_what_waits_and_for_how_long(streams: Streams) -> None:
    before = await streams.lag(GROUP, 1)
    assert (before.undelivered, before.pending, before.oldest_pending_seconds) == (0, 0, 0.0)

    streams.append([(1, {"n": n}) for n in range(6)])
    await streams.read(GROUP, "a", [1], count=1, block=1)  # the group exists now
    taken = await streams.read(GROUP, "a", [1], count=2, block=1)
    await asyncio.sleep(0.05)
    lag = await streams.lag(GROUP, 1)
    assert (lag.undelivered, lag.pending) == (3, 3)
    assert lag.oldest_pending_seconds >= 0.05

    await streams.ack(GROUP, taken)
    assert (await streams.lag(GROUP, 1)).pending == 1


async def test_a_stream_keeps_at_most_its_max_length(streams: Streams) -> None:
    streams.append([(0, {"n": n}) for n in range(500)])
    lag = await streams.lag(GROUP, 0)
    assert 50 <= lag.length < 500  # Redis trims approximately, in whole nodes
    entries = await streams.read(GROUP, "a", [0], count=1000, block=1)
    assert _values(entries)[-1] == 499 and len(entries) == lag.length


async def test_a_group_lost_with_redis_data_is_made_again_and_said() -> None:
    prefix = f"test:streams:{uuid.uuid4().hex[:10]}:"
    streams = RedisStreams(REDIS_URL, 2, prefix=prefix)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        streams.append([(0, {"n": 1})])
        assert _values(await streams.read(GROUP, "a", [0], count=10, block=1)) == [1]
        client.delete(streams.key(0))  # as a Redis restarted without persistence
        with pytest.raises(StreamsReset):
            await streams.read(GROUP, "a", [0], count=10, block=0.05)
        streams.append([(0, {"n": 2})])
        assert _values(await streams.read(GROUP, "a", [0], count=10, block=1)) == [2]
    finally:
        client.delete(*client.scan_iter(match=f"{prefix}*"))
        client.close()
        await streams.close()


async def test_an_unreachable_redis_is_a_streams_error() -> None:
    streams = RedisStreams("redis://127.0.0.1:1/0", 2, connect_timeout=0.5)
    with pytest.raises(StreamsError):
        streams.append([(0, {"n": 1})])
    with pytest.raises(StreamsError):
        await streams.read(GROUP, "a", [0], count=1, block=0.05)
    await streams.close()


async def test_trimming_drops_what_every_group_is_done_with_and_only_that(
    streams: Streams,
) -> None:
    streams.append([(1, {"n": n}) for n in range(40)])
    taken = await streams.read(GROUP, "a", [1], count=30, block=1)  # 0..29 read
    await streams.ack(GROUP, taken[:10])  # 0..9 done; 10..29 pending; 30..39 unread
    assert (await streams.lag(GROUP, 1, trim=True)).length == 30
    assert _values(await streams.claim(GROUP, "b", 1, idle=0)) == list(range(10, 30))
    rest = await streams.read(GROUP, "a", [1], count=50, block=1)
    assert _values(rest) == list(range(30, 40))

    await streams.ack(GROUP, taken[10:] + rest)
    assert (await streams.lag(GROUP, 1, trim=True)).length == 0
