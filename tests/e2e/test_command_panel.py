"""From a button on a device's page to an executed command, in Chromium against the real server.

An operator opens a thermostat that never connected and is told its commands would wait;
the device then connects and publishes a point (ONLINE, the hint goes), the operator
presses an offered action and sends it; the device, a paho client in this test, receives
it over MQTT and answers `acknowledged`, then `executed` with a result, and the status chip
follows each step without a reload. The stored command says EXECUTED over GraphQL.
"""

import queue
from collections.abc import Iterator
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from playwright.async_api import Page, expect

from tests.e2e.conftest import SCREENSHOTS, Server, device_login, graphql_as, sign_in

# a seeded thermostat (seeds/demo.json) no other browser test uses
WAREHOUSE = "6f1c2a8e-0c1b-4a51-9d1e-1a0000000003"
OPERATOR = "operator@example.com"
PUSH_MS = 5_000
RECEIVE_SECONDS = 10


class Thermostat:
    """The device's side: its MQTT 3.1.1 connection, the commands it got, its answers."""

    def __init__(self, broker_port: int, login: tuple[str, str]) -> None:
        self.received: queue.Queue[dict[str, Any]] = queue.Queue()
        self.configs: queue.Queue[dict[str, Any]] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.username_pw_set(*login)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker_port, keepalive=30)
        self.client.subscribe(f"devices/{WAREHOUSE}/commands", qos=1)
        self.client.subscribe(f"devices/{WAREHOUSE}/config", qos=1)
        self.client.loop_start()

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: Any) -> None:
        if message.topic.endswith("/config"):
            self.configs.put(orjson.loads(message.payload))
        else:
            self.received.put(orjson.loads(message.payload))

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        """Publish at QoS 1 and wait for the broker's acknowledgement."""
        self.client.publish(topic, orjson.dumps(payload), qos=1).wait_for_publish(5)

    def answer(self, command_id: str, status: str, **fields: Any) -> None:
        """Report on a command, as the MQTT contract says (devices/{id}/commands/ack)."""
        payload = {"command_id": command_id, "status": status, **fields}
        self.publish(f"devices/{WAREHOUSE}/commands/ack", payload)

    def close(self) -> None:
        """Disconnect cleanly."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def thermostat(server: Server, broker_port: int) -> Iterator[Thermostat]:
    """The warehouse thermostat, connected and listening for its commands."""
    device = Thermostat(broker_port, device_login(server, WAREHOUSE))
    yield device
    device.close()


def _stored(server: Server, command_id: str) -> dict[str, Any]:
    """The command as the server stores it, read back over GraphQL."""
    query = "query($id: ID!) { command(id: $id) { action params status result } }"
    return graphql_as(server, OPERATOR, query, id=command_id)["command"]


async def screenshot(page: Page, name: str, *, whole: bool = True) -> None:
    """The page from the top, whole; or just the window, where a dialog covers it."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    if whole:
        await page.evaluate("window.scrollTo(0, 0)")
    await page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=whole, animations="disabled")


async def test_command_button_to_executed_without_reload(
    page: Page, server: Server, thermostat: Thermostat
) -> None:
    await sign_in(page, server, OPERATOR)
    await page.goto(f"{server.url}/devices/{WAREHOUSE}")
    await expect(page.locator(".q-header").get_by_text("Live", exact=True)).to_be_visible()
    hint = page.get_by_text("commands wait until the device is online (or expire)")
    await expect(hint).to_be_visible()
    await expect(page.get_by_text("No commands sent to this device yet.")).to_be_visible()
    await screenshot(page, "60-command-panel-offline")
    await page.evaluate("window.__sameDocument = true")  # a reload would forget it

    # a point makes the device ONLINE: the hint goes by itself
    point = {"metrics": [{"name": "temperature", "value": 19.5, "unit": "°C"}]}
    thermostat.publish(f"devices/{WAREHOUSE}/telemetry", point)
    await expect(hint).to_be_hidden(timeout=PUSH_MS)

    card = page.get_by_role("button", name="Set temperature setpoint")
    await card.click()
    params = page.get_by_label("Params (JSON object)")
    await expect(params).to_have_value('{\n  "celsius": 21\n}')
    await params.fill('{"celsius": 22.5}')
    await page.get_by_role("button", name="Send command").click()
    await expect(page.get_by_text("Command “set_setpoint” queued")).to_be_visible()

    command = thermostat.received.get(timeout=RECEIVE_SECONDS)  # seed section 4.1's message
    assert (command["action"], command["params"]) == ("set_setpoint", {"celsius": 22.5})
    row = page.locator(f"tr[data-command-id='{command['command_id']}']")
    chip = row.locator("[data-command-status]")
    await expect(chip).to_have_attribute("data-command-status", "SENT", timeout=PUSH_MS)
    await expect(chip.get_by_text("Sent", exact=True)).to_be_visible()

    thermostat.answer(command["command_id"], "acknowledged")
    await expect(chip).to_have_attribute("data-command-status", "ACKNOWLEDGED", timeout=PUSH_MS)
    await expect(row.get_by_role("button", name="Cancel")).to_have_count(0)
    thermostat.answer(command["command_id"], "executed", result={"setpoint": 22.5})
    await expect(chip).to_have_attribute("data-command-status", "EXECUTED", timeout=PUSH_MS)
    await expect(chip.get_by_text("Executed", exact=True)).to_be_visible()
    await expect(row.get_by_text('{"setpoint": 22.5}')).to_be_visible()
    await expect(row.get_by_text("by Otto Operator")).to_be_visible()
    assert await page.evaluate("window.__sameDocument === true")
    await screenshot(page, "61-command-executed")

    stored = _stored(server, command["command_id"])
    assert stored == {
        "action": "set_setpoint",
        "params": {"celsius": 22.5},
        "status": "EXECUTED",
        "result": {"setpoint": 22.5},
    }


async def test_bad_params_are_refused_and_a_sent_command_is_cancelled(
    page: Page, server: Server, thermostat: Thermostat
) -> None:
    point = {"metrics": [{"name": "temperature", "value": 19.0, "unit": "°C"}]}
    thermostat.publish(f"devices/{WAREHOUSE}/telemetry", point)  # ONLINE: commands go out
    await sign_in(page, server, OPERATOR)
    await page.goto(f"{server.url}/devices/{WAREHOUSE}")
    await page.get_by_role("button", name="Reboot").click()
    params = page.get_by_label("Params (JSON object)")
    await params.fill('{"delay": 5,}')
    # shown while typing, before Send
    error = page.get_by_text("Params is not valid JSON: Expecting property name")
    await expect(error).to_be_visible()
    rows = page.locator("tr[data-command-id]")
    before = await rows.count()
    await page.get_by_role("button", name="Send command").click()
    await expect(error).to_be_visible()
    await screenshot(page, "62-command-params-error")
    assert await rows.count() == before

    await params.fill('{"delay": 5}')
    await expect(error).to_be_hidden()
    await page.get_by_role("button", name="Send command").click()
    command = thermostat.received.get(timeout=RECEIVE_SECONDS)
    assert (command["action"], command["params"]) == ("reboot", {"delay": 5})
    row = page.locator(f"tr[data-command-id='{command['command_id']}']")
    chip = row.locator("[data-command-status]")
    await expect(chip).to_have_attribute("data-command-status", "SENT", timeout=PUSH_MS)
    await row.get_by_role("button", name="Cancel").click()
    await expect(page.get_by_text("the device may still carry it out")).to_be_visible()
    await screenshot(page, "63-command-cancel-confirm", whole=False)
    await page.get_by_role("button", name="Cancel command").click()
    await expect(chip).to_have_attribute("data-command-status", "CANCELLED", timeout=PUSH_MS)
    await expect(row.get_by_text("cancelled by an operator")).to_be_visible()
    assert _stored(server, command["command_id"])["status"] == "CANCELLED"
    # the device answers anyway: too late, the command stays CANCELLED
    thermostat.answer(command["command_id"], "acknowledged")
    await page.wait_for_timeout(500)
    assert _stored(server, command["command_id"])["status"] == "CANCELLED"
    await expect(chip).to_have_attribute("data-command-status", "CANCELLED")
    await screenshot(page, "64-command-history")

    await page.get_by_role("button", name="Push a configuration").click()
    editor = page.get_by_label("Configuration (JSON object)")
    await editor.fill('{"interval": 30')
    await expect(page.get_by_text("Config is not valid JSON")).to_be_visible()
    await editor.fill('{"interval": 30}')
    await screenshot(page, "66-config-dialog", whole=False)
    await page.get_by_role("button", name="Push configuration").click()
    await expect(page.get_by_text("Configuration pushed")).to_be_visible()
    card = page.locator(".q-card", has_text="Configuration")
    await expect(card.get_by_text('"interval": 30')).to_be_visible()
    # the device gets it on its config topic (retained: also when it connects later)
    assert thermostat.configs.get(timeout=RECEIVE_SECONDS) == {"interval": 30}


async def test_viewer_sees_the_history_without_the_form(page: Page, server: Server) -> None:
    await sign_in(page, server, server.viewer_email)
    await page.goto(f"{server.url}/devices/{WAREHOUSE}")
    await expect(page.locator(".q-card", has_text="Commands").first).to_be_visible()
    await expect(page.get_by_text("Send a command")).to_have_count(0)
    await expect(page.get_by_role("button", name="Send command")).to_have_count(0)
    await expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    await expect(page.get_by_role("button", name="Push a configuration")).to_have_count(0)
    await expect(page.locator(".js-plotly-plot .scatterlayer .trace").first).to_be_attached()
    await screenshot(page, "65-command-history-viewer")
