"""How many connections the simulator opens: a few for a large fleet, one per own login."""

import os
import uuid
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest

from app.mqtt.connection import BrokerAddress
from app.sim.simulator import (
    OWN_CONNECTIONS_UP_TO,
    SHARED_CONNECTIONS,
    DeviceSpec,
    Simulator,
    needs_device_logins,
)
from bench.fleet_simulator import broker_connections
from bench.services import IotdeckBroker, Mosquitto
from tests.waiting import wait_until


class Watcher:
    """Every message under devices/ on a broker, by topic."""

    def __init__(self, port: int) -> None:
        self.seen: dict[str, list[bytes]] = {}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = lambda _c, _u, m: self.seen.setdefault(m.topic, []).append(
            m.payload
        )
        subscribed: list[bool] = []
        self.client.on_subscribe = lambda *_: subscribed.append(True)
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("devices/#", qos=1)
        self.client.loop_start()
        wait_until(lambda: subscribed)

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def watcher(open_mosquitto: Mosquitto) -> Iterator[Watcher]:
    """A watcher of the open broker."""
    watching = Watcher(open_mosquitto.port)
    yield watching
    watching.close()


def test_an_open_broker_needs_no_device_logins(
    open_mosquitto: Mosquitto, mosquitto: IotdeckBroker
) -> None:
    assert not needs_device_logins(BrokerAddress("127.0.0.1", open_mosquitto.port))
    # `iotdeck mqtt-broker` refuses anonymous clients: each device logs in as itself
    assert needs_device_logins(BrokerAddress("127.0.0.1", mosquitto.port))
    # an account in the URL is what every device uses
    shared = BrokerAddress("127.0.0.1", mosquitto.port, username="someone", password="x")
    assert not needs_device_logins(shared)


def test_a_large_fleet_without_logins_shares_a_few_connections(
    open_mosquitto: Mosquitto, watcher: Watcher
) -> None:
    count = OWN_CONNECTIONS_UP_TO + 50
    specs = [DeviceSpec(uuid.uuid4(), "thermostat") for _ in range(count)]
    simulator = Simulator(BrokerAddress("127.0.0.1", open_mosquitto.port), specs, rate=2)
    assert len(simulator.links) == SHARED_CONNECTIONS
    assert sorted(len(link.devices) for link in simulator.links) == [37, 37, 38, 38]
    simulator.start()
    try:
        assert simulator.wait_connected(15)
        # the watcher's connection and the simulator's few
        assert broker_connections(os.getpid(), open_mosquitto.port) == SHARED_CONNECTIONS + 1
        for spec in specs:
            topic = f"devices/{spec.id}/telemetry"
            wait_until(lambda topic=topic: topic in watcher.seen)
            assert watcher.seen[f"devices/{spec.id}/status"][0] == b"online"
    finally:
        simulator.stop()
    for spec in specs:
        topic = f"devices/{spec.id}/status"
        wait_until(lambda topic=topic: watcher.seen[topic][-1] == b"offline")
    assert simulator.published >= count


def test_a_small_fleet_keeps_one_connection_per_device(open_mosquitto: Mosquitto) -> None:
    # one connection each, so each device keeps its own last will
    specs = [DeviceSpec(uuid.uuid4(), "thermostat") for _ in range(3)]
    simulator = Simulator(BrokerAddress("127.0.0.1", open_mosquitto.port), specs, rate=2)
    assert [link.devices for link in simulator.links] == [[d] for d in simulator.devices]
