"""Every Grafana panel shows data from a real, busy iotdeck.

`iotdeck serve --no-ingest --no-workers`, `iotdeck ingest` and `iotdeck worker`, as
docker-compose runs them, on a fresh
PostgreSQL database, Redis and the test's broker, under a little of everything: telemetry
from three devices, malformed messages, rules that fire and notify a webhook, commands,
GraphQL, pages, a throttled sign-in. A real Prometheus scrapes all three as
deploy/prometheus/prometheus.yml says (same job names) and evaluates alerts.yml. Then
each panel query of every dashboard, Grafana's variables filled in, runs through
Prometheus' HTTP API over the load's time range: a panel that shows nothing fails.
"""

import contextlib
import functools
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from threading import Event
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import Engine
from websockets.sync.client import ClientConnection, connect

from app.core import db
from app.core.auth import create_token
from app.core.models import DeviceCreate, Role, UserCreate
from app.services import devices, users
from bench.services import IotdeckBroker, free_port, iotdeck_environment
from tests.deploy.monitoring import (
    PanelQuery,
    Prometheus,
    alert_metric_names,
    builtin_values,
    dashboards,
    grafana_expr,
    has_data,
    panel_queries,
    running_prometheus,
    variable_queries,
    variable_values,
)
from tests.firmware import connected_device
from tests.receivers import Receivers
from tests.serving import IOTDECK, answers, running
from tests.waiting import wait_until

SECRET = "monitoring-" + "k" * 40
REDIS_URL = "redis://127.0.0.1:6379/0"
SCRAPE_SECONDS = 1
LOAD_SECONDS = 20  # scrapes of both processes under load before the panels are read
ROUND_SECONDS = 0.5  # each device publishes once a round: 2 messages/s
RULES = (
    'rule "Boiler overheat"\n  on device "{hot}"\n  when temperature > 80\n  severity critical\n'
    '  cooldown 1s\n  notify webhook "{webhook}"\n  clear when temperature < 70\n',
    'rule "Damp cellar"\n  on device "{damp}"\n  when humidity > 90\n  severity warning\n'
    "  cooldown 1s\n  clear when humidity < 80\n",
)
# what the load must have caused, as Prometheus sees it, before the panels are read: each
# query returns a series once it has
EFFECTS = (
    f'count_over_time(up{{job="serve"}}[10m]) >= {LOAD_SECONDS}',
    f'count_over_time(up{{job="ingest"}}[10m]) >= {LOAD_SECONDS}',
    f'count_over_time(up{{job="worker"}}[10m]) >= {LOAD_SECONDS}',
    'sum(up{job=~"serve|ingest|worker"}) == 3',
    'sum(alerts_triggered_total{severity="critical"}) > 0',
    'sum(alerts_triggered_total{severity="warning"}) > 0',
    'sum(notification_attempts_total{channel="webhook", outcome="sent"}) > 0',
    "sum(telemetry_rejected_total) > 0",
    "sum(command_acks_rejected_total) > 0",
    "sum(commands_published_total) > 0",
    'sum(rate_limit_refusals_total{scope="signin"}) > 0',
    'sum(graphql_operations_total{result="error"}) > 0',
    "sum(graphql_subscriptions_active) > 0",
    "sum(rule_evaluations_total) > 0",
)


class Api:
    """GraphQL over HTTP as one signed-in user."""

    def __init__(self, url: str, token: str) -> None:
        self.url = f"{url}/graphql"
        self.token = token

    def __call__(self, query: str, **variables: Any) -> dict[str, Any]:
        """The whole answer, errors included (some of the load is meant to fail)."""
        answer = httpx.post(
            self.url,
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        )
        return answer.json()

    def data(self, query: str, **variables: Any) -> dict[str, Any]:
        """The data of a query that must succeed."""
        body = self(query, **variables)
        assert "errors" not in body, body
        return body["data"]


def _ingest_connected(metrics_url: str) -> bool:
    try:
        text = httpx.get(metrics_url, timeout=2).text
    except httpx.TransportError:
        return False
    return 'mqtt_connected{client="ingest"} 1.0' in text


@contextmanager
def _iotdeck(root: Path, env: dict[str, str]) -> Iterator[tuple[str, str, str]]:
    """serve (no ingest, no workers), one ingest and one worker, ready: their /metrics
    addresses (host:port)."""
    web, metrics, working = free_port(), free_port(), free_port()
    serve = [IOTDECK, "serve", "--no-ingest", "--no-workers"]
    serve += ["--host", "127.0.0.1", "--port", str(web)]
    ready = functools.partial(answers, f"http://127.0.0.1:{web}/health/ready")
    connected = functools.partial(_ingest_connected, f"http://127.0.0.1:{metrics}/metrics")
    worker_log = root / "worker.log"
    with (
        running(serve, env, root / "serve.log", ready),
        running(
            [IOTDECK, "ingest"],
            env | {"IOTDECK_METRICS_PORT": str(metrics)},
            root / "ingest.log",
            connected,
        ),
        running(
            [IOTDECK, "worker"],
            env | {"IOTDECK_METRICS_PORT": str(working)},
            worker_log,
            lambda: "worker running" in worker_log.read_text(),
        ),
    ):
        yield f"127.0.0.1:{web}", f"127.0.0.1:{metrics}", f"127.0.0.1:{working}"


@contextmanager
def _subscribed(url: str, token: str) -> Iterator[ClientConnection]:
    """A GraphQL subscription left open (graphql_subscriptions_active counts it)."""
    ws_url = url.replace("http://", "ws://") + "/graphql"
    with connect(ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        )
        assert json.loads(ws.recv(10))["type"] == "connection_ack"
        query = "subscription { alertTriggered { id severity } }"
        ws.send(json.dumps({"type": "subscribe", "id": "1", "payload": {"query": query}}))
        yield ws


def _keep_busy(
    stop: Event, url: str, api: Api, clients: dict[str, mqtt.Client], admin: str
) -> None:
    """Rounds of device traffic, API calls and page loads until `stop`."""
    hot, damp, plain = clients

    def send(device: str, leaf: str, body: bytes | dict[str, Any]) -> None:
        payload = body if isinstance(body, bytes) else orjson.dumps(body)
        clients[device].publish(f"devices/{device}/{leaf}", payload, qos=1).wait_for_publish(5)

    for device in clients:
        send(device, "status", b"online")
    for _ in range(6):  # the sixth attempt is throttled (sign-in scope)
        api("mutation($e: String!) { login(email: $e, password: $e) { token } }", e=admin)
    api("{ noSuchField }")  # a GraphQL error
    commanded = False
    round_ = 0
    while not stop.wait(ROUND_SECONDS):
        high = (round_ // 4) % 2 == 0  # 2 s over the thresholds, 2 s back under them
        send(hot, "telemetry", {"temperature": 85.0 if high else 60.0})
        send(damp, "telemetry", {"humidity": 95.0 if high else 50.0, "temperature": 12.0})
        send(plain, "telemetry", {"temperature": 20.0 + round_ % 5})
        api.data("{ devices { id name status } }")
        if round_ % 10 == 1:  # refused whole: a malformed payload, an answer to no command
            send(plain, "telemetry", b"{not json")
            send(damp, "commands/ack", {"command_id": str(uuid.uuid4()), "status": "executed"})
        if round_ % 4 == 2:
            for page in ("/login", f"/devices/{plain}", "/no-such-page"):
                httpx.get(f"{url}{page}", timeout=10)
        if not commanded and round_ >= 2:  # `plain` is ONLINE by now: the dispatcher sends it
            api.data(
                'mutation($d: ID!) { sendCommand(input: {deviceId: $d, action: "reboot"}) { id } }',
                d=plain,
            )
            commanded = True
        round_ += 1


def _described(labels: dict[str, str]) -> str:
    """An ALERTS series as `Name (state) {its other labels}`."""
    name, state = labels.pop("alertname"), labels.pop("alertstate")
    labels.pop("__name__", None)
    return f"{name} ({state})" + (f" {labels}" if labels != {"severity": "none"} else "")


def _unmet(prometheus: Prometheus) -> list[str]:
    return [effect for effect in EFFECTS if not prometheus.query(effect)]


def _empty_panels(
    prometheus: Prometheus, start: float, end: float
) -> Iterator[tuple[PanelQuery, str]]:
    """Each panel query (and variable) that returns nothing drawable, and why."""
    builtins = builtin_values(
        scrape_seconds=SCRAPE_SECONDS, step_seconds=1, range_seconds=int(end - start) + 1
    )
    for dashboard in dashboards().values():
        values = builtins | variable_values(dashboard)
        checks = list(panel_queries(dashboard)) + [
            PanelQuery(dashboard["title"], f"variable ${name}", expr, instant=True)
            for name, expr in variable_queries(dashboard)
        ]
        for check in checks:
            try:
                expr = grafana_expr(check.expr, values)
                if check.instant:
                    result = prometheus.query(expr, at=end)
                else:
                    result = prometheus.query_range(expr, start, end, step=1)
            except (KeyError, ValueError) as error:
                yield check, str(error)
                continue
            if not has_data(result):
                yield check, "no data" if not result else f"only NaN in {len(result)} series"


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_every_dashboard_panel_shows_data_from_a_loaded_iotdeck(
    engine: Engine, database_url: str, mosquitto: IotdeckBroker, tmp_path: Path
) -> None:
    del engine  # the services below write through the process-wide engine it points
    admin_email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    with db.session_scope() as session:
        data = UserCreate(email=admin_email, password="x" * 12, role=Role.ADMIN)
        token = create_token(
            users.create_user(session=session, data=data), secret=SECRET, expire_hours=1
        )
        ids = [
            str(devices.create_device(session=session, data=DeviceCreate(name=name, type="t")).id)
            for name in ("boiler", "cellar", "porch")
        ]
    env = iotdeck_environment(
        IOTDECK_DATABASE_URL=database_url,
        IOTDECK_REDIS_URL=REDIS_URL,
        IOTDECK_MQTT_URL=mosquitto.url,
        IOTDECK_JWT_SECRET=SECRET,
        IOTDECK_DATA_DIR=str(tmp_path / "data"),
        IOTDECK_WEBHOOK_ALLOW_PRIVATE="true",  # the receiver listens on 127.0.0.1
        IOTDECK_BCRYPT_ROUNDS="4",
    )
    with ExitStack() as stack:
        receivers = Receivers()
        stack.callback(receivers.stop)
        serve, ingest, worker = stack.enter_context(_iotdeck(tmp_path, env))
        url = f"http://{serve}"
        targets = {
            "serve": [serve],
            "ingest": [ingest],
            "worker": [worker],
            "prometheus": ["self"],
        }
        prometheus = stack.enter_context(running_prometheus(tmp_path / "prometheus", targets))
        started = time.time()
        api = Api(url, token)
        hot, damp, _ = ids
        for rule in RULES:
            text = rule.format(hot=hot, damp=damp, webhook=receivers.url("/ops"))
            api.data(
                "mutation($e: String!) { createAlertRule(input: {expression: $e}) { id } }", e=text
            )
        clients = {device: connected_device(mosquitto, uuid.UUID(device)) for device in ids}
        for client in clients.values():
            stack.callback(client.loop_stop)
            stack.callback(client.disconnect)
        stack.enter_context(_subscribed(url, token))
        stop = Event()
        load = stack.enter_context(ThreadPoolExecutor(1)).submit(
            _keep_busy, stop, url, api, clients, admin_email
        )
        stack.callback(stop.set)  # unwound first: the executor then waits for a loop that ends
        with contextlib.suppress(AssertionError):  # what is still unmet is reported below
            wait_until(lambda: load.done() or not _unmet(prometheus), timeout=120, every=1)
        stop.set()
        load.result()  # the load's own failure, if any
        unmet = _unmet(prometheus)
        end = time.time()
        empty = [f"{check} -> {why}" for check, why in _empty_panels(prometheus, started, end)]
        # an alert on a name no process exposes could never fire
        unread = sorted(alert_metric_names() - prometheus.metric_names())
        # the Watchdog proves alerts.yml is evaluated; a healthy stack raises nothing else
        raised = prometheus.query("ALERTS", at=end)
        alerts = sorted(_described(alert["metric"]) for alert in raised)
    assert (unmet, empty, unread, alerts) == ([], [], [], ["Watchdog (firing)"]), "\n".join(
        [
            "load effects Prometheus never saw:",
            *unmet,
            "panels without data:",
            *empty,
            "metrics of alerts.yml nobody exposes:",
            *unread,
            "alerts raised:",
            *alerts,
        ]
    )
