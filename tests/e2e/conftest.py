"""End-to-end fixtures: the real `iotdeck serve` as a subprocess, Debian Chromium via Playwright."""

import functools
import re
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from playwright.async_api import Browser, Page, async_playwright

from bench.dashboard_viewers import CHROMIUM, CHROMIUM_ARGS  # Debian's, with our flags
from bench.services import free_port, iotdeck_environment
from tests.serving import IOTDECK, answers, running

VIEWPORT = {"width": 1280, "height": 800}
SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
ADMIN_PASSWORD = "e2e-admin-password"
BROKER_LINE = re.compile(r"embedded MQTT broker \(3\.1\.1\): mqtt://127\.0\.0\.1:(\d+)")


@dataclass(frozen=True)
class Server:
    """A running `iotdeck serve` and the demo accounts `iotdeck seed` created."""

    url: str
    env: dict[str, str] = field(default_factory=dict)  # its IOTDECK_* settings
    admin_email: str = "admin@example.com"
    viewer_email: str = "viewer@example.com"
    password: str = ADMIN_PASSWORD  # every demo account gets it: the fixture sets all three


@contextmanager
def running_server(root: Path, args: list[str], env: dict[str, str]) -> Iterator[Server]:
    """`iotdeck serve ARGS` on a free port in `root`, ready; terminated afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [IOTDECK, "serve", "--port", str(port), *args]
    ready = functools.partial(answers, f"{url}/health/ready")
    with running(command, iotdeck_environment(**env), root / "serve.log", ready):
        yield Server(url=url, env=env)


def server_environment(
    root: Path, *, password: str = ADMIN_PASSWORD, **overrides: str
) -> dict[str, str]:
    """The IOTDECK_* settings of a test server in `root`, with `overrides` on top.

    Its own SQLite database under `root`, one `password` for every demo account (so a test
    signs in as any of them) and cheap bcrypt (hashes at full cost would slow every sign-in).
    """
    return {
        "IOTDECK_DATA_DIR": str(root / "data"),
        "IOTDECK_DATABASE_URL": f"sqlite:///{root / 'data' / 'iotdeck.db'}",
        "IOTDECK_JWT_SECRET": "e2e-" + "k" * 44,
        "IOTDECK_ADMIN_PASSWORD": password,
        "IOTDECK_OPERATOR_PASSWORD": password,
        "IOTDECK_VIEWER_PASSWORD": password,
        "IOTDECK_BCRYPT_ROUNDS": "4",
    } | overrides


@contextmanager
def seeded_server(root: Path, args: list[str], env: dict[str, str]) -> Iterator[Server]:
    """`iotdeck seed`, then `iotdeck serve ARGS` as `running_server` starts it."""
    seed = [IOTDECK, "seed"]
    subprocess.run(seed, env=iotdeck_environment(**env), cwd=root, check=True, capture_output=True)
    with running_server(root, args, env) as server:
        yield server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A seeded database and `iotdeck serve` on a free port; killed after the session."""
    root = tmp_path_factory.mktemp("e2e-server")
    # the telemetry page test uploads a week of history at once (2,520 messages):
    # more than a device's default burst of 600
    env = server_environment(root, IOTDECK_DEVICE_RATE_BURST="5000")
    with seeded_server(root, [], env) as running:
        yield running


@pytest.fixture(scope="session")
def broker_port(server: Server, tmp_path_factory: pytest.TempPathFactory) -> int:
    """The embedded broker's port, read where `iotdeck serve` prints it (its log)."""
    del server  # started, so its log holds the line
    for log in tmp_path_factory.getbasetemp().glob("e2e-server*/serve.log"):
        if match := BROKER_LINE.search(log.read_text()):
            return int(match.group(1))
    raise AssertionError("iotdeck serve did not print its embedded broker's port")


def device_login(server: Server, device_id: str) -> tuple[str, str]:
    """A new password for a seeded device, as an admin issues it (`iotdeck device credentials`)."""
    done = subprocess.run(
        [IOTDECK, "device", "credentials", "--device", device_id, "--kind", "password"],
        env=iotdeck_environment(**server.env),
        capture_output=True,
        text=True,
        check=True,
    )
    password = re.search(r"password: (\S+)", done.stdout)
    assert password is not None, done.stdout
    return device_id, password.group(1)


@pytest.fixture
def connect_device(server: Server, broker_port: int) -> Iterator[Callable[..., mqtt.Client]]:
    """Connect as a seeded device (MQTT 3.1.1, its own password); disconnected after."""
    clients: list[mqtt.Client] = []

    def connect(device_id: str, *, will: bool = False) -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        client.username_pw_set(*device_login(server, device_id))
        if will:  # `offline` as its last will
            client.will_set(f"devices/{device_id}/status", b"offline", qos=1)
        client.connect("127.0.0.1", broker_port, keepalive=30)
        client.loop_start()
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's headless Chromium (Playwright never downloads a browser here)."""
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        await chromium.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh browser context (no cookies) at 1280x800."""
    context = await browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(10_000)
    yield await context.new_page()
    await context.close()


async def screenshot(page: Page, name: str) -> None:
    """Save a screenshot under tests/artifacts/screenshots/ (git-ignored)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / f"{name}.png", animations="disabled")


async def sign_in(page: Page, server: Server, email: str) -> None:
    """Sign in through the login page and wait for the devices list."""
    await page.goto(f"{server.url}/devices")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password", exact=True).fill(server.password)
    await page.get_by_label("Password", exact=True).press("Enter")
    await page.wait_for_url(f"{server.url}/devices")


def graphql_as(server: Server, email: str, query: str, **variables: Any) -> dict[str, Any]:
    """The `data` of `query` run by the demo account `email` (signed in over GraphQL)."""
    login = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"
    with httpx.Client(base_url=server.url, timeout=10) as client:
        signed = client.post(
            "/graphql", json={"query": login, "variables": {"e": email, "p": server.password}}
        ).json()
        token = signed["data"]["login"]["token"]
        answer = client.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {token}"},
        ).json()
    assert "errors" not in answer, answer
    return answer["data"]
