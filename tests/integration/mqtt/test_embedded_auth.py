"""The embedded broker outside demo mode: logins from the database, the device topic rules."""

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import Engine
from sqlmodel import Session

from app.core.models import DeviceCreate
from app.mqtt.embedded import EmbeddedBroker, choose_port
from app.services import credentials, devices
from tests.waiting import wait_until

OTHER = "6f1c2a8e-0c1b-4a51-9d1e-1a0000000002"


@contextmanager
def embedded_broker(*, open_access: bool) -> Iterator[int]:
    """The embedded broker on a free port, on an event loop of its own thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="embedded-broker", daemon=True)
    thread.start()
    broker = EmbeddedBroker(choose_port(0), open_access=open_access)
    asyncio.run_coroutine_threadsafe(broker.start(), loop).result(10)
    try:
        yield broker.port
    finally:
        asyncio.run_coroutine_threadsafe(broker.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


class Peer:
    """An MQTT 3.1.1 client of the broker that records its CONNACK, SUBACKs and messages."""

    def __init__(self, port: int, username: str | None = None, password: str | None = None) -> None:
        self.connack: ReasonCode | None = None
        self.granted: dict[int, list[ReasonCode]] = {}
        self.messages: list[tuple[str, bytes]] = []
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.port = port

    def _on_connect(
        self, _client: mqtt.Client, _data: object, _flags: object, code: ReasonCode, _p: object
    ) -> None:
        self.connack = code

    def _on_subscribe(
        self, _client: mqtt.Client, _data: object, mid: int, codes: list[ReasonCode], _p: object
    ) -> None:
        self.granted[mid] = codes

    def _on_message(self, _client: mqtt.Client, _data: object, message: mqtt.MQTTMessage) -> None:
        self.messages.append((message.topic, message.payload))

    def connect(self) -> ReasonCode:
        """Connect and wait for the broker's answer."""
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        wait_until(lambda: self.connack is not None, timeout=10)
        assert self.connack is not None
        return self.connack

    def subscribe(self, topic_filter: str) -> bool:
        """Subscribe at QoS 1; True when the broker granted it."""
        _, mid = self.client.subscribe(topic_filter, qos=1)
        codes = wait_until(lambda: self.granted.get(mid), timeout=10)
        assert isinstance(codes, list)
        return not codes[0].is_failure

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK."""
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def peers() -> Iterator[Callable[..., Peer]]:
    """Make clients; every one is closed after the test."""
    made: list[Peer] = []

    def make(port: int, username: str | None = None, password: str | None = None) -> Peer:
        made.append(Peer(port, username, password))
        return made[-1]

    yield make
    for peer in made:
        peer.close()


@pytest.fixture
def broker(engine: Engine) -> Iterator[int]:
    """The embedded broker outside demo mode, checking logins against this test's database."""
    del engine  # the broker reads through the process-wide engine that fixture points
    with embedded_broker(open_access=False) as port:
        yield port


@pytest.fixture
def device_login(session: Session) -> tuple[str, str]:
    """A device's username and password credential."""
    device = devices.create_device(session=session, data=DeviceCreate(name="Pump", type="pump"))
    issued = credentials.issue_credentials(session=session, device_id=device.id, kind="PASSWORD")
    session.commit()
    assert issued.password is not None
    return issued.username, issued.password


@pytest.fixture
def ingest_login(session: Session) -> tuple[str, str]:
    """The ingest service account's username and password."""
    login = credentials.service_login(session=session, username=credentials.INGEST_ACCOUNT)
    session.commit()
    return login


def test_anonymous_clients_and_wrong_passwords_are_refused(
    broker: int, peers: Callable[..., Peer], device_login: tuple[str, str]
) -> None:
    username, password = device_login
    assert peers(broker).connect().is_failure
    assert peers(broker, username, password + "x").connect().is_failure
    assert peers(broker, OTHER, password).connect().is_failure
    assert peers(broker, credentials.INGEST_ACCOUNT, password).connect().is_failure
    assert not peers(broker, username, password).connect().is_failure


def test_a_device_publishes_to_its_own_telemetry_only(
    broker: int,
    peers: Callable[..., Peer],
    device_login: tuple[str, str],
    ingest_login: tuple[str, str],
) -> None:
    ingest = peers(broker, *ingest_login)
    assert not ingest.connect().is_failure
    assert ingest.subscribe("devices/+/telemetry")
    device = peers(broker, *device_login)
    assert not device.connect().is_failure
    own = f"devices/{device_login[0]}/telemetry"
    device.publish(f"devices/{OTHER}/telemetry", b"forged")
    device.publish(own, b"mine")
    wait_until(lambda: ingest.messages, timeout=10)
    # the forged message went first on the same connection: had it passed, it would be here
    assert ingest.messages == [(own, b"mine")]


def test_a_device_subscribes_to_its_own_commands_only(
    broker: int,
    peers: Callable[..., Peer],
    device_login: tuple[str, str],
    ingest_login: tuple[str, str],
) -> None:
    device = peers(broker, *device_login)
    assert not device.connect().is_failure
    own = f"devices/{device_login[0]}/commands"
    assert not device.subscribe(f"devices/{OTHER}/commands")
    assert not device.subscribe("devices/+/commands")
    assert not device.subscribe("#")
    assert device.subscribe(own)
    service = peers(broker, *ingest_login)
    assert not service.connect().is_failure
    service.publish(f"devices/{OTHER}/commands", b"not yours")
    service.publish(own, b"yours")
    wait_until(lambda: device.messages, timeout=10)
    assert device.messages == [(own, b"yours")]


def test_a_will_on_another_device_topic_is_refused(
    broker: int, peers: Callable[..., Peer], device_login: tuple[str, str]
) -> None:
    forging = peers(broker, *device_login)
    forging.client.will_set(f"devices/{OTHER}/status", b"offline", qos=1)
    assert forging.connect().is_failure
    honest = peers(broker, *device_login)
    honest.client.will_set(f"devices/{device_login[0]}/status", b"offline", qos=1)
    assert not honest.connect().is_failure


def test_in_demo_mode_anonymous_clients_connect_and_the_log_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="app.mqtt.embedded"):
        with embedded_broker(open_access=True) as port:
            anonymous = Peer(port)
            try:
                assert not anonymous.connect().is_failure
                assert anonymous.subscribe("devices/+/telemetry")
            finally:
                anonymous.close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "app.mqtt.embedded"]
    assert len(warnings) == 1
    assert "demo mode, anonymous clients allowed on 127.0.0.1" in warnings[0]
