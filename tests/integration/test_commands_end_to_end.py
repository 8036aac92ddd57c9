"""Commands from outside: `iotdeck serve`, simulated devices on a real Mosquitto, GraphQL.

`sendCommand` over HTTP, `commandStatusChanged` over a WebSocket showing every step:
PENDING -> SENT -> ACKNOWLEDGED -> EXECUTED for a known action, FAILED with the device's
error for an unknown one, EXPIRED for a device whose firmware never answers.
"""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy import Engine

from app.core import db
from app.core.auth import create_token
from app.core.models import DeviceCreate, Role, UserCreate
from app.mqtt.connection import BrokerAddress
from app.services import devices, users
from app.sim.simulator import Simulator
from bench.services import IotdeckBroker
from tests.e2e.conftest import Server, running_server

SECRET = "commands-end-to-end-" + "k" * 40
TIMEOUT = 30.0
SEND = "mutation($input: SendCommandInput!) { sendCommand(input: $input) { id status } }"
CHANGES = (
    "subscription($id: ID!) { commandStatusChanged(commandId: $id) "
    "{ id status sentAt acknowledgedAt executedAt error result } }"
)
ONLINE = "query($id: ID!) { device(id: $id) { status } }"


@pytest.fixture
def operator(engine: Engine) -> str:
    """An OPERATOR's token in this test's database."""
    del engine
    with db.session_scope() as session:
        data = UserCreate(email="op@example.com", password="x" * 12, role=Role.OPERATOR)
        return create_token(
            users.create_user(session=session, data=data), secret=SECRET, expire_hours=1
        )


def _thermostat(name: str) -> uuid.UUID:
    with db.session_scope() as session:
        data = DeviceCreate(name=name, type="thermostat")
        return devices.create_device(session=session, data=data).id


@contextmanager
def _simulated(mosquitto: IotdeckBroker, device_id: uuid.UUID, **options: Any) -> Iterator[None]:
    simulator = Simulator(
        BrokerAddress("127.0.0.1", mosquitto.port),
        [(device_id, "thermostat")],
        rate=2,
        logins=mosquitto.device_addresses([device_id]),
        **options,
    )
    simulator.start()
    assert simulator.wait_connected(10)
    try:
        yield
    finally:
        simulator.stop()


async def _api(server: Server, token: str, query: str, **variables: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(
            f"{server.url}/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {token}"},
        )
    body = answer.json()
    assert "errors" not in body, body
    return body["data"]


@asynccontextmanager
async def _steps(server: Server, token: str, command_id: str) -> AsyncIterator[list[dict]]:
    """Every `commandStatusChanged` emission, collected until the subscription completes."""
    ws_url = server.url.replace("http://", "ws://") + "/graphql"
    seen: list[dict] = []
    async with websockets.connect(ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
        await ws.send(json.dumps(init))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        payload = {"query": CHANGES, "variables": {"id": command_id}}
        await ws.send(json.dumps({"type": "subscribe", "id": "1", "payload": payload}))

        async def read() -> None:
            async for raw in ws:
                message = json.loads(raw)
                if message["type"] == "complete":
                    return
                assert message["type"] == "next" and "errors" not in message["payload"], message
                seen.append(message["payload"]["data"]["commandStatusChanged"])

        reader = asyncio.create_task(read())
        yield seen
        await asyncio.wait_for(reader, TIMEOUT)


async def _online(server: Server, token: str, device_id: uuid.UUID) -> None:
    async with asyncio.timeout(TIMEOUT):
        while (await _api(server, token, ONLINE, id=str(device_id)))["device"]["status"] != (
            "ONLINE"
        ):
            await asyncio.sleep(0.1)


async def test_commands_go_out_and_every_step_comes_back(
    *, database_url: str, mosquitto: IotdeckBroker, operator: str, tmp_path: Path
) -> None:
    answering, silent = _thermostat("answering"), _thermostat("old firmware")
    env = {
        "IOTDECK_DATABASE_URL": database_url,
        "IOTDECK_MQTT_URL": mosquitto.url,
        "IOTDECK_JWT_SECRET": SECRET,
        "IOTDECK_DATA_DIR": str(tmp_path / "data"),
    }
    with running_server(tmp_path, ["--host", "127.0.0.1"], env) as server, ExitStack() as sims:

        async def send(device: uuid.UUID, action: str, **fields: Any) -> str:
            data = {"deviceId": str(device), "action": action, **fields}
            sent = (await _api(server, operator, SEND, input=data))["sendCommand"]
            assert sent["status"] == "PENDING"
            return sent["id"]

        # the device is not online yet: the command waits, and every step can be watched
        known = await send(answering, "set_interval", params={"seconds": 1})
        async with _steps(server, operator, known) as steps:
            async with asyncio.timeout(TIMEOUT):
                while not steps:
                    await asyncio.sleep(0.05)
            assert steps[0]["status"] == "PENDING" and steps[0]["acknowledgedAt"] is None
            sims.enter_context(_simulated(mosquitto, answering))  # it comes online: sent
        assert [s["status"] for s in steps] == ["PENDING", "SENT", "ACKNOWLEDGED", "EXECUTED"]
        assert steps[-1]["result"]["interval_seconds"] == 1
        assert steps[-1]["sentAt"] <= steps[-1]["acknowledgedAt"] <= steps[-1]["executedAt"]

        unknown = await send(answering, "explode")
        async with _steps(server, operator, unknown) as steps:
            pass
        assert (steps[-1]["status"], steps[-1]["error"]) == ("FAILED", "unknown action 'explode'")

        sims.enter_context(_simulated(mosquitto, silent, answer_commands=False))
        await _online(server, operator, silent)
        never = await send(silent, "reboot", timeoutSeconds=2)
        async with _steps(server, operator, never) as steps:
            pass
        assert [s["status"] for s in steps][-2:] == ["SENT", "EXPIRED"]
        assert "no final answer" in steps[-1]["error"]
