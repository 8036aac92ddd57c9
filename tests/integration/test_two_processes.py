"""Two `iotdeck serve --no-ingest` processes and one `iotdeck ingest` on one Redis and one
PostgreSQL: what happens through one process reaches the subscribers of every process."""

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, AsyncExitStack, ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy import Engine

from app.core import db
from app.core.auth import create_token
from app.core.models import DeviceCreate, Role, UserCreate
from app.services import devices, users
from bench.services import IotdeckBroker, free_port, iotdeck_environment
from tests.firmware import connected_device
from tests.serving import IOTDECK, running
from tests.waiting import wait_until

REDIS_URL = "redis://127.0.0.1:6379/0"
SECRET = "two-processes-" + "k" * 40
TIMEOUT = 20.0
SUBSCRIBE = {
    "points": "subscription($id: ID!) { telemetryReceived(deviceId: $id) { metricName value } }",
    "events": "subscription { deviceEvents { type device { id name } } }",
}
UPDATE = "mutation($id: ID!, $name: String!) { updateDevice(input: {id: $id, name: $name}) { id } }"


def _environment(database_url: str, mosquitto: IotdeckBroker, data: Path) -> dict[str, str]:
    return iotdeck_environment(
        IOTDECK_DATABASE_URL=database_url,
        IOTDECK_REDIS_URL=REDIS_URL,
        IOTDECK_JWT_SECRET=SECRET,
        IOTDECK_MQTT_URL=mosquitto.url,
        IOTDECK_DATA_DIR=str(data),
        IOTDECK_BCRYPT_ROUNDS="4",
    )


def _process(
    args: list[str], env: dict[str, str], log: Path
) -> AbstractContextManager[subprocess.Popen]:
    """`iotdeck ARGS`, output to `log`; terminated (then killed) afterwards."""
    return running([IOTDECK, *args], env, log)


def _ready(url: str, process: subprocess.Popen, log: Path) -> bool:
    assert process.poll() is None, log.read_text()
    try:
        # ready includes the bus: this process's Redis subscription is up
        return httpx.get(f"{url}/health/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def apps(database_url: str, mosquitto: IotdeckBroker, tmp_path: Path) -> Iterator[list[str]]:
    """The base URLs of two ready app processes; one ingest process consumes the broker."""
    env = _environment(database_url, mosquitto, tmp_path / "data")
    urls = []
    with ExitStack() as stack:
        for name in ("a", "b"):
            port = free_port()
            log = tmp_path / f"serve-{name}.log"
            args = ["serve", "--no-ingest", "--host", "127.0.0.1", "--port", str(port)]
            process = stack.enter_context(_process(args, env, log))
            urls.append((f"http://127.0.0.1:{port}", process, log))
        ingest_log = tmp_path / "ingest.log"
        ingest = stack.enter_context(_process(["ingest"], env, ingest_log))
        for url, process, log in urls:
            wait_until(lambda url=url, process=process, log=log: _ready(url, process, log), 60)

        def subscribed() -> bool:
            assert ingest.poll() is None, ingest_log.read_text()
            return "ingest subscribed on" in ingest_log.read_text()

        wait_until(subscribed, 30)
        yield [url for url, _, _ in urls]


@dataclass
class Feed:
    """Everything one WebSocket received, by subscription id, collected in the background."""

    received: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def of(self, ident: str) -> list[dict[str, Any]]:
        """The data payloads of subscription `ident` so far."""
        return self.received.get(ident, [])


@asynccontextmanager
async def _subscribed(url: str, token: str, device_id: str) -> AsyncIterator[Feed]:
    """A graphql-transport-ws socket to `url` with both subscriptions, read in the background."""
    ws_url = url.replace("http://", "ws://") + "/graphql"
    async with websockets.connect(ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        for ident, query in SUBSCRIBE.items():
            variables = {"id": device_id} if ident == "points" else {}
            payload = {"query": query, "variables": variables}
            await ws.send(json.dumps({"type": "subscribe", "id": ident, "payload": payload}))
        feed = Feed()

        async def read() -> None:
            async for raw in ws:
                message = json.loads(raw)
                assert message["type"] == "next", message
                assert not message["payload"].get("errors"), message
                feed.received.setdefault(message["id"], []).append(message["payload"]["data"])

        reader = asyncio.create_task(read())
        try:
            yield feed
        finally:
            reader.cancel()


async def _until(condition: Callable[[], object], timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_one_point_and_one_edit_reach_the_subscribers_of_both_processes(
    engine: Engine, apps: list[str], mosquitto: IotdeckBroker
) -> None:
    del engine
    with db.session_scope() as session:
        data = UserCreate(email="admin@example.com", password="x" * 12, role=Role.ADMIN)
        admin = users.create_user(session=session, data=data)
        token = create_token(admin, secret=SECRET, expire_hours=1)
        device_id = str(
            devices.create_device(session=session, data=DeviceCreate(name="d", type="t")).id
        )
    topic = f"devices/{device_id}/telemetry"
    publisher = connected_device(mosquitto, device_id)

    def publish(payload: dict[str, float]) -> None:
        publisher.publish(topic, json.dumps(payload), qos=1).wait_for_publish(5)

    try:
        async with AsyncExitStack() as stack:
            feeds = [
                await stack.enter_async_context(_subscribed(url, token, device_id)) for url in apps
            ]
            # warm up until both processes' subscriptions are live: no way to see them from here
            async with asyncio.timeout(TIMEOUT):
                while not all(feed.of("points") and feed.of("events") for feed in feeds):
                    await asyncio.to_thread(publish, {"warmup": 1.0})
                    async with httpx.AsyncClient() as http:  # any device event will do
                        await http.post(
                            f"{apps[0]}/graphql",
                            json={"query": UPDATE, "variables": {"id": device_id, "name": "warm"}},
                            headers={"Authorization": f"Bearer {token}"},
                        )
                    await asyncio.sleep(0.5)  # give this round time to arrive before the next

            def points(feed: Feed) -> list[float]:
                return [
                    p["telemetryReceived"]["value"]
                    for p in feed.of("points")
                    if p["telemetryReceived"]["metricName"] == "temperature"
                ]

            # one point, published once over MQTT, reaches both processes
            await asyncio.to_thread(publish, {"temperature": 21.5})
            await _until(lambda: all(points(feed) for feed in feeds))
            assert [points(feed) for feed in feeds] == [[21.5], [21.5]]

            # an edit through process A is an UPDATED event on process B
            name = f"renamed-{uuid.uuid4().hex[:6]}"
            async with httpx.AsyncClient() as http:
                response = await http.post(
                    f"{apps[0]}/graphql",
                    json={"query": UPDATE, "variables": {"id": device_id, "name": name}},
                    headers={"Authorization": f"Bearer {token}"},
                )
            assert "errors" not in response.json(), response.json()

            def renamed(feed: Feed) -> list[dict[str, Any]]:
                return [
                    e["deviceEvents"]
                    for e in feed.of("events")
                    if e["deviceEvents"]["device"]["name"] == name
                ]

            await _until(lambda: renamed(feeds[1]))
            assert renamed(feeds[1]) == [
                {"type": "UPDATED", "device": {"id": device_id, "name": name}}
            ]
    finally:
        publisher.disconnect()
        publisher.loop_stop()
