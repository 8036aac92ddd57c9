"""SIGTERM mid-stream, for each process kind (SPEC 11): it exits 0 within
IOTDECK_SHUTDOWN_TIMEOUT, its WebSockets close with 1001, and with a replacement process
every point a device published is stored, none lost."""

import contextlib
import json
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from sqlmodel import Session, select
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from app import db, migrate
from app.auth import create_token
from app.models import DeviceCreate, Role, TelemetryPoint, UserCreate
from app.mqtt import logins
from app.mqtt.connection import BrokerAddress
from app.services import devices, users
from bench.services import (
    IotdeckBroker,
    Mosquitto,
    free_port,
    iotdeck_environment,
    wait_accepted,
)
from tests.firmware import connected
from tests.postgres_server import PostgresServer
from tests.serving import IOTDECK, answers, running
from tests.waiting import wait_until

SHUTDOWN_TIMEOUT = 10  # IOTDECK_SHUTDOWN_TIMEOUT of every process here
DEVICES = 3
RATE = 40.0  # messages per second per device
START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
SECRET = "graceful-shutdown-" + "s" * 40
ON_POSTGRES = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
Point = tuple[uuid.UUID, int]  # a device and the sequence number it sent


class Publisher:
    """Devices publishing QoS 1 telemetry at a steady rate, each message the next `seq`.

    `confirmed` holds what the broker acknowledged (accepted, so it must be stored);
    `attempted` everything sent, acknowledged or not.
    """

    def __init__(self, clients: dict[uuid.UUID, mqtt.Client]) -> None:
        self.clients = clients
        self.attempted: set[Point] = set()
        self.confirmed: set[Point] = set()
        self._pending: deque[tuple[Point, mqtt.MQTTMessageInfo]] = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._publish, daemon=True)

    def start(self) -> None:
        """Start publishing (once ingest subscribed: before, nobody would receive it)."""
        self._thread.start()

    def _publish(self) -> None:
        seq, next_at = 0, time.monotonic()
        while not self._stop.is_set():
            for device_id, client in self.clients.items():
                payload = {
                    "timestamp": (START + timedelta(milliseconds=seq)).isoformat(),
                    "metrics": [{"name": "seq", "value": seq}],
                }
                topic = f"devices/{device_id}/telemetry"
                info = client.publish(topic, orjson.dumps(payload), qos=1)
                self.attempted.add((device_id, seq))
                if info.rc == mqtt.MQTT_ERR_SUCCESS:  # else not even queued: the broker is away
                    self._pending.append(((device_id, seq), info))
            seq += 1
            while self._pending and self._pending[0][1].is_published():
                self.confirmed.add(self._pending.popleft()[0])
            next_at += 1 / RATE
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        """Stop publishing; wait for the acknowledgements still due (the broker is up)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(10)
        deadline = time.monotonic() + 30
        for point, info in self._pending:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            if info.is_published():
                self.confirmed.add(point)
        for client in self.clients.values():
            client.disconnect()
            client.loop_stop()


def _make_devices(count: int) -> list[uuid.UUID]:
    with db.session_scope() as session:
        made = [
            devices.create_device(session=session, data=DeviceCreate(name=f"d{i}", type="t"))
            for i in range(count)
        ]
        return [device.id for device in made]


def _device_clients(
    logins_by_device: dict[uuid.UUID, BrokerAddress],
) -> dict[uuid.UUID, mqtt.Client]:
    return {
        device_id: connected(address, f"device-{device_id}")
        for device_id, address in logins_by_device.items()
    }


def _stored(engine: Engine) -> set[Point]:
    with Session(engine) as session:
        query = select(TelemetryPoint.device_id, TelemetryPoint.value).where(
            TelemetryPoint.metric_name == "seq"
        )
        return {(device_id, int(value)) for device_id, value in session.exec(query)}


def _everything_stored(engine: Engine, publisher: Publisher) -> None:
    """Every acknowledged point is stored; nothing stored that was never sent."""
    with contextlib.suppress(AssertionError):  # the assertions below say what is missing
        wait_until(lambda: publisher.confirmed <= _stored(engine), timeout=60)
    stored = _stored(engine)
    assert sorted(publisher.confirmed - stored) == [], "acknowledged by the broker, not stored"
    assert stored - publisher.attempted == set()
    assert publisher.confirmed, "nothing was published"


def _received(metrics_url: str) -> int:
    """How many telemetry messages the process's ingest took from the broker (/metrics)."""
    for family in text_string_to_metric_families(httpx.get(metrics_url, timeout=5).text):
        for sample in family.samples:
            if sample.name == "mqtt_messages_received_total" and sample.labels == {
                "kind": "telemetry"
            }:
                return int(sample.value)
    return 0


def _sigterm(process: subprocess.Popen) -> tuple[int, float]:
    """SIGTERM, then the exit code and the seconds it took to exit."""
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = process.wait(SHUTDOWN_TIMEOUT + 30)
    return code, time.monotonic() - sent


def _logged(log: Path, text: str) -> Callable[[], bool]:
    return lambda: text in log.read_text()


def _env(database_url: str, mqtt_url: str, **settings: str) -> dict[str, str]:
    return iotdeck_environment(
        IOTDECK_DATABASE_URL=database_url,
        IOTDECK_MQTT_URL=mqtt_url,
        IOTDECK_SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT),
        IOTDECK_INGEST_CLIENT_ID=f"ingest-{uuid.uuid4().hex[:8]}",  # the replacement's too
        # a batch collects for half a second: SIGTERM finds messages taken, not yet committed
        IOTDECK_INGEST_BATCH_MS="500",
        IOTDECK_DEVICE_RATE_LIMIT="100000/second",  # a steady stream far above 10/s
        IOTDECK_DEVICE_RATE_BURST="100000",
        IOTDECK_METRICS_PORT=str(free_port()),  # `iotdeck ingest`'s /metrics
        **settings,
    )


def _assert_stopped_in_time(process: subprocess.Popen, log: Path, name: str, code: int) -> None:
    exit_code, took = _sigterm(process)
    assert exit_code == code, log.read_text()
    assert took < SHUTDOWN_TIMEOUT, f"{name} took {took:.1f} s to exit"
    text = log.read_text()
    assert f"{name} shutting down on SIGTERM" in text
    assert re.search(rf"{name} stopped in \d+\.\d s", text), text


@ON_POSTGRES
def test_ingest_finishes_its_batches_and_a_replacement_gets_the_rest(
    engine: Engine, database_url: str, mosquitto: IotdeckBroker, tmp_path: Path
) -> None:
    env = _env(database_url, mosquitto.url)
    ids = _make_devices(DEVICES)
    publisher = Publisher(_device_clients(mosquitto.device_addresses(ids)))
    try:
        log = tmp_path / "ingest-1.log"
        with running([IOTDECK, "ingest"], env, log, _logged(log, "ingest subscribed")) as first:
            publisher.start()
            wait_until(lambda: len(_stored(engine)) >= 200, timeout=30)
            _assert_stopped_in_time(first, log, "ingest", 0)
        kept, sent_before = len(_stored(engine)), len(publisher.attempted)
        log = tmp_path / "ingest-2.log"
        with running([IOTDECK, "ingest"], env, log, _logged(log, "ingest subscribed")) as second:
            # what came while no ingest ran waited in the broker for this session
            wait_until(lambda: len(publisher.attempted) > sent_before + 100, timeout=30)
            publisher.stop()
            _everything_stored(engine, publisher)
            # what the first stored it had acknowledged too: none of it came again
            metrics_url = f"http://127.0.0.1:{env['IOTDECK_METRICS_PORT']}/metrics"
            assert _received(metrics_url) == len(publisher.confirmed) - kept
            _assert_stopped_in_time(second, log, "ingest", 0)
    finally:
        publisher.stop()


class GraphQLSubscriber:
    """A graphql-transport-ws client on one device's points; the close code it received."""

    def __init__(self, url: str, token: str, device_id: uuid.UUID) -> None:
        self.points = 0
        self.close_code: int | None = None
        self._socket = connect(f"{url}/graphql", subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
        self._socket.send(json.dumps(init))
        assert json.loads(self._socket.recv(10))["type"] == "connection_ack"
        query = "subscription($id: ID!) { telemetryReceived(deviceId: $id) { value } }"
        payload = {"query": query, "variables": {"id": str(device_id)}}
        self._socket.send(json.dumps({"type": "subscribe", "id": "points", "payload": payload}))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for raw in self._socket:
                self.points += json.loads(raw)["type"] == "next"
        except ConnectionClosed:
            pass
        self.close_code = self._socket.close_code


class NiceGuiTab:
    """What a browser tab's socket.io client does over its WebSocket (engine.io 4): the
    close code it received."""

    def __init__(self, url: str) -> None:
        page = httpx.get(f"{url}/login", follow_redirects=True, timeout=10).text
        client_id = re.search(r"'client_id': '([^']+)'", page)
        assert client_id, "no NiceGUI client id on the login page"
        query = (
            f"client_id={client_id[1]}&next_message_id=0&implicit_handshake=true"
            "&document_id=doc&tab_id=tab&old_tab_id=&EIO=4&transport=websocket"
        )
        self._socket: ClientConnection = connect(f"{url}/_nicegui_ws/socket.io/?{query}")
        assert str(self._socket.recv(10)).startswith("0{")  # engine.io open
        self._socket.send("40")  # socket.io connect
        self.connected = threading.Event()
        self.close_code: int | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for message in self._socket:
                if message == "2":  # engine.io ping
                    self._socket.send("3")
                elif str(message).startswith("40"):
                    self.connected.set()
        except ConnectionClosed:
            pass
        self.close_code = self._socket.close_code


@ON_POSTGRES
def test_serve_closes_websockets_with_1001_and_finishes_what_ingest_took(
    engine: Engine, database_url: str, mosquitto: IotdeckBroker, tmp_path: Path
) -> None:
    port = free_port()
    env = _env(
        database_url,
        mosquitto.url,
        IOTDECK_JWT_SECRET=SECRET,
        IOTDECK_DATA_DIR=str(tmp_path / "data"),
        IOTDECK_PORT=str(port),
    )
    url = f"http://127.0.0.1:{port}"
    serve, ready = [IOTDECK, "serve"], lambda: answers(f"{url}/health/ready")
    ids = _make_devices(DEVICES)
    with db.session_scope() as session:
        data = UserCreate(email="admin@example.com", password="x" * 12, role=Role.ADMIN)
        admin = users.create_user(session=session, data=data)
        token = create_token(admin, secret=SECRET, expire_hours=1)
    publisher = Publisher(_device_clients(mosquitto.device_addresses(ids)))
    try:
        log = tmp_path / "serve-1.log"
        with running(serve, env, log, ready) as first:  # ready: ingest subscribed
            publisher.start()
            subscriber = GraphQLSubscriber(url.replace("http", "ws"), token, ids[0])
            tab = NiceGuiTab(url.replace("http", "ws"))
            assert tab.connected.wait(10), "NiceGUI did not accept the socket.io connection"
            wait_until(lambda: subscriber.points >= 5 and len(_stored(engine)) >= 200, timeout=30)
            _assert_stopped_in_time(first, log, "serve", 0)
            assert "closed 2 WebSocket(s) with 1001 Going Away" in log.read_text()
            wait_until(lambda: subscriber.close_code is not None and tab.close_code is not None)
            assert subscriber.close_code == 1001
            assert tab.close_code == 1001
        kept, sent_before = len(_stored(engine)), len(publisher.attempted)
        log = tmp_path / "serve-2.log"
        with running(serve, env, log, ready) as second:
            wait_until(lambda: len(publisher.attempted) > sent_before + 100, timeout=30)
            publisher.stop()
            _everything_stored(engine, publisher)
            # what the first stored it had acknowledged too: none of it came again
            assert _received(f"{url}/metrics") == len(publisher.confirmed) - kept
            _assert_stopped_in_time(second, log, "serve", 0)
    finally:
        publisher.stop()


@ON_POSTGRES
def test_mqtt_broker_saves_what_it_queued_and_exits_0(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    broker_port = free_port()
    env = _env(
        database_url,
        f"mqtt://127.0.0.1:{broker_port}",
        IOTDECK_DATA_DIR=str(tmp_path / "data"),
        IOTDECK_BROKER_PORT=str(broker_port),
        IOTDECK_BROKER_TLS_PORT="0",
        IOTDECK_BROKER_SYNC_SECONDS="1",
    )

    def broker(log: Path) -> AbstractContextManager[subprocess.Popen]:
        return running([IOTDECK, "mqtt-broker"], env, log, lambda: _accepting(broker_port))

    ids = _make_devices(DEVICES)
    log = tmp_path / "broker-1.log"
    with broker(log) as first:
        device_logins = logins.device_addresses(BrokerAddress("127.0.0.1", broker_port), ids)
        wait_accepted(device_logins[ids[-1]])
        publisher = Publisher(_device_clients(device_logins))
        try:
            ingest_log = tmp_path / "ingest-1.log"
            ingest = [IOTDECK, "ingest"]
            with running(ingest, env, ingest_log, _logged(ingest_log, "ingest subscribed")) as one:
                publisher.start()
                wait_until(lambda: len(publisher.confirmed) >= 200, timeout=30)
                _assert_stopped_in_time(one, ingest_log, "ingest", 0)
            # the stream goes on into the broker's queue for ingest's session, until SIGTERM
            queued = len(publisher.confirmed)
            wait_until(lambda: len(publisher.confirmed) >= queued + 100, timeout=30)
            _assert_stopped_in_time(first, log, "mqtt-broker", 0)
            assert not _accepting(broker_port), "Mosquitto outlived iotdeck mqtt-broker"
            log = tmp_path / "broker-2.log"
            with broker(log), running(ingest, env, tmp_path / "ingest-2.log"):
                publisher.stop()  # its clients reconnected meanwhile, their backlog sent
                _everything_stored(engine, publisher)
        finally:
            publisher.stop()


def _accepting(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def test_ingest_with_the_database_down_leaves_its_batch_to_the_broker_and_exits_1(
    open_mosquitto: Mosquitto, tmp_path: Path
) -> None:
    server = PostgresServer().init()
    try:
        url = server.url()
        engine = db.init_engine(url)
        migrate.upgrade(engine)
        env = _env(url, open_mosquitto.url)
        ids = _make_devices(DEVICES)
        address = BrokerAddress("127.0.0.1", open_mosquitto.port)
        publisher = Publisher(_device_clients(dict.fromkeys(ids, address)))
        try:
            log = tmp_path / "ingest-1.log"
            with running([IOTDECK, "ingest"], env, log, _logged(log, "ingest subscribed")) as first:
                publisher.start()
                wait_until(lambda: len(_stored(engine)) >= 200, timeout=30)
                engine.dispose()
                server.stop("fast")
                # what arrives now is taken but cannot be committed
                sent = len(publisher.attempted)
                wait_until(lambda: len(publisher.attempted) >= sent + 100, timeout=30)
                _assert_stopped_in_time(first, log, "ingest", 1)
                assert "left unacknowledged in the broker" in log.read_text()
            server.start()
            with running([IOTDECK, "ingest"], env, tmp_path / "ingest-2.log"):
                publisher.stop()
                _everything_stored(engine, publisher)
        finally:
            publisher.stop()
            engine.dispose()
    finally:
        server.remove()
