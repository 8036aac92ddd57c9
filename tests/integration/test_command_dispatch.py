"""Commands over a real Mosquitto: dispatcher out, device answers back through ingest.

The device side is a plain paho client, as firmware would be; the platform side is the
real ingest worker and the real dispatcher on this test's database and in-process bus.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine
from sqlmodel import Session

from app.core import bus, db
from app.core.models import CommandStatus, DeviceCommand, DeviceCreate, DeviceStatus
from app.mqtt.ingest import IngestWorker
from app.services import commands, devices
from app.services.commands import CommandInput
from app.services.credentials import COMMANDS_ACCOUNT
from app.workers.command_dispatch import CommandDispatcher
from bench.services import IotdeckBroker
from tests.firmware import Firmware
from tests.integration.conftest import Publish

TIMEOUT = 15.0


@pytest.fixture
def hub(engine: Engine) -> Iterator[None]:
    """The in-process bus (services publish after commit), set for this test."""
    del engine
    yield None
    bus.set_bus(bus.NullBus())


@asynccontextmanager
async def _platform(mosquitto: IotdeckBroker, *, poll: float = 30.0) -> AsyncIterator[bus.Hub]:
    """A hub on this loop with the dispatcher running (a long poll: the bus must wake it)."""
    hub = bus.Hub(asyncio.get_running_loop())
    local = bus.LocalBus()
    await local.start(hub)
    bus.set_bus(local, hub)
    address = mosquitto.service_address(COMMANDS_ACCOUNT)
    dispatcher = CommandDispatcher(
        address, client_id=f"cmd-{uuid.uuid4().hex[:6]}", poll_seconds=poll
    )
    task = asyncio.create_task(dispatcher.run(hub))
    try:
        yield hub
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def _until(check: Callable[[], object], timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


def _device(name: str = "pump") -> uuid.UUID:
    with db.session_scope() as session:
        return devices.create_device(session=session, data=DeviceCreate(name=name, type="pump")).id


def _send(device_id: uuid.UUID, **fields: object) -> uuid.UUID:
    with db.session_scope() as session:
        data = CommandInput(device_id=device_id, **{"action": "set_interval", **fields})
        return commands.send_command(session=session, data=data).id


def _command(command_id: uuid.UUID) -> DeviceCommand:
    with Session(db.get_engine()) as session:
        found = session.get(DeviceCommand, command_id)
        assert found is not None
        return found


def _status(command_id: uuid.UUID) -> CommandStatus:
    return _command(command_id).status


def _device_status(device_id: uuid.UUID) -> DeviceStatus:
    with Session(db.get_engine()) as session:
        return devices.get_device(session=session, device_id=device_id).status


async def test_a_command_to_an_online_device_is_sent_then_answered(
    hub: None,
    ingest: IngestWorker,
    mosquitto: IotdeckBroker,
    publish: Publish,
    firmware: Callable[[uuid.UUID], Firmware],
) -> None:
    del hub, ingest
    device_id = _device()
    device = firmware(device_id)
    async with _platform(mosquitto):
        publish(f"devices/{device_id}/telemetry", {"flow": 1.5})
        await _until(lambda: _device_status(device_id) == DeviceStatus.ONLINE)
        command_id = _send(device_id, params={"seconds": 5})
        await _until(lambda: device.commands)
        [received] = device.commands
        assert received["command_id"] == str(command_id)
        assert (received["action"], received["params"]) == ("set_interval", {"seconds": 5})
        assert received["timestamp"].endswith("Z") and received["expires_at"].endswith("Z")
        await _until(lambda: _status(command_id) == CommandStatus.SENT)
        device.answer(command_id, "acknowledged")
        await _until(lambda: _status(command_id) == CommandStatus.ACKNOWLEDGED)
        device.answer(command_id, "executed", result={"interval": 5})
        await _until(lambda: _status(command_id) == CommandStatus.EXECUTED)
    done = _command(command_id)
    assert done.result == {"interval": 5}
    assert done.sent_at <= done.acknowledged_at <= done.executed_at
    assert len(device.commands) == 1


async def test_an_offline_device_gets_its_command_when_online_and_an_expired_one_never(
    hub: None,
    ingest: IngestWorker,
    mosquitto: IotdeckBroker,
    publish: Publish,
    firmware: Callable[[uuid.UUID], Firmware],
) -> None:
    del hub, ingest
    device_id = _device()
    device = firmware(device_id)
    async with _platform(mosquitto):
        waiting = _send(device_id, timeout_seconds=300)
        short = _send(device_id, action="reboot", timeout_seconds=1)
        await _until(lambda: _status(short) == CommandStatus.EXPIRED)
        assert "never sent" in (_command(short).error or "")
        assert _status(waiting) == CommandStatus.PENDING and device.commands == []
        publish(f"devices/{device_id}/status", {"status": "online"})
        await _until(lambda: _status(waiting) == CommandStatus.SENT)
        await _until(lambda: device.commands)
        device.answer(waiting, "executed")
        await _until(lambda: _status(waiting) == CommandStatus.EXECUTED)
    assert [c["command_id"] for c in device.commands] == [str(waiting)]


async def test_a_dispatcher_started_later_sends_what_waited_and_expires_on_time(
    hub: None,
    ingest: IngestWorker,
    mosquitto: IotdeckBroker,
    publish: Publish,
    firmware: Callable[[uuid.UUID], Firmware],
) -> None:
    del hub, ingest
    device_id = _device()
    device = firmware(device_id)
    publish(f"devices/{device_id}/telemetry", {"flow": 1.5})
    await _until(lambda: _device_status(device_id) == DeviceStatus.ONLINE)
    pending = _send(device_id)  # no dispatcher runs: it waits in the database
    unanswered = _send(device_id, action="reboot", timeout_seconds=2)
    async with _platform(mosquitto):  # as after a restart
        await _until(lambda: len(device.commands) == 2)
        await _until(lambda: _status(pending) == CommandStatus.SENT)
        await _until(lambda: _status(unanswered) == CommandStatus.EXPIRED)
    assert "no final answer" in (_command(unanswered).error or "")


def _refused(reason: str) -> float:
    return REGISTRY.get_sample_value("command_acks_rejected_total", {"reason": reason}) or 0.0


async def test_answers_for_another_device_or_an_unknown_command_are_refused_and_counted(
    hub: None,
    ingest: IngestWorker,
    mosquitto: IotdeckBroker,
    firmware: Callable[[uuid.UUID], Firmware],
) -> None:
    del hub, ingest, mosquitto
    mine, other = _device("mine"), _device("other")
    command_id = _send(mine)
    before = {reason: _refused(reason) for reason in ("wrong_device", "unknown_command")}
    intruder = firmware(other)
    intruder.answer(command_id, "executed")  # another device answering for mine
    intruder.answer(uuid.uuid4(), "executed")
    await _until(lambda: _refused("unknown_command") == before["unknown_command"] + 1)
    assert _refused("wrong_device") == before["wrong_device"] + 1
    assert _status(command_id) == CommandStatus.PENDING


async def test_a_config_is_published_retained(
    hub: None, mosquitto: IotdeckBroker, firmware: Callable[[uuid.UUID], Firmware]
) -> None:
    del hub
    device_id = _device()
    async with _platform(mosquitto):
        with db.session_scope() as session:
            commands.update_config(session=session, device_id=device_id, config={"interval": 7})

        def published() -> bool:
            with Session(db.get_engine()) as session:
                device = devices.get_device(session=session, device_id=device_id)
                return device.config_published_at is not None

        await _until(published)
    late = firmware(device_id)  # connects after the publish: gets the retained copy
    await _until(lambda: late.configs)
    assert late.configs == [{"interval": 7}]
