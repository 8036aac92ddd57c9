"""A device's MQTT side, as firmware would be: a plain paho client on a test's broker."""

import threading
import uuid

import orjson
import paho.mqtt.client as mqtt

from app.mqtt import connection
from app.mqtt.connection import BrokerAddress
from app.services.credentials import COMMANDS_ACCOUNT
from bench.services import IotdeckBroker


def connected_device(broker: IotdeckBroker, device_id: uuid.UUID) -> mqtt.Client:
    """An MQTT 5 client logged in as the device (its own password), connected and looping."""
    return connected(broker.device_address(device_id), f"device-{device_id}")


def connected_service(broker: IotdeckBroker, account: str = COMMANDS_ACCOUNT) -> mqtt.Client:
    """An MQTT 5 client logged in as a platform service (default: the command dispatcher)."""
    return connected(broker.service_address(account), f"{account}-{uuid.uuid4().hex[:8]}")


def connected(address: BrokerAddress, client_id: str) -> mqtt.Client:
    """A paho client logged in as `address` says, connected and looping."""
    client = connection.make_client(address, client_id, persistent=False)
    accepted = threading.Event()
    client.on_connect = lambda _c, _u, _f, reason, _p: reason.is_failure or accepted.set()
    client.connect(address.host, address.port)
    client.loop_start()
    assert accepted.wait(5), f"the broker did not accept {address.username}"
    return client


class Firmware:
    """A device's MQTT side: what it received on its commands and config topics."""

    def __init__(self, mosquitto: IotdeckBroker, device_id: uuid.UUID) -> None:
        self.device_id = device_id
        self.commands: list[dict] = []
        self.configs: list[dict] = []
        self.subscribed = threading.Event()
        address = mosquitto.device_address(device_id)
        self.client = connection.make_client(address, f"firmware-{device_id}", persistent=False)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.connect(address.host, address.port)
        self.client.loop_start()
        topics = [f"devices/{device_id}/commands", f"devices/{device_id}/config"]
        self.client.subscribe([(topic, 1) for topic in topics])
        assert self.subscribed.wait(5), "the broker did not confirm the subscriptions"

    def _on_message(self, _client: object, _userdata: object, message: mqtt.MQTTMessage) -> None:
        document = orjson.loads(message.payload)
        kind = self.configs if message.topic.endswith("/config") else self.commands
        kind.append(document)

    def answer(self, command_id: uuid.UUID | str, status: str, **fields: object) -> None:
        """Publish an answer on devices/{id}/commands/ack and wait for the broker."""
        body = orjson.dumps({"command_id": str(command_id), "status": status, **fields})
        topic = f"devices/{self.device_id}/commands/ack"
        self.client.publish(topic, body, qos=1).wait_for_publish(5)

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()
