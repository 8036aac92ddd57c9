"""Nothing is stuck after a restart: `iotdeck serve` stopped with a SENT and a PENDING command.

While the app is down, the device answers the SENT command and another device comes back
online. After the start: the answer is recorded (the broker kept it for ingest's persistent
session), the PENDING command goes out, and a command nobody answers still expires.
"""

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import Engine
from sqlmodel import Session

from app.core import db
from app.core.models import CommandStatus, DeviceCommand, DeviceCreate, DeviceStatus
from app.services import commands, devices
from bench.services import IotdeckBroker
from tests.e2e.conftest import running_server
from tests.firmware import Firmware
from tests.integration.conftest import Publish

TIMEOUT = 30.0


def _device(name: str) -> uuid.UUID:
    with db.session_scope() as session:
        return devices.create_device(session=session, data=DeviceCreate(name=name, type="p")).id


def _send(device_id: uuid.UUID, timeout: int) -> uuid.UUID:
    with db.session_scope() as session:
        data = commands.CommandInput(device_id=device_id, action="reboot", timeout_seconds=timeout)
        return commands.send_command(session=session, data=data).id


def _status(command_id: uuid.UUID) -> CommandStatus:
    with Session(db.get_engine()) as session:
        found = session.get(DeviceCommand, command_id)
        assert found is not None
        return found.status


def _online(device_id: uuid.UUID) -> bool:
    with Session(db.get_engine()) as session:
        return devices.get_device(session=session, device_id=device_id).status == (
            DeviceStatus.ONLINE
        )


async def _until(check: Callable[[], object], timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


async def test_after_a_restart_answers_are_recorded_pending_goes_out_expiry_happens(
    *,
    engine: Engine,
    database_url: str,
    mosquitto: IotdeckBroker,
    publish: Publish,
    firmware: Callable[[uuid.UUID], Firmware],
    tmp_path: Path,
) -> None:
    del engine
    near, far = _device("near"), _device("far")
    near_side, far_side = firmware(near), firmware(far)
    env = {
        "IOTDECK_DATABASE_URL": database_url,
        "IOTDECK_MQTT_URL": mosquitto.url,
        "IOTDECK_JWT_SECRET": "command-restart-" + "k" * 40,
        "IOTDECK_DATA_DIR": str(tmp_path / "data"),
        # a client id of this test's own: the broker keeps its session across the restart
        "IOTDECK_INGEST_CLIENT_ID": f"ingest-{uuid.uuid4().hex[:8]}",
    }
    with running_server(tmp_path, ["--host", "127.0.0.1"], env):
        publish(f"devices/{near}/telemetry", {"pressure": 1.0})
        await _until(lambda: _online(near))
        answered = _send(near, timeout=300)
        unanswered = _send(near, timeout=8)
        waiting = _send(far, timeout=300)  # `far` never spoke: it stays PENDING
        await _until(lambda: _status(answered) == _status(unanswered) == CommandStatus.SENT)
        assert _status(waiting) == CommandStatus.PENDING
    # the app is down: the device answers one command, the other device comes online
    near_side.answer(answered, "executed", result={"rebooted": True})
    publish(f"devices/{far}/status", {"status": "online"})
    assert far_side.commands == []
    with running_server(tmp_path, ["--host", "127.0.0.1"], env) as server:
        await _until(lambda: _status(answered) == CommandStatus.EXECUTED)
        await _until(lambda: _status(waiting) == CommandStatus.SENT)
        await _until(lambda: far_side.commands)
        assert [c["command_id"] for c in far_side.commands] == [str(waiting)]
        await _until(lambda: _status(unanswered) == CommandStatus.EXPIRED)
        health = httpx.get(f"{server.url}/health/ready", timeout=5)
        assert health.status_code == 200
