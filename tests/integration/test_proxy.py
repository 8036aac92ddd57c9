"""deploy/caddy/Caddyfile, run by Debian's Caddy in front of a real `iotdeck serve` (plain
HTTP, Caddy its trusted proxy), as docker-compose.yml's `proxy` service runs it: plain HTTP
redirected, pages, GraphQL and both WebSockets through HTTPS, the session cookie Secure."""

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from bench.services import free_port, iotdeck_environment
from tests.caddy import CADDY, MISSING, Proxy, caddy, internal_root
from tests.certificates import server_files
from tests.serving import IOTDECK, answers, cookie_attributes, running

ADMIN_PASSWORD = "proxy-admin-password"
LOGIN = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"

pytestmark = pytest.mark.skipif(CADDY is None, reason=MISSING)
# the websockets client's default is 10 s; a busy CI machine (the demo simulating its fleet
# beside the tests) once took longer for a TLS handshake through Caddy
HANDSHAKE_TIMEOUT = 30


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a demo `iotdeck serve` that believes forwarded headers from 127.0.0.1."""
    root = tmp_path_factory.mktemp("proxied-app")
    port = free_port()
    env = iotdeck_environment(
        IOTDECK_DATA_DIR=str(root / "data"),
        IOTDECK_MQTT_EMBEDDED_PORT="0",
        IOTDECK_BCRYPT_ROUNDS="4",
        IOTDECK_ADMIN_PASSWORD=ADMIN_PASSWORD,
        IOTDECK_TRUSTED_PROXIES="127.0.0.1",
    )
    command = [IOTDECK, "serve", "--demo", "--no-ingest", "--port", str(port)]
    live = f"http://127.0.0.1:{port}/health/live"
    with running(command, env, root / "serve.log", lambda: answers(live)):
        yield f"127.0.0.1:{port}"


@pytest.fixture(params=["internal CA", "own certificate"])
def proxy(request: pytest.FixtureRequest, tmp_path: Path, upstream: str) -> Iterator[Proxy]:
    """Caddy as compose runs it (SITE_TLS unset: its own CA) or with mounted PEM files."""
    if request.param == "internal CA":
        root_file, site_tls = internal_root(tmp_path), None
    else:
        files = server_files(tmp_path / "tls")
        root_file, site_tls = files.ca, f"{files.certificate} {files.key}"
    with caddy(tmp_path, upstream, site_tls, root_file) as running_proxy:
        yield running_proxy


def test_plain_http_is_redirected_to_https(proxy: Proxy) -> None:
    target = "/login?redirect_to=%2Falerts"
    answer = httpx.get(f"{proxy.http}{target}")
    assert answer.status_code in {301, 308}
    assert answer.headers["location"] == f"{proxy.https}{target}"
    followed = httpx.get(f"{proxy.http}{target}", verify=proxy.trusted, follow_redirects=True)
    assert followed.status_code == 200 and str(followed.url) == f"{proxy.https}{target}"


def test_pages_graphql_and_websockets_go_through_https(proxy: Proxy) -> None:
    page = httpx.get(f"{proxy.https}/login", verify=proxy.trusted)
    assert page.status_code == 200 and "Sign in" in page.text
    # iotdeck spoke plain HTTP to Caddy; Caddy's X-Forwarded-Proto makes the cookie Secure
    assert {"secure", "httponly", "samesite=lax"} <= cookie_attributes(page.headers["set-cookie"])

    variables = {"e": "admin@example.com", "p": ADMIN_PASSWORD}
    answer = httpx.post(
        f"{proxy.https}/graphql",
        json={"query": LOGIN, "variables": variables},
        verify=proxy.trusted,
    ).json()
    token = answer["data"]["login"]["token"]

    wss = proxy.https.replace("https://", "wss://")
    # as a browser on the proxied site connects: its Origin is the HTTPS address
    with connect(
        f"{wss}/graphql",
        ssl=proxy.trusted,
        origin=proxy.https,  # type: ignore[arg-type]
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        open_timeout=HANDSHAKE_TIMEOUT,
    ) as socket:
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
        socket.send(json.dumps(init))
        assert json.loads(socket.recv(timeout=10)) == {"type": "connection_ack"}

    nicegui = f"{wss}/_nicegui_ws/socket.io/?EIO=4&transport=websocket"
    with connect(
        nicegui,
        ssl=proxy.trusted,
        origin=proxy.https,  # type: ignore[arg-type]
        open_timeout=HANDSHAKE_TIMEOUT,
    ) as socket:
        opened = socket.recv(timeout=10)  # engine.io's open packet: "0" and the session
        assert isinstance(opened, str) and opened.startswith("0")
        assert "sid" in json.loads(opened[1:])
