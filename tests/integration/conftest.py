"""Fixtures for integration tests: an in-process bus, ingest on a private Mosquitto, SMTP and
webhook peers."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine

from app.core import bus, db
from app.core.auth import create_token
from app.core.config import get_settings
from app.core.models import DeviceCreate, Role, UserCreate
from app.core.streams import MemoryStreams
from app.mqtt.ingest import IngestWorker
from app.services import devices, users
from bench.services import IotdeckBroker, free_port
from tests.firmware import Firmware, connected_device, connected_service
from tests.postgres_server import PostgresServer
from tests.receivers import Mailbox, Receivers

Publish = Callable[[str, bytes | dict], None]


@pytest.fixture
async def hub(engine: Engine) -> AsyncIterator[bus.Hub]:
    """An in-process bus and its hub (and streams), set as this process's bus for the test."""
    del engine
    hub = bus.Hub(asyncio.get_running_loop())
    local = bus.LocalBus(MemoryStreams(4))
    await local.start(hub)
    bus.set_bus(local, hub)
    yield hub
    bus.set_bus(bus.NullBus())


@pytest.fixture
def ingest(
    request: pytest.FixtureRequest, engine: Engine, mosquitto: IotdeckBroker
) -> Iterator[IngestWorker]:
    """A running ingest worker on this test's broker, writing to this test's database.

    Indirect parametrization passes more IngestWorker options (e.g. `rate_limit`).
    """
    del engine  # the worker writes through the process-wide engine that fixture points
    address = mosquitto.service_address()
    options: dict[str, Any] = getattr(request, "param", {})
    worker = IngestWorker(
        address, client_id=f"ingest-{uuid.uuid4().hex[:8]}", batch_ms=20, **options
    )
    worker.start()
    assert worker.wait_connected(10)
    yield worker
    worker.stop()


@pytest.fixture
def device_clients(mosquitto: IotdeckBroker) -> Iterator[Callable[[uuid.UUID], mqtt.Client]]:
    """Connected MQTT 5 clients, each logged in as its device; closed after the test."""
    clients: dict[uuid.UUID, mqtt.Client] = {}

    def client_for(device_id: uuid.UUID) -> mqtt.Client:
        if device_id not in clients:
            clients[device_id] = connected_device(mosquitto, device_id)
        return clients[device_id]

    yield client_for
    for client in clients.values():
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def publish(device_clients: Callable[[uuid.UUID], mqtt.Client]) -> Publish:
    """Publish JSON (a dict) or raw bytes at QoS 1 as the topic's device; wait for PUBACK."""

    def send(topic: str, payload: bytes | dict) -> None:
        raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        client = device_clients(uuid.UUID(topic.split("/")[1]))
        client.publish(topic, raw, qos=1).wait_for_publish(5)

    return send


@pytest.fixture
def platform_publisher(mosquitto: IotdeckBroker) -> Iterator[mqtt.Client]:
    """An MQTT 5 client logged in as the command dispatcher's service account."""
    client = connected_service(mosquitto)
    yield client
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def platform_publish(platform_publisher: mqtt.Client) -> Publish:
    """Publish as the platform does (commands, configuration) at QoS 1; wait for PUBACK."""

    def send(topic: str, payload: bytes | dict, *, retain: bool = False) -> None:
        raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        platform_publisher.publish(topic, raw, qos=1, retain=retain).wait_for_publish(5)

    return send


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., tuple[Mailbox, int]]]:
    """Start aiosmtpd servers (keyword arguments go to its Controller); stopped after."""
    controllers: list[Controller] = []

    def start(mailbox: Mailbox | None = None, **options: Any) -> tuple[Mailbox, int]:
        mailbox = mailbox or Mailbox()
        port = free_port()
        controller = Controller(mailbox, hostname="127.0.0.1", port=port, **options)
        controller.start()
        controllers.append(controller)
        return mailbox, port

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture
def allow_private_webhooks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """IOTDECK_WEBHOOK_ALLOW_PRIVATE=true: the local receivers listen on 127.0.0.1."""
    monkeypatch.setenv("IOTDECK_WEBHOOK_ALLOW_PRIVATE", "true")
    get_settings.cache_clear()  # the rule service reads the process-wide settings
    yield
    get_settings.cache_clear()


@pytest.fixture
def receivers() -> Iterator[Receivers]:
    """Local webhook receivers, stopped after the test."""
    started = Receivers()
    yield started
    started.stop()


@pytest.fixture
def firmware(mosquitto: IotdeckBroker) -> Iterator[Callable[[uuid.UUID], Firmware]]:
    """Device-side clients for this test's broker, closed afterwards."""
    made: list[Firmware] = []

    def connect(device_id: uuid.UUID) -> Firmware:
        made.append(Firmware(mosquitto, device_id))
        return made[-1]

    yield connect
    for device in made:
        device.close()


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own, so the test may stop it."""
    server = PostgresServer().init()
    yield server
    server.remove()


# the JWT secret of the `iotdeck serve` subprocesses the end-to-end tests start
SERVER_SECRET = "integration-server-" + "k" * 40


@pytest.fixture
def accounts(engine: Engine) -> tuple[str, str]:
    """An OPERATOR's token (signed with SERVER_SECRET) and a thermostat's id, in this
    test's database."""
    del engine
    with db.session_scope() as session:
        data = UserCreate(email="op@example.com", password="x" * 12, role=Role.OPERATOR)
        operator = users.create_user(session=session, data=data)
        device = devices.create_device(
            session=session, data=DeviceCreate(name="boiler-1", type="thermostat")
        )
        return create_token(operator, secret=SERVER_SECRET, expire_hours=1), str(device.id)
