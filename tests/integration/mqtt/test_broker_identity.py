"""Device identity at the broker (SPEC 8.1), on Mosquitto run by `iotdeck mqtt-broker`.

Real Mosquitto from Debian on free ports, real credentials issued through the service, the
real ingest worker; the broker's own sync loop, not the test, brings changes in.
"""

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from cryptography import x509
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import Engine, create_engine
from sqlmodel import Session, SQLModel, func, select

from app.core import db
from app.core.models import (
    CertificateAuthority,
    CredentialKind,
    DeviceCreate,
    TelemetryPoint,
    utcnow,
)
from app.mqtt import connection, logins
from app.mqtt.connection import BrokerAddress
from app.mqtt.ingest import IngestWorker
from app.services import credentials, devices
from bench.services import IotdeckBroker, connection_result
from tests.firmware import connected_service
from tests.waiting import wait_until

CUT_OFF_SECONDS = 10  # SPEC 8.1: issuing and revoking take effect within this


def _device(name: str) -> uuid.UUID:
    with db.session_scope() as session:
        return devices.create_device(session=session, data=DeviceCreate(name=name, type="t")).id


def _recent_ms() -> int:
    """A millisecond timestamp of a minute ago: well inside the retention period."""
    return int(time.time() * 1000) - 60_000


def _stored(engine: Engine, device_id: uuid.UUID) -> int:
    with Session(engine) as session:
        query = select(func.count()).where(TelemetryPoint.device_id == device_id)
        return session.exec(query).one()


class Device:
    """A device's connection that records what the broker answered."""

    def __init__(self, address: BrokerAddress, client_id: str = "") -> None:
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.suback: list[ReasonCode] = []
        self.puback: list[ReasonCode] = []
        self.messages: list[str] = []
        self.subscribed = threading.Event()
        client_id = client_id or f"t-{uuid.uuid4().hex[:8]}"
        self.client = connection.make_client(address, client_id, persistent=False)
        self.client.reconnect_delay_set(60, 60)  # a cut-off device stays cut off for the test
        self.client.on_connect = lambda *a: self.connected.set()
        self.client.on_disconnect = lambda *a: self.disconnected.set()
        self.client.on_message = lambda _c, _u, m: self.messages.append(m.topic)
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = lambda _c, _u, _mid, reason, _p: self.puback.append(reason)
        connection.connect(self.client, address, persistent=False)
        self.client.loop_start()
        assert self.connected.wait(5), "the broker did not accept the device"

    def _on_subscribe(self, *args: object) -> None:
        self.suback.extend(args[3])  # type: ignore[arg-type]
        self.subscribed.set()

    def subscribe(self, topic: str) -> ReasonCode:
        """Subscribe and return the broker's answer for that filter."""
        self.subscribed.clear()
        self.suback.clear()
        self.client.subscribe(topic, qos=1)
        assert self.subscribed.wait(5)
        return self.suback[0]

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        """Publish at QoS 1 and return the PUBACK's reason code."""
        self.puback.clear()
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)
        wait_until(lambda: self.puback, timeout=5)
        return self.puback[0]

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def connect() -> Iterator[Callable[[BrokerAddress], Device]]:
    """Open device connections; all closed after the test."""
    opened: list[Device] = []

    def open_one(address: BrokerAddress) -> Device:
        opened.append(Device(address))
        return opened[-1]

    yield open_one
    for device in opened:
        device.close()


@pytest.fixture
def slow_broker(engine: Engine, tmp_path) -> Iterator[IotdeckBroker]:
    """The broker with the production sync interval (2 s), for the timing promises."""
    del engine
    broker = IotdeckBroker(tmp_path / "broker", sync_seconds=2.0).start()
    yield broker
    broker.stop()


def _refused(answer: str) -> bool:
    return answer != "Success"


def test_anonymous_and_wrong_passwords_are_refused_on_both_listeners(
    mosquitto: IotdeckBroker,
) -> None:
    device_id = _device("a")
    login = mosquitto.device_address(device_id)
    plain = BrokerAddress("127.0.0.1", mosquitto.port)
    assert connection_result(plain) == "Not authorized"
    assert connection_result(dataclasses.replace(login, password="wrong")) == "Not authorized"
    assert connection_result(dataclasses.replace(login, username=str(uuid.uuid4()))) == (
        "Not authorized"
    )
    assert connection_result(login) == "Success"
    # TLS without a client certificate: the handshake itself fails
    with db.session_scope() as session:
        ca = credentials.ca_bundle(session)
    tls = BrokerAddress("127.0.0.1", mosquitto.tls_port, tls=True, ca_pem=ca)
    assert _refused(connection_result(tls, timeout=3))
    assert _refused(
        connection_result(
            dataclasses.replace(tls, username=login.username, password=login.password), timeout=3
        )
    )


def test_a_device_reaches_only_its_own_topics(
    engine: Engine,
    mosquitto: IotdeckBroker,
    ingest: IngestWorker,
    connect: Callable[[BrokerAddress], Device],
) -> None:
    del ingest
    a, b = _device("a"), _device("b")
    device_a = connect(mosquitto.device_address(a))
    denied = "Not authorized"
    assert str(device_a.publish(f"devices/{b}/telemetry", b'{"t": 1}')) == denied
    assert str(device_a.publish(f"devices/{a}/commands", b"{}")) == denied
    assert str(device_a.publish(f"devices/{a}/config", b"{}")) == denied
    # Mosquitto 2.0 grants any SUBSCRIBE and checks each delivery against the ACL instead
    for topic in (
        f"devices/{b}/commands",
        f"devices/{b}/config",
        "devices/+/commands",
        "devices/+/telemetry",
        "#",
        f"devices/{a}/commands",
    ):
        device_a.subscribe(topic)
    platform = connected_service(mosquitto)
    try:
        for device_id in (b, a):
            for leaf in ("commands", "config"):
                topic = f"devices/{device_id}/{leaf}"
                platform.publish(topic, b"{}", qos=1).wait_for_publish(5)
    finally:
        platform.disconnect()
        platform.loop_stop()
    device_b = connect(mosquitto.device_address(b))
    assert str(device_b.publish(f"devices/{b}/telemetry", b'{"t": 2}')) == "Success"
    assert str(device_a.publish(f"devices/{a}/telemetry", b'{"t": 1}')) == "Success"
    wait_until(lambda: _stored(engine, a) == 1 and _stored(engine, b) == 1)
    # everything A could have seen was delivered by now: only its own commands reached it
    assert f"devices/{a}/commands" in device_a.messages
    assert all(topic.startswith(f"devices/{a}/") for topic in device_a.messages)


def test_a_device_joining_the_shared_group_steals_no_telemetry(
    engine: Engine, mosquitto: IotdeckBroker, connect: Callable[[BrokerAddress], Device]
) -> None:
    a, b = _device("a"), _device("b")
    # as IOTDECK_INGEST_SHARED_GROUP=iotdeck does (docker-compose sets it)
    worker = IngestWorker(
        mosquitto.service_address(),
        client_id="shared-ingest",
        shared_group=logins.shared_group("iotdeck"),
        batch_ms=20,
    )
    worker.start()
    try:
        assert worker.wait_connected(10)
        thief = connect(mosquitto.device_address(a))
        thief.subscribe("$share/iotdeck/devices/+/telemetry")
        sender = connect(mosquitto.device_address(b))
        for index in range(20):
            payload = f'{{"n": {index}, "ts": {_recent_ms() + index}}}'.encode()
            assert str(sender.publish(f"devices/{b}/telemetry", payload)) == "Success"
        wait_until(lambda: _stored(engine, b) == 20)
        assert thief.messages == []
    finally:
        worker.stop()


def _other_ca() -> credentials.Authority:
    elsewhere = create_engine("sqlite://")
    SQLModel.metadata.create_all(elsewhere, tables=[CertificateAuthority.__table__])
    with Session(elsewhere) as session:
        return credentials.create_authority(session)


def test_certificate_devices_connect_over_tls_and_bad_certificates_are_refused(
    engine: Engine,
    mosquitto: IotdeckBroker,
    ingest: IngestWorker,
    connect: Callable[[BrokerAddress], Device],
) -> None:
    del ingest
    device_id = _device("c")
    login = mosquitto.device_address(device_id, tls=True)
    device = connect(login)
    assert str(device.publish(f"devices/{device_id}/telemetry", b'{"t": 1}')) == "Success"
    wait_until(lambda: _stored(engine, device_id) == 1)
    # another CA, with the right CN
    foreign = credentials.sign(_other_ca(), str(device_id), days=30)
    forged = dataclasses.replace(
        login, certificate=(foreign.certificate_pem, foreign.private_key_pem)
    )
    assert _refused(connection_result(forged, timeout=3))
    # the platform CA, but expired
    with db.session_scope() as session:
        ca = credentials.authority(session)
    old = credentials.sign(ca, str(device_id), days=1, not_before=utcnow() - timedelta(days=10))
    expired = dataclasses.replace(login, certificate=(old.certificate_pem, old.private_key_pem))
    assert _refused(connection_result(expired, timeout=3))
    # revoked: refused once the broker has caught up, and the connected one is cut off
    with db.session_scope() as session:
        credentials.revoke_credentials(session=session, device_id=device_id)
    assert device.disconnected.wait(CUT_OFF_SECONDS)
    wait_until(lambda: _refused(connection_result(login, timeout=3)), timeout=CUT_OFF_SECONDS)


def test_issuing_revoking_and_deleting_take_effect_within_ten_seconds(
    slow_broker: IotdeckBroker, connect: Callable[[BrokerAddress], Device]
) -> None:
    device_id = _device("d")
    address = BrokerAddress("127.0.0.1", slow_broker.port)
    with db.session_scope() as session:
        issued = credentials.issue_credentials(
            session=session, device_id=device_id, kind=CredentialKind.PASSWORD
        )
    login = dataclasses.replace(address, username=issued.username, password=issued.password)
    started = time.monotonic()
    wait_until(lambda: connection_result(login) == "Success", timeout=CUT_OFF_SECONDS)
    assert time.monotonic() - started < CUT_OFF_SECONDS
    device = connect(login)
    with db.session_scope() as session:
        credentials.revoke_credentials(session=session, device_id=device_id)
    assert device.disconnected.wait(CUT_OFF_SECONDS), "a revoked device stayed connected"
    assert connection_result(login) == "Not authorized"
    # issuing again lets it back in; deleting the device cuts it off again
    with db.session_scope() as session:
        issued = credentials.issue_credentials(
            session=session, device_id=device_id, kind=CredentialKind.PASSWORD
        )
    login = dataclasses.replace(address, username=issued.username, password=issued.password)
    wait_until(lambda: connection_result(login) == "Success", timeout=CUT_OFF_SECONDS)
    device = connect(login)
    with db.session_scope() as session:
        devices.delete_device(session=session, device_id=device_id)
    assert device.disconnected.wait(CUT_OFF_SECONDS), "a deleted device stayed connected"
    assert connection_result(login) == "Not authorized"


def test_a_rotated_ca_signs_new_certificates_and_a_retired_one_is_refused(
    mosquitto: IotdeckBroker,
) -> None:
    old_device, new_device = _device("old"), _device("new")
    old_login = mosquitto.device_address(old_device, tls=True)
    with db.session_scope() as session:
        new_ca = credentials.create_authority(session)  # `iotdeck ca rotate`
    new_login = mosquitto.device_address(new_device, tls=True)
    assert new_login.certificate is not None
    issuer = x509.load_pem_x509_certificate(new_login.certificate[0].encode()).issuer
    assert issuer == new_ca.certificate.subject
    # both CAs are trusted until the old one is retired
    assert connection_result(old_login) == "Success"
    assert connection_result(new_login) == "Success"
    with db.session_scope() as session:
        credentials.retire_authorities(session, keep=new_ca.id)  # `iotdeck ca retire`
    wait_until(lambda: _refused(connection_result(old_login, timeout=3)), timeout=CUT_OFF_SECONDS)
    assert connection_result(new_login) == "Success"


def test_a_device_naming_ingests_client_id_takes_over_nothing(
    engine: Engine, mosquitto: IotdeckBroker, connect: Callable[[BrokerAddress], Device]
) -> None:
    a, b = _device("a"), _device("b")
    configured = "iotdeck-ingest-host"  # IOTDECK_INGEST_CLIENT_ID: a guessable name
    worker = IngestWorker(
        mosquitto.service_address(),
        client_id=logins.session_client_id(configured),
        batch_ms=20,
    )
    worker.start()
    try:
        assert worker.wait_connected(10)
        thief = Device(mosquitto.device_address(a), client_id=configured)
        sender = connect(mosquitto.device_address(b))
        for index in range(20):
            payload = f'{{"n": {index}, "ts": {_recent_ms() + index}}}'.encode()
            assert str(sender.publish(f"devices/{b}/telemetry", payload)) == "Success"
        wait_until(lambda: _stored(engine, b) == 20)
        assert worker.connected
        thief.close()
    finally:
        worker.stop()
