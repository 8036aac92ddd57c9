"""An admin issues a device's broker password in Chromium, the device logs in with it, then
the admin revokes it and the broker refuses the device (SPEC 8.1, the Credentials panel)."""

import threading

import orjson
import paho.mqtt.client as mqtt
from playwright.async_api import Page, expect

from tests.e2e.conftest import Server, screenshot, sign_in

# a seeded device (seeds/demo.json) no other browser test uses
LOBBY = "6f1c2a8e-0c1b-4a51-9d1e-1a0000000008"


def _connection_answer(port: int, username: str, password: str) -> str:
    """What the embedded broker answers this login (MQTT 3.1.1 CONNACK)."""
    answered = threading.Event()
    answer: list[str] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.username_pw_set(username, password)
    client.on_connect = lambda *args: (answer.append(str(args[3])), answered.set())
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert answered.wait(5), "no CONNACK"
        if answer[0] == "Success":
            body = orjson.dumps({"temperature": 21.5})
            client.publish(f"devices/{username}/telemetry", body, qos=1).wait_for_publish(5)
        return answer[0]
    finally:
        client.disconnect()
        client.loop_stop()


async def test_issue_a_password_log_in_with_it_then_revoke_it(
    page: Page, server: Server, broker_port: int
) -> None:
    await sign_in(page, server, server.admin_email)
    await page.goto(f"{server.url}/devices/{LOBBY}")
    panel = page.locator(".nicegui-card", has=page.get_by_text("Credentials", exact=True))
    await expect(page.get_by_text("No credentials: the device cannot connect")).to_be_visible()

    await page.get_by_role("button", name="Issue password").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog.get_by_text("New password for the device")).to_be_visible()
    await expect(dialog.get_by_text("will not be shown again")).to_be_visible()
    password = await dialog.get_by_label("Password", exact=True).input_value()
    assert await dialog.get_by_label("Username").input_value() == LOBBY
    await screenshot(page, "70-credentials-secret-once")
    await dialog.get_by_role("button", name="Done").click()
    await expect(dialog).to_be_hidden()
    await expect(panel.get_by_text("Password", exact=True)).to_be_visible()
    await screenshot(page, "71-credentials-panel")

    # the device logs in with what the page showed, and its point reaches the page
    assert _connection_answer(broker_port, LOBBY, password) == "Success"
    await expect(page.get_by_text("Online").first).to_be_visible(timeout=10_000)

    await page.get_by_role("button", name="Revoke all").click()
    await page.get_by_role("dialog").get_by_role("button", name="Revoke all").click()
    await expect(page.get_by_text("No credentials: the device cannot connect")).to_be_visible()
    assert _connection_answer(broker_port, LOBBY, password) == "Not authorized"
