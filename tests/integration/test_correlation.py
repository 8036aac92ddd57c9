"""One id from an MQTT message to the alert, the webhook and the command (SPEC 11, issue 14).

`iotdeck serve` as a subprocess writing JSON logs, a private Mosquitto, a real webhook
receiver. A rule with `notify webhook` and a `command` clause; one malformed and one
violating message published together, so they land in one ingest batch. The batch's id,
read off its log lines as an operator would, must be on every line the batch caused (the
rejection, the alert, the webhook attempt, the command's creation and publication), in the
webhook's X-Correlation-ID header, and on the alert and command rows. HTTP requests keep
a sane X-Request-ID or get a fresh one, and return it; a subscription has an id of its own.
"""

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

from app.core import db
from app.core.models import Alert, DeviceCommand
from bench.services import IotdeckBroker
from tests.e2e.conftest import running_server
from tests.integration.conftest import SERVER_SECRET, Publish
from tests.receivers import Receivers
from tests.serving import Log, graphql

TIMEOUT = 30.0
RULE = """rule "Boiler overheat"
  on device "{device}"
  when temperature > 80
  notify webhook "{webhook}"
  command set_fan {{"speed": 3}}
"""
CREATE_RULE = "mutation($e: String!) { createAlertRule(input: {expression: $e}) { id } }"
SEND = "mutation($input: SendCommandInput!) { sendCommand(input: $input) { id correlationId } }"
ALERTS = "query($d: ID!) { activeAlerts(deviceId: $d) { id correlationId } }"
COMMAND = "query($id: ID!) { command(id: $id) { correlationId } }"


def _row(model: type[Alert] | type[DeviceCommand], row_id: str) -> Any:
    with db.session_scope() as session:
        return session.get(model, uuid.UUID(row_id))


def test_one_id_follows_an_mqtt_batch_to_its_alert_webhook_and_command(
    *,
    database_url: str,
    accounts: tuple[str, str],
    mosquitto: IotdeckBroker,
    receivers: Receivers,
    publish: Publish,
    tmp_path: Path,
) -> None:
    token, device_id = accounts
    env = {
        "IOTDECK_DATABASE_URL": database_url,
        "IOTDECK_MQTT_URL": mosquitto.url,
        "IOTDECK_JWT_SECRET": SERVER_SECRET,
        "IOTDECK_DATA_DIR": str(tmp_path / "data"),
        "IOTDECK_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver listens on 127.0.0.1
        "IOTDECK_LOG_FORMAT": "json",
        # DEBUG: the line of every committed batch, and uvicorn's access lines
        "IOTDECK_LOG_LEVEL": "DEBUG",
        # the two messages, published one after the other, wait for each other in one batch
        "IOTDECK_INGEST_BATCH_MS": "1500",
    }
    log = Log(tmp_path / "serve.log")
    topic = f"devices/{device_id}/telemetry"
    with running_server(tmp_path, ["--host", "127.0.0.1"], env) as server:
        text = RULE.format(device=device_id, webhook=receivers.url("/hook"))
        graphql(server.url, token, CREATE_RULE, {}, e=text)
        log.one(lambda line: line["event"] == "rule engine: 1 enabled rule(s)")

        publish(topic, b"{not json")
        publish(topic, {"temperature": 85})

        # the operator's starting point: the rejected message's line, and its batch's
        rejected = log.one(lambda line: line["event"].startswith(f"rejected message on {topic}"))
        assert (rejected["level"], rejected["logger"]) == ("WARNING", "app.mqtt.ingest")
        assert rejected["device_id"] == device_id
        batch_id = rejected["correlation_id"]
        batch = log.one(lambda line: line["event"].startswith("batch of 2 message(s) committed"))
        assert batch["correlation_id"] == batch_id
        assert batch["event"].endswith("1 point(s) stored, 1 rejected")

        # everything the batch caused carries its id
        alert = log.one(
            lambda line: line["logger"] == "app.workers.evaluation" and "alert_id" in line
        )
        opened = "opened: rule Boiler overheat on device boiler-1 (temperature = 85.0)"
        assert alert["event"].endswith(opened)
        assert (alert["correlation_id"], alert["device_id"]) == (batch_id, device_id)
        alert_id = alert["alert_id"]
        sent = log.one(lambda line: line["event"].startswith(f"alert {alert_id}: webhook"))
        assert sent["event"].endswith(" sent (attempt 1)")
        assert (sent["correlation_id"], sent["alert_id"]) == (batch_id, alert_id)
        created = log.one(lambda line: line["logger"] == "app.services.commands")
        assert (created["correlation_id"], created["alert_id"]) == (batch_id, alert_id)
        command_id = created["command_id"]
        published = log.one(
            lambda line: (
                line["logger"] == "app.workers.command_dispatch"
                and line.get("command_id") == command_id
            )
        )
        assert (published["correlation_id"], published["device_id"]) == (batch_id, device_id)
        assert published["event"] == f"command {command_id} published to device {device_id}"
        # ...and no line about the alert or its command carries another id
        for caused in [*log.where(alert_id=alert_id), *log.where(command_id=command_id)]:
            assert caused["correlation_id"] == batch_id, caused

        [request] = receivers.at("/hook")
        assert request.headers["x-correlation-id"] == batch_id
        assert json.loads(request.body)["id"] == alert_id
        assert _row(Alert, alert_id).correlation_id == batch_id
        assert _row(DeviceCommand, command_id).correlation_id == batch_id
        # integrators read it over GraphQL too
        _, found = graphql(server.url, token, ALERTS, {}, d=device_id)
        assert found["activeAlerts"] == [{"id": alert_id, "correlationId": batch_id}]
        _, found = graphql(server.url, token, COMMAND, {}, id=command_id)
        assert found["command"]["correlationId"] == batch_id

        _http_requests_keep_or_get_their_ids(server.url, token, device_id, log)
        _a_subscription_has_its_own_id(server.url, token, log)


def _http_requests_keep_or_get_their_ids(url: str, token: str, device_id: str, log: Log) -> None:
    """X-Request-ID kept (and returned) when sane; the command sent stores and logs it."""
    command = {"deviceId": device_id, "action": "reboot"}
    answer, data = graphql(url, token, SEND, {"X-Request-ID": "abc"}, input=command)
    assert answer.headers["x-request-id"] == "abc"
    command_id = data["sendCommand"]["id"]
    assert data["sendCommand"]["correlationId"] == "abc"
    assert _row(DeviceCommand, command_id).correlation_id == "abc"
    created = log.one(lambda line: line.get("command_id") == command_id)
    assert (created["request_id"], created["correlation_id"]) == ("abc", "abc")
    access = log.one(
        lambda line: line["logger"] == "uvicorn.access" and line.get("request_id") == "abc"
    )
    assert "POST /graphql" in access["event"]
    # the device is online since its telemetry: the dispatcher sends it under the same id
    published = log.one(
        lambda line: (
            line["logger"] == "app.workers.command_dispatch"
            and line.get("command_id") == command_id
        )
    )
    assert published["correlation_id"] == "abc"

    fresh = [httpx.get(f"{url}/health/live", timeout=5).headers["x-request-id"] for _ in "ab"]
    refused = httpx.get(f"{url}/health/live", headers={"X-Request-ID": "no spaces, please"})
    for made in [*fresh, refused.headers["x-request-id"]]:
        assert len(made) == 32 and int(made, 16) >= 0
    assert fresh[0] != fresh[1]


def _a_subscription_has_its_own_id(url: str, token: str, log: Log) -> None:
    """Its start is logged with its operation name, its own id and the socket's request id."""
    ws_url = url.replace("http://", "ws://") + "/graphql"
    with connect(
        ws_url, subprotocols=["graphql-transport-ws"], additional_headers={"X-Request-ID": "ws-1"}
    ) as socket:  # type: ignore[list-item]
        assert socket.response is not None
        assert socket.response.headers["x-request-id"] == "ws-1"
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
        socket.send(json.dumps(init))
        assert json.loads(socket.recv(TIMEOUT))["type"] == "connection_ack"
        query = "subscription Watch { alertTriggered { id } }"
        socket.send(json.dumps({"type": "subscribe", "id": "1", "payload": {"query": query}}))
        started = log.one(lambda line: line["event"] == "subscription Watch started")
    assert (started["request_id"], started["operation"]) == ("ws-1", "Watch")
    assert started["correlation_id"] not in ("ws-1", None)
    ended = log.one(lambda line: line["event"] == "subscription Watch ended")
    assert ended["correlation_id"] == started["correlation_id"]
