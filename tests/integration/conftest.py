"""Fixtures for tests that run the ingest worker against a private Mosquitto."""

import uuid
from collections.abc import Callable, Iterator

import orjson
import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import Engine

from app.mqtt.connection import BrokerAddress
from app.mqtt.ingest import IngestWorker
from bench.services import Mosquitto

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
