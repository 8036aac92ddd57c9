"""`iotdeck serve --demo` as a first-time user sees it: simulated devices, moving charts."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from tests.e2e.conftest import ADMIN_PASSWORD, Server, _free_port, _wait_ready, sign_in
from tests.e2e.test_telemetry_page import _chart, _full_screenshot, _tile, _trace_points

BOILER = "6f1c2a8e-0c1b-4a51-9d1e-1a0000000001"  # a seeded thermostat


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[Server]:
    """`iotdeck serve --demo` in an empty folder, as the README's first command runs it."""
    dropped = ("IOTDECK_", "NICEGUI_", "PYTEST_")
    env = {key: value for key, value in os.environ.items() if not key.startswith(dropped)}
    env |= {"IOTDECK_ADMIN_PASSWORD": ADMIN_PASSWORD, "IOTDECK_BCRYPT_ROUNDS": "4"}
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "iotdeck"), "serve", "--demo", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, log)
        yield Server(url=url)
    finally:
        process.terminate()
        process.wait(timeout=30)


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
