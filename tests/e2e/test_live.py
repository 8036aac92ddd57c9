"""Live dashboard in Chromium: MQTT traffic reaches open pages without a reload."""

from collections.abc import Callable
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from playwright.async_api import Page, expect

from tests.e2e.conftest import SCREENSHOTS, Server, sign_in

# seeded devices (seeds/demo.json) no other browser test publishes for
OPEN_SPACE = "6f1c2a8e-0c1b-4a51-9d1e-1a0000000005"
MEETING_ROOM = "6f1c2a8e-0c1b-4a51-9d1e-1a0000000006"
PUSH_MS = 2_000  # a pushed point must show within this, with no reload and no 30 s refresh
_NO_RELOAD = "window.__sameDocument === true"


@pytest.fixture
def open_space(connect_device: Callable[..., mqtt.Client]) -> mqtt.Client:
    """The open-space sensor, connected."""
    return connect_device(OPEN_SPACE)


def _send(client: mqtt.Client, device_id: str, co2: float) -> None:
    payload = {"metrics": [{"name": "co2", "value": co2, "unit": "ppm"}]}
    client.publish(f"devices/{device_id}/telemetry", orjson.dumps(payload), qos=1).wait_for_publish(
        5
    )


async def _screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.evaluate("window.scrollTo(0, 0)")
    path: Path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=path, full_page=True, animations="disabled")


async def _points(page: Page) -> int:
    chart = page.locator(".js-plotly-plot[data-metric='co2']")
    return await chart.evaluate("(gd) => gd.data[gd.data.length - 1].x.length")


async def test_device_chart_gains_a_point_published_over_mqtt_without_reload(
    page: Page, server: Server, open_space: mqtt.Client
) -> None:
    _send(open_space, OPEN_SPACE, 612)
    await sign_in(page, server, server.admin_email)
    await page.goto(f"{server.url}/devices/{OPEN_SPACE}")
    tile = page.locator(".nicegui-column[data-metric='co2']")
    await expect(tile.get_by_text("612", exact=True)).to_be_visible()
    await expect(page.locator(".js-plotly-plot[data-metric='co2'] path.js-line")).to_have_count(1)
    header = page.locator(".q-header")
    await expect(header.get_by_text("Live", exact=True)).to_be_visible()
    await expect(header.get_by_text("Offline", exact=True)).to_be_hidden()
    await page.evaluate("window.__sameDocument = true")  # a reload would forget it
    before = await _points(page)

    for step, value in enumerate((640, 655, 671), start=1):
        _send(open_space, OPEN_SPACE, value)
        chart = await page.locator(".js-plotly-plot[data-metric='co2']").element_handle()
        await page.wait_for_function(
            "([gd, n]) => gd.data[gd.data.length - 1].x.length === n",
            arg=[chart, before + step],
            timeout=PUSH_MS,
        )
        await expect(tile.get_by_text(str(value), exact=True)).to_be_visible(timeout=PUSH_MS)
    assert await page.evaluate(_NO_RELOAD)
    assert await _points(page) == before + 3
    await _screenshot(page, "40-live-device")


async def test_last_will_flips_the_badge_on_the_devices_list(
    page: Page, server: Server, connect_device: Callable[..., mqtt.Client]
) -> None:
    device = connect_device(MEETING_ROOM, will=True)
    _send(device, MEETING_ROOM, 480)  # telemetry brings it online
    await sign_in(page, server, server.admin_email)
    row = page.locator("tr", has=page.get_by_role("link", name="Meeting room air quality"))
    await expect(row.get_by_text("Online")).to_be_visible()
    await expect(page.locator(".q-header").get_by_text("Live", exact=True)).to_be_visible()
    await page.evaluate("window.__sameDocument = true")

    # the device dies: its socket closes with no DISCONNECT, so the broker sends its will
    device.loop_stop()
    sock = device.socket()
    assert sock is not None
    sock.close()
    await expect(row.get_by_text("Offline")).to_be_visible(timeout=5_000)
    await expect(row.get_by_text("just now")).to_be_visible()
    assert await page.evaluate(_NO_RELOAD)
    await _screenshot(page, "41-live-list")


async def test_indicator_turns_grey_when_the_socket_drops(page: Page, server: Server) -> None:
    await sign_in(page, server, server.admin_email)
    header = page.locator(".q-header")
    await expect(header.get_by_text("Live", exact=True)).to_be_visible()
    await page.wait_for_function("window.iotdeckSocketHook === true")  # sent on connect
    await page.evaluate("window.socket.disconnect()")  # what a network outage does
    await expect(header.get_by_text("Offline", exact=True)).to_be_visible()
    await expect(header.get_by_text("Live", exact=True)).to_be_hidden()
    await _screenshot(page, "42-live-offline")
    await page.evaluate("window.socket.connect()")
    await expect(header.get_by_text("Live", exact=True)).to_be_visible()
