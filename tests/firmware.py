"""A device's MQTT side, as firmware would be: a plain paho client on a test's broker."""

import threading
import uuid

import orjson
import paho.mqtt.client as mqtt

from bench.services import Mosquitto


class Firmware:
    """A device's MQTT side: what it received on its commands and config topics."""

    def __init__(self, mosquitto: Mosquitto, device_id: uuid.UUID) -> None:
        self.device_id = device_id
        self.commands: list[dict] = []
        self.configs: list[dict] = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.connect("127.0.0.1", mosquitto.port)
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
