"""The notification dispatcher: sends alert e-mails and webhooks off the hot path.

`iotdeck serve` runs one `Dispatcher` per process. It claims due deliveries (the
service's FOR UPDATE SKIP LOCKED claim, so processes share the work without sending one
twice), sends each in its own task under its own timeout, so a slow or dead receiver
never holds up another, and records every attempt on the delivery row. It wakes when an
alert is triggered (`iot:alerts`), when an attempt ends or a retry falls due, and polls
every few seconds in case another process wrote the delivery. Stopped (cancelled), it
claims nothing more and lets the sends in progress finish and record their attempt.

A failed attempt's reason is stored on the delivery and shown to every signed-in user,
VIEWERs included, so it is a fixed phrase ("connection failed", "HTTP 503 Service
Unavailable", "refused: the address is not public"), never an address, a port or an
error text of the network stack, which would map the internal network for whoever wrote
the rule; the details go to the log, with the target's host only (URLs carry tokens).

Each target has a circuit breaker (`app.workers.circuits`): after a few failures in a row the
dispatcher stops trying it for a while and puts its deliveries off ("circuit open: ...").
"""

import asyncio
import base64
import email.utils
import hashlib
import hmac
import logging
import socket
import ssl
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from http import HTTPStatus
from ssl import SSLContext
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib
import httpcore
import httpx
import orjson

from app.core import bus, db, logs, metrics, outbound, tracing
from app.core.config import Settings
from app.core.models import utcnow
from app.services import notifications
from app.services.notifications import Backoff, Claim
from app.workers.circuits import DEFAULT_CIRCUIT, CircuitPolicy, TargetCircuits
from app.workers.rounds import Rounds

logger = logging.getLogger(__name__)

WEBHOOK_KEY_LABEL = b"iotdeck webhook signing key"
LEASE_MARGIN = timedelta(seconds=30)  # a claim outlives the send timeout by this much


REFUSED = "refused: the address is not public"


class DeliveryError(Exception):
    """One attempt failed; `permanent` when trying again cannot help.

    `reason` is stored and shown to every user: a fixed phrase. `detail` (what the
    network stack said, the address refused) is for the operators' log only.
    """

    def __init__(self, reason: str, *, permanent: bool = False, detail: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.detail = detail


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
            # the server's own words may name its hosts: the codes are stored, the words logged
            codes = ", ".join(str(r.code) for r in error.recipients)
            detail = "; ".join(f"{r.code} {r.message}" for r in error.recipients)
            raise DeliveryError(
                f"SMTP refused the recipient ({codes})", permanent=True, detail=detail
            ) from None
        except aiosmtplib.SMTPResponseException as error:
            raise DeliveryError(
                f"SMTP error {error.code}",
                permanent=500 <= error.code < 600,
                detail=f"{error.code} {error.message}",
            ) from None
        except aiosmtplib.SMTPTimeoutError:
            raise DeliveryError(f"SMTP timed out after {self.timeout:g} s") from None
        except (aiosmtplib.SMTPException, OSError) as error:
            raise DeliveryError("SMTP connection failed", detail=_detail(error)) from None

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
    return outbound.host_only(url)


def _shown(claim: Claim) -> str:
    """Where a delivery goes, as logs and spans show it: a webhook's host only."""
    return claim.target if claim.channel == "email" else _where(claim.target)


def _detail(error: BaseException) -> str:
    """What went wrong, with its cause, for the log (never stored)."""
    cause = error.__cause__ or error.__context__
    text = f"{type(error).__name__}: {error}"
    return f"{text} ({type(cause).__name__}: {cause})" if cause is not None else text


def _caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    """Whether `error` or anything in its chain of causes is a `kind`."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _http_failure(status: int) -> DeliveryError:
    # the standard phrase, not the receiver's own words
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return DeliveryError(f"HTTP {status} {phrase}".strip())


def _basic_auth(url: httpx.URL) -> str:
    # credentials in a webhook URL are sent as Basic authentication, as httpx did
    pair = f"{url.username}:{url.password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _connection_failure(error: Exception) -> DeliveryError:
    """The stored phrase for a failed exchange; what the network stack said goes to `detail`."""
    detail = _detail(error)
    if isinstance(error, httpcore.UnsupportedProtocol):
        return DeliveryError("invalid webhook URL", permanent=True, detail=detail)
    if _caused_by(error, socket.gaierror):
        return DeliveryError("host name not found", detail=detail)
    if _caused_by(error, ssl.SSLError):
        return DeliveryError("TLS handshake failed", detail=detail)
    if isinstance(error, httpcore.ProtocolError):
        return DeliveryError("invalid HTTP answer", detail=detail)
    if isinstance(error, httpcore.ReadError | httpcore.WriteError):
        return DeliveryError("connection lost", detail=detail)
    if not isinstance(error, OSError | httpcore.NetworkError):
        logger.error("webhook: unexpected error", exc_info=error)
    return DeliveryError("connection failed", detail=detail)


class WebhookSender:
    """POSTs the alert as signed JSON; any answer but 2xx, or no answer in time, is a failure.

    Requests go through `outbound.pinned_pool`: unless `allow_private`
    (IOTDECK_WEBHOOK_ALLOW_PRIVATE), the target's host must be, and resolve to, public
    addresses only, checked at each connection and connected to as checked (no DNS
    rebinding between check and connect); redirects are not followed. `resolver` replaces
    the system's DNS lookups (tests).
    """

    def __init__(
        self,
        key: bytes,
        *,
        timeout: float,
        allow_private: bool = False,
        resolver: outbound.Resolver = outbound.system_resolver,
    ) -> None:
        self.key = key
        self.timeout = timeout
        self.pool = outbound.pinned_pool(allow_private=allow_private, resolver=resolver)

    def _request(self, claim: Claim, body: bytes) -> tuple[httpcore.URL, list[tuple[str, str]]]:
        try:
            url = outbound.request_url(claim.target)
        except ValueError as error:
            raise DeliveryError("invalid webhook URL", permanent=True, detail=str(error)) from None
        timestamp = int(time.time())
        headers = [
            ("Host", url.netloc.decode("ascii")),  # brackets an IPv6 literal, unlike httpcore
            ("User-Agent", "iotdeck-webhook/1"),
            ("Content-Type", "application/json"),
            ("X-Iotdeck-Timestamp", str(timestamp)),
            ("X-Iotdeck-Signature", sign(self.key, timestamp, body)),
            ("X-Iotdeck-Delivery", str(claim.delivery_id)),
        ]
        if claim.notice.correlation_id:  # the receiver's logs can name what caused the alert
            headers.append(("X-Correlation-ID", claim.notice.correlation_id))
        if url.userinfo:
            headers.append(("Authorization", _basic_auth(url)))
        target = httpcore.URL(
            scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
        )
        return target, headers

    async def send(self, claim: Claim) -> None:
        """POST one alert to `claim.target`; DeliveryError with a fixed reason on failure."""
        if not self.key:
            raise DeliveryError(
                "no signing key: set IOTDECK_WEBHOOK_SECRET or IOTDECK_JWT_SECRET", permanent=True
            )
        body = orjson.dumps(claim.notice.payload())
        url, headers = self._request(claim, body)
        seconds = self.timeout
        timeouts = {"connect": seconds, "read": seconds, "write": seconds, "pool": seconds}
        try:
            async with asyncio.timeout(seconds):  # DNS too, which httpcore does not time
                async with self.pool.stream(
                    "POST", url, headers=headers, content=body, extensions={"timeout": timeouts}
                ) as response:
                    status = response.status  # the body is not read: only the status counts
        except outbound.RefusedAddressError as error:
            raise DeliveryError(REFUSED, permanent=True, detail=str(error)) from None
        except (TimeoutError, httpcore.TimeoutException) as error:
            raise DeliveryError(f"timed out after {seconds:g} s", detail=_detail(error)) from None
        except Exception as error:
            raise _connection_failure(error) from None
        if not 200 <= status < 300:
            raise _http_failure(status)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.pool.aclose()


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
        circuits: CircuitPolicy = DEFAULT_CIRCUIT,
    ) -> None:
        self.senders = dict(senders)
        self.timeout = timeout
        self.backoff = backoff
        self.poll_seconds = poll_seconds
        self.max_in_flight = max_in_flight
        self.circuits = TargetCircuits(circuits)
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
            "webhook": WebhookSender(
                webhook_key(settings),
                timeout=timeout,
                allow_private=settings.webhook_allow_private,
            ),
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
        except db.DatabaseUnavailableError as error:  # said once by its breaker: no traceback
            logger.warning("could not claim due notifications: %s", error)
            return 0
        except Exception:  # a database blip: the next poll tries again
            logger.exception("could not claim due notifications")
            return 0
        for claim in claims:
            # each send in the alert's context: its attempt's lines carry the alert's ids
            ids = logs.context(
                correlation_id=claim.notice.correlation_id,
                alert_id=claim.notice.alert_id,
                device_id=claim.notice.device_id,
            )
            task = asyncio.create_task(
                self._deliver(claim), name=f"notify-{claim.delivery_id}", context=ids
            )
            self._in_flight.add(task)
            task.add_done_callback(self._finished)
        return len(claims)

    def _finished(self, task: asyncio.Task) -> None:
        self._in_flight.discard(task)
        self.wake()  # a slot is free

    def _claim(self, limit: int) -> list[Claim]:
        with db.session_scope() as session:
            claims = notifications.claim_due(session, limit=limit, lease=self.lease)
            # what is still due once this process took its share: the backlog
            metrics.NOTIFICATION_QUEUE_DEPTH.set(notifications.count_due(session))
            return claims

    async def _deliver(self, claim: Claim) -> None:
        if not self.circuits.allow(claim):
            await self._hold(claim)
            return
        sender = self.senders.get(claim.channel)
        failure: DeliveryError | None = None
        with tracing.span(
            "notification.send",
            claim.notice.correlation_id,
            kind=tracing.SpanKind.CLIENT,
            channel=claim.channel,
            target=_shown(claim),
            alert_id=claim.notice.alert_id,
            delivery_id=claim.delivery_id,
            attempt=claim.attempt,
        ):
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
                failure = DeliveryError("internal error", detail=_detail(error))
            if failure is None:
                tracing.annotate(outcome="sent")
            else:  # the stored phrase only: its detail may map the internal network
                tracing.annotate(outcome="failed", permanent=failure.permanent)
                tracing.failed(failure.reason, failure)
        held: dict[uuid.UUID, datetime] = {}
        if failure is None:
            held = self.circuits.succeeded(claim)
        elif not failure.permanent:  # a permanent failure says nothing of the target being up
            self.circuits.failed(claim, failure.reason)
        try:
            retry_at = await asyncio.to_thread(self._record, claim, failure)
            if held:  # the target is back: what waited for it need not wait for the cooldown
                await asyncio.to_thread(self._release, held)
                self.wake()
        except Exception:  # the lease runs out and the delivery is tried again
            logger.exception("notification %s: could not record the attempt", claim.delivery_id)
            return
        if retry_at is not None:  # wake up for the retry rather than at the next poll
            self._wake_at(retry_at)

    async def _hold(self, claim: Claim) -> None:
        """Put a delivery off, untried, until its target's open circuit lets one through."""
        reason, until = self.circuits.hold(claim)
        try:
            await asyncio.to_thread(self._record_held, claim, reason, until)
        except Exception:  # the lease runs out and the delivery is tried again
            logger.exception("notification %s: could not put it off", claim.delivery_id)
            return
        self._wake_at(until)

    def _record_held(self, claim: Claim, reason: str, until: datetime) -> None:
        with db.session_scope() as session:
            notifications.record_held(
                session, delivery_id=claim.delivery_id, reason=reason, until=until
            )
        logger.info("alert %s: %s put off: %s", claim.notice.alert_id, claim.channel, reason)

    def _release(self, held: dict[uuid.UUID, datetime]) -> None:
        with db.session_scope() as session:
            notifications.release_held(session, held=held)

    def _wake_at(self, moment: datetime) -> None:
        """Look for due deliveries at `moment` rather than at the next poll."""
        delay = max(0.0, (moment - utcnow()).total_seconds())
        self._timers.add(asyncio.get_running_loop().call_later(delay, self._ring))

    def _ring(self) -> None:
        now = asyncio.get_running_loop().time()
        self._timers = {timer for timer in self._timers if timer.when() > now}
        self.wake()

    def _record(self, claim: Claim, failure: DeliveryError | None) -> datetime | None:
        """Write the attempt's outcome; when to try again, if at all."""
        where = _shown(claim)
        with db.session_scope() as session:
            if failure is None:
                notifications.record_success(session, delivery_id=claim.delivery_id)
                metrics.NOTIFICATION_ATTEMPTS.labels(claim.channel, "sent").inc()
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
        metrics.NOTIFICATION_ATTEMPTS.labels(claim.channel, "retry" if retry_at else "failed").inc()
        reason = f"{failure.reason} [{failure.detail}]" if failure.detail else failure.reason
        logger.warning(
            "alert %s: %s to %s failed (attempt %d): %s; %s",
            claim.notice.alert_id, claim.channel, where, claim.attempt, reason,
            f"next attempt at {retry_at.isoformat()}" if retry_at else "giving up",
        )  # fmt: skip
        return retry_at

    async def close(self) -> None:
        """Let the sends in progress finish and record their attempt, then close the senders.

        A cancel meanwhile (the end of a graceful stop's time) stops them instead: their
        claims run out and any process tries them again.
        """
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        try:
            # gather, cancelled, cancels them all
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        finally:
            for sender in self.senders.values():
                await sender.aclose()


async def run_dispatcher(settings: Settings, hub: bus.Hub | None) -> None:
    """What `iotdeck serve` runs: the dispatcher of this process, until cancelled."""
    await Dispatcher.from_settings(settings).run(hub)
