"""The command dispatcher: commands and configurations out to devices, expiry on time.

Every process running the workers runs one, for the devices of the partitions its rule
evaluator owns (`app/workers/leases.py`): a device's commands go out in order from one process, and
a dead process's pending commands are its partitions' new owner's. It holds its own MQTT
connection and, in rounds, for those devices:

1. marks EXPIRED every command still waiting for its device at `expires_at`;
2. publishes, retained at QoS 1, each device configuration stored since its last
   publication (`devices/{id}/config`);
3. publishes at QoS 1 each PENDING command of an ONLINE device (`devices/{id}/commands`),
   and marks it SENT once the broker acknowledged the publish.

A round runs when a command is created or cancelled, a configuration changes or a device
comes ONLINE (bus messages), when the next expiry falls due, and at least every few
seconds. Everything it does is decided from the database, so nothing is stuck after a
restart: pending commands still go out, expiry still happens. The device's answers come
back through ingest (`devices/{id}/commands/ack`). Stopped (cancelled), it ends the round in
progress first, so a command published is also marked SENT, then disconnects.
"""

import asyncio
import logging
import time
from datetime import datetime, timedelta

import orjson
from paho.mqtt.client import MQTTMessageInfo

from app.core import bus, db, metrics, tracing
from app.core.models import DeviceStatus, utcnow
from app.core.streams import partition_of
from app.mqtt.connection import BrokerAddress
from app.mqtt.link import Link
from app.mqtt.topics import command_topic, config_topic
from app.services import commands
from app.workers import leases
from app.workers.rounds import Rounds

logger = logging.getLogger(__name__)

POLL_SECONDS = 5.0
PUBLISH_TIMEOUT = 10.0  # how long the broker may take to acknowledge one publish
METRICS_CLIENT = "dispatcher"  # its mqtt_connected{client} label


class CommandDispatcher:
    """Publishes due commands and configurations on its own MQTT connection."""

    def __init__(
        self,
        address: BrokerAddress,
        *,
        client_id: str,
        poll_seconds: float = POLL_SECONDS,
        owner: leases.Owner | None = None,
        partitions: int = 1,
    ) -> None:
        """`owner`: whose partitions' devices it serves (`partitions` in all); None: all."""
        self.address = address
        self.poll_seconds = poll_seconds
        self.owner = owner
        self.partitions = partitions
        self.published = 0  # commands the broker acknowledged, since it was made
        self._client_id = client_id
        self._link: Link | None = None  # made when it runs: its gauge says it runs here
        self._rounds = Rounds()

    def wake(self) -> None:
        """Run a round now."""
        self._rounds.wake()

    async def run(self, hub: bus.Hub | None) -> None:
        """Dispatch until cancelled; `hub` wakes it on command, config and status news."""
        news = hub.subscribe(channels=[bus.COMMANDS, bus.DEVICE_STATUS]) if hub else None
        self._link = Link(
            self.address,
            self._client_id,
            name="command dispatcher",
            persistent=False,
            gauge=METRICS_CLIENT,
        )
        # connected: what waited for the broker can go now
        self._link.on_ready_in_loop(self._rounds.wake)
        self._link.start()
        try:
            await self._rounds.run(
                self._owned_round,
                news,
                lambda channel, message: (
                    channel == bus.COMMANDS or message.get("status") == DeviceStatus.ONLINE
                ),
            )
        finally:
            self._link.stop()  # no dispatcher here any more: no series

    async def _owned_round(self) -> float:
        """A round over the devices of the owner's partitions, which stay this process's
        until it ends (the owner's lock)."""
        if self.owner is None:
            return await asyncio.to_thread(self._round, None)
        async with self.owner.lock:
            owned = self.owner.in_use()
            if not owned:
                return self.poll_seconds
            count = self.partitions
            return await asyncio.to_thread(
                self._round, lambda device_id: partition_of(device_id, count) in owned
            )

    # a round, in a worker thread ---------------------------------------------------------

    def _round(self, devices: commands.DeviceFilter | None) -> float:
        """Expire, publish what is due for `devices` (None: all); the seconds until the next
        round is needed."""
        try:
            now = utcnow()
            with db.session_scope() as session:
                expired = commands.expire_due(session=session, now=now, devices=devices)
            if expired:
                logger.info("%d command(s) expired", len(expired))
            if self._link is not None and self._link.ready:
                self._publish_configs(devices)
                self._publish_commands(now, devices)
            with db.session_scope() as session:
                upcoming = commands.next_expiry(session=session)
        except db.DatabaseUnavailableError as error:  # said once by its breaker: no traceback
            logger.warning("command dispatch round skipped: %s", error)
            return self.poll_seconds
        except Exception:  # a database or broker blip must not end the dispatcher
            logger.exception("command dispatch round failed; retrying")
            return self.poll_seconds
        return _until(upcoming, self.poll_seconds)

    def _publish(self, topic: str, document: object, *, retain: bool = False) -> MQTTMessageInfo:
        assert self._link is not None  # a round runs only inside `run`
        return self._link.client.publish(topic, orjson.dumps(document), qos=1, retain=retain)

    def _confirmed(self, info: MQTTMessageInfo) -> bool:
        try:
            info.wait_for_publish(PUBLISH_TIMEOUT)
        except (RuntimeError, ValueError):
            return False  # not queued (disconnected meanwhile): the next round retries
        return info.is_published()

    def _publish_configs(self, devices: commands.DeviceFilter | None) -> None:
        with db.session_scope() as session:
            due = [
                (device.id, device.config_updated_at, device.config)
                for device in commands.configs_to_publish(session=session, devices=devices)
            ]
        for device_id, version, document in due:
            info = self._publish(config_topic(device_id), document, retain=True)
            if self._confirmed(info) and version is not None:
                with db.session_scope() as session:
                    commands.mark_config_published(
                        session=session, device_id=device_id, version=version
                    )

    def _publish_commands(self, now: datetime, devices: commands.DeviceFilter | None) -> None:
        with db.session_scope() as session:
            due = [
                (
                    command.id,
                    command.device_id,
                    command.correlation_id,
                    commands.device_message(command),
                )
                for command in commands.due_for_sending(session=session, now=now, devices=devices)
            ]
        metrics.COMMAND_DISPATCH_PENDING.set(len(due))
        sent = []  # all published first, then each confirmed: one broker round trip in all
        for command_id, device_id, correlation, message in due:
            began = time.time_ns()  # its command.publish span runs from here to the PUBACK
            info = self._publish(command_topic(device_id), message)
            sent.append((command_id, device_id, correlation, message["action"], began, info))
        for command_id, device_id, correlation, action, began, info in sent:
            with tracing.span(
                "command.publish",
                correlation,
                kind=tracing.SpanKind.PRODUCER,
                start_time=began,
                command_id=command_id,
                action=action,
                device_id=device_id,
            ):
                if not self._confirmed(info):
                    tracing.failed("the broker did not acknowledge it; the next round retries")
                    continue
                # with the id of what sent it: a request, or the MQTT batch that fired its alert
                logger.info(
                    "command %s published to device %s",
                    command_id,
                    device_id,
                    extra={
                        "correlation_id": correlation,
                        "command_id": command_id,
                        "device_id": device_id,
                    },
                )
                metrics.COMMANDS_PUBLISHED.inc()
                self.published += 1
                metrics.COMMAND_DISPATCH_PENDING.dec()
                with db.session_scope() as session:
                    commands.mark_sent(session=session, command_id=command_id, at=utcnow())


def _until(moment: datetime | None, longest: float) -> float:
    """Seconds from now until `moment`, between 0.05 and `longest`."""
    if moment is None:
        return longest
    left = (moment - utcnow()) / timedelta(seconds=1)
    return min(longest, max(0.05, left))


async def run_command_dispatcher(
    address: BrokerAddress,
    hub: bus.Hub | None,
    *,
    client_id: str,
    owner: leases.Owner,
    partitions: int,
) -> None:
    """What `iotdeck serve` and `iotdeck worker` run: the dispatcher of the devices of the
    partitions `owner` holds for this process's rule evaluator."""
    dispatcher = CommandDispatcher(address, client_id=client_id, owner=owner, partitions=partitions)
    await dispatcher.run(hub)
