"""Commands per partition: each worker's dispatcher sends the commands of the devices of the
partitions its rule evaluator owns (app/workers/leases.py), in order; a dead worker's pending
commands go out from the partitions' new owner.

Two dispatchers on one real Mosquitto and a private Redis, each following its own leases
(short ones: 1 s, rounds of 0.2 s) as `iotdeck worker` does; devices answer as firmware.
"""

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from app.core import bus
from app.core.models import CommandStatus, DeviceStatus
from app.core.streams import RULES, partition_of
from app.mqtt.ingest import IngestWorker
from app.services.credentials import COMMANDS_ACCOUNT
from app.workers.command_dispatch import CommandDispatcher
from app.workers.leases import Leases, share
from bench.services import IotdeckBroker, RedisServer
from tests.firmware import Firmware
from tests.integration.conftest import Publish
from tests.integration.test_command_dispatch import _device, _device_status, _send, _status
from tests.waiting import wait_for

pytestmark = pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")
PARTITIONS = 16
PER_WORKER = 3  # devices in each worker's partitions


class Worker:
    """A worker's leases and command dispatcher, the leases used as its evaluator would."""

    def __init__(self, name: str, url: str, mosquitto: IotdeckBroker) -> None:
        self.leases = Leases(url, RULES, PARTITIONS, name=name, lease_seconds=1, round_seconds=0.2)
        self.dispatcher = CommandDispatcher(
            mosquitto.service_address(COMMANDS_ACCOUNT),
            client_id=f"commands-{name}-{uuid.uuid4().hex[:6]}",
            poll_seconds=0.3,
            owner=self.leases,
            partitions=PARTITIONS,
        )
        self.tasks: list[asyncio.Task] = []

    def start(self, hub: bus.Hub) -> None:
        self.tasks = [
            asyncio.create_task(self.leases.run()),
            asyncio.create_task(self._use()),
            asyncio.create_task(self.dispatcher.run(hub)),
        ]

    async def _use(self) -> None:
        while True:
            await self.leases.changed.wait()
            self.leases.changed.clear()
            await self.leases.use(self.leases.usable())

    async def kill(self) -> None:
        """Stop at once, giving nothing back: its leases expire."""
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks)
        self.tasks = []


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    server = RedisServer(tmp_path / "redis").start()
    yield server.url
    server.stop()


@pytest.fixture
async def workers(
    engine: object, redis_url: str, mosquitto: IotdeckBroker
) -> AsyncIterator[tuple[Worker, Worker]]:
    del engine
    hub = bus.Hub(asyncio.get_running_loop())
    local = bus.LocalBus()
    await local.start(hub)
    bus.set_bus(local, hub)
    made = (Worker("worker-a", redis_url, mosquitto), Worker("worker-b", redis_url, mosquitto))
    for worker in made:
        worker.start(hub)
    yield made
    for worker in made:
        await worker.kill()
        await worker.leases.close()
    bus.set_bus(bus.NullBus())


def _devices_of(member: str) -> list[uuid.UUID]:
    """PER_WORKER new devices in the partitions `member` gets of the two."""
    mine = share(["worker-a", "worker-b"], PARTITIONS, member)
    found: list[uuid.UUID] = []
    while len(found) < PER_WORKER:
        device_id = _device(f"pump {uuid.uuid4().hex[:6]}")
        if partition_of(device_id, PARTITIONS) in mine:
            found.append(device_id)
    return found


async def test_each_worker_sends_its_partitions_commands_and_takes_over_a_dead_ones(
    ingest: IngestWorker,
    publish: Publish,
    firmware: Callable[[uuid.UUID], Firmware],
    workers: tuple[Worker, Worker],
) -> None:
    del ingest
    first, second = workers
    await wait_for(lambda: first.leases.in_use() and second.leases.in_use())
    ours = {first: _devices_of("worker-a"), second: _devices_of("worker-b")}
    devices = {device_id: firmware(device_id) for ids in ours.values() for device_id in ids}
    for device_id in devices:
        publish(f"devices/{device_id}/telemetry", {"flow": 1.0})  # ONLINE
    await wait_for(lambda: all(_device_status(d) == DeviceStatus.ONLINE for d in devices))

    sent = {
        device_id: [_send(device_id, params={"n": n}) for n in range(2)] for device_id in devices
    }
    every = [command for commands in sent.values() for command in commands]
    await wait_for(lambda: all(_status(c) == CommandStatus.SENT for c in every))
    for device_id, device in devices.items():  # each once, in order
        assert [c["command_id"] for c in device.commands] == [str(c) for c in sent[device_id]]
    # each went out from the owner of its device's partition
    assert (first.dispatcher.published, second.dispatcher.published) == (6, 6)

    await second.kill()  # SIGKILL-like: its leases expire after 1 s
    orphans = {device_id: _send(device_id, params={"n": 2}) for device_id in ours[second]}
    await wait_for(lambda: all(_status(c) == CommandStatus.SENT for c in orphans.values()))
    assert first.dispatcher.published == 6 + PER_WORKER
    for device_id, command_id in orphans.items():
        assert devices[device_id].commands[-1]["command_id"] == str(command_id)
        assert len(devices[device_id].commands) == 3
