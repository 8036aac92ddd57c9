"""SIGTERM mid-stream, for each process kind (SPEC 11): it exits 0 within
IOTDECK_SHUTDOWN_TIMEOUT, its WebSockets close with 1001, and with a replacement process
every point a device published is stored, none lost."""

import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from app.core import db, migrate
from app.core.auth import create_token
from app.core.models import Role, UserCreate
from app.mqtt import logins
from app.mqtt.connection import BrokerAddress
from app.services import users
from bench.services import IotdeckBroker, Mosquitto, free_port, wait_accepted
from tests.integration.load import (
    SHUTDOWN_TIMEOUT,
    GraphQLSubscriber,
    Publisher,
    connect_devices,
    everything_stored,
    make_devices,
    process_env,
    stored_points,
)
from tests.postgres_server import PostgresServer
from tests.serving import IOTDECK, answers, running
from tests.waiting import wait_until

DEVICES = 3
SECRET = "graceful-shutdown-" + "s" * 40
ON_POSTGRES = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


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
    env = process_env(database_url, mosquitto.url)
    ids = make_devices(DEVICES)
    publisher = Publisher(connect_devices(mosquitto.device_addresses(ids)))
    try:
        log = tmp_path / "ingest-1.log"
        with running([IOTDECK, "ingest"], env, log, _logged(log, "ingest subscribed")) as first:
            publisher.start()
            wait_until(lambda: len(stored_points(engine)) >= 200, timeout=30)
            _assert_stopped_in_time(first, log, "ingest", 0)
        kept, sent_before = len(stored_points(engine)), len(publisher.attempted)
        log = tmp_path / "ingest-2.log"
        with running([IOTDECK, "ingest"], env, log, _logged(log, "ingest subscribed")) as second:
            # what came while no ingest ran waited in the broker for this session
            wait_until(lambda: len(publisher.attempted) > sent_before + 100, timeout=30)
            publisher.stop()
            everything_stored(engine, publisher)
            # what the first stored it had acknowledged too: none of it came again
            metrics_url = f"http://127.0.0.1:{env['IOTDECK_METRICS_PORT']}/metrics"
            assert _received(metrics_url) == len(publisher.confirmed) - kept
            _assert_stopped_in_time(second, log, "ingest", 0)
    finally:
        publisher.stop()


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
    env = process_env(
        database_url,
        mosquitto.url,
        IOTDECK_JWT_SECRET=SECRET,
        IOTDECK_DATA_DIR=str(tmp_path / "data"),
        IOTDECK_PORT=str(port),
    )
    url = f"http://127.0.0.1:{port}"
    serve, ready = [IOTDECK, "serve"], lambda: answers(f"{url}/health/ready")
    ids = make_devices(DEVICES)
    with db.session_scope() as session:
        data = UserCreate(email="admin@example.com", password="x" * 12, role=Role.ADMIN)
        admin = users.create_user(session=session, data=data)
        token = create_token(admin, secret=SECRET, expire_hours=1)
    publisher = Publisher(connect_devices(mosquitto.device_addresses(ids)))
    try:
        log = tmp_path / "serve-1.log"
        with running(serve, env, log, ready) as first:  # ready: ingest subscribed
            publisher.start()
            subscriber = GraphQLSubscriber(url.replace("http", "ws"), token, ids[0])
            tab = NiceGuiTab(url.replace("http", "ws"))
            assert tab.connected.wait(10), "NiceGUI did not accept the socket.io connection"
            wait_until(
                lambda: subscriber.points >= 5 and len(stored_points(engine)) >= 200, timeout=30
            )
            _assert_stopped_in_time(first, log, "serve", 0)
            assert "closed 2 WebSocket(s) with 1001 Going Away" in log.read_text()
            wait_until(lambda: subscriber.close_code is not None and tab.close_code is not None)
            assert subscriber.close_code == 1001
            assert tab.close_code == 1001
        kept, sent_before = len(stored_points(engine)), len(publisher.attempted)
        log = tmp_path / "serve-2.log"
        with running(serve, env, log, ready) as second:
            wait_until(lambda: len(publisher.attempted) > sent_before + 100, timeout=30)
            publisher.stop()
            everything_stored(engine, publisher)
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
    env = process_env(
        database_url,
        f"mqtt://127.0.0.1:{broker_port}",
        IOTDECK_DATA_DIR=str(tmp_path / "data"),
        IOTDECK_BROKER_PORT=str(broker_port),
        IOTDECK_BROKER_TLS_PORT="0",
        IOTDECK_BROKER_SYNC_SECONDS="1",
    )

    def broker(log: Path) -> AbstractContextManager[subprocess.Popen]:
        return running([IOTDECK, "mqtt-broker"], env, log, lambda: _accepting(broker_port))

    ids = make_devices(DEVICES)
    log = tmp_path / "broker-1.log"
    with broker(log) as first:
        device_logins = logins.device_addresses(BrokerAddress("127.0.0.1", broker_port), ids)
        wait_accepted(device_logins[ids[-1]])
        publisher = Publisher(connect_devices(device_logins))
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
                everything_stored(engine, publisher)
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
        env = process_env(url, open_mosquitto.url)
        ids = make_devices(DEVICES)
        address = BrokerAddress("127.0.0.1", open_mosquitto.port)
        publisher = Publisher(connect_devices(dict.fromkeys(ids, address)))
        try:
            log = tmp_path / "ingest-1.log"
            with running([IOTDECK, "ingest"], env, log, _logged(log, "ingest subscribed")) as first:
                publisher.start()
                wait_until(lambda: len(stored_points(engine)) >= 200, timeout=30)
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
                everything_stored(engine, publisher)
        finally:
            publisher.stop()
            engine.dispose()
    finally:
        server.remove()
