"""The whole alerting path, from outside: `iotdeck serve` as a subprocess, real peers.

A rule created over GraphQL; violating telemetry published over MQTT to a private
Mosquitto; `alertTriggered` over a WebSocket; `activeAlerts`; the e-mail at an aiosmtpd
server; the signed webhook at a local HTTP receiver; a failing webhook retried and logged
on the alert while ingest carries on; acknowledge and resolve.
"""

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets

from bench.services import IotdeckBroker
from tests.e2e.conftest import running_server
from tests.integration.conftest import SERVER_SECRET, Publish
from tests.receivers import Mailbox, Receivers

WEBHOOK_SECRET = "the receivers' shared key"
TIMEOUT = 30.0
RULE = """rule "Boiler overheat"
  on device "{device}"
  when temperature > 80
  severity critical
  cooldown 1s
  message "{{device.name}}: {{value}}°C"
  notify email "ops@example.com", webhook "{ok}", webhook "{flaky}"
  clear when temperature < 70
"""
ALERT = (
    "id ruleId deviceId severity status title message metricName metricValue triggeredAt"
    " acknowledgedAt resolvedAt resolution"
)
NOTIFICATIONS = "notifications { channel target status attempts lastError }"
HISTORY = (
    'query($id: ID!) {{ alertHistory(deviceId: $id, from: "2000-01-01", to: "2100-01-01") '
    "{{ {fields} }} }}"
)
LATEST = (
    'query($id: ID!) { deviceLatestMetric(deviceId: $id, metricName: "temperature") { value } }'
)


class Api:
    """A plain GraphQL-over-HTTP client (httpx) for one signed-in user."""

    def __init__(self, url: str, token: str) -> None:
        self.url = f"{url}/graphql"
        self.headers = {"Authorization": f"Bearer {token}"}

    async def __call__(self, query: str, **variables: Any) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(
                self.url, json={"query": query, "variables": variables}, headers=self.headers
            )
        body = answer.json()
        assert "errors" not in body, body
        return body["data"]


@contextlib.asynccontextmanager
async def _subscription(url: str, token: str, query: str) -> AsyncIterator[asyncio.Queue]:
    """A graphql-transport-ws subscription whose results land in a queue."""
    ws_url = url.replace("http://", "ws://") + "/graphql"
    results: asyncio.Queue = asyncio.Queue()
    async with websockets.connect(ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"type": "subscribe", "id": "1", "payload": {"query": query}}))

        async def read() -> None:
            async for raw in ws:
                message = json.loads(raw)
                if message["type"] == "next":
                    await results.put(message["payload"])

        reader = asyncio.create_task(read())
        try:
            yield results
        finally:
            reader.cancel()


async def _eventually(check: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    """Await `check()` (sync or async) until it returns something truthy; return that."""
    async with asyncio.timeout(timeout):
        while True:
            found = check()
            found = await found if asyncio.iscoroutine(found) else found
            if found:
                return found
            await asyncio.sleep(0.1)


async def test_a_rule_catches_mqtt_telemetry_and_notifies_everyone(
    *,
    database_url: str,
    accounts: tuple[str, str],
    mosquitto: IotdeckBroker,
    smtp_server: Callable[..., tuple[Mailbox, int]],
    receivers: Receivers,
    publish: Publish,
    tmp_path: Path,
) -> None:
    token, device_id = accounts
    mailbox, smtp_port = smtp_server()
    receivers.script["/flaky"] = [500] * 100  # failing until the test lets it answer
    env = {
        "IOTDECK_DATABASE_URL": database_url,
        "IOTDECK_MQTT_URL": mosquitto.url,
        "IOTDECK_JWT_SECRET": SERVER_SECRET,
        "IOTDECK_DATA_DIR": str(tmp_path / "data"),
        "IOTDECK_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
        "IOTDECK_SMTP_FROM": "iotdeck@example.com",
        "IOTDECK_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "IOTDECK_NOTIFICATION_RETRY_SECONDS": "0.5",
        "IOTDECK_WEBHOOK_ALLOW_PRIVATE": "true",  # the receivers listen on 127.0.0.1
    }
    topic = f"devices/{device_id}/telemetry"
    with running_server(tmp_path, ["--host", "127.0.0.1"], env) as server:
        api = Api(server.url, token)
        text = RULE.format(device=device_id, ok=receivers.url("/ok"), flaky=receivers.url("/flaky"))
        created = await api(
            "mutation($e: String!) { createAlertRule(input: {expression: $e}) { id name } }",
            e=text,
        )
        rule_id = created["createAlertRule"]["id"]

        async with _subscription(
            server.url, token, f"subscription {{ alertTriggered {{ {ALERT} }} }}"
        ) as triggered:
            # the evaluator reloads its rules from the bus: publish until the rule catches one
            async def violate() -> None:
                while True:
                    await asyncio.to_thread(publish, topic, {"temperature": 85})
                    await asyncio.sleep(0.3)

            publishing = asyncio.create_task(violate())
            try:
                payload = await asyncio.wait_for(triggered.get(), TIMEOUT)
            finally:
                publishing.cancel()
        assert "errors" not in payload, payload
        alert = payload["data"]["alertTriggered"]
        assert (alert["ruleId"], alert["deviceId"]) == (rule_id, device_id)
        assert (alert["severity"], alert["status"], alert["title"]) == (
            "CRITICAL",
            "ACTIVE",
            "Boiler overheat",
        )
        assert alert["message"] == "boiler-1: 85°C"
        assert (alert["metricName"], alert["metricValue"]) == ("temperature", 85.0)

        active = (await api(f"{{ activeAlerts {{ {ALERT} }} }}"))["activeAlerts"]
        assert [a["id"] for a in active] == [alert["id"]]

        # the e-mail, at a real SMTP server
        await _eventually(lambda: mailbox.messages)
        [(sender, recipients, mail)] = mailbox.messages
        assert (sender, recipients) == ("iotdeck@example.com", ["ops@example.com"])
        assert "[CRITICAL]" in mail["Subject"] and "Boiler overheat" in mail["Subject"]
        assert "boiler-1: 85°C" in mail.get_content()

        # the webhook, signed with the shared key (checked here independently)
        [request] = await _eventually(lambda: receivers.at("/ok"))
        stamp = request.headers["x-iotdeck-timestamp"]
        digest = hmac.new(
            WEBHOOK_SECRET.encode(), stamp.encode() + b"." + request.body, hashlib.sha256
        ).hexdigest()
        assert hmac.compare_digest(request.headers["x-iotdeck-signature"], f"sha256={digest}")
        assert orjson.loads(request.body)["id"] == alert["id"]

        # the failing webhook is retried and each failure logged on the alert...
        async def flaky() -> dict[str, Any]:
            [found] = (await api(HISTORY.format(fields=f"id {NOTIFICATIONS}"), id=device_id))[
                "alertHistory"
            ]
            return {d["target"]: d for d in found["notifications"]}[receivers.url("/flaky")]

        failing = await _eventually(lambda: _failed_twice(flaky()))
        assert failing["status"] == "PENDING" and "500" in failing["lastError"]
        # ...while ingest carries on: a new point is stored and readable meanwhile
        await asyncio.to_thread(publish, topic, {"temperature": 65.5})
        await _eventually(lambda: _latest_is(api(LATEST, id=device_id), 65.5))
        receivers.script["/flaky"].clear()  # the receiver recovers: the next retry succeeds
        sent = await _eventually(lambda: _with_status(flaky(), "SENT"))
        assert sent["attempts"] >= 3 and "500" in sent["lastError"]

        # 65.5 < 70: `clear when` resolved it already; a second episode is acknowledged
        # and resolved by hand
        await _eventually(lambda: _no_active(api))
        await asyncio.to_thread(publish, topic, {"temperature": 90})
        [second] = await _eventually(lambda: _active(api))
        acknowledged = await api(
            f"mutation($id: ID!) {{ acknowledgeAlert(id: $id) {{ {ALERT} }} }}", id=second["id"]
        )
        assert acknowledged["acknowledgeAlert"]["status"] == "ACKNOWLEDGED"
        resolved = await api(
            f"mutation($id: ID!, $note: String) {{ resolveAlert(id: $id, message: $note) "
            f"{{ {ALERT} }} }}",
            id=second["id"],
            note="vent opened",
        )
        assert (resolved["resolveAlert"]["status"], resolved["resolveAlert"]["resolution"]) == (
            "RESOLVED",
            "vent opened",
        )
        assert await _no_active(api)
        history = await api(HISTORY.format(fields=ALERT), id=device_id)
        assert [(a["status"], a["resolution"]) for a in history["alertHistory"]] == [
            ("RESOLVED", "vent opened"),
            ("RESOLVED", "cleared by the rule"),
        ]


async def _failed_twice(delivery: Any) -> dict[str, Any] | None:
    found = await delivery
    return found if found["attempts"] >= 2 and found["lastError"] else None


async def _with_status(delivery: Any, status: str) -> dict[str, Any] | None:
    found = await delivery
    return found if found["status"] == status else None


async def _latest_is(answer: Any, value: float) -> bool:
    point = (await answer)["deviceLatestMetric"]
    return point is not None and point["value"] == value


async def _active(api: Api) -> list[dict[str, Any]]:
    return (await api(f"{{ activeAlerts {{ {ALERT} }} }}"))["activeAlerts"]


async def _no_active(api: Api) -> bool:
    return not await _active(api)
