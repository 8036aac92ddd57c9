"""Subscriptions over real WebSockets: a uvicorn server whose hub lives on its own loop.

The server runs in a thread (its own event loop, like `iotdeck serve`); its lifespan creates
the hub there and sets the bus, in-process (LocalBus) or Redis. Clients are the `websockets`
library speaking graphql-transport-ws or the legacy graphql-ws.
"""

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
import websockets
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import Engine

from app.core import bus, db
from app.core.config import Settings
from app.core.models import DeviceCreate, DeviceUpdate, Role, UserUpdate, utcnow
from app.graphql import subscriptions
from app.graphql.router import create_router
from app.graphql.types import Device
from app.mqtt.ingest import IngestWorker
from app.services import alerts, commands, devices, rules, users
from bench.services import free_port
from tests.integration.conftest import Publish
from tests.integration.graphql.conftest import Account
from tests.waiting import wait_until

REDIS_URL = "redis://127.0.0.1:6379/0"
PROTOCOLS = ["graphql-transport-ws", "graphql-ws"]
TIMEOUT = 15.0
TELEMETRY = (
    "subscription($id: ID!) { telemetryReceived(deviceId: $id) { metricName time value unit } }"
)
EVENTS = (
    "subscription($ids: [ID!]) { deviceEvents(deviceIds: $ids) { type timestamp"
    " device { id name type status metadata lastSeenAt createdAt updatedAt } } }"
)
UPDATED = "subscription($id: ID) { deviceUpdated(deviceId: $id) { id name status updatedAt } }"


@dataclass(frozen=True)
class Live:
    """A running GraphQL server: its WebSocket URL and the hub on its loop."""

    url: str
    hub: bus.Hub


def _transport(kind: str) -> bus.Bus:
    return bus.RedisBus(REDIS_URL) if kind == "redis" else bus.LocalBus()


@pytest.fixture
def live(request: pytest.FixtureRequest, engine: Engine, settings: Settings) -> Iterator[Live]:
    """/graphql on uvicorn in a thread; the bus (param "local" or "redis") set at startup."""
    del engine
    kind = getattr(request, "param", "local")
    hubs: list[bus.Hub] = []

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # the hub belongs to the loop that serves the WebSockets, as in `iotdeck serve`
        hub = bus.Hub(asyncio.get_running_loop())
        transport = _transport(kind)
        await transport.start(hub)
        async with asyncio.timeout(10):
            while not transport.healthy:
                await asyncio.sleep(0.01)
        bus.set_bus(transport, hub)
        hubs.append(hub)
        try:
            yield
        finally:
            bus.set_bus(bus.NullBus())
            await transport.stop()

    api = FastAPI(lifespan=lifespan)
    api.include_router(create_router(settings))
    port = free_port()
    config = uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="graphql-server", daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive())
    assert server.started, "the GraphQL server did not start"
    yield Live(url=f"ws://127.0.0.1:{port}/graphql", hub=hubs[0])
    server.should_exit = True
    thread.join(30)


class Socket:
    """One GraphQL WebSocket, either protocol, answering pings and skipping keep-alives."""

    def __init__(self, ws: websockets.ClientConnection, protocol: str) -> None:
        self.ws = ws
        self.protocol = protocol
        self.legacy = protocol == "graphql-ws"

    async def send(self, message: dict[str, Any]) -> None:
        """Send one JSON message."""
        await self.ws.send(json.dumps(message))

    async def receive(self) -> dict[str, Any]:
        """The next protocol message that is not a keep-alive."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                message = json.loads(await self.ws.recv())
                if message["type"] == "ping":
                    await self.send({"type": "pong"})
                elif message["type"] not in ("ka", "pong"):
                    return message

    async def subscribe(self, ident: str, query: str, variables: dict[str, Any]) -> None:
        """Start a subscription."""
        kind = "start" if self.legacy else "subscribe"
        payload = {"query": query, "variables": variables}
        await self.send({"type": kind, "id": ident, "payload": payload})

    async def stop(self, ident: str) -> None:
        """End a subscription from the client side."""
        await self.send({"type": "stop" if self.legacy else "complete", "id": ident})

    async def data(self) -> dict[str, Any]:
        """The `data` of the next result, which must carry no errors."""
        message = await self.receive()
        assert message["type"] == ("data" if self.legacy else "next"), message
        assert not message["payload"].get("errors"), message
        return message["payload"]["data"]

    async def error(self) -> dict[str, Any]:
        """The single GraphQL error ending a subscription, in either protocol's wording."""
        message = await self.receive()
        if message["type"] in ("next", "data"):
            [error] = message["payload"]["errors"]
            assert (await self.receive())["type"] == "complete"
        else:
            assert message["type"] == "error", message
            payload = message["payload"]
            [error] = payload if isinstance(payload, list) else payload.get("errors", [payload])
        return error


@asynccontextmanager
async def connect(
    live: Live, protocol: str, token: str | None, *, ack: bool = True
) -> AsyncIterator[Socket]:
    """A WebSocket to `live`, with `connection_init` sent (and acknowledged when `ack`)."""
    async with websockets.connect(live.url, subprotocols=[protocol]) as ws:  # type: ignore[list-item]
        socket = Socket(ws, protocol)
        payload = {} if token is None else {"Authorization": f"Bearer {token}"}
        await socket.send({"type": "connection_init", "payload": payload})
        if ack:
            assert (await socket.receive())["type"] == "connection_ack"
        yield socket


def _device(name: str = "boiler") -> str:
    with db.session_scope() as session:
        created = devices.create_device(session=session, data=DeviceCreate(name=name, type="t"))
        return str(created.id)


async def _until(condition: Callable[[], object], timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("live", ["local", "redis"], indirect=True)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_point_published_over_mqtt_reaches_telemetry_received(
    live: Live, ingest: IngestWorker, publish: Publish, viewer: str, protocol: str
) -> None:
    del ingest
    device_id = _device()
    async with connect(live, protocol, viewer) as socket:
        await socket.subscribe("1", TELEMETRY, {"id": device_id})
        await _until(lambda: live.hub.subscribers == 1)
        publish(f"devices/{device_id}/telemetry", {"temperature": 21.5, "humidity": 40})
        points = [(await socket.data())["telemetryReceived"] for _ in range(2)]
        assert sorted((p["metricName"], p["value"], p["unit"]) for p in points) == [
            ("humidity", 40.0, None),
            ("temperature", 21.5, None),
        ]
        assert all(p["time"].endswith("Z") for p in points)
        # unsubscribing closes the hub subscription
        await socket.stop("1")
        await _until(lambda: live.hub.subscribers == 0)
        await socket.subscribe("2", TELEMETRY, {"id": device_id})
        await _until(lambda: live.hub.subscribers == 1)
    # ...and so does disconnecting
    await _until(lambda: live.hub.subscribers == 0)


@pytest.mark.parametrize("live", ["local", "redis"], indirect=True)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_device_changes_reach_device_events_and_device_updated(
    live: Live, viewer: str, protocol: str
) -> None:
    device_id, other_id = _device("boiler"), _device("other")
    async with connect(live, protocol, viewer) as socket:
        await socket.subscribe("events", EVENTS, {"ids": [device_id]})
        await socket.subscribe("updated", UPDATED, {"id": device_id})
        await _until(lambda: live.hub.subscribers == 2)
        with db.session_scope() as session:
            # another device's change first: both subscriptions filter it out
            devices.update_device(
                session=session, device_id=uuid.UUID(other_id), data=DeviceUpdate(name="x")
            )
        with db.session_scope() as session:
            changed = devices.update_device(
                session=session,
                device_id=uuid.UUID(device_id),
                data=DeviceUpdate(name="hall boiler", metadata={"floor": 2}),
            )
            expected = Device.from_model(changed)
        received = {}
        for _ in range(2):
            message = await socket.receive()
            assert not message["payload"].get("errors"), message
            received[message["id"]] = message["payload"]["data"]
    event = received["events"]["deviceEvents"]
    assert event["type"] == "UPDATED"
    assert event["timestamp"] == expected.updated_at
    assert event["device"] == {
        "id": device_id,
        "name": "hall boiler",
        "type": "t",
        "status": "UNKNOWN",
        "metadata": {"floor": 2},
        "lastSeenAt": None,
        "createdAt": expected.created_at,
        "updatedAt": expected.updated_at,
    }
    assert received["updated"]["deviceUpdated"] == {
        "id": device_id,
        "name": "hall boiler",
        "status": "UNKNOWN",
        "updatedAt": expected.updated_at,
    }


async def test_device_events_without_ids_sees_every_device_created(live: Live, viewer: str) -> None:
    async with connect(live, "graphql-transport-ws", viewer) as socket:
        await socket.subscribe("1", EVENTS, {"ids": []})
        await _until(lambda: live.hub.subscribers == 1)
        created = _device("new one")
        event = (await socket.data())["deviceEvents"]
    assert (event["type"], event["device"]["id"]) == ("CREATED", created)


@pytest.mark.parametrize("token", [None, "forged"])
async def test_a_subscription_without_a_valid_token_is_refused(
    live: Live, token: str | None
) -> None:
    async with connect(live, "graphql-transport-ws", token, ack=False) as socket:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await socket.receive()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    async with connect(live, "graphql-ws", token, ack=False) as socket:
        answer = await socket.receive()
    assert answer["type"] == "connection_error"
    assert answer["payload"]["code"] == "UNAUTHENTICATED"
    assert live.hub.subscribers == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_device_that_does_not_exist_is_not_found(
    live: Live, accounts: dict[Role, Account], protocol: str
) -> None:
    missing = str(uuid.uuid4())
    async with connect(live, protocol, accounts[Role.VIEWER].token) as socket:
        for query, variables in [
            (TELEMETRY, {"id": missing}),
            (UPDATED, {"id": missing}),
            (EVENTS, {"ids": [_device(), missing]}),
        ]:
            await socket.subscribe("1", query, variables)
            error = await socket.error()
            assert error["extensions"] == {"code": "NOT_FOUND"}, error
            assert missing in error["message"]
    await _until(lambda: live.hub.subscribers == 0)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_bad_id_is_bad_user_input_naming_the_argument(
    live: Live, viewer: str, protocol: str
) -> None:
    async with connect(live, protocol, viewer) as socket:
        for query, variables, field in [
            (TELEMETRY, {"id": "nope"}, "deviceId"),
            (UPDATED, {"id": "nope"}, "deviceId"),
            (EVENTS, {"ids": ["nope"]}, "deviceIds"),
        ]:
            await socket.subscribe("1", query, variables)
            error = await socket.error()
            assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": field}, error


@pytest.mark.parametrize("live", ["local", "redis"], indirect=True)
async def test_a_slow_subscriber_loses_its_oldest_points_and_nobody_else_waits(
    live: Live, viewer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subscriptions, "QUEUE_SIZE", 500)
    device_id = _device()
    channel = bus.telemetry_channel(device_id)
    dropped_before = REGISTRY.get_sample_value("bus_dropped_total") or 0.0
    async with connect(live, "graphql-transport-ws", viewer) as socket:
        await socket.subscribe("1", TELEMETRY, {"id": device_id})
        await _until(lambda: live.hub.subscribers == 1)
        # a subscriber that never reads, with a small queue, on the server's hub
        slow = live.hub.subscribe(lambda name: name == channel, size=5)
        count = 200
        at = "2026-01-01T00:00:00+00:00"
        points = [{"metric": "m", "time": at, "value": i, "unit": None} for i in range(count)]
        messages = [(channel, {"device_id": device_id, "points": [p]}) for p in points]
        await asyncio.to_thread(bus.get_bus().publish_many, messages)
        async with asyncio.timeout(TIMEOUT):
            values = [(await socket.data())["telemetryReceived"]["value"] for _ in range(count)]
    assert values == [float(i) for i in range(count)]
    assert slow.dropped == count - 5
    assert [m["points"][0]["value"] for _, m in [await slow.get() for _ in range(5)]] == [
        195,
        196,
        197,
        198,
        199,
    ]
    dropped_after = REGISTRY.get_sample_value("bus_dropped_total") or 0.0
    assert dropped_after - dropped_before >= count - 5
    slow.close()


async def test_a_disabled_account_loses_its_subscription_at_the_next_check(
    live: Live, accounts: dict[Role, Account], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subscriptions, "RECHECK_SECONDS", 0.0)
    viewer = accounts[Role.VIEWER]
    async with connect(live, "graphql-transport-ws", viewer.token) as socket:
        await socket.subscribe("1", EVENTS, {})
        await _until(lambda: live.hub.subscribers == 1)
        _device("seen")
        assert (await socket.data())["deviceEvents"]["type"] == "CREATED"
        with db.session_scope() as session:
            users.update_user(
                session=session, user_id=viewer.user.id, data=UserUpdate(is_active=False)
            )
        _device("not seen")
        error = await socket.error()
    assert error["extensions"] == {"code": "UNAUTHENTICATED"}, error
    await _until(lambda: live.hub.subscribers == 0)


ALERT_TRIGGERED = (
    "subscription($id: ID, $severity: AlertSeverity) { alertTriggered(deviceId: $id, "
    "severity: $severity) { id ruleId deviceId severity status title metricValue triggeredAt } }"
)


def _open_alert(device_id: str, severity: str) -> str:
    """Open an alert through the service, as the evaluator does; its id."""
    with db.session_scope() as session:
        rule = rules.create_rule(
            session=session,
            data=rules.RuleInput(expression=f'rule "{severity}" when t > 1 severity {severity}'),
        )
        alert = alerts.open_alert(
            session=session, rule=rule, device_id=uuid.UUID(device_id), at=utcnow(), metric_value=2
        )
        assert alert is not None
        return str(alert.id)


@pytest.mark.parametrize("live", ["local", "redis"], indirect=True)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_alert_triggered_pushes_new_alerts_matching_its_filters(
    live: Live, viewer: str, protocol: str
) -> None:
    device_id, other_id = _device("boiler"), _device("other")
    async with connect(live, protocol, viewer) as socket:
        await socket.subscribe("all", ALERT_TRIGGERED, {})
        await socket.subscribe("mine", ALERT_TRIGGERED, {"id": device_id, "severity": "CRITICAL"})
        await _until(lambda: live.hub.subscribers == 2)
        _open_alert(other_id, "critical")  # another device: only "all" sees it
        _open_alert(device_id, "info")  # another severity: only "all" sees it
        expected = _open_alert(device_id, "critical")
        received: dict[str, list[dict[str, Any]]] = {"all": [], "mine": []}
        while len(received["all"]) < 3 or not received["mine"]:
            message = await socket.receive()
            assert not message["payload"].get("errors"), message
            received[message["id"]].append(message["payload"]["data"]["alertTriggered"])
    assert [a["deviceId"] for a in received["all"]] == [other_id, device_id, device_id]
    (mine,) = received["mine"]
    assert (mine["id"], mine["severity"], mine["status"]) == (expected, "CRITICAL", "ACTIVE")
    assert mine["metricValue"] == 2.0 and mine["triggeredAt"].endswith("Z")
    assert mine["title"] == "critical" and mine["ruleId"]


async def test_alert_triggered_for_an_unknown_device_is_not_found(live: Live, viewer: str) -> None:
    async with connect(live, "graphql-transport-ws", viewer) as socket:
        await socket.subscribe("1", ALERT_TRIGGERED, {"id": str(uuid.uuid4())})
        error = await socket.error()
    assert error["extensions"]["code"] == "NOT_FOUND"


COMMAND_CHANGES = (
    "subscription($id: ID!) { commandStatusChanged(commandId: $id) "
    "{ id status sentAt acknowledgedAt executedAt error result } }"
)


@pytest.mark.parametrize("live", ["local", "redis"], indirect=True)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_command_status_changed_gives_the_state_then_each_step(
    live: Live, viewer: str, protocol: str
) -> None:
    device_id = uuid.UUID(_device())
    with db.session_scope() as session:
        data = commands.CommandInput(device_id=device_id, action="reboot")
        command_id = commands.send_command(session=session, data=data).id
    async with connect(live, protocol, viewer) as socket:
        await socket.subscribe("1", COMMAND_CHANGES, {"id": str(command_id)})
        first = (await socket.data())["commandStatusChanged"]
        assert (first["id"], first["status"]) == (str(command_id), "PENDING")
        steps = [
            lambda session: commands.mark_sent(session=session, command_id=command_id, at=utcnow()),
            lambda session: commands.record_answer(
                session=session,
                device_id=device_id,
                answer=commands.Answer(command_id, "acknowledged"),
                at=utcnow(),
            ),
            lambda session: commands.record_answer(
                session=session,
                device_id=device_id,
                answer=commands.Answer(command_id, "executed", result={"uptime": 0}),
                at=utcnow(),
            ),
        ]
        seen = []
        for step in steps:
            with db.session_scope() as session:
                step(session)
            seen.append((await socket.data())["commandStatusChanged"])
        assert [s["status"] for s in seen] == ["SENT", "ACKNOWLEDGED", "EXECUTED"]
        assert seen[-1]["result"] == {"uptime": 0} and seen[-1]["executedAt"].endswith("Z")
        # a final status ends the subscription
        assert (await socket.receive())["type"] == "complete"


async def test_command_status_changed_refuses_unknown_and_malformed_ids(
    live: Live, viewer: str
) -> None:
    async with connect(live, "graphql-transport-ws", viewer) as socket:
        await socket.subscribe("1", COMMAND_CHANGES, {"id": str(uuid.uuid4())})
        assert (await socket.error())["extensions"]["code"] == "NOT_FOUND"
        await socket.subscribe("2", COMMAND_CHANGES, {"id": "nope"})
        error = await socket.error()
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "commandId"}
