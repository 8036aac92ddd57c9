"""The dashboard in a real browser: sign in, register a device, find it, open it."""

import re

from playwright.async_api import Page, expect

from tests.e2e.conftest import Server, screenshot, sign_in


async def test_admin_registers_a_device_and_finds_it(page: Page, server: Server) -> None:
    await page.goto(f"{server.url}/devices")
    await expect(page).to_have_url(re.compile(r"/login\?redirect_to=%2Fdevices$"))
    await expect(page.get_by_text("Sign in to the operator dashboard")).to_be_visible()
    await screenshot(page, "01-login")

    await page.get_by_label("Email").fill(server.admin_email)
    await page.get_by_label("Password", exact=True).fill("wrong password")
    await page.get_by_label("Password", exact=True).press("Enter")
    await expect(page.get_by_text("Invalid email or password")).to_be_visible()
    await screenshot(page, "01b-login-error")

    await page.get_by_label("Password", exact=True).fill(server.password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{server.url}/devices")
    await expect(page.get_by_role("link", name="Boiler room thermostat")).to_be_visible()
    await expect(page.get_by_text(re.compile(r"^1\u2013\d+ of \d+$"))).to_be_visible()
    await screenshot(page, "02-devices")

    await page.get_by_role("button", name="New device").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_label("Name").fill("Roof weather station")
    await dialog.get_by_label("Type").fill("weather_station")
    await dialog.get_by_label("Metadata (JSON object)").fill(
        '{\n  "site": "Lyon HQ",\n  "floor": 7,\n  "sensors": ["wind", "rain"]\n}'
    )
    await screenshot(page, "03-new-device-dialog")
    await dialog.get_by_role("button", name="Create device").click()
    await expect(page.get_by_text("Device “Roof weather station” created")).to_be_visible()
    await expect(dialog).to_be_hidden()

    await page.get_by_placeholder("Search by name or type").fill("roof")
    await expect(page.get_by_text("1\u20131 of 1")).to_be_visible()
    await expect(page.get_by_role("link", name="Boiler room thermostat")).to_be_hidden()
    await page.get_by_role("link", name="Roof weather station").click()

    await page.wait_for_url(re.compile(r"/devices/[0-9a-f-]{36}$"))
    device_id = page.url.rsplit("/", 1)[1]
    await expect(page.get_by_text(device_id)).to_be_visible()
    await expect(page.locator(".text-2xl", has_text="Roof weather station")).to_be_visible()
    await expect(page.get_by_text("weather_station", exact=True)).to_be_visible()
    await expect(page.get_by_text("Lyon HQ")).to_be_visible()
    await expect(page.get_by_text("never", exact=True)).to_be_visible()
    await expect(page.get_by_role("button", name="Edit")).to_be_visible()
    await screenshot(page, "04-device-detail")

    await page.get_by_role("link", name="Users").click()
    await page.wait_for_url(f"{server.url}/users")
    await expect(page.get_by_text("viewer@example.com")).to_be_visible()
    await screenshot(page, "05-users")


async def test_viewer_sees_a_read_only_dashboard(page: Page, server: Server) -> None:
    await sign_in(page, server, server.viewer_email)
    await expect(page.get_by_text("VIEWER", exact=True)).to_be_visible()
    await expect(page.get_by_role("link", name="Warehouse thermostat")).to_be_visible()
    await expect(page.get_by_role("button", name="New device")).to_have_count(0)
    await expect(page.get_by_role("link", name="Users")).to_have_count(0)
    await screenshot(page, "06-viewer-devices")

    await page.get_by_role("link", name="Warehouse thermostat").click()
    await expect(page.get_by_text("Villeurbanne depot")).to_be_visible()
    await expect(page.get_by_role("button", name="Edit")).to_have_count(0)
    await expect(page.get_by_role("button", name="Delete")).to_have_count(0)
    await screenshot(page, "07-viewer-device-detail")


async def test_admin_fixes_a_bad_edit_then_deletes_the_device(page: Page, server: Server) -> None:
    await sign_in(page, server, server.admin_email)
    await page.get_by_role("button", name="New device").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_label("Name").fill("Short-lived sensor")
    await dialog.get_by_label("Type").fill("thermostat")
    await dialog.get_by_role("button", name="Create device").click()
    await expect(dialog).to_be_hidden()
    await page.get_by_role("link", name="Short-lived sensor").click()
    await page.wait_for_url(re.compile(r"/devices/[0-9a-f-]{36}$"))

    await page.get_by_role("button", name="Edit").click()
    await dialog.get_by_label("Metadata (JSON object)").fill('{"site": "Lyon", }')
    await dialog.get_by_role("button", name="Save changes").click()
    await expect(dialog.get_by_text("Metadata is not valid JSON")).to_be_visible()
    await screenshot(page, "08-edit-dialog-error")
    await dialog.get_by_label("Metadata (JSON object)").fill('{"site": "Lyon"}')
    await dialog.get_by_role("button", name="Save changes").click()
    await expect(dialog).to_be_hidden()
    await expect(page.get_by_text("Lyon", exact=True)).to_be_visible()

    await page.get_by_role("button", name="Delete").click()
    await expect(dialog.get_by_text("Delete this device?")).to_be_visible()
    await screenshot(page, "09-delete-confirmation")
    await dialog.get_by_role("button", name="Delete device").click()
    await page.wait_for_url(f"{server.url}/devices")
    await expect(page.get_by_text("Device “Short-lived sensor” deleted")).to_be_visible()
    await expect(page.get_by_role("link", name="Short-lived sensor")).to_have_count(0)
    await screenshot(page, "10-after-delete")

    await page.goto(f"{server.url}/devices/not-a-device")
    await expect(page.get_by_text("Device not found")).to_be_visible()
    await screenshot(page, "11-device-not-found")
