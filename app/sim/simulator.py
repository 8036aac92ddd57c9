"""Simulated devices publishing the signals of `app.sim.signals` over MQTT like real ones.

The `Simulator` drives every paho client from ONE thread (app/mqtt/selector_loop.py: paho's
external-loop API, a selector over all sockets): `loop_start()` costs a thread per client
and stops scaling at a few hundred, while one selector thread serves thousands. Its
schedule (publishes, reconnections, reboots) runs on that thread between two selects.

Connections: a device with its own login (per-device credentials on an identity broker,
SPEC 8.1) has its own connection, since that login may publish only its own topics; it
carries the device's last will. Devices without one (an open broker, or one account in the
URL) each get their own connection too while they are few (up to
`OWN_CONNECTIONS_UP_TO`), so each keeps its last will; a larger fleet shares
`SHARED_CONNECTIONS` connections, its devices still on their own topics. A shared
connection carries no last will (MQTT has one per connection): when the simulator is
killed, its devices go OFFLINE through ingest's silence job instead. 10,000 devices with
their own logins need 10,000 sockets (`ulimit -n` above that).

Each device also subscribes to its `devices/{id}/commands` and `devices/{id}/config` and
answers on `devices/{id}/commands/ack` like a real firmware would (`app.sim.firmware`,
docs/commands.md); the messages arrive on the same thread, inside `loop_read`.
"""

import heapq
import itertools
import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from paho.mqtt.client import Client, MQTTErrorCode, MQTTMessage, MQTTMessageInfo
from paho.mqtt.reasoncodes import ReasonCode

from app.core import db
from app.core.models import Device, DeviceCreate
from app.mqtt import connection, topics
from app.mqtt.connection import BrokerAddress
from app.mqtt.link import connection_answer
from app.mqtt.selector_loop import SelectorLoop
from app.services import devices as device_service
from app.services import telemetry
from app.services.devices import DeviceFilter
from app.services.seed import command_types
from app.sim.firmware import MalformedCommand, SimulatedFirmware
from app.sim.signals import DEFAULT_TYPES, Signals, make_signals, telemetry_payload

logger = logging.getLogger(__name__)

JITTER = 0.1  # each interval is 1/rate +-10%, so devices drift apart instead of publishing in step
RECONNECT_MIN, RECONNECT_MAX = 1.0, 30.0
CONNECT_TIMEOUT = 3.0  # a connect blocks the loop thread: bound the stall a dead host causes
MAX_QUEUED_PER_DEVICE = 1000  # a stalled broker costs bounded memory, like a real device
MAX_DUE_PER_TURN = 1000  # publishes per turn before reading sockets again, so PUBACKs flow
OWN_CONNECTIONS_UP_TO = 100  # devices without logins of their own: one connection each
SHARED_CONNECTIONS = 4  # above that, connections they share
TOPICS_PER_SUBSCRIBE = 200  # a shared connection subscribes its devices in packets this big
PROBE_TIMEOUT = 5.0
REBOOT_SECONDS = 2.0  # how long a `reboot` command keeps a device silent


class DeviceSpec(NamedTuple):
    """A device to simulate: its id and type."""

    id: uuid.UUID
    type: str


def _all_devices(where: DeviceFilter) -> list[Device]:
    with db.session_scope() as session:
        total = max(1, device_service.count_devices(session=session, where=where))
        return device_service.list_devices(
            session=session, where=where, limit=total, max_limit=total
        )


def demo_devices() -> list[DeviceSpec]:
    """Every device in the database (the seeded demo ones in `serve --demo`)."""
    return [DeviceSpec(d.id, d.type) for d in _all_devices(DeviceFilter())]


def backfill(
    specs: Sequence[DeviceSpec], *, hours: float = 24, step: float = 300
) -> dict[uuid.UUID, Signals]:
    """Store `hours` of past readings, one every `step` s, for devices that have none yet.

    A first-time demo then opens on charts with a day of history instead of a few dots.
    Returns the signals that wrote it, for the `Simulator` to carry on from.
    """
    now = datetime.now(UTC)
    count = int(hours * 3600 / step)
    used: dict[uuid.UUID, Signals] = {}
    with db.session_scope() as session:
        for spec in specs:
            if telemetry.metric_names(session=session, device_id=spec.id):
                continue
            signals = make_signals(spec.type, str(spec.id))
            points = [
                telemetry.Point(spec.id, reading.name, at, reading.value, reading.unit)
                for index in range(count, 0, -1)
                for at in [now - timedelta(seconds=index * step)]
                for reading in signals.sample(at)
            ]
            # history, not presence: the device is online once the simulator connects it
            telemetry.write_points(session=session, points=points, seen_at=None)
            used[spec.id] = signals
    return used


def ensure_devices(count: int, types: Sequence[str] = DEFAULT_TYPES) -> list[DeviceSpec]:
    """`count` devices named `Simulated <type> <n>`, types taken in turn; missing ones created."""
    if count < 0:
        raise ValueError("count must not be negative")
    kinds = list(dict.fromkeys(types)) or list(DEFAULT_TYPES)
    # numbered per type, so asking for more devices later keeps the first ones
    wanted = [(kinds[i % len(kinds)], i // len(kinds) + 1) for i in range(count)]
    existing: dict[str, Device] = {}
    for kind in kinds:
        for device in _all_devices(DeviceFilter(type=kind, search="Simulated ")):
            existing.setdefault(device.name, device)  # by (name, id): stable if names repeat
    specs = []
    with db.session_scope() as session:
        for kind, number in wanted:
            name = f"Simulated {kind} {number}"
            device = existing.get(name) or device_service.create_device(
                session=session,
                data=DeviceCreate(name=name, type=kind, metadata={"simulated": True}),
            )
            specs.append(DeviceSpec(device.id, device.type))
    return specs


def actions_for(device_type: str) -> list[str]:
    """The commands a device of this type executes (`command_types` in seeds/demo.json).

    Unknown types behave like thermostats, as their signals do.
    """
    catalog = command_types()
    return [entry["action"] for entry in catalog.get(device_type, catalog.get("thermostat", []))]


class SimulatedDevice:
    """One simulated device: its signals, publishing interval, connection state, firmware.

    Everything here is read and changed on the simulator's thread only; commands arrive
    there too (paho's on_message runs inside `loop_read`).
    """

    def __init__(
        self,
        spec: DeviceSpec,
        interval: float,
        signals: Signals | None = None,
        actions: Iterable[str] = (),
    ) -> None:
        self.id = str(spec.id)
        self.type = spec.type
        self.interval = interval
        # seeded by the id: a device keeps its character (base temperature...) across runs
        self.signals = signals or make_signals(spec.type, self.id)
        self.status_topic = topics.device_topic(self.id, topics.STATUS)  # also the last will
        self.telemetry_topic = topics.device_topic(self.id, topics.TELEMETRY)
        self.commands_topic = topics.command_topic(self.id)
        self.answers_topic = topics.device_topic(self.id, topics.ANSWERS)
        self.config_topic = topics.config_topic(self.id)
        self.firmware = SimulatedFirmware(self, list(actions))
        self.rebooting: list[str] = []  # ids of the reboot commands under way: silent meanwhile
        self.link: Link  # set by the Simulator, which owns the connections
        self.published = 0

    @property
    def connected(self) -> bool:
        """Whether the device's connection is up."""
        return self.link.connected

    def set_interval(self, seconds: float) -> None:
        """Publish every `seconds`, from the message after the one already scheduled."""
        if not (math.isfinite(seconds) and seconds > 0):
            raise ValueError("interval must be a positive number of seconds")
        self.interval = seconds

    def next_message(self, at: datetime) -> bytes:
        """The telemetry payload for time `at`."""
        return telemetry_payload(self.id, at, self.signals.sample(at))


class Link:
    """One MQTT connection and the devices publishing over it; touched on the loop thread."""

    def __init__(self, name: str, address: BrokerAddress, devices: list[SimulatedDevice]) -> None:
        self.name = name  # "device <id>", or a shared connection's client id (log lines)
        self.address = address
        self.devices = devices
        self.client: Client  # set by the Simulator
        self.connected = False
        self.retry_delay = RECONNECT_MIN
        self.reconnect_pending = False


def needs_device_logins(address: BrokerAddress) -> bool:
    """Whether devices must log in as themselves: no account in the URL, anonymous refused.

    On an open broker (anonymous clients accepted) a large fleet can share a few
    connections; on an identity broker each device needs its own login and connection.
    """
    if address.username is not None:
        return False
    return connection_answer(address, PROBE_TIMEOUT) != "Success"


_CONNECT, _PUBLISH, _BOOTED = "connect", "publish", "booted"


class Simulator:
    """Simulated devices publishing telemetry to a broker, all from one background thread.

    `answer_commands=False` makes devices with an old firmware: they neither subscribe to
    commands nor configuration, so their commands expire while they stay ONLINE.
    """

    def __init__(
        self,
        address: BrokerAddress,
        devices: Iterable[tuple[uuid.UUID | str, str]],
        *,
        rate: float,
        seed: int | None = None,
        signals: Mapping[uuid.UUID, Signals] | None = None,
        answer_commands: bool = True,
        reboot_seconds: float = REBOOT_SECONDS,
        logins: Mapping[uuid.UUID, BrokerAddress] | None = None,
    ) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError("rate must be a positive number of messages per second")
        self.address = address
        self.rate = rate
        self.answer_commands = answer_commands
        self.reboot_seconds = reboot_seconds
        given = signals or {}
        specs = [DeviceSpec(uuid.UUID(str(i)), t) for i, t in devices]
        actions = {kind: actions_for(kind) for kind in {spec.type for spec in specs}}
        # signals that produced a device's history carry on from it (battery level...)
        self.devices = [
            SimulatedDevice(spec, 1 / rate, given.get(spec.id), actions[spec.type])
            for spec in specs
        ]
        # each device's own login (logins.device_addresses); `address` for the others
        self.links = _links(self.devices, address, logins or {})
        self._loop = SelectorLoop("simulator", self._turn, self._shut_down)
        for link in self.links:
            link.client = self._make_client(link)
            self._loop.add(link.client)
        self._by_topic = {
            topic: device
            for device in self.devices
            for topic in (device.commands_topic, device.config_topic)
        }
        self._rng = random.Random(seed)  # phases and jitter only; signals have their own
        self._schedule: list[tuple[float, int, str, SimulatedDevice | Link]] = []
        self._order = itertools.count()  # tie-breaker: the heap never compares devices
        self._ever_connected: set[str] = set()
        self._all_connected = threading.Event()
        self._stop_timeout = 10.0

    @property
    def published(self) -> int:
        """Telemetry messages handed to the clients so far."""
        return sum(device.published for device in self.devices)

    def start(self) -> None:
        """Connect every device and start publishing in the background."""
        if not self.devices:
            self._all_connected.set()
        now = time.monotonic()
        for link in self.links:
            self._push(now, _CONNECT, link)
        for device in self.devices:
            self._push(now + self._rng.uniform(0, device.interval), _PUBLISH, device)
        self._loop.start()
        logger.info(
            "simulating %d devices over %d connections on %s",
            len(self.devices),
            len(self.links),
            self.address.url,
        )

    def wait_connected(self, timeout: float) -> bool:
        """Block until every device has connected once, or `timeout` seconds pass."""
        return self._all_connected.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Publish `offline` for each connected device, then disconnect all cleanly."""
        self._stop_timeout = timeout
        self._loop.stop(timeout + 5)

    # set-up (before the loop runs) -----------------------------------------------------

    def _make_client(self, link: Link) -> Client:
        address = link.address
        client_id = f"sim-{link.devices[0].id}" if len(link.devices) == 1 else link.name
        client = connection.make_client(address, client_id, persistent=False)
        client.user_data_set(link)
        if len(link.devices) == 1:
            # the broker publishes this when the device vanishes without a DISCONNECT
            client.will_set(link.devices[0].status_topic, b"offline", qos=1, retain=False)
        client.max_queued_messages_set(MAX_QUEUED_PER_DEVICE * len(link.devices))
        client.connect_timeout = CONNECT_TIMEOUT
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        connection.connect(client, address, persistent=False)  # records where; no I/O
        return client

    # the loop thread ------------------------------------------------------------------

    def _push(self, when: float, action: str, target: SimulatedDevice | Link) -> None:
        heapq.heappush(self._schedule, (when, next(self._order), action, target))

    def _turn(self, now: float) -> float:
        """The due work; the seconds until more is due."""
        self._run_due(now)
        return self._schedule[0][0] - now if self._schedule else math.inf

    def _run_due(self, now: float) -> None:
        for _ in range(MAX_DUE_PER_TURN):
            if self._loop.stopping or not self._schedule or self._schedule[0][0] > now:
                return
            due, _, action, target = heapq.heappop(self._schedule)
            if isinstance(target, Link):
                self._connect(target)
            elif action == _BOOTED:
                self._booted(target)
            else:
                self._publish(target, due, now)

    def _publish(self, device: SimulatedDevice, due: float, now: float) -> None:
        if device.connected and not device.rebooting:
            device.link.client.publish(
                device.telemetry_topic, device.next_message(datetime.now(UTC)), qos=1
            )
            device.published += 1
        following = due + device.interval * self._rng.uniform(1 - JITTER, 1 + JITTER)
        if following < now:
            # fell behind (a slow connect, an overloaded machine): skip, don't burst
            following = now + self._rng.uniform(0, device.interval)
        self._push(following, _PUBLISH, device)

    def _connect(self, link: Link) -> None:
        link.reconnect_pending = False
        try:
            link.client.reconnect()  # a blocking TCP connect, then CONNECT is queued
        except OSError as exc:
            self._retry(link, str(exc))

    def _retry(self, link: Link, reason: str) -> None:
        if self._loop.stopping or link.reconnect_pending:
            return
        # log the first failure of an outage loudly, the retries quietly
        level = logging.WARNING if link.retry_delay == RECONNECT_MIN else logging.DEBUG
        logger.log(level, "%s: %s; retrying in %.0f s", link.name, reason, link.retry_delay)
        link.reconnect_pending = True
        self._push(time.monotonic() + link.retry_delay, _CONNECT, link)
        link.retry_delay = min(link.retry_delay * 2, RECONNECT_MAX)

    def _shut_down(self) -> None:
        deadline = time.monotonic() + self._stop_timeout
        # a clean DISCONNECT suppresses the last will, so say offline first
        sent: list[MQTTMessageInfo] = [
            device.link.client.publish(device.status_topic, b"offline", qos=1)
            for device in self.devices
            if device.connected
        ]
        sent = [info for info in sent if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS]
        if not self._loop.drive(lambda: all(info.is_published() for info in sent), deadline):
            logger.warning("simulator: not every offline status was acknowledged in time")
        for link in self.links:
            link.client.disconnect()
        self._loop.drive(self._loop.idle, deadline)  # every DISCONNECT gone out
        self._loop.close()  # out of time: an abrupt close, so the broker says offline for us
        logger.info("simulator stopped after %d messages", self.published)

    # paho callbacks (on the loop thread) ----------------------------------------------

    def _on_connect(
        self, client: Client, link: Link, _f: object, reason: ReasonCode, *_: object
    ) -> None:
        if reason.is_failure:
            logger.error("%s: broker refused the connection: %s", link.name, reason)
            return  # the broker closes the socket; _on_disconnect schedules the retry
        link.connected = True
        link.retry_delay = RECONNECT_MIN
        if self.answer_commands:
            # before `online`: the broker handles them in order, so the subscriptions stand
            # when the platform, told the device is ONLINE, sends its pending commands
            topics = [
                (topic, 1)
                for device in link.devices
                for topic in (device.commands_topic, device.config_topic)
            ]
            for first in range(0, len(topics), TOPICS_PER_SUBSCRIBE):
                client.subscribe(topics[first : first + TOPICS_PER_SUBSCRIBE])
        for device in link.devices:
            if not device.rebooting:  # back from a reboot, _booted says it
                client.publish(device.status_topic, b"online", qos=1, retain=False)
            self._ever_connected.add(device.id)
        if len(self._ever_connected) == len(self.devices):
            self._all_connected.set()

    def _on_message(self, client: Client, _link: Link, message: MQTTMessage) -> None:
        device = self._by_topic.get(message.topic)
        if device is None:
            return  # not one of ours (a shared login may see more than its devices)
        # an exception here would end the loop of every device: log it, drop the message
        try:
            if message.topic == device.commands_topic:
                self._on_command(client, device, message.payload)
            else:
                self._on_config(device, message.payload)
        except Exception:
            logger.exception(
                "device %s: could not handle the message on %s", device.id, message.topic
            )

    def _on_command(self, client: Client, device: SimulatedDevice, payload: bytes) -> None:
        try:
            reply = device.firmware.on_command(payload, datetime.now(UTC))
        except MalformedCommand as exc:
            logger.warning("device %s: ignored a command message: %s", device.id, exc)
            return
        for answer in reply.answers:
            client.publish(device.answers_topic, answer, qos=1)
        logger.info("device %s: answered a command: %s", device.id, reply.answers[-1].decode())
        if reply.reboot is not None:
            self._reboot(client, device, reply.reboot)

    def _reboot(self, client: Client, device: SimulatedDevice, command_id: str) -> None:
        if not device.rebooting:  # a second reboot meanwhile joins the one under way
            client.publish(device.status_topic, b"offline", qos=1, retain=False)
            self._push(time.monotonic() + self.reboot_seconds, _BOOTED, device)
        device.rebooting.append(command_id)

    def _booted(self, device: SimulatedDevice) -> None:
        done, device.rebooting = device.rebooting, []
        client = device.link.client
        if device.connected:  # else _on_connect says online when the connection is back
            client.publish(device.status_topic, b"online", qos=1, retain=False)
        for command_id in done:
            answer = device.firmware.finish(command_id, {"downtime_seconds": self.reboot_seconds})
            client.publish(device.answers_topic, answer, qos=1)
        logger.info("device %s: rebooted", device.id)

    def _on_config(self, device: SimulatedDevice, payload: bytes) -> None:
        applied, problems = device.firmware.on_config(payload)
        if applied:
            logger.info("device %s: configuration applied: %s", device.id, applied)
        for problem in problems:
            logger.warning("device %s: configuration: %s", device.id, problem)

    def _on_disconnect(
        self, _c: Client, link: Link, _f: object, reason: ReasonCode, *_: object
    ) -> None:
        link.connected = False
        self._retry(link, f"disconnected ({reason})")


def _links(
    devices: list[SimulatedDevice],
    address: BrokerAddress,
    logins: Mapping[uuid.UUID, BrokerAddress],
) -> list[Link]:
    """The connections: one per device with its own login, a few for a large fleet without."""
    links: list[Link] = []
    without: list[SimulatedDevice] = []
    for device in devices:
        login = logins.get(uuid.UUID(device.id), address)
        if login != address or len(devices) <= OWN_CONNECTIONS_UP_TO:
            links.append(Link(f"device {device.id}", login, [device]))
        else:
            without.append(device)
    shared = min(SHARED_CONNECTIONS, len(without))
    tag = uuid.uuid4().hex[:8]  # client ids unique across simulators on one broker
    for n in range(shared):
        links.append(Link(f"sim-shared-{tag}-{n}", address, without[n::shared]))
    for link in links:
        for device in link.devices:
            device.link = link
    return links
