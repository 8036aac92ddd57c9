"""Signing in with Chromium over HTTPS: to `serve --certfile/--keyfile` itself, and through
deploy/caddy/Caddyfile in front of a plain-HTTP `serve`. The session cookie the browser
keeps is Secure, HttpOnly and SameSite=Lax, and it carries the session back."""

import ssl
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from bench.services import free_port, iotdeck_environment
from tests.caddy import CADDY, MISSING, caddy, internal_root
from tests.certificates import server_files
from tests.e2e.conftest import ADMIN_PASSWORD, VIEWPORT, Server, sign_in
from tests.serving import IOTDECK, answers, running

SETTINGS = {
    "IOTDECK_MQTT_EMBEDDED_PORT": "0",
    "IOTDECK_BCRYPT_ROUNDS": "4",
    "IOTDECK_ADMIN_PASSWORD": ADMIN_PASSWORD,
}


def _own_tls(stack: ExitStack, root: Path, command: list[str], port: int) -> str:
    """`command` with a certificate of its own; its HTTPS address once it answers."""
    files = server_files(root / "tls")
    command = [*command, "--certfile", str(files.certificate), "--keyfile", str(files.key)]
    url = f"https://127.0.0.1:{port}"
    trusted = ssl.create_default_context(cafile=files.ca)
    env = iotdeck_environment(**SETTINGS, IOTDECK_DATA_DIR=str(root / "data"))
    stack.enter_context(
        running(command, env, root / "serve.log", lambda: answers(f"{url}/health/live", trusted))
    )
    return url


def _behind_caddy(stack: ExitStack, root: Path, command: list[str], port: int) -> str:
    """`command` on plain HTTP with Caddy in front (its own CA); Caddy's HTTPS address."""
    env = iotdeck_environment(
        **SETTINGS, IOTDECK_DATA_DIR=str(root / "data"), IOTDECK_TRUSTED_PROXIES="127.0.0.1"
    )
    plain = f"http://127.0.0.1:{port}/health/live"
    stack.enter_context(running(command, env, root / "serve.log", lambda: answers(plain)))
    proxy = stack.enter_context(caddy(root, f"127.0.0.1:{port}", None, internal_root(root)))
    return proxy.https


@pytest.fixture(params=["serve's own TLS", "behind Caddy"])
def https_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """A demo `iotdeck serve` that the browser reaches over HTTPS, one way or the other."""
    if request.param == "behind Caddy" and CADDY is None:
        pytest.skip(MISSING)
    port = free_port()
    command = [IOTDECK, "serve", "--demo", "--no-ingest", "--port", str(port)]
    start = _own_tls if request.param == "serve's own TLS" else _behind_caddy
    with ExitStack() as stack:
        yield Server(url=start(stack, tmp_path, command, port))


async def test_signs_in_over_https_and_keeps_a_secure_session_cookie(
    browser: Browser, https_server: Server
) -> None:
    # the test's CA is not Chromium's; httpx checks the certificates in the other tests
    context = await browser.new_context(viewport=VIEWPORT, ignore_https_errors=True)
    context.set_default_timeout(10_000)
    page = await context.new_page()
    try:
        # the sign-in button works over NiceGUI's WebSocket; /devices needs the cookie back
        await sign_in(page, https_server, https_server.admin_email)
        session = [cookie for cookie in await context.cookies() if cookie["name"] == "session"]
        assert len(session) == 1
        assert session[0]["secure"] is True
        assert session[0]["httpOnly"] is True
        assert session[0]["sameSite"] == "Lax"
        await page.reload()  # still signed in: the Secure cookie comes back over HTTPS
        await expect(page).to_have_url(f"{https_server.url}/devices")
    finally:
        await context.close()
