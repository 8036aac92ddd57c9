"""Fixtures for integration tests: ingest on a private Mosquitto, SMTP and webhook peers."""

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine

from app.mqtt.connection import BrokerAddress
from app.mqtt.ingest import IngestWorker
from bench.services import Mosquitto, free_port
from tests.firmware import Firmware
from tests.receivers import Mailbox, Receivers

Publish = Callable[[str, bytes | dict], None]


@pytest.fixture
def ingest(engine: Engine, mosquitto: Mosquitto) -> Iterator[IngestWorker]:
    """A running ingest worker on this test's broker, writing to this test's database."""
    del engine  # the worker writes through the process-wide engine that fixture points
    address = BrokerAddress("127.0.0.1", mosquitto.port)
    worker = IngestWorker(address, client_id=f"ingest-{uuid.uuid4().hex[:8]}", batch_ms=20)
    worker.start()
    assert worker.wait_connected(10)
    yield worker
    worker.stop()


@pytest.fixture
def publisher(mosquitto: Mosquitto) -> Iterator[mqtt.Client]:
    """A device-side MQTT 5 client on this test's broker."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def publish(publisher: mqtt.Client) -> Publish:
    """Publish JSON (a dict) or raw bytes at QoS 1 and wait for the broker's PUBACK."""

    def send(topic: str, payload: bytes | dict) -> None:
        raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        publisher.publish(topic, raw, qos=1).wait_for_publish(5)

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
def receivers() -> Iterator[Receivers]:
    """Local webhook receivers, stopped after the test."""
    started = Receivers()
    yield started
    started.stop()


@pytest.fixture
def firmware(mosquitto: Mosquitto) -> Iterator[Callable[[uuid.UUID], Firmware]]:
    """Device-side clients for this test's broker, closed afterwards."""
    made: list[Firmware] = []

    def connect(device_id: uuid.UUID) -> Firmware:
        made.append(Firmware(mosquitto, device_id))
        return made[-1]

    yield connect
    for device in made:
        device.close()
