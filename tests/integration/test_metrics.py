"""Every metric of docs/operations.md, scraped from a real `iotdeck serve` and `iotdeck ingest`.

Both run as subprocesses on one PostgreSQL, one Redis and a private Mosquitto. The test
drives them from outside (MQTT telemetry, GraphQL over HTTP and WebSocket, pages, bursts
over the rate limits), then reads each process's /metrics as Prometheus would: every
name of the contract is there with exactly its labels, routes are templates, and the
counters moved.
"""

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy import Engine

from app.core import db
from app.core.auth import create_token
from app.core.models import DeviceCreate, Role, UserCreate
from app.services import devices, rules, users
from app.services.rules import RuleInput
from bench.services import IotdeckBroker, free_port, iotdeck_environment
from tests.firmware import connected_device
from tests.serving import IOTDECK, answers, running
from tests.waiting import wait_for, wait_until

REDIS_URL = "redis://127.0.0.1:6379/0"
SECRET = "metrics-contract-" + "k" * 40
TIMEOUT = 30.0
REQUEST_LIMIT = 40  # per second and address: the bursts below go over it, the rest stays under
DEVICE_BURST = 5
RULE = """rule "Too warm"
  on type "thermostat"
  when temperature > 30
  severity warning
"""
UPDATE = "mutation($id: ID!, $name: String!) { updateDevice(input: {id: $id, name: $name}) { id } }"
LOGIN = "mutation($email: String!) { login(email: $email, password: $email) { token } }"

# name -> its labels, as /tmp/metrics-contract.md (and docs/operations.md) give them
CONTRACT: dict[str, frozenset[str]] = {
    name: frozenset(labels.split())
    for name, labels in {
        "http_requests_total": "method route status",
        "http_request_duration_seconds": "method route",
        "mqtt_messages_received_total": "kind",
        "telemetry_points_ingested_total": "",
        "alerts_triggered_total": "severity",
        "telemetry_rejected_total": "reason",
        "ingest_batch_seconds": "",
        "command_acks_rejected_total": "reason",
        "commands_published_total": "",
        "ingest_storage_retries_total": "",
        "bus_dropped_total": "",
        "bus_received_total": "",
        "notification_attempts_total": "channel outcome",
        "ingest_backlog_messages": "",
        "ingest_last_commit_timestamp_seconds": "",
        "ingest_poison_messages_total": "",
        "mqtt_connected": "client",
        "bus_published_total": "kind",
        "bus_delivered_total": "",
        "evaluator_leader": "",
        "evaluator_lag_seconds": "",
        "evaluator_queue_depth": "",
        "evaluator_dropped_messages_total": "",
        "evaluator_dropped_points_total": "",
        "rule_evaluations_total": "",
        "notification_queue_depth": "",
        "notification_circuit_open": "channel",
        "command_dispatch_pending": "",
        "db_pool_connections": "state",
        "database_up": "",
        "rate_limit_refusals_total": "scope",
        "graphql_operations_total": "type result",
        "graphql_subscriptions_active": "",
    }.items()
}
HISTOGRAMS = {"http_request_duration_seconds", "ingest_batch_seconds"}
# labelled metrics have no sample before their first event: serve runs --no-ingest, and
# ingest's metrics port is not the web app
NO_EVENTS = {
    "serve": {"telemetry_rejected_total", "command_acks_rejected_total"},
    "ingest": {"http_requests_total", "http_request_duration_seconds"},
}


@dataclass(frozen=True)
class Scrape:
    """One /metrics answer, parsed as Prometheus parses it."""

    families: set[str]  # every metric named, samples or not (counters with their _total)
    samples: list[Sample]

    def value(self, name: str, **labels: str) -> float | None:
        """The sample `name` with exactly these labels, or None."""
        found = [s.value for s in self.samples if s.name == name and s.labels == labels]
        return found[0] if found else None

    def labelsets(self, name: str) -> list[dict[str, str]]:
        """The labels of each sample of `name`."""
        return [s.labels for s in self.samples if s.name == name]


def scrape(url: str) -> Scrape:
    """GET `url` (a /metrics) and parse it."""
    families = list(text_string_to_metric_families(httpx.get(url, timeout=5).text))
    return Scrape(
        {f"{f.name}_total" if f.type == "counter" else f.name for f in families},
        [sample for family in families for sample in family.samples],
    )


@dataclass(frozen=True)
class Stack:
    """The two processes and what the test made in their database."""

    url: str  # serve's base URL
    ingest_metrics: str  # ingest's metrics port, base URL
    token: str  # an ADMIN's
    warm: uuid.UUID  # a thermostat: its telemetry opens an alert
    chatty: uuid.UUID  # a thermostat that talks over its rate limit

    @property
    def serve_metrics(self) -> str:
        """serve's /metrics."""
        return f"{self.url}/metrics"

    def graphql(self, query: str, **variables: Any) -> httpx.Response:
        """POST one operation as the ADMIN."""
        return httpx.post(
            f"{self.url}/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        )


@pytest.fixture
def stack(
    database_url: str, engine: Engine, mosquitto: IotdeckBroker, tmp_path: Path
) -> Iterator[Stack]:
    """`iotdeck serve --no-ingest` and `iotdeck ingest`, both ready; an ADMIN, two devices."""
    del engine  # the services below write through the process-wide engine it points
    with db.session_scope() as session:
        data = UserCreate(email="admin@example.com", password="x" * 12, role=Role.ADMIN)
        admin = users.create_user(session=session, data=data)
        token = create_token(admin, secret=SECRET, expire_hours=1)
        made = [
            devices.create_device(session=session, data=DeviceCreate(name=name, type="thermostat"))
            for name in ("warm", "chatty")
        ]
        rules.create_rule(session=session, data=RuleInput(expression=RULE))
    port, metrics_port = free_port(), free_port()
    env = iotdeck_environment(
        IOTDECK_DATABASE_URL=database_url,
        IOTDECK_REDIS_URL=REDIS_URL,
        IOTDECK_JWT_SECRET=SECRET,
        IOTDECK_MQTT_URL=mosquitto.url,
        IOTDECK_DATA_DIR=str(tmp_path / "data"),
        IOTDECK_BCRYPT_ROUNDS="4",
        IOTDECK_HOST="127.0.0.1",
        IOTDECK_METRICS_PORT=str(metrics_port),
        IOTDECK_RATE_LIMIT=f"{REQUEST_LIMIT}/second",
        IOTDECK_DEVICE_RATE_LIMIT="1/second",
        IOTDECK_DEVICE_RATE_BURST=str(DEVICE_BURST),
        IOTDECK_INGEST_BATCH_MS="20",
    )
    url, ingest_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}"

    def ingest_subscribed() -> bool:
        # its own metric says when it listens: publishing before would reach nobody
        return answers(f"{ingest_url}/health/live") and (
            scrape(f"{ingest_url}/metrics").value("mqtt_connected", client="ingest") == 1
        )

    serve = ["serve", "--no-ingest", "--host", "127.0.0.1", "--port", str(port)]
    with (
        running(
            [IOTDECK, *serve], env, tmp_path / "serve.log", lambda: answers(f"{url}/health/ready")
        ),
        running([IOTDECK, "ingest"], env, tmp_path / "ingest.log", ingest_subscribed),
    ):
        yield Stack(url, ingest_url, token, made[0].id, made[1].id)


def _publish(client: mqtt.Client, topic: str, payload: bytes | dict) -> None:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    client.publish(topic, raw, qos=1).wait_for_publish(5)


def _device_traffic(stack: Stack, mosquitto: IotdeckBroker) -> None:
    """A violating point, a malformed message, an answer to no command, a flood."""
    warm, chatty = (
        connected_device(mosquitto, stack.warm),
        connected_device(mosquitto, stack.chatty),
    )
    try:
        _publish(warm, f"devices/{stack.warm}/telemetry", {"temperature": 35.0})
        _publish(warm, f"devices/{stack.warm}/telemetry", b"not json")
        answer = {"command_id": str(uuid.uuid4()), "status": "executed"}
        _publish(warm, f"devices/{stack.warm}/commands/ack", answer)
        for _ in range(DEVICE_BURST * 3):  # over its burst: refused as rate_limited
            _publish(chatty, f"devices/{stack.chatty}/telemetry", {"temperature": 20.0})
    finally:
        for client in (warm, chatty):
            client.disconnect()
            client.loop_stop()


async def _subscription_lifecycle(stack: Stack) -> None:
    """One subscription: active while it streams, counted as an ok operation once completed."""
    ws_url = stack.url.replace("http://", "ws://") + "/graphql"
    async with websockets.connect(ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {stack.token}"}}
        await ws.send(json.dumps(init))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        payload = {"query": "subscription { deviceEvents { type } }"}
        await ws.send(json.dumps({"type": "subscribe", "id": "1", "payload": payload}))

        def active() -> float | None:
            return scrape(stack.serve_metrics).value("graphql_subscriptions_active")

        await wait_for(lambda: active() == 1, TIMEOUT, every=0.2)
        await ws.send(json.dumps({"type": "complete", "id": "1"}))
        await wait_for(lambda: active() == 0, TIMEOUT, every=0.2)


async def _over_the_limit(stack: Stack) -> None:
    """Bursts over IOTDECK_RATE_LIMIT on a page path and on /graphql; then wait it out."""
    async with httpx.AsyncClient(base_url=stack.url, timeout=TIMEOUT) as client:
        # all at once: one after the other, a loaded machine could stay under the limit
        burst = [client.get("/no/such/page") for _ in range(REQUEST_LIMIT)] + [
            client.post("/graphql", json={"query": "{ __typename }"}) for _ in range(REQUEST_LIMIT)
        ]
        answered = [(r.url.path, r.status_code) for r in await asyncio.gather(*burst)]
        assert {("/no/such/page", 429), ("/graphql", 429)} <= set(answered), answered

        async def allowed() -> bool:
            return (await client.get("/no/such/page")).status_code == 404

        async with asyncio.timeout(TIMEOUT):
            while not await allowed():
                await asyncio.sleep(0.5)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_both_processes_expose_every_metric_with_its_labels_and_counters_move(
    stack: Stack, mosquitto: IotdeckBroker
) -> None:
    device_page = httpx.get(f"{stack.url}/devices/{stack.warm}", timeout=10)
    assert device_page.status_code < 500
    assert stack.graphql("{ __typename }").json()["data"]
    assert stack.graphql("{ noSuchField }").json()["errors"]
    renamed = stack.graphql(UPDATE, id=str(stack.warm), name="warm-1").json()
    assert "errors" not in renamed, renamed
    stranger = f"nobody-{uuid.uuid4().hex[:8]}@example.com"  # fresh counts in the shared Redis
    logins = [stack.graphql(LOGIN, email=stranger).json() for _ in range(6)]
    codes = [login["errors"][0]["extensions"]["code"] for login in logins]
    assert codes[-1] == "RATE_LIMITED", codes
    asyncio.run(_subscription_lifecycle(stack))
    _device_traffic(stack, mosquitto)
    asyncio.run(_over_the_limit(stack))

    # ingest committed everything it took, serve opened the alert
    def settled() -> tuple[Scrape, Scrape] | None:
        serve, ingest = scrape(stack.serve_metrics), scrape(f"{stack.ingest_metrics}/metrics")
        done = (
            serve.value("alerts_triggered_total", severity="warning") == 1
            and ingest.value("ingest_backlog_messages") == 0
            and (ingest.value("telemetry_points_ingested_total") or 0) >= 1
        )
        return (serve, ingest) if done else None

    serve, ingest = wait_until(settled, TIMEOUT, every=0.5)  # type: ignore[misc]
    assert answers(f"{stack.url}/health/ready")  # its database check sets database_up
    serve = scrape(stack.serve_metrics)

    for process, scraped in (("serve", serve), ("ingest", ingest)):
        assert set(CONTRACT) <= scraped.families, (process, set(CONTRACT) - scraped.families)
        for name, labels in CONTRACT.items():
            sample = f"{name}_count" if name in HISTOGRAMS else name
            found = scraped.labelsets(sample)
            if name in NO_EVENTS[process]:
                assert found == [], (process, name, found)
                continue
            assert found, f"{process} has no sample of {sample}"
            assert {frozenset(labelset) for labelset in found} == {labels}, (process, name)
        assert scraped.value("process_resident_memory_bytes")
        assert scraped.labelsets("python_info")
        assert scraped.value("database_up") == 1, process
        pool = {s["state"] for s in scraped.labelsets("db_pool_connections")}
        assert pool == {"checked_out", "idle", "overflow"}, process

    # routes are templates: the device's id is in no label, its page is its route
    routes = {labels["route"] for labels in serve.labelsets("http_requests_total")}
    assert "/devices/{device_id}" in routes
    assert {"/graphql", "other"} <= routes
    assert not [route for route in routes if str(stack.warm) in route]
    # answered before routing: the page's sign-in redirect finds its route, GraphQL's 429
    # does not (an included router's routes are out of sight since FastAPI 0.165)
    redirect = str(device_page.status_code)
    assert serve.value(
        "http_requests_total", method="GET", route="/devices/{device_id}", status=redirect
    )
    assert serve.value("http_requests_total", method="POST", route="other", status="429")
    assert serve.value("http_requests_total", method="GET", route="other", status="404")
    assert serve.value("http_request_duration_seconds_count", method="POST", route="/graphql")

    # serve: GraphQL, the rule engine, the bus, the dispatchers, the limits
    for kind, result in (("query", "ok"), ("query", "error"), ("mutation", "ok"),
                         ("mutation", "error"), ("subscription", "ok")):  # fmt: skip
        assert serve.value("graphql_operations_total", type=kind, result=result), (kind, result)
    assert serve.value("graphql_subscriptions_active") == 0
    for scope in ("http", "graphql", "signin"):
        assert serve.value("rate_limit_refusals_total", scope=scope), scope
    assert serve.value("evaluator_leader") == 1
    assert (serve.value("rule_evaluations_total") or 0) >= 1
    assert 0 <= (serve.value("evaluator_lag_seconds") or 0) < TIMEOUT
    assert serve.value("evaluator_queue_depth") == 0
    assert (serve.value("bus_received_total") or 0) >= 1
    assert (serve.value("bus_delivered_total") or 0) >= 1
    assert serve.value("bus_published_total", kind="alerts") == 1  # TRIGGERED, through Redis
    assert serve.value("mqtt_connected", client="dispatcher") == 1
    assert serve.labelsets("mqtt_connected") == [{"client": "dispatcher"}]

    # ingest: MQTT in, points committed, the bus out, refusals
    assert (ingest.value("mqtt_messages_received_total", kind="telemetry") or 0) >= 3
    assert ingest.value("mqtt_messages_received_total", kind="ack") == 1
    assert ingest.value("telemetry_rejected_total", reason="malformed_json") == 1
    assert ingest.value("command_acks_rejected_total", reason="unknown_command") == 1
    refused = ingest.value("rate_limit_refusals_total", scope="mqtt") or 0
    assert refused >= 1
    assert ingest.value("telemetry_rejected_total", reason="rate_limited") == refused
    assert (ingest.value("bus_published_total", kind="telemetry") or 0) >= 1
    assert (ingest.value("ingest_batch_seconds_count") or 0) >= 1
    assert (ingest.value("ingest_last_commit_timestamp_seconds") or 0) > 0
    assert ingest.labelsets("mqtt_connected") == [{"client": "ingest"}]
    assert ingest.value("evaluator_leader") == 0  # ingest never evaluates
    assert httpx.get(f"{stack.ingest_metrics}/nothing", timeout=5).status_code == 404
