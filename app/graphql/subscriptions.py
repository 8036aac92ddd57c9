"""Subscriptions: devices and telemetry pushed over WebSocket from this process's bus hub.

Each GraphQL subscription is ONE bounded hub subscription (`app.core.bus`), never a Redis
subscription of its own: the process holds one `iot:*` subscription and fans out. A client
that reads too slowly loses its oldest messages (counted in `bus_dropped_total`). The hub
subscription closes when the client unsubscribes or disconnects.

A connection holds at most `IOTDECK_GRAPHQL_MAX_SUBSCRIPTIONS_PER_CONNECTION` live
subscriptions and a user `IOTDECK_GRAPHQL_MAX_SUBSCRIPTIONS_PER_USER` over all their
connections to this process; one more is refused with RATE_LIMITED, the others go on.
"""

import contextlib
import threading
import time
import uuid
import weakref
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Iterator

import strawberry
from sqlmodel import Session

from app.core import bus
from app.core.config import Settings
from app.core.errors import NotFoundError, RateLimitedError, ValidationError
from app.graphql import arguments
from app.graphql.alert_types import Alert, AlertSeverity
from app.graphql.context import Info, in_session
from app.graphql.permissions import IsAuthenticated, requires
from app.graphql.types import Device, DeviceEvent, TelemetryPoint, given
from app.services import devices, validation

# the queue of one subscriber; tests shrink it to show the drop-oldest policy
QUEUE_SIZE = bus.QUEUE_SIZE
# the user is authenticated at connection_init; a long-lived subscription re-checks it
# (disabled, deleted) on the first message after this many seconds
RECHECK_SECONDS = 60.0
MAX_DEVICE_IDS = 100
DEVICE_UPDATES = frozenset({"UPDATED", "STATUS_CHANGED"})


@contextlib.contextmanager
def hub_subscription(channel: str) -> Iterator[bus.Subscription]:
    """One bounded hub subscription to `channel`, closed however the GraphQL one ends."""
    # an exact channel: the hub finds it with one lookup, however many subscribers there are
    subscription = bus.get_hub().subscribe(channels=[channel], size=QUEUE_SIZE)
    try:
        yield subscription
    finally:
        subscription.close()


class SubscriptionCounts:
    """Live subscriptions per connection (its context) and per user, in this process."""

    def __init__(self) -> None:
        # GraphQL servers of one process may run on several event loops (threads)
        self._lock = threading.Lock()
        self._connections: weakref.WeakKeyDictionary[object, int] = weakref.WeakKeyDictionary()
        self._users: Counter[uuid.UUID] = Counter()

    @contextlib.contextmanager
    def hold(self, connection: object, user_id: uuid.UUID, settings: Settings) -> Iterator[None]:
        """Count one subscription while it lives; RateLimitedError when over a limit."""
        with self._lock:
            self._refuse_over(connection, user_id, settings)
            self._connections[connection] = self._connections.get(connection, 0) + 1
            self._users[user_id] += 1
        try:
            yield
        finally:
            with self._lock:
                self._connections[connection] -= 1
                self._users[user_id] -= 1
                if self._users[user_id] <= 0:
                    del self._users[user_id]

    def _refuse_over(self, connection: object, user_id: uuid.UUID, settings: Settings) -> None:
        per_connection = settings.graphql_max_subscriptions_per_connection
        if self._connections.get(connection, 0) >= per_connection:
            raise RateLimitedError(
                f"this connection already holds {per_connection} subscriptions, the most "
                "allowed: end one (complete/stop) before starting another"
            )
        per_user = settings.graphql_max_subscriptions_per_user
        if self._users[user_id] >= per_user:
            raise RateLimitedError(
                f"this account already holds {per_user} subscriptions over its connections, "
                "the most allowed: end one before starting another"
            )


COUNTS = SubscriptionCounts()


@contextlib.asynccontextmanager
async def subscribed(info: Info, channel: str) -> AsyncIterator[bus.Subscription]:
    """A hub subscription for one GraphQL subscription, counted against the limits."""
    user = await info.context.require_user()
    with (
        COUNTS.hold(info.context, user.id, info.context.settings),
        hub_subscription(channel) as subscription,
    ):
        yield subscription


class UserCheck:
    """Re-authenticates the subscriber at most every RECHECK_SECONDS."""

    def __init__(self, info: Info) -> None:
        self._info = info
        self._checked = time.monotonic()

    async def __call__(self) -> None:
        """Raise AuthenticationError when the account is gone or disabled."""
        if time.monotonic() - self._checked >= RECHECK_SECONDS:
            await self._info.context.reauthenticate()
            self._checked = time.monotonic()


async def _require_devices(device_ids: list[uuid.UUID]) -> None:
    """NOT_FOUND naming the first id that no device has."""

    def missing(session: Session) -> uuid.UUID | None:
        for device_id in device_ids:
            if devices.get_device(session=session, device_id=device_id) is None:
                return device_id
        return None

    if device_ids and (absent := await in_session(missing)) is not None:
        raise NotFoundError("device", absent)


def _device_ids(values: list[strawberry.ID], field: str) -> list[uuid.UUID]:
    """The ids of a list argument, at most MAX_DEVICE_IDS."""
    if len(values) > MAX_DEVICE_IDS:
        raise ValidationError(field, f"at most {MAX_DEVICE_IDS} ids")
    return [validation.parse_id(value, field) for value in values]


@strawberry.type
class Subscription:
    """Live device and telemetry updates, for every signed-in role (VIEWER and above)."""

    @strawberry.subscription(
        description="A device after each update or status change; without `deviceId`, "
        "every device, including newly created ones.",
        extensions=requires(IsAuthenticated()),
    )
    async def device_updated(
        self, info: Info, device_id: strawberry.ID | None = strawberry.UNSET
    ) -> AsyncGenerator[Device, None]:
        """Devices as they change; NOT_FOUND when `deviceId` names no device."""
        # absent and null both mean "every device"
        wanted = (
            None if device_id is None or not given(device_id) else arguments.device_id(device_id)
        )
        kinds = DEVICE_UPDATES if wanted else DEVICE_UPDATES | {"CREATED"}
        recheck = UserCheck(info)
        async with subscribed(info, bus.DEVICE_EVENTS) as events:
            if wanted is not None:
                await _require_devices([wanted])
            async for _channel, message in events:
                device = message["device"]
                if message["type"] in kinds and (wanted is None or device["id"] == str(wanted)):
                    await recheck()
                    yield Device.from_payload(device)

    @strawberry.subscription(
        description="Each value a device reports, one emission per point, as soon as it is "
        "stored; `metricName` says which metric.",
        extensions=requires(IsAuthenticated()),
    )
    async def telemetry_received(
        self, info: Info, device_id: strawberry.ID
    ) -> AsyncGenerator[TelemetryPoint, None]:
        """The device's points; NOT_FOUND when no device has this id."""
        device = arguments.device_id(device_id)
        recheck = UserCheck(info)
        async with subscribed(info, bus.telemetry_channel(device)) as messages:
            await _require_devices([device])
            async for _channel, message in messages:
                await recheck()
                for point in message["points"]:
                    yield TelemetryPoint.from_payload(point)

    @strawberry.subscription(
        description="Each alert as a rule opens it; `deviceId` and `severity` narrow it down.",
        extensions=requires(IsAuthenticated()),
    )
    async def alert_triggered(
        self,
        info: Info,
        device_id: strawberry.ID | None = strawberry.UNSET,
        severity: AlertSeverity | None = strawberry.UNSET,
    ) -> AsyncGenerator[Alert, None]:
        """New alerts; NOT_FOUND when `deviceId` names no device."""
        wanted = (
            None if device_id is None or not given(device_id) else arguments.device_id(device_id)
        )
        level = None if severity is None or not given(severity) else str(severity.value)
        recheck = UserCheck(info)
        async with subscribed(info, bus.ALERTS) as changes:
            if wanted is not None:
                await _require_devices([wanted])
            async for _channel, message in changes:
                alert = message["alert"]
                if message["type"] != "TRIGGERED":
                    continue
                if wanted is not None and alert["device_id"] != str(wanted):
                    continue
                if level is not None and alert["severity"] != level:
                    continue
                await recheck()
                yield Alert.from_payload(alert)

    @strawberry.subscription(
        description="Device events (CREATED, UPDATED, DELETED, STATUS_CHANGED) of the given "
        "devices; absent or empty `deviceIds`: of all devices.",
        extensions=requires(IsAuthenticated()),
    )
    async def device_events(
        self, info: Info, device_ids: list[strawberry.ID] | None = strawberry.UNSET
    ) -> AsyncGenerator[DeviceEvent, None]:
        """What happens to devices; NOT_FOUND when an id names no device."""
        wanted = _device_ids(device_ids or [], "deviceIds") if given(device_ids) else []
        names = {str(device_id) for device_id in wanted}
        recheck = UserCheck(info)
        async with subscribed(info, bus.DEVICE_EVENTS) as events:
            await _require_devices(wanted)
            async for _channel, message in events:
                if not names or message["device"]["id"] in names:
                    await recheck()
                    yield DeviceEvent.from_message(message)
