"""The System page's reading (app/services/system.py) of a deployment sharing Redis: the
live processes, each partition's owner and its stream's backlog, as Redis holds them."""

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.core import bus, presence
from app.core.config import get_settings
from app.core.streams import RULES, RedisStreams
from app.services.system import system_status
from app.workers import leases
from bench.services import RedisServer
from tests.waiting import wait_for_async

pytestmark = pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")
PARTITIONS = 4


@pytest.fixture
async def redis_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    server = RedisServer(tmp_path / "redis").start()
    monkeypatch.setenv("IOTDECK_REDIS_URL", server.url)
    monkeypatch.setenv("IOTDECK_PARTITIONS", str(PARTITIONS))
    get_settings.cache_clear()
    streams = RedisStreams(server.url, PARTITIONS)
    bus.set_bus(bus.RedisBus(server.url, streams))
    yield server.url
    bus.set_bus(bus.NullBus())
    await streams.close()
    get_settings.cache_clear()
    server.stop()


async def _member(url: str, name: str) -> tuple[leases.Leases, list[asyncio.Task]]:
    owner = leases.Leases(url, RULES, PARTITIONS, name=name, lease_seconds=1, round_seconds=0.2)

    async def use() -> None:
        while True:
            await owner.changed.wait()
            owner.changed.clear()
            await owner.use(owner.usable())

    return owner, [asyncio.create_task(owner.run()), asyncio.create_task(use())]


async def _announced(url: str) -> bool:
    return bool(await asyncio.to_thread(presence.alive, url))


async def test_the_status_names_each_partitions_owner_and_its_backlog(redis_url: str) -> None:
    members = [await _member(redis_url, name) for name in ("worker-a", "worker-b")]
    streams = bus.get_bus().streams
    assert streams is not None
    await streams.join(RULES, range(PARTITIONS))
    streams.append([(1, {"kind": "device"}), (1, {"kind": "device"}), (2, {"kind": "device"})])
    await streams.read(RULES, "worker-b", [2], count=10, block=0.1)  # read, not acknowledged

    async def split() -> bool:
        status = await system_status()
        return len(status.processes) == 2 and all(p.partitions for p in status.processes)

    try:
        with presence.announced(redis_url, "worker"):  # this process's heartbeat
            await wait_for_async(split)
            await wait_for_async(lambda: _announced(redis_url))
            status = await system_status()
    finally:
        for owner, tasks in members:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            await owner.close()
    assert status.shared and status.error is None and status.unowned == 0
    assert [p.name for p in status.processes] == ["worker-a", "worker-b"]
    # the heartbeat is matched to one member of this process; the other has none
    assert [p.kind for p in status.processes] == ["worker", "evaluator"]
    assert status.processes[0].this_process and status.processes[0].started is not None
    using = {p.name: set(p.partitions) for p in status.processes}
    assert using == {"worker-a": {0, 2}, "worker-b": {1, 3}}
    assert {p.number: p.owner for p in status.partitions} == {
        0: "worker-a",
        1: "worker-b",
        2: "worker-a",
        3: "worker-b",
    }
    lags = {p.number: p.lag for p in status.partitions}
    assert lags[1] is not None and (lags[1].length, lags[1].undelivered) == (2, 2)
    assert lags[2] is not None and (lags[2].pending, lags[2].undelivered) == (1, 0)
    assert status.backlog == 3


async def test_a_redis_that_cannot_be_read_is_said(redis_url: str) -> None:
    del redis_url
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IOTDECK_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
        get_settings.cache_clear()
        status = await system_status()
    get_settings.cache_clear()
    assert status.error is not None and "Redis could not be read" in status.error
    assert status.unowned == PARTITIONS and status.processes == []
