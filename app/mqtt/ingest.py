"""The ingest worker: MQTT telemetry and status -> storage, acknowledged only after commit.

Threads: paho's network thread only queues what arrives; one writer thread parses,
validates, writes a batch in one transaction, commits, then sends the PUBACKs in
arrival order. A message is therefore acknowledged only once its rows are durable; if
the process dies first, the broker redelivers it (persistent session) and the primary
key (device_id, metric_name, time) turns the second copy into a no-op. While the
database is down the batch is retried with backoff and nothing new is acknowledged, so
the backlog waits in the broker.
"""

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from app import db, metrics
from app.models import Device, DeviceStatus
from app.mqtt import connection
from app.mqtt.bulk_client import BulkClient
from app.mqtt.connection import BrokerAddress
from app.mqtt.payloads import Rejected, device_id_from_topic, parse_status, parse_telemetry
from app.services import devices, telemetry
from app.services.telemetry import Point

logger = logging.getLogger(__name__)

TOPICS = ("devices/+/telemetry", "devices/+/status")
_UNKNOWN_DEVICE_TTL = 10.0  # seconds before an unknown id is looked up again
# labelled children resolved once: labels() costs microseconds per call on the hot path
_RECEIVED = {kind: metrics.MESSAGES_RECEIVED.labels(kind) for kind in ("telemetry", "status")}


@dataclass(frozen=True)
class Received:
    """One MQTT message as the network thread hands it over."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    arrival: datetime


@dataclass
class BatchResult:
    """What one committed batch changed; handed to listeners (bus, rule engine)."""

    points: list[Point] = field(default_factory=list)
    status_changes: dict[uuid.UUID, DeviceStatus] = field(default_factory=dict)
    rejected: int = 0


class _KnownDevices:
    """Which device ids exist, asked of the database once per id (misses expire)."""

    def __init__(self) -> None:
        self._known: set[uuid.UUID] = set()
        self._unknown_until: dict[uuid.UUID, float] = {}

    def filter_known(self, session: Session, ids: set[uuid.UUID]) -> set[uuid.UUID]:
        now = time.monotonic()
        ask = {i for i in ids - self._known if self._unknown_until.get(i, 0.0) <= now}
        if ask:
            found = set(session.exec(select(Device.id).where(col(Device.id).in_(ask))))
            self._known |= found
            for missing in ask - found:
                self._unknown_until[missing] = now + _UNKNOWN_DEVICE_TTL
        return ids & self._known

    def forget(self, ids: set[uuid.UUID]) -> None:
        self._known -= ids


def _reject(message: Received, reason: str, detail: str) -> None:
    metrics.TELEMETRY_REJECTED.labels(reason).inc()
    logger.warning("rejected message on %s: %s: %s", message.topic, reason, detail)


class IngestWorker:
    """Consumes device telemetry and status from the broker into storage."""

    def __init__(
        self,
        address: BrokerAddress,
        *,
        client_id: str,
        shared_group: str = "",
        batch_messages: int = 2000,
        batch_ms: int = 200,
    ) -> None:
        self.address = address
        self._shared_group = shared_group
        self._batch_messages = batch_messages
        self._batch_seconds = batch_ms / 1000
        self._inbox: queue.SimpleQueue[Received] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._known = _KnownDevices()
        self._listeners: list[Callable[[BatchResult], None]] = []
        self._writer = threading.Thread(target=self._write_loop, name="ingest-writer", daemon=True)
        self._client = connection.make_client(
            address, client_id, persistent=True, client_class=BulkClient
        )
        self._client.manual_ack_set(True)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    @property
    def connected(self) -> bool:
        """True while connected and subscribed."""
        return self._connected.is_set()

    def add_listener(self, listener: Callable[[BatchResult], None]) -> None:
        """Call `listener` (on the writer thread) after each committed batch."""
        self._listeners.append(listener)

    def start(self) -> None:
        """Connect and start consuming in background threads."""
        self._writer.start()
        connection.connect(self._client, self.address, persistent=True)
        self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        """Block until subscribed on the broker, or `timeout` seconds pass."""
        return self._connected.wait(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Flush, commit and acknowledge what was received, then disconnect."""
        self._stopping.set()
        self._writer.join(timeout)
        self._client.disconnect()
        self._client.loop_stop()

    # network thread -------------------------------------------------------------------

    def _on_connect(
        self,
        client: Client,
        _userdata: object,
        _flags: ConnectFlags,
        reason: ReasonCode,
        _properties: object,
    ) -> None:
        if reason.is_failure:
            logger.error("broker %s refused the connection: %s", self.address.url, reason)
            return
        prefix = f"$share/{self._shared_group}/" if self._shared_group else ""
        client.subscribe([(prefix + topic, 1) for topic in TOPICS])

    def _on_subscribe(
        self,
        client: Client,
        _userdata: object,
        _mid: int,
        reasons: list[ReasonCode],
        _properties: object,
    ) -> None:
        if any(reason.is_failure for reason in reasons):
            logger.error("broker %s refused the subscriptions: %s", self.address.url, reasons)
            return
        self._connected.set()
        logger.info("ingest subscribed on %s as %s", self.address.url, client._client_id.decode())

    def _on_disconnect(
        self,
        _client: Client,
        _userdata: object,
        _flags: DisconnectFlags,
        reason: ReasonCode,
        _properties: object,
    ) -> None:
        self._connected.clear()
        if not self._stopping.is_set():
            logger.warning("ingest lost the broker (%s); reconnecting", reason)

    def _on_message(self, _client: Client, _userdata: object, message: MQTTMessage) -> None:
        if self._stopping.is_set():
            return  # left unacknowledged: the broker redelivers it to the next session
        self._inbox.put(
            Received(message.topic, message.payload, message.mid, message.qos, datetime.now(UTC))
        )

    # writer thread --------------------------------------------------------------------

    def _collect(self) -> list[Received]:
        try:
            first = self._inbox.get(timeout=0.1)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self._batch_seconds
        while len(batch) < self._batch_messages:
            remaining = deadline - time.monotonic()
            try:
                batch.append(
                    self._inbox.get(timeout=remaining)
                    if remaining > 0
                    else self._inbox.get_nowait()
                )
            except queue.Empty:
                break
        return batch

    def _write_loop(self) -> None:
        while True:
            batch = self._collect()
            if batch:
                self._process(batch)
            elif self._stopping.is_set() and self._inbox.empty():
                return

    def _process(self, batch: list[Received]) -> None:
        while True:
            try:
                result = self._commit(batch)
            except SQLAlchemyError as exc:
                metrics.STORAGE_RETRIES.inc()
                logger.warning("storage failed (%s); retrying the batch of %d", exc, len(batch))
            except Exception:
                metrics.STORAGE_RETRIES.inc()
                logger.exception("batch of %d failed; retrying", len(batch))
            else:
                break
            if self._stopping.wait(1.0):
                # shutting down with the database away: leave the batch in the broker
                return
        # PUBACKs in arrival order, as MQTT requires; QoS 0 messages take none
        self._client.ack_many([message.mid for message in batch if message.qos == 1])
        for listener in self._listeners:
            try:
                listener(result)
            except Exception:
                logger.exception("ingest listener failed")

    def _commit(self, batch: list[Received]) -> BatchResult:
        started = time.perf_counter()
        result = BatchResult()
        points: list[Point] = []
        statuses: list[tuple[int, uuid.UUID, DeviceStatus]] = []
        last_telemetry: dict[uuid.UUID, int] = {}
        with Session(db.get_engine(), expire_on_commit=False) as session:
            parsed = self._parse(session, batch, result)
            for index, (device_id, kind, value) in enumerate(parsed):
                if kind == "telemetry":
                    points.extend(value)
                    last_telemetry[device_id] = index
                else:
                    statuses.append((index, device_id, value))
            arrival = batch[-1].arrival
            written = telemetry.write_points(session=session, points=points, seen_at=arrival)
            for device_id in written.came_online:
                result.status_changes[device_id] = DeviceStatus.ONLINE
            for index, device_id, status in statuses:
                if last_telemetry.get(device_id, -1) > index:
                    continue  # telemetry after the status message says it is online
                if devices.set_status(
                    session=session, device_id=device_id, status=status, at=arrival
                ):
                    result.status_changes[device_id] = status
            session.commit()
        if written.dropped_devices:
            self._known.forget(set(written.dropped_devices))
        result.points = [p for p in points if p.device_id not in written.dropped_devices]
        metrics.POINTS_INGESTED.inc(written.stored)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        return result

    def _parse(
        self, session: Session, batch: list[Received], result: BatchResult
    ) -> list[tuple[uuid.UUID, str, object]]:
        """Validated (device, kind, content) per accepted message; rejections counted."""
        candidates = []
        for message in batch:
            kind = message.topic.rsplit("/", 1)[-1]
            _RECEIVED[kind].inc()
            try:
                device_id = device_id_from_topic(message.topic)
                if kind == "telemetry":
                    content: object = parse_telemetry(device_id, message.payload, message.arrival)
                else:
                    content = parse_status(message.payload)
            except Rejected as rejected:
                _reject(message, rejected.reason, rejected.detail)
                result.rejected += 1
                continue
            except Exception:  # a bug must cost one message, never the worker
                logger.exception("could not parse the message on %s", message.topic)
                _reject(message, "internal_error", "see the traceback above")
                result.rejected += 1
                continue
            candidates.append((message, device_id, kind, content))
        known = self._known.filter_known(session, {c[1] for c in candidates})
        accepted = []
        for message, device_id, kind, content in candidates:
            if device_id not in known:
                _reject(message, "unknown_device", f"no device {device_id}")
                result.rejected += 1
            else:
                accepted.append((device_id, kind, content))
        return accepted
