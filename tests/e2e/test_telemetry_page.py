"""The device page in Chromium: telemetry published over MQTT becomes tiles and live charts."""

import math
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
from playwright.async_api import Locator, Page, expect

from tests.e2e.conftest import SCREENSHOTS, Server, sign_in

# seeded devices (seeds/demo.json) that no other browser test publishes for
SERVER_ROOM = "6f1c2a8e-0c1b-4a51-9d1e-1a0000000002"
COLD_STORE = "6f1c2a8e-0c1b-4a51-9d1e-1a0000000004"
HISTORY_STEP = timedelta(minutes=4)  # 2,520 points in 7 days: the 7-day view must bucket


def _publish(client: mqtt.Client, topic: str, payload: object) -> mqtt.MQTTMessageInfo:
    return client.publish(topic, orjson.dumps(payload), qos=1)


def _telemetry(device: str, temperature: float, humidity: float, at: datetime | None) -> dict:
    metrics = [
        {"name": "temperature", "value": temperature, "unit": "°C"},
        {"name": "humidity", "value": humidity, "unit": "%"},
    ]
    payload: dict[str, object] = {"device_id": device, "metrics": metrics}
    if at is not None:
        payload["timestamp"] = at.isoformat()
    return payload


def _reading(at: datetime, step: int) -> tuple[float, float]:
    """A plausible server room: warmest mid-afternoon, drier when warmer, a little noise."""
    phase = math.cos(2 * math.pi * (at.hour + at.minute / 60 - 15) / 24)
    noise = random.Random(step).random() - 0.5
    return round(21.5 + 1.8 * phase + 0.6 * noise, 2), round(47 - 6 * phase + 2 * noise, 1)


def _publish_history(client: mqtt.Client, device: str, now: datetime) -> None:
    """A week of readings every 4 minutes, with past timestamps, oldest first."""
    steps = int(timedelta(days=7) / HISTORY_STEP)
    sent = []
    for step in range(steps, 0, -1):
        at = now - step * HISTORY_STEP
        payload = _telemetry(device, *_reading(at, step), at)
        sent.append(_publish(client, f"devices/{device}/telemetry", payload))
    for info in sent:
        info.wait_for_publish(30)


async def _full_screenshot(page: Page, name: str) -> None:
    """The whole page, from the top (a scrolled page would misplace the fixed header)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.evaluate("window.scrollTo(0, 0)")
    path: Path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=path, full_page=True, animations="disabled")


async def _reload_until_visible(page: Page, target: Locator, timeout: float = 15) -> None:
    """Reload a page that does not update by itself until `target` shows up."""
    deadline = time.monotonic() + timeout
    while not await target.is_visible():
        assert time.monotonic() < deadline, f"{target} not visible after {timeout} s"
        await page.reload()
        await page.wait_for_load_state("networkidle")


def _tile(page: Page, metric: str) -> Locator:
    return page.locator(f".nicegui-column[data-metric='{metric}']")


def _chart(page: Page, metric: str) -> Locator:
    return page.locator(f".js-plotly-plot[data-metric='{metric}']")


async def _trace_points(page: Page, metric: str) -> int:
    """How many points plotly.js holds in the chart's last trace (the value line)."""
    handle = await _chart(page, metric).element_handle()
    return await page.evaluate("(gd) => gd.data[gd.data.length - 1].x.length", handle)


async def test_device_page_shows_mqtt_telemetry_live(
    page: Page, server: Server, connect_device: Callable[..., mqtt.Client]
) -> None:
    device_client = connect_device(SERVER_ROOM)
    now = datetime.now(UTC)
    _publish_history(device_client, SERVER_ROOM, now)
    topic = f"devices/{SERVER_ROOM}/telemetry"
    # a live reading (no timestamp: the arrival time); it lands after the whole history
    temperature, humidity = _reading(now, 0)
    live = _telemetry(SERVER_ROOM, round(temperature + 0.05, 2), humidity, None)
    _publish(device_client, topic, live).wait_for_publish(5)

    await sign_in(page, server, server.admin_email)
    await page.goto(f"{server.url}/devices/{SERVER_ROOM}")
    tiles = _tile(page, "temperature")
    shown = f"{round(temperature + 0.05, 2):.6g}"
    await expect(tiles.get_by_text(shown, exact=True)).to_be_visible(timeout=20_000)
    await expect(tiles.get_by_text("°C", exact=True)).to_be_visible()
    await expect(_tile(page, "humidity").get_by_text(f"{humidity:.6g}", exact=True)).to_be_visible()
    for metric in ("humidity", "temperature"):
        # drawn: plotly's SVG holds a line path for the trace
        await expect(
            _chart(page, metric).locator(".scatterlayer .trace path.js-line")
        ).to_have_count(1)
    await expect(page.get_by_text("Time (UTC)").first).to_be_visible()
    before = await _trace_points(page, "temperature")
    assert 15 <= before <= 17  # an hour of 4-minute history plus the live reading

    newer = _telemetry(SERVER_ROOM, round(temperature + 0.35, 2), humidity - 0.5, None)
    _publish(device_client, topic, newer).wait_for_publish(5)
    shown = f"{round(temperature + 0.35, 2):.6g}"
    await expect(tiles.get_by_text(shown, exact=True)).to_be_visible()
    handle = await _chart(page, "temperature").element_handle()
    await page.wait_for_function(
        "([gd, n]) => gd.data[gd.data.length - 1].x.length === n", arg=[handle, before + 1]
    )
    await _full_screenshot(page, "20-device-telemetry")

    await page.get_by_role("button", name="7 d").click()
    await expect(page.get_by_text("15 min averages").first).to_be_visible()
    band = _chart(page, "temperature").locator(".scatterlayer .trace")
    await expect(band).to_have_count(3)  # max, min filled up to max, and the average
    assert 600 <= await _trace_points(page, "temperature") <= 2000
    await _full_screenshot(page, "21-device-telemetry-7d")

    await page.get_by_role("button", name="Custom").click()
    await page.get_by_label("From (UTC)").fill("2026-03-01T13:00")
    await page.get_by_label("To (UTC)").fill("2026-03-01T11:00")
    await page.get_by_role("button", name="Apply").click()
    await expect(page.get_by_text("From must be before “To”")).to_be_visible()
    await _full_screenshot(page, "22-device-telemetry-custom-error")


async def test_devices_list_shows_online_and_offline_devices(
    page: Page, server: Server, connect_device: Callable[..., mqtt.Client]
) -> None:
    device_client = connect_device(COLD_STORE)
    topic = f"devices/{COLD_STORE}/telemetry"
    _publish(device_client, topic, {"temperature": -18.5}).wait_for_publish(5)
    await sign_in(page, server, server.admin_email)
    await page.goto(f"{server.url}/devices/{COLD_STORE}")
    await expect(_tile(page, "temperature").get_by_text("-18.5")).to_be_visible()
    # the device says goodbye (as its last will would): OFFLINE, last seen unchanged
    device_client.publish(f"devices/{COLD_STORE}/status", b"offline", qos=1).wait_for_publish(5)

    await page.goto(f"{server.url}/devices")
    cold = page.locator("tr", has=page.get_by_role("link", name="Cold store thermostat"))
    await _reload_until_visible(page, cold.get_by_text("Offline"))
    await expect(cold.get_by_text("just now")).to_be_visible()
    await _full_screenshot(page, "23-devices-online-offline")

    await page.goto(f"{server.url}/devices/6f1c2a8e-0c1b-4a51-9d1e-1a0000000010")
    await expect(page.get_by_text("No telemetry yet")).to_be_visible()
    topic = "devices/6f1c2a8e-0c1b-4a51-9d1e-1a0000000010/telemetry"
    await expect(page.get_by_label("MQTT topic")).to_have_value(topic)
    await _full_screenshot(page, "24-device-no-telemetry")
