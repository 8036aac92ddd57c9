"""An admin issues a device's broker password in Chromium, the device logs in with it, then
the admin revokes it and the broker refuses the device (SPEC 8.1, the Credentials panel)."""

import orjson
from playwright.async_api import Page, expect

from app.mqtt.connection import BrokerAddress
from bench.services import connection_result
from tests.e2e.conftest import Server, screenshot, sign_in
from tests.firmware import connected

# a seeded device (seeds/demo.json) no other browser test uses
LOBBY = "6f1c2a8e-0c1b-4a51-9d1e-1a0000000008"


def _publish_as(login: BrokerAddress) -> None:
    """Log in as the device and publish one point, acknowledged by the broker."""
    client = connected(login, f"device-{login.username}")
    try:
        body = orjson.dumps({"temperature": 21.5})
        client.publish(f"devices/{login.username}/telemetry", body, qos=1).wait_for_publish(5)
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
    login = BrokerAddress(
        "127.0.0.1", broker_port, username=LOBBY, password=password, protocol="3.1.1"
    )
    assert await dialog.get_by_label("Username").input_value() == LOBBY
    await screenshot(page, "70-credentials-secret-once")
    await dialog.get_by_role("button", name="Done").click()
    await expect(dialog).to_be_hidden()
    await expect(panel.get_by_text("Password", exact=True)).to_be_visible()
    await screenshot(page, "71-credentials-panel")

    # the device logs in with what the page showed, and its point reaches the page
    _publish_as(login)
    await expect(page.get_by_text("Online").first).to_be_visible(timeout=10_000)

    await page.get_by_role("button", name="Revoke all").click()
    await page.get_by_role("dialog").get_by_role("button", name="Revoke all").click()
    await expect(page.get_by_text("No credentials: the device cannot connect")).to_be_visible()
    assert connection_result(login) == "Not authorized"
