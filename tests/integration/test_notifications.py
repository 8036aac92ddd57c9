"""Alert notifications reach a real SMTP server and real HTTP receivers, retried with backoff.

Nothing is mocked: aiosmtpd serves SMTP (plain, STARTTLS with a login, implicit TLS), a
threaded `http.server` plays the webhook receivers, and the dispatcher runs on this
test's database, on SQLite and on PostgreSQL.
"""

import asyncio
import datetime as dt
import hashlib
import hmac
import logging
import ssl
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, func, select

from app.core import bus
from app.core.config import Settings
from app.core.models import DeviceCreate, NotificationDelivery, utcnow
from app.services import alerts, devices, notifications, rules
from app.services.notifications import Backoff, Claim
from app.services.rules import RuleInput
from app.workers.notifications import Dispatcher, EmailSender, webhook_key
from rules.ast import Notify
from tests.certificates import server_files
from tests.integration.notifying import (
    FAST,
    KEY,
    deliveries,
    eventually,
    fire,
    running,
    webhooks,
)
from tests.receivers import Mailbox, Receivers

# the receivers listen on 127.0.0.1, which webhooks may reach only with this switch on
pytestmark = pytest.mark.usefixtures("allow_private_webhooks")
SENDER = "iotdeck@example.com"


# --- a fired alert ------------------------------------------------------------------------


def settled(engine: Engine, alert_id: uuid.UUID) -> Callable[[], bool]:
    """True once no delivery of the alert is PENDING."""
    return lambda: all(d.status != "PENDING" for d in deliveries(engine, alert_id).values())


# --- SMTP -----------------------------------------------------------------------------------


def tls_contexts(folder: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A certificate for 127.0.0.1 from a test CA: the server's context, and a client's
    trusting that CA."""
    files = server_files(folder, "smtp")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(files.certificate, files.key)
    client = ssl.create_default_context(cafile=files.ca)
    return server, client


def email_sender(url: str, **options: Any) -> EmailSender:
    return EmailSender(url, SENDER, timeout=5.0, **options)


async def test_an_email_reaches_the_smtp_server_with_subject_and_body(
    engine: Engine, smtp_server: Callable[..., tuple[Mailbox, int]]
) -> None:
    mailbox, port = smtp_server()
    alert_id = fire(engine, [("email", "ops@example.com")])
    async with running({"email": email_sender(f"smtp://127.0.0.1:{port}")}):
        await eventually(settled(engine, alert_id))
    delivery = deliveries(engine, alert_id)["ops@example.com"]
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("SENT", 1, None)
    [(mail_from, recipients, message)] = mailbox.messages
    assert (mail_from, recipients) == (SENDER, ["ops@example.com"])
    assert message["Subject"] == "[CRITICAL] Overheat on thermostat-3"
    assert (message["From"], message["To"]) == (SENDER, "ops@example.com")
    assert message["X-Iotdeck-Alert"] == str(alert_id)
    assert message.get_content_type() == "text/plain"  # user text is never HTML
    body = message.get_content().replace("\r\n", "\n")  # SMTP lines end in CRLF
    assert body.startswith("thermostat-3: 31.5°C\n")  # the rule's rendered message
    assert "Device:    thermostat-3 (" in body
    assert "Value:     temperature = 31.5" in body
    assert "Severity:  CRITICAL" in body
    assert "Triggered: 20" in body and "Z\n" in body


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
@pytest.mark.parametrize("scheme", ["smtp+starttls", "smtps"])
async def test_tls_and_a_login_from_the_url(
    engine: Engine,
    smtp_server: Callable[..., tuple[Mailbox, int]],
    tmp_path: Path,
    scheme: str,
) -> None:
    server_tls, client_tls = tls_contexts(tmp_path)
    mailbox = Mailbox()
    if scheme == "smtp+starttls":  # a server that refuses anything before STARTTLS
        tls = {"tls_context": server_tls, "require_starttls": True}
    else:  # TLS from the first byte
        # aiosmtpd sees only STARTTLS as TLS: it would refuse AUTH over implicit TLS
        tls = {"ssl_context": server_tls, "auth_require_tls": False}
    _, port = smtp_server(mailbox, authenticator=mailbox.authenticate, auth_required=True, **tls)
    alert_id = fire(engine, [("email", "ops@example.com")])
    url = f"{scheme}://alerts:p%40ss%3Aword@127.0.0.1:{port}"  # URL-encoded password
    async with running({"email": email_sender(url, tls_context=client_tls)}):
        await eventually(settled(engine, alert_id))
    delivery = deliveries(engine, alert_id)["ops@example.com"]
    assert (delivery.status, delivery.last_error) == ("SENT", None)
    assert mailbox.logins == [("alerts", "p@ss:word")]
    assert [m["Subject"] for _, _, m in mailbox.messages] == ["[CRITICAL] Overheat on thermostat-3"]


async def test_without_an_smtp_url_an_email_fails_at_once_saying_why(engine: Engine) -> None:
    alert_id = fire(engine, [("email", "ops@example.com")])
    async with running({"email": email_sender("")}):
        await eventually(settled(engine, alert_id))
    delivery = deliveries(engine, alert_id)["ops@example.com"]
    assert (delivery.status, delivery.attempts) == ("FAILED", 1)
    assert delivery.last_error == "IOTDECK_SMTP_URL is not set"
    assert delivery.next_attempt_at is None  # never tried again


async def test_a_refused_recipient_is_not_retried(
    engine: Engine, smtp_server: Callable[..., tuple[Mailbox, int]]
) -> None:
    _, port = smtp_server(Mailbox(refuse={"nobody@example.com"}))
    alert_id = fire(engine, [("email", "nobody@example.com")])
    async with running({"email": email_sender(f"smtp://127.0.0.1:{port}")}):
        await eventually(settled(engine, alert_id))
    delivery = deliveries(engine, alert_id)["nobody@example.com"]
    assert (delivery.status, delivery.attempts) == ("FAILED", 1)
    assert "550" in (delivery.last_error or "")


def test_smtp_urls_are_read_with_their_defaults() -> None:
    plain = email_sender("smtp://mail.example.com").server
    starttls = email_sender("smtp+starttls://u:p%2Fw@mail.example.com").server
    implicit = email_sender("smtps://mail.example.com:2465").server
    assert plain is not None and (plain.port, plain.use_tls, plain.start_tls) == (25, False, False)
    assert starttls is not None and (starttls.port, starttls.start_tls) == (587, True)
    assert (starttls.username, starttls.password) == ("u", "p/w")
    assert implicit is not None and (implicit.port, implicit.use_tls) == (2465, True)
    assert email_sender("http://mail.example.com").problem == (
        "IOTDECK_SMTP_URL: unknown scheme 'http' (use smtp://, smtp+starttls:// or smtps://)"
    )


# --- webhooks -------------------------------------------------------------------------------


async def test_a_webhook_carries_the_alert_signed_with_the_shared_key(
    engine: Engine, receivers: Receivers
) -> None:
    alert_id = fire(engine, [("webhook", receivers.url("/ok"))])
    async with running(webhooks()):
        await eventually(settled(engine, alert_id))
    delivery = deliveries(engine, alert_id)[receivers.url("/ok")]
    assert (delivery.status, delivery.attempts) == ("SENT", 1)
    [request] = receivers.at("/ok")
    # what a receiver does, written independently of the code under test
    timestamp = request.headers["x-iotdeck-timestamp"]
    expected = hmac.new(KEY, timestamp.encode() + b"." + request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["x-iotdeck-signature"], f"sha256={expected}")
    assert abs(int(timestamp) - time.time()) < 60
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-iotdeck-delivery"] == str(delivery.id)
    payload = orjson.loads(request.body)
    assert set(payload) == {
        "id", "ruleId", "ruleName", "deviceId", "deviceName", "severity", "status",
        "title", "message", "metricName", "metricValue", "triggeredAt",
    }  # fmt: skip
    assert payload["id"] == str(alert_id)
    assert (payload["ruleName"], payload["deviceName"]) == ("Overheat", "thermostat-3")
    assert (payload["severity"], payload["status"]) == ("CRITICAL", "ACTIVE")
    assert payload["message"] == "thermostat-3: 31.5°C"
    assert (payload["metricName"], payload["metricValue"]) == ("temperature", 31.5)
    assert payload["triggeredAt"].endswith("Z")


async def test_a_failing_receiver_is_retried_with_backoff_until_it_answers(
    engine: Engine, receivers: Receivers, caplog: pytest.LogCaptureFixture
) -> None:
    receivers.script["/flaky"] = [500, 500]
    alert_id = fire(engine, [("webhook", receivers.url("/flaky"))])
    with caplog.at_level(logging.WARNING, logger="app.workers.notifications"):
        async with running(webhooks()):
            await eventually(settled(engine, alert_id))
    delivery = deliveries(engine, alert_id)[receivers.url("/flaky")]
    assert (delivery.status, delivery.attempts) == ("SENT", 3)
    assert delivery.last_error == "HTTP 500 Internal Server Error"  # kept as history
    first, second, third = (r.at for r in receivers.at("/flaky"))
    assert second - first >= FAST.base * 0.9  # 0.2 s, then 0.4 s: doubling
    assert third - second >= 2 * FAST.base * 0.9
    failures = [r.getMessage() for r in caplog.records if "failed (attempt" in r.getMessage()]
    assert len(failures) == 2
    assert all("HTTP 500" in line and "next attempt at" in line for line in failures)
    assert all("/flaky" not in line for line in failures)  # URLs may hold tokens: host only


async def test_a_receiver_out_of_attempts_ends_failed(engine: Engine, receivers: Receivers) -> None:
    receivers.script["/down"] = [503] * 10
    alert_id = fire(engine, [("webhook", receivers.url("/down"))])
    backoff = Backoff(base=0.05, cap=0.1, max_attempts=3)
    async with running(webhooks(), backoff=backoff):
        await eventually(settled(engine, alert_id))
    delivery = deliveries(engine, alert_id)[receivers.url("/down")]
    assert (delivery.status, delivery.attempts) == ("FAILED", 3)
    assert delivery.last_error == "HTTP 503 Service Unavailable"
    assert len(receivers.at("/down")) == 3


async def test_a_receiver_that_never_answers_does_not_delay_a_healthy_one(
    engine: Engine, receivers: Receivers
) -> None:
    timeout = 3.0
    alert_id = fire(
        engine, [("webhook", receivers.url("/hang")), ("webhook", receivers.url("/ok"))]
    )
    started = time.monotonic()
    async with running(webhooks(timeout), timeout=timeout):
        await eventually(
            lambda: deliveries(engine, alert_id)[receivers.url("/ok")].status == "SENT"
        )
        healthy_after = time.monotonic() - started
        stuck = deliveries(engine, alert_id)[receivers.url("/hang")]
        # the healthy one was done while the other was still waiting for its answer
        assert healthy_after < timeout
        assert (stuck.status, stuck.attempts, stuck.last_error) == ("PENDING", 1, None)
        assert receivers.at("/hang")
        await eventually(lambda: deliveries(engine, alert_id)[receivers.url("/hang")].last_error)
    stuck = deliveries(engine, alert_id)[receivers.url("/hang")]
    assert stuck.last_error == f"timed out after {timeout:g} s"
    assert stuck.status == "PENDING" and stuck.next_attempt_at is not None  # retried later


async def test_more_deliveries_than_slots_all_go_out(engine: Engine, receivers: Receivers) -> None:
    targets = [("webhook", receivers.url(f"/r{n}")) for n in range(7)]
    alert_id = fire(engine, targets)
    # two at a time, and a poll too slow to help: each finished send frees a slot
    async with running(webhooks(), max_in_flight=2, poll_seconds=60):
        await eventually(settled(engine, alert_id), timeout=10)
    assert {d.status for d in deliveries(engine, alert_id).values()} == {"SENT"}
    assert sorted(r.path for r in receivers.received) == [f"/r{n}" for n in range(7)]


class HeldSender:
    """A sender whose sends end only when released: one is in progress when told to stop."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.sent: list[uuid.UUID] = []

    async def send(self, claim: Claim) -> None:
        """Wait for `release`, then count the delivery as sent."""
        self.started.set()
        await self.release.wait()
        self.sent.append(claim.delivery_id)

    async def aclose(self) -> None:
        """Nothing to release."""


async def test_stopped_mid_send_it_finishes_the_send_and_records_it(engine: Engine) -> None:
    alert_id = fire(engine, [("webhook", "https://a.example.com/")])
    sender = HeldSender()
    dispatcher = Dispatcher({"webhook": sender}, timeout=10.0, backoff=FAST, poll_seconds=0.05)
    task = asyncio.create_task(dispatcher.run())
    await asyncio.wait_for(sender.started.wait(), 10)
    task.cancel()  # a graceful stop: the send in progress goes on
    done, _ = await asyncio.wait({task}, timeout=0.5)
    assert not done, "the stop did not wait for the send in progress"
    sender.release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    delivery = deliveries(engine, alert_id)["https://a.example.com/"]
    assert sender.sent == [delivery.id]
    assert (delivery.status, delivery.attempts) == ("SENT", 1)


async def test_a_triggered_alert_wakes_the_dispatcher_at_once(
    engine: Engine, receivers: Receivers
) -> None:
    hub = bus.Hub(asyncio.get_running_loop())
    local = bus.LocalBus()
    await local.start(hub)
    bus.set_bus(local, hub)
    try:
        # polling once a minute: only the `iot:alerts` message can make this quick
        async with running(webhooks(), hub=hub, poll_seconds=60) as dispatcher:
            await eventually(lambda: dispatcher.rounds >= 1)  # idle, nothing was due
            started = time.monotonic()
            alert_id = await asyncio.to_thread(fire, engine, [("webhook", receivers.url("/ok"))])
            await eventually(settled(engine, alert_id), timeout=10)
            assert time.monotonic() - started < 10
    finally:
        bus.set_bus(bus.NullBus())
        await local.stop()
    assert deliveries(engine, alert_id)[receivers.url("/ok")].status == "SENT"


def test_an_unset_webhook_secret_is_derived_from_the_jwt_secret() -> None:
    jwt_secret = "j" * 40
    derived = webhook_key(Settings(jwt_secret=jwt_secret, webhook_secret=""))
    label = b"iotdeck webhook signing key"
    assert derived == hmac.new(jwt_secret.encode(), label, hashlib.sha256).hexdigest().encode()
    assert webhook_key(Settings(jwt_secret=jwt_secret, webhook_secret="shared")) == b"shared"


# --- the service: scheduling, claiming, recording -----------------------------------------


def test_schedule_writes_one_due_delivery_per_distinct_target(engine: Engine) -> None:
    alert_id = fire(
        engine,
        [
            ("email", "ops@example.com"),
            ("webhook", "https://hooks.example.com/x"),
            ("email", "ops@example.com"),  # the same target twice is told once
        ],
    )
    found = deliveries(engine, alert_id)
    assert sorted((d.channel, d.target) for d in found.values()) == [
        ("email", "ops@example.com"),
        ("webhook", "https://hooks.example.com/x"),
    ]
    assert all((d.status, d.attempts) == ("PENDING", 0) for d in found.values())
    assert all(d.next_attempt_at is not None for d in found.values())


def test_a_delivery_exists_only_if_its_alert_was_committed(session: Session) -> None:
    device = devices.create_device(session=session, data=DeviceCreate(name="d", type="t"))
    stored = rules.create_rule(session=session, data=RuleInput(expression='rule "r" when t > 1'))
    session.commit()
    alert = alerts.open_alert(session=session, rule=stored, device_id=device.id, at=utcnow())
    assert alert is not None
    notifications.schedule(session, alert=alert, notify=[Notify("email", "a@example.com")])
    session.rollback()
    count = session.exec(select(func.count()).select_from(NotificationDelivery)).one()
    assert count == 0


def test_a_target_too_long_for_the_table_is_failed_not_fatal(session: Session) -> None:
    device = devices.create_device(session=session, data=DeviceCreate(name="d", type="t"))
    stored = rules.create_rule(session=session, data=RuleInput(expression='rule "r" when t > 1'))
    alert = alerts.open_alert(session=session, rule=stored, device_id=device.id, at=utcnow())
    assert alert is not None
    url = "https://hooks.example.com/" + "x" * 3000
    [delivery] = notifications.schedule(session, alert=alert, notify=[Notify("webhook", url)])
    session.commit()
    assert (delivery.status, len(delivery.target)) == ("FAILED", 2048)
    assert delivery.last_error == "target is longer than 2048 characters"


def test_claims_count_attempts_lease_the_row_and_back_off(engine: Engine) -> None:
    alert_id = fire(engine, [("webhook", "https://hooks.example.com/x")])
    backoff = Backoff(base=30, cap=100, max_attempts=3)
    lease = dt.timedelta(seconds=40)
    now = utcnow() + dt.timedelta(seconds=1)
    with Session(engine, expire_on_commit=False) as session:
        [claim] = notifications.claim_due(session, now=now, lease=lease)
        session.commit()
        assert (claim.attempt, claim.target, claim.notice.alert_id) == (1, claim.target, alert_id)
        assert notifications.claim_due(session, now=now + lease / 2) == []  # leased
        failed = notifications.record_failure(
            session, delivery_id=claim.delivery_id, error="HTTP 502", backoff=backoff, now=now
        )
        session.commit()
        assert failed.next_attempt_at == now + dt.timedelta(seconds=30)
        assert notifications.claim_due(session, now=now + dt.timedelta(seconds=29)) == []
        later = now + dt.timedelta(seconds=30)
        [again] = notifications.claim_due(session, now=later, lease=lease)
        failed = notifications.record_failure(
            session, delivery_id=again.delivery_id, error="HTTP 502", backoff=backoff, now=later
        )
        assert failed.next_attempt_at == later + dt.timedelta(seconds=60)  # doubled
        last = later + dt.timedelta(seconds=60)
        [third] = notifications.claim_due(session, now=last, lease=lease)
        done = notifications.record_failure(
            session, delivery_id=third.delivery_id, error="HTTP 502", backoff=backoff, now=last
        )
        session.commit()
        assert (done.status, done.attempts, done.next_attempt_at) == ("FAILED", 3, None)
        assert notifications.claim_due(session, now=last + dt.timedelta(days=1)) == []


def test_two_dispatchers_never_claim_the_same_delivery(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite serves one process: there is no second dispatcher to race")
    alert_id = fire(
        engine, [("webhook", "https://a.example.com/"), ("webhook", "https://b.example.com/")]
    )
    now = utcnow() + dt.timedelta(seconds=1)
    with Session(engine) as first, Session(engine) as second:
        taken = notifications.claim_due(first, now=now, limit=1)  # its row stays locked
        others = notifications.claim_due(second, now=now)  # skips the locked row
        assert len(taken) == len(others) == 1
        assert taken[0].delivery_id != others[0].delivery_id
        assert notifications.claim_due(second, now=now) == []  # its own claim holds the other
        first.commit()
        second.commit()
    assert {d.attempts for d in deliveries(engine, alert_id).values()} == {1}


def test_deliveries_of_an_alert_come_newest_first(session: Session) -> None:
    device = devices.create_device(session=session, data=DeviceCreate(name="d", type="t"))
    stored = rules.create_rule(session=session, data=RuleInput(expression='rule "r" when t > 1'))
    alert = alerts.open_alert(session=session, rule=stored, device_id=device.id, at=utcnow())
    assert alert is not None
    start = utcnow()
    for minutes, target in enumerate(["old@example.com", "new@example.com"]):
        notifications.schedule(
            session,
            alert=alert,
            notify=[Notify("email", target)],
            now=start + dt.timedelta(minutes=minutes),
        )
    session.commit()
    found = notifications.deliveries_for_alert(session, alert.id)
    assert [d.target for d in found] == ["new@example.com", "old@example.com"]
