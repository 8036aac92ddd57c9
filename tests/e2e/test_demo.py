"""`iotdeck serve --demo` as a first-time user sees it: simulated devices, moving charts."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from tests.e2e.conftest import ADMIN_PASSWORD, Server, running_server, sign_in
from tests.e2e.test_telemetry_page import _chart, _full_screenshot, _tile, _trace_points

BOILER = "6f1c2a8e-0c1b-4a51-9d1e-1a0000000001"  # a seeded thermostat


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[Server]:
    """`iotdeck serve --demo` in an empty folder, as the README's first command runs it."""
    env = {"IOTDECK_ADMIN_PASSWORD": ADMIN_PASSWORD, "IOTDECK_BCRYPT_ROUNDS": "4"}
    with running_server(tmp_path, ["--demo"], env) as server:
        yield server


async def test_demo_devices_publish_and_their_charts_move(page: Page, demo_server: Server) -> None:
    await sign_in(page, demo_server, demo_server.admin_email)
    # the simulator brings every demo device online
    await expect(page.get_by_text("Online")).to_have_count(10, timeout=20_000)
    await page.get_by_text("Boiler room thermostat").click()
    await page.wait_for_url(f"{demo_server.url}/devices/{BOILER}")
    for metric in ("temperature", "humidity", "battery"):
        await expect(_tile(page, metric)).to_be_visible()
        await expect(
            _chart(page, metric).locator(".scatterlayer .trace path.js-line")
        ).to_have_count(1)
    before = await _trace_points(page, "temperature")
    handle = await _chart(page, "temperature").element_handle()
    # the page's refresh timer appends the simulator's new points without a reload
    await page.wait_for_function(
        "([gd, n]) => gd.data[gd.data.length - 1].x.length > n",
        arg=[handle, before],
        timeout=20_000,
    )
    await _full_screenshot(page, "30-demo-simulated-device")
