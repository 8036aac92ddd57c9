"""Webhooks never reach loopback, private, link-local or metadata addresses (SPEC 8.2).

Refused when the rule is saved (over GraphQL, naming the field), and again when the
webhook is sent, with a stored reason that tells a VIEWER nothing about the network.
Real pieces throughout: the GraphQL app on this test's database, the system resolver
(`localhost` comes from the hosts file), a local receiver that must get nothing, the
dispatcher. Only DNS answers that change over time (rebinding) come from a resolver the
sender is given, since no real name can be made to do that here.
"""

import asyncio
import base64
import logging
import ssl
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from app.core import db
from app.core.auth import create_token
from app.core.config import Settings, get_settings
from app.core.models import DeviceCreate, NotificationDelivery, Role, UserCreate, utcnow
from app.core.outbound import IPAddress
from app.services import alerts, devices, notifications, rules, users
from app.services.notifications import Backoff
from app.services.rules import RuleInput
from app.workers.notifications import Dispatcher, Sender, WebhookSender
from bench.services import free_port
from rules.parser import parse_rule
from tests.certificates import server_files
from tests.integration.graphql.client import SECRET, GraphQLClient, build_app, make_settings
from tests.receivers import Receivers
from tests.waiting import wait_until

KEY = b"the receivers' key"
REFUSED = "refused: the address is not public"
CREATE = "mutation($e: String!) { createAlertRule(input: {expression: $e}) { id expression } }"
UPDATE = (
    "mutation($id: ID!, $e: String!) "
    "{ updateAlertRule(input: {id: $id, expression: $e}) { id expression } }"
)
RULES = "{ alertRules { id expression } }"
ACTIVE = "{ activeAlerts { id notifications { target status attempts lastError } } }"


def rule_text(*webhooks: str) -> str:
    notify = ", ".join(f'webhook "{url}"' for url in webhooks)
    return f'rule "Overheat" when temperature > 30 notify email "ops@example.com", {notify}'


def allow_private(monkeypatch: pytest.MonkeyPatch, allowed: bool) -> None:
    """Set IOTDECK_WEBHOOK_ALLOW_PRIVATE for the process-wide settings the rule service reads."""
    monkeypatch.setenv("IOTDECK_WEBHOOK_ALLOW_PRIVATE", "true" if allowed else "false")
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def guarded(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The guard as shipped: private targets not allowed."""
    allow_private(monkeypatch, False)
    yield
    get_settings.cache_clear()


@pytest.fixture
def tokens(engine: Engine) -> dict[Role, str]:
    """An OPERATOR's and a VIEWER's tokens."""
    del engine
    made: dict[Role, str] = {}
    with db.session_scope() as session:
        for role in (Role.OPERATOR, Role.VIEWER):
            data = UserCreate(
                email=f"{role.lower()}@example.com", password="x" * 12, role=role, name=role
            )
            user = users.create_user(session=session, data=data)
            made[role] = create_token(user, secret=SECRET, expire_hours=1)
    return made


@pytest.fixture
async def api(database_url: str, engine: Engine) -> AsyncIterator[GraphQLClient]:
    """A GraphQL client of the app on this test's database."""
    del engine
    transport = httpx.ASGITransport(build_app(make_settings(database_url)))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield GraphQLClient(http)


# --- at save ------------------------------------------------------------------------------

REFUSED_AT_SAVE = [
    ("http://127.0.0.1:6379/", "webhook http://127.0.0.1:6379/ is a loopback address"),
    (
        "http://169.254.169.254/latest/meta-data/",
        "webhook http://169.254.169.254/... is a cloud metadata address",
    ),
    ("http://10.0.0.5/", "webhook http://10.0.0.5/ is a private address"),
    ("https://[::1]:5432/", "webhook https://[::1]:5432/ is a loopback address"),
    ("http://localhost:5432/", "webhook http://localhost:5432/ resolves to a loopback address"),
    ("http://2130706433:6379/", "webhook http://2130706433:6379/ is a loopback address"),
    ("http://[::ffff:127.0.0.1]/x", "webhook http://[::ffff:127.0.0.1]/... is a loopback address"),
    (
        "https://u:k@100.64.0.1/",
        "webhook https://100.64.0.1/ is a shared (carrier-grade NAT) address",
    ),
]


async def test_non_public_webhooks_are_refused_at_save_naming_the_field(
    api: GraphQLClient, tokens: dict[Role, str]
) -> None:
    operator = tokens[Role.OPERATOR]
    for url, message in REFUSED_AT_SAVE:
        error = await api.error(CREATE, {"e": rule_text(url)}, token=operator)
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "expression"}, url
        assert error["message"] == f"expression: {message}"
    # what a name resolves to is not told: only that it is not public
    localhost = await api.error(CREATE, {"e": rule_text("http://localhost/")}, token=operator)
    assert "127.0.0.1" not in localhost["message"] and "::1" not in localhost["message"]
    assert (await api.data(RULES, token=operator))["alertRules"] == []  # nothing stored


async def test_public_addresses_and_names_not_resolving_yet_are_saved(
    api: GraphQLClient, tokens: dict[Role, str]
) -> None:
    text = rule_text(
        "http://93.184.216.34/hook",  # a public literal: no DNS needed
        "https://[2606:2800:220:1:248:1893:25c8:1946]:8443/hook",
        # no such name (yet): accepted, the send-time check decides on its addresses then
        "https://hooks.not-yet.invalid/hook",
    )
    created = (await api.data(CREATE, {"e": text}, token=tokens[Role.OPERATOR]))["createAlertRule"]
    assert created["expression"] == text


async def test_a_rule_rewritten_to_a_private_webhook_is_refused_and_kept(
    api: GraphQLClient, tokens: dict[Role, str]
) -> None:
    operator = tokens[Role.OPERATOR]
    good = rule_text("http://93.184.216.34/hook")
    rule = (await api.data(CREATE, {"e": good}, token=operator))["createAlertRule"]
    bad = rule_text("http://93.184.216.34/hook", "http://192.168.1.20:8080/")
    error = await api.error(UPDATE, {"id": rule["id"], "e": bad}, token=operator)
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "expression"}
    assert error["message"] == (
        "expression: webhook http://192.168.1.20:8080/ is a private address"
    )
    assert (await api.data(RULES, token=operator))["alertRules"] == [rule]


async def test_allow_private_lets_on_premise_receivers_be_saved(
    api: GraphQLClient, tokens: dict[Role, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    allow_private(monkeypatch, True)
    text = rule_text("http://127.0.0.1:9000/hook", "http://localhost:9000/hook")
    created = (await api.data(CREATE, {"e": text}, token=tokens[Role.OPERATOR]))["createAlertRule"]
    assert created["expression"] == text
    # a URL that is wrong in itself stays wrong
    broken = await api.error(
        CREATE, {"e": rule_text("http://127.0.0.1:99999/")}, token=tokens[Role.OPERATOR]
    )
    assert broken["message"] == (
        "expression: webhook http://127.0.0.1:99999/ has a port out of range"
    )


# --- at send ------------------------------------------------------------------------------


def alert_notifying(engine: Engine, *urls: str) -> uuid.UUID:
    """A fired alert of a rule (saved through the service) with a delivery per URL."""
    with Session(engine, expire_on_commit=False) as session:
        device = devices.create_device(
            session=session, data=DeviceCreate(name="boiler", type="thermostat")
        )
        notify = ", ".join(f'webhook "{url}"' for url in urls)
        text = f'rule "Overheat" when temperature > 30 notify {notify}'
        stored = rules.create_rule(session=session, data=RuleInput(expression=text))
        alert = alerts.open_alert(session=session, rule=stored, device_id=device.id, at=utcnow())
        assert alert is not None
        notifications.schedule(session, alert=alert, notify=parse_rule(stored.expression).notify)
        session.commit()
        return alert.id


def deliveries(engine: Engine, alert_id: uuid.UUID) -> dict[str, NotificationDelivery]:
    with Session(engine) as session:
        return {d.target: d for d in notifications.deliveries_for_alert(session, alert_id)}


async def settled(engine: Engine, alert_id: uuid.UUID) -> dict[str, NotificationDelivery]:
    """The alert's deliveries once none is PENDING (waited for off the event loop)."""

    def done() -> dict[str, NotificationDelivery] | None:
        found = deliveries(engine, alert_id)
        return found if all(d.status != "PENDING" for d in found.values()) else None

    return await asyncio.to_thread(wait_until, done, 15.0)  # type: ignore[return-value]


@asynccontextmanager
async def running(dispatcher: Dispatcher) -> AsyncIterator[Dispatcher]:
    task = asyncio.create_task(dispatcher.run())
    try:
        yield dispatcher
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def dispatcher_for(senders: dict[str, Sender]) -> Dispatcher:
    backoff = Backoff(base=0.2, max_attempts=2)
    return Dispatcher(senders, timeout=5.0, backoff=backoff, poll_seconds=0.05)


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, jwt_secret=SECRET, webhook_secret=KEY.decode(), **values)  # type: ignore[call-arg]


async def test_a_target_saved_while_allowed_is_refused_at_send_and_viewers_learn_nothing(
    *,
    engine: Engine,
    receivers: Receivers,
    api: GraphQLClient,
    tokens: dict[Role, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # saved while the switch was on (or while the name pointed elsewhere); off when sending
    allow_private(monkeypatch, True)
    port = receivers.server.server_address[1]
    direct, by_name = receivers.url("/hook?token=s3cret"), f"http://localhost:{port}/hook"
    alert_id = alert_notifying(engine, direct, by_name)
    dispatcher = Dispatcher.from_settings(
        settings(webhook_allow_private=False, notification_retry_seconds=0.2), poll_seconds=0.05
    )
    with caplog.at_level(logging.WARNING, logger="app.workers.notifications"):
        async with running(dispatcher):
            found = await settled(engine, alert_id)
    assert receivers.received == []  # nothing reached the receiver
    for delivery in found.values():
        # permanent: the same address would be refused again
        assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("FAILED", 1, None)
        assert delivery.last_error == REFUSED
    shown = (await api.data(ACTIVE, token=tokens[Role.VIEWER]))["activeAlerts"]
    errors = [n["lastError"] for n in shown[0]["notifications"]]
    assert errors == [REFUSED, REFUSED]
    assert not any(secret in e for e in errors for secret in ("127.0.0.1", str(port), "Errno"))
    # operators find the host and the address in the log, never the path or its token
    lines = [r.getMessage() for r in caplog.records if "failed (attempt" in r.getMessage()]
    assert len(lines) == 2 and all(REFUSED in line for line in lines)
    assert any(f"127.0.0.1:{port}" in line and "loopback" in line for line in lines)
    assert not any("s3cret" in line or "/hook" in line for line in lines)


async def test_the_same_setting_on_lets_the_webhook_through(
    engine: Engine, receivers: Receivers, monkeypatch: pytest.MonkeyPatch
) -> None:
    allow_private(monkeypatch, True)
    alert_id = alert_notifying(engine, receivers.url("/hook"))
    dispatcher = Dispatcher.from_settings(settings(webhook_allow_private=True), poll_seconds=0.05)
    async with running(dispatcher):
        found = await settled(engine, alert_id)
    assert [(d.status, d.last_error) for d in found.values()] == [("SENT", None)]
    assert [r.path for r in receivers.received] == ["/hook"]


class Resolver:
    """DNS answers that change over time, as a rebinding attacker's name gives them."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append((host, port))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return [ip_address(address) for address in answer]


async def test_a_name_rebound_to_loopback_after_the_save_is_refused_at_send(
    engine: Engine, receivers: Receivers
) -> None:
    port = receivers.server.server_address[1]
    url = f"http://hooks.rebind.invalid:{port}/hook"
    # at save the name has no loopback address (here: none at all), so the rule is stored
    alert_id = alert_notifying(engine, url)
    rebound = Resolver(["93.184.216.34", "127.0.0.1"])  # any one address is enough to refuse
    sender = WebhookSender(KEY, timeout=5.0, resolver=rebound)
    async with running(dispatcher_for({"webhook": sender})):
        found = await settled(engine, alert_id)
    assert (found[url].status, found[url].last_error) == ("FAILED", REFUSED)
    assert rebound.asked == [("hooks.rebind.invalid", port)]
    assert receivers.received == []


async def test_the_connection_goes_to_the_address_that_was_checked(
    engine: Engine, receivers: Receivers, monkeypatch: pytest.MonkeyPatch
) -> None:
    # resolved once, connected to as resolved, the name kept for the Host header: a second
    # lookup (which would now answer an unroutable address) never happens
    allow_private(monkeypatch, True)
    port = receivers.server.server_address[1]
    url = f"http://hook:s%40cret@hooks.pinned.invalid:{port}/hook"  # credentials: Basic auth
    alert_id = alert_notifying(engine, url)
    answers = Resolver(["127.0.0.1"], ["10.255.255.1"])
    sender = WebhookSender(KEY, timeout=5.0, allow_private=True, resolver=answers)
    async with running(dispatcher_for({"webhook": sender})):
        found = await settled(engine, alert_id)
    assert (found[url].status, found[url].attempts) == ("SENT", 1)
    [request] = receivers.at("/hook")
    assert request.headers["host"] == f"hooks.pinned.invalid:{port}"
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"hook:s@cret").decode()
    assert answers.asked == [("hooks.pinned.invalid", port)]


async def test_a_closed_port_fails_with_a_generic_reason_and_details_in_the_log(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    allow_private(monkeypatch, True)
    port = free_port()  # nobody listens: "Connection refused" must not reach the delivery
    url = f"http://127.0.0.1:{port}/hook"
    alert_id = alert_notifying(engine, url)
    sender = WebhookSender(KEY, timeout=5.0, allow_private=True)
    with caplog.at_level(logging.WARNING, logger="app.workers.notifications"):
        async with running(dispatcher_for({"webhook": sender})):
            found = await settled(engine, alert_id)
    assert (found[url].status, found[url].attempts) == ("FAILED", 2)
    assert found[url].last_error == "connection failed"
    lines = [r.getMessage() for r in caplog.records if "failed (attempt" in r.getMessage()]
    assert lines and all("connection failed [" in line for line in lines)  # details follow


# --- TLS: the certificate is still checked against the name ---------------------------------


@contextmanager
def tls_receiver(cert: Path, key: Path) -> Iterator[tuple[int, list[str]]]:
    """An HTTPS receiver on 127.0.0.1: its port, and the Host header of each request."""
    hosts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            hosts.append(self.headers["Host"])
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            del args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server.server_address[1], hosts
    finally:
        server.shutdown()
        server.server_close()


async def test_tls_is_verified_for_the_name_while_connecting_to_the_checked_address(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = server_files(tmp_path, server_names=("hooks.pinned.invalid",))
    monkeypatch.setenv("SSL_CERT_FILE", str(files.ca))  # the sender trusts this one CA
    with tls_receiver(files.certificate, files.key) as (port, hosts):
        right = f"https://hooks.pinned.invalid:{port}/hook"
        wrong = f"https://other.pinned.invalid:{port}/hook"  # same address, not the cert's name
        alert_id = alert_notifying(engine, right, wrong)
        answers = Resolver(["127.0.0.1"])
        sender = WebhookSender(KEY, timeout=5.0, allow_private=True, resolver=answers)
        async with running(dispatcher_for({"webhook": sender})):
            found = await settled(engine, alert_id)
    assert (found[right].status, found[right].last_error) == ("SENT", None)
    assert (found[wrong].status, found[wrong].last_error) == ("FAILED", "TLS handshake failed")
    assert hosts == [f"hooks.pinned.invalid:{port}"]
