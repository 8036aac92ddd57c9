"""Devices publishing a steady stream to iotdeck processes, and what checks none of it was
lost: shared by the tests that stop processes or services mid-stream (graceful shutdown,
outages)."""

import contextlib
import json
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime, timedelta

import orjson
import paho.mqtt.client as mqtt
from sqlalchemy import Engine
from sqlmodel import Session, select
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from app.core import db
from app.core.models import DeviceCreate, TelemetryPoint
from app.mqtt.connection import BrokerAddress
from app.services import devices
from bench.services import free_port, iotdeck_environment
from tests.firmware import connected
from tests.waiting import wait_until

SHUTDOWN_TIMEOUT = 10  # IOTDECK_SHUTDOWN_TIMEOUT of every process started with process_env
RATE = 40.0  # messages per second per device
START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
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


def make_devices(count: int) -> list[uuid.UUID]:
    """`count` devices in the process-wide database, for a Publisher to stream as."""
    with db.session_scope() as session:
        made = [
            devices.create_device(session=session, data=DeviceCreate(name=f"d{i}", type="t"))
            for i in range(count)
        ]
        return [device.id for device in made]


def connect_devices(
    logins_by_device: dict[uuid.UUID, BrokerAddress],
) -> dict[uuid.UUID, mqtt.Client]:
    """A connected MQTT client per device, each with its own login: a Publisher's clients."""
    return {
        device_id: connected(address, f"device-{device_id}")
        for device_id, address in logins_by_device.items()
    }


def stored_points(engine: Engine) -> set[Point]:
    """The Publisher's points stored in the database so far."""
    with Session(engine) as session:
        query = select(TelemetryPoint.device_id, TelemetryPoint.value).where(
            TelemetryPoint.metric_name == "seq"
        )
        return {(device_id, int(value)) for device_id, value in session.exec(query)}


def everything_stored(engine: Engine, publisher: Publisher) -> None:
    """Every acknowledged point is stored; nothing stored that was never sent."""
    with contextlib.suppress(AssertionError):  # the assertions below say what is missing
        wait_until(lambda: publisher.confirmed <= stored_points(engine), timeout=60)
    stored = stored_points(engine)
    assert sorted(publisher.confirmed - stored) == [], "acknowledged by the broker, not stored"
    assert stored - publisher.attempted == set()
    assert publisher.confirmed, "nothing was published"


def process_env(database_url: str, mqtt_url: str, **settings: str) -> dict[str, str]:
    """The environment of an iotdeck process taking a Publisher's stream: the rate limit far
    above it, batches slow enough that a stop finds some taken, not yet committed."""
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
