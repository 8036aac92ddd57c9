"""The notification dispatcher: sends alert e-mails and webhooks off the hot path.

`iotdeck serve` runs one `Dispatcher` per process. It claims due deliveries (the
service's FOR UPDATE SKIP LOCKED claim, so processes share the work without sending one
twice), sends each in its own task under its own timeout, so a slow or dead receiver
never holds up another, and records every attempt on the delivery row. It wakes when an
alert is triggered (`iot:alerts`), when an attempt ends or a retry falls due, and polls
every few seconds in case another process wrote the delivery.
"""

import asyncio
import email.utils
import hashlib
import hmac
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from ssl import SSLContext
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib
import httpx
import orjson
from prometheus_client import Counter

from app import bus, db
from app.config import Settings
from app.models import utcnow
from app.rounds import Rounds
from app.services import notifications
from app.services.notifications import Backoff, Claim

logger = logging.getLogger(__name__)

ATTEMPTS = Counter(
    "notification_attempts_total",
    "Notification attempts by channel and outcome (sent, retry, failed)",
    ["channel", "outcome"],
)
WEBHOOK_KEY_LABEL = b"iotdeck webhook signing key"
LEASE_MARGIN = timedelta(seconds=30)  # a claim outlives the send timeout by this much


class DeliveryError(Exception):
    """One attempt failed; `permanent` when trying again cannot help."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class Sender(Protocol):
    """Sends one claimed delivery, or raises DeliveryError."""

    async def send(self, claim: Claim) -> None:
        """Deliver `claim` to its target."""

    async def aclose(self) -> None:
        """Release connections."""


# --- e-mail -------------------------------------------------------------------------------


# scheme -> (default port, implicit TLS, STARTTLS)
SMTP_SCHEMES = {
    "smtp": (25, False, False),
    "smtp+starttls": (587, False, True),
    "smtps": (465, True, False),
}


@dataclass(frozen=True)
class SmtpServer:
    """Where and how to hand e-mails over, from IOTDECK_SMTP_URL."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    use_tls: bool = False  # smtps://: TLS from the first byte
    start_tls: bool = False  # smtp+starttls://: upgrade with STARTTLS, refuse without it

    @classmethod
    def parse(cls, url: str) -> "SmtpServer":
        """Read `smtp[s|+starttls]://[user:pass@]host[:port]`; ValueError saying what is wrong."""
        parts = urlsplit(url)
        if parts.scheme not in SMTP_SCHEMES:
            raise ValueError(
                f"IOTDECK_SMTP_URL: unknown scheme {parts.scheme!r} "
                "(use smtp://, smtp+starttls:// or smtps://)"
            )
        if not parts.hostname:
            raise ValueError("IOTDECK_SMTP_URL has no host")
        default_port, use_tls, start_tls = SMTP_SCHEMES[parts.scheme]
        return cls(
            host=parts.hostname,
            port=parts.port or default_port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=use_tls,
            start_tls=start_tls,
        )


def _one_line(text: str) -> str:
    return " ".join(text.split())  # headers must not carry line breaks from rule text


def email_message(claim: Claim, sender: str) -> EmailMessage:
    """The e-mail of one alert: a subject with severity, rule and device; plain text only."""
    notice = claim.notice
    device = notice.device_name or str(notice.device_id or "n/a")
    message = EmailMessage()
    message["Subject"] = _one_line(f"[{notice.severity}] {notice.rule_name} on {device}")
    message["From"] = sender
    message["To"] = claim.target
    message["Date"] = email.utils.formatdate(usegmt=True)
    message["Message-ID"] = email.utils.make_msgid(idstring=claim.delivery_id.hex)
    message["X-Iotdeck-Alert"] = str(notice.alert_id)
    metric = notice.metric_name or "n/a"
    lines = [
        notice.message,
        "",
        f"Rule:      {notice.rule_name}",
        f"Device:    {device} ({notice.device_id})",
        f"Severity:  {notice.severity}",
        f"Value:     {metric} = {notifications.format_value(notice.metric_value)}",
        f"Triggered: {notifications.format_time(notice.triggered_at)}",
        f"Alert:     {notice.alert_id}",
    ]
    message.set_content("\n".join(lines) + "\n")
    return message


def _address(target: str) -> str:
    _, address = email.utils.parseaddr(target)
    if not address or "@" not in address or any(c.isspace() for c in target):
        raise DeliveryError(f"{target!r} is not an e-mail address", permanent=True)
    return address


class EmailSender:
    """Hands e-mails to the SMTP server of IOTDECK_SMTP_URL (aiosmtplib)."""

    def __init__(
        self,
        smtp_url: str,
        sender: str,
        *,
        timeout: float,
        tls_context: SSLContext | None = None,
    ) -> None:
        self.sender = sender
        self.timeout = timeout
        self.tls_context = tls_context  # tests trust their own certificate through this
        self.server: SmtpServer | None = None
        self.problem: str | None = None  # why no e-mail can go out, said on each delivery
        if not smtp_url:
            self.problem = "IOTDECK_SMTP_URL is not set"
        else:
            try:
                self.server = SmtpServer.parse(smtp_url)
            except ValueError as error:
                self.problem = str(error)

    async def send(self, claim: Claim) -> None:
        """Send one e-mail; 5xx answers are permanent, the rest is retried."""
        if self.server is None:
            raise DeliveryError(self.problem or "no SMTP server", permanent=True)
        recipient = _address(claim.target)
        server = self.server
        try:
            await aiosmtplib.send(
                email_message(claim, self.sender),
                sender=self.sender,
                recipients=[recipient],
                hostname=server.host,
                port=server.port,
                username=server.username,
                password=server.password,
                use_tls=server.use_tls,
                start_tls=server.start_tls,
                tls_context=self.tls_context,
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as error:
            reasons = "; ".join(f"{r.code} {r.message}" for r in error.recipients)
            raise DeliveryError(f"SMTP refused the recipient: {reasons}", permanent=True) from None
        except aiosmtplib.SMTPResponseException as error:
            raise DeliveryError(
                f"SMTP {error.code} {error.message}", permanent=500 <= error.code < 600
            ) from None
        except aiosmtplib.SMTPTimeoutError:
            raise DeliveryError(f"SMTP timed out after {self.timeout:g} s") from None
        except (aiosmtplib.SMTPException, OSError) as error:
            raise DeliveryError(f"SMTP: {error}") from None

    async def aclose(self) -> None:
        """Nothing to release: one connection per e-mail."""


# --- webhooks -----------------------------------------------------------------------------


def webhook_key(settings: Settings) -> bytes:
    """IOTDECK_WEBHOOK_SECRET, or a key derived from the JWT secret (HMAC-SHA256 of a label)."""
    if settings.webhook_secret:
        return settings.webhook_secret.encode()
    if not settings.jwt_secret:
        return b""
    derived = hmac.new(settings.jwt_secret.encode(), WEBHOOK_KEY_LABEL, hashlib.sha256)
    return derived.hexdigest().encode()


def sign(key: bytes, timestamp: int, body: bytes) -> str:
    """The X-Iotdeck-Signature value: sha256=<hex HMAC-SHA256(key, "<timestamp>.<body>")>."""
    digest = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def _where(url: str) -> str:
    # webhook URLs often carry a token in their path: logs get the host only
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/..."


class WebhookSender:
    """POSTs the alert as signed JSON; any answer but 2xx, or no answer in time, is a failure."""

    def __init__(self, key: bytes, *, timeout: float) -> None:
        self.key = key
        self.timeout = timeout
        self.client = httpx.AsyncClient(
            timeout=timeout,
            follow_redirects=False,
            headers={"User-Agent": "iotdeck-webhook/1"},
        )

    async def send(self, claim: Claim) -> None:
        """POST one alert to `claim.target`."""
        if urlsplit(claim.target).scheme not in ("http", "https"):
            raise DeliveryError(f"{claim.target!r} is not an http(s) URL", permanent=True)
        if not self.key:
            raise DeliveryError(
                "no signing key: set IOTDECK_WEBHOOK_SECRET or IOTDECK_JWT_SECRET", permanent=True
            )
        body = orjson.dumps(claim.notice.payload())
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-Iotdeck-Timestamp": str(timestamp),
            "X-Iotdeck-Signature": sign(self.key, timestamp, body),
            "X-Iotdeck-Delivery": str(claim.delivery_id),
        }
        try:
            response = await self.client.post(claim.target, content=body, headers=headers)
        except httpx.TimeoutException:
            raise DeliveryError(f"timed out after {self.timeout:g} s") from None
        except httpx.HTTPError as error:
            raise DeliveryError(f"{type(error).__name__}: {error}") from None
        if not response.is_success:
            raise DeliveryError(f"HTTP {response.status_code} {response.reason_phrase}".strip())

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()


# --- the dispatcher -----------------------------------------------------------------------


class Dispatcher:
    """Claims due deliveries and sends them concurrently, each under its own timeout."""

    def __init__(
        self,
        senders: Mapping[str, Sender],
        *,
        timeout: float = 10.0,
        backoff: Backoff = notifications.DEFAULT_BACKOFF,
        poll_seconds: float = 5.0,
        max_in_flight: int = 50,
    ) -> None:
        self.senders = dict(senders)
        self.timeout = timeout
        self.backoff = backoff
        self.poll_seconds = poll_seconds
        self.max_in_flight = max_in_flight
        self.lease = timedelta(seconds=timeout) + LEASE_MARGIN
        self._in_flight: set[asyncio.Task] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._rounds = Rounds()
        self.rounds = 0  # how many times it looked for due deliveries

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> "Dispatcher":
        """A dispatcher with the e-mail and webhook senders the settings describe."""
        timeout = settings.notification_timeout
        email_sender = EmailSender(settings.smtp_url, settings.smtp_from, timeout=timeout)
        if email_sender.problem:
            logger.warning("notification e-mails cannot be sent: %s", email_sender.problem)
        senders: dict[str, Sender] = {
            "email": email_sender,
            "webhook": WebhookSender(webhook_key(settings), timeout=timeout),
        }
        backoff = notifications.Backoff(base=settings.notification_retry_seconds)
        return cls(senders, timeout=timeout, backoff=backoff, **options)

    def wake(self) -> None:
        """Look for due deliveries now."""
        self._rounds.wake()

    async def run(self, hub: bus.Hub | None = None) -> None:
        """Dispatch until cancelled; `hub` (its `iot:alerts`) wakes it when an alert fires.

        When all slots are busy, the first send to finish wakes it too.
        """
        alerts = hub.subscribe(channels=[bus.ALERTS]) if hub is not None else None
        try:
            await self._rounds.run(
                self._round, alerts, lambda _, message: message.get("type") == "TRIGGERED"
            )
        finally:
            await self.close()

    async def _round(self) -> float:
        await self.dispatch_due()
        return self.poll_seconds

    async def dispatch_due(self) -> int:
        """Claim what is due (as many as free slots allow) and start sending it; the count."""
        self.rounds += 1
        room = self.max_in_flight - len(self._in_flight)
        if room <= 0:
            return 0
        try:
            claims = await asyncio.to_thread(self._claim, room)
        except Exception:  # a database blip: the next poll tries again
            logger.exception("could not claim due notifications")
            return 0
        for claim in claims:
            task = asyncio.create_task(self._deliver(claim), name=f"notify-{claim.delivery_id}")
            self._in_flight.add(task)
            task.add_done_callback(self._finished)
        return len(claims)

    def _finished(self, task: asyncio.Task) -> None:
        self._in_flight.discard(task)
        self.wake()  # a slot is free

    def _claim(self, limit: int) -> list[Claim]:
        with db.session_scope() as session:
            return notifications.claim_due(session, limit=limit, lease=self.lease)

    async def _deliver(self, claim: Claim) -> None:
        sender = self.senders.get(claim.channel)
        failure: DeliveryError | None = None
        try:
            if sender is None:
                raise DeliveryError(f"no sender for channel {claim.channel!r}", permanent=True)
            async with asyncio.timeout(self.timeout):
                await sender.send(claim)
        except DeliveryError as error:
            failure = error
        except TimeoutError:
            failure = DeliveryError(f"timed out after {self.timeout:g} s")
        except Exception as error:  # a bug in a sender must not stop the others
            logger.exception("notification %s: unexpected error", claim.delivery_id)
            failure = DeliveryError(f"{type(error).__name__}: {error}")
        try:
            retry_at = await asyncio.to_thread(self._record, claim, failure)
        except Exception:  # the lease runs out and the delivery is tried again
            logger.exception("notification %s: could not record the attempt", claim.delivery_id)
            return
        if retry_at is not None:  # wake up for the retry rather than at the next poll
            delay = max(0.0, (retry_at - utcnow()).total_seconds())
            timer = asyncio.get_running_loop().call_later(delay, self._ring)
            self._timers.add(timer)

    def _ring(self) -> None:
        now = asyncio.get_running_loop().time()
        self._timers = {timer for timer in self._timers if timer.when() > now}
        self.wake()

    def _record(self, claim: Claim, failure: DeliveryError | None) -> datetime | None:
        """Write the attempt's outcome; when to try again, if at all."""
        where = claim.target if claim.channel == "email" else _where(claim.target)
        with db.session_scope() as session:
            if failure is None:
                notifications.record_success(session, delivery_id=claim.delivery_id)
                ATTEMPTS.labels(claim.channel, "sent").inc()
                logger.info(
                    "alert %s: %s to %s sent (attempt %d)",
                    claim.notice.alert_id, claim.channel, where, claim.attempt,
                )  # fmt: skip
                return None
            delivery = notifications.record_failure(
                session,
                delivery_id=claim.delivery_id,
                error=failure.reason,
                permanent=failure.permanent,
                backoff=self.backoff,
            )
            retry_at = delivery.next_attempt_at
        ATTEMPTS.labels(claim.channel, "retry" if retry_at else "failed").inc()
        logger.warning(
            "alert %s: %s to %s failed (attempt %d): %s; %s",
            claim.notice.alert_id, claim.channel, where, claim.attempt, failure.reason,
            f"next attempt at {retry_at.isoformat()}" if retry_at else "giving up",
        )  # fmt: skip
        return retry_at

    async def close(self) -> None:
        """Stop in-flight sends (their leases run out, they are retried) and the senders."""
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        for sender in self.senders.values():
            await sender.aclose()


async def run_dispatcher(settings: Settings, hub: bus.Hub | None) -> None:
    """What `iotdeck serve` runs: the dispatcher of this process, until cancelled."""
    await Dispatcher.from_settings(settings).run(hub)
