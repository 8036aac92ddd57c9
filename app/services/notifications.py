"""Alert notifications: one delivery row per `notify` target, sent later, retried with backoff.

A delivery is written in the transaction that opens its alert (`schedule`), so it exists
exactly when the alert does. The dispatcher (`app/workers/notifications.py`) claims the due ones,
sends them off the hot path and records each attempt here. This module is the only place
with SQL for `notification_deliveries`.

An attempt is counted when it is claimed, not when it ends: a process that dies while
sending still used up one attempt, so a message that crashes its sender cannot loop
forever. The claim also leases the row (pushes `next_attempt_at` past the send timeout),
so no other dispatcher picks it up meanwhile; if the sender dies, the lease runs out and
the delivery is retried. Delivery is therefore at least once: receivers deduplicate on
the delivery id.
"""

import logging
import math
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session, col, func, select

from app.core.errors import NotFoundError
from app.core.models import Alert, AlertRule, Device, NotificationDelivery, as_utc, utcnow
from app.services import validation

logger = logging.getLogger(__name__)

PENDING, SENT, FAILED = "PENDING", "SENT", "FAILED"
CHANNELS = ("email", "webhook")
MAX_TARGET_LENGTH = 2048  # the column's size
MAX_ERROR_LENGTH = 1000
DEFAULT_TEMPLATE = "{rule.name} on {device.name}: {metric} = {value}"

_PLACEHOLDER = re.compile(r"\{([A-Za-z_.]+)\}")


@dataclass(frozen=True)
class Backoff:
    """When to try again: `base` seconds after the first failure, doubling, at most `cap`."""

    base: float = 30.0
    cap: float = 3600.0
    max_attempts: int = 8  # then FAILED: 30 s, 1, 2, 4, 8, 16, 32 min apart, about an hour

    def delay(self, attempts: int) -> timedelta:
        """The wait after the `attempts`-th failed attempt."""
        return timedelta(seconds=min(self.cap, self.base * 2 ** min(max(attempts - 1, 0), 60)))


DEFAULT_BACKOFF = Backoff()


# --- message text -------------------------------------------------------------------------


def format_value(value: float | None) -> str:
    """A metric value as people write it: 31.5, 30, 0.3; "n/a" when there is none."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(int(value))
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"  # also for -0.0
    text = f"{value:.6g}"
    if "e" in text and 1e-4 <= abs(value) < 1e15:  # 1234567.0 reads better whole
        text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text


def format_time(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z, to the second."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_message(
    template: str | None,
    *,
    rule_name: str,
    device_name: str | None,
    device_id: uuid.UUID | str | None,
    value: float | None,
    metric: str | None,
    severity: object,
    at: datetime,
) -> str:
    """The rule's `message` with its placeholders filled; unknown ones stay as written.

    Placeholders: {device.name} {device.id} {value} {metric} {rule.name} {severity} {time}.
    The text comes from users, so it is never given to str.format (which would evaluate
    attribute and index lookups); each known placeholder is replaced, nothing else.
    """
    known = {
        "device.name": device_name if device_name else str(device_id or "n/a"),
        "device.id": str(device_id) if device_id is not None else "n/a",
        "value": format_value(value),
        "metric": metric or "n/a",
        "rule.name": rule_name,
        "severity": str(severity).lower(),  # the rule language's word: critical
        "time": format_time(at),
    }
    text = DEFAULT_TEMPLATE if template is None else template
    return _PLACEHOLDER.sub(lambda match: known.get(match.group(1), match.group(0)), text)


# --- scheduling ---------------------------------------------------------------------------


def schedule(
    session: Session, *, alert: Alert, notify: Iterable[Any], now: datetime | None = None
) -> list[NotificationDelivery]:
    """One PENDING delivery per distinct `notify` target, due now, in the caller's transaction.

    `notify` holds the rule's `Notify(channel, target)` clauses. A target the table cannot
    hold is recorded as FAILED with the reason, so it shows on the alert instead of
    failing the transaction that opens the alert.
    """
    now = now or utcnow()
    seen: set[tuple[str, str]] = set()
    deliveries = []
    for item in notify:
        key = (item.channel, item.target)
        if key in seen:
            continue
        seen.add(key)
        if item.channel not in CHANNELS:
            logger.warning("alert %s: unknown notification channel %r skipped", alert.id, key[0])
            continue
        delivery = NotificationDelivery(
            alert_id=alert.id,
            channel=item.channel,
            target=item.target,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
        if len(item.target) > MAX_TARGET_LENGTH:
            delivery.target = item.target[:MAX_TARGET_LENGTH]
            delivery.status, delivery.next_attempt_at = FAILED, None
            delivery.last_error = f"target is longer than {MAX_TARGET_LENGTH} characters"
        deliveries.append(delivery)
    session.add_all(deliveries)
    session.flush()
    return deliveries


def deliveries_for_alert(session: Session, alert_id: uuid.UUID | str) -> list[NotificationDelivery]:
    """Every notification of an alert, newest first."""
    query = (
        select(NotificationDelivery)
        .where(NotificationDelivery.alert_id == validation.parse_id(alert_id, "alertId"))
        .order_by(col(NotificationDelivery.created_at).desc(), col(NotificationDelivery.channel))
    )
    return list(session.exec(query))


# --- claiming and recording attempts ------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    """What a notification tells about its alert (read when the delivery is claimed)."""

    alert_id: uuid.UUID
    rule_id: uuid.UUID | None
    rule_name: str
    device_id: uuid.UUID | None
    device_name: str | None
    severity: str
    status: str
    title: str
    message: str
    metric_name: str | None
    metric_value: float | None
    triggered_at: datetime
    correlation_id: str | None = None  # the alert's: sent as X-Correlation-ID, logged

    def payload(self) -> dict[str, Any]:
        """The alert as a webhook carries it (GraphQL's names, ISO 8601 UTC time)."""
        return {
            "id": str(self.alert_id),
            "ruleId": str(self.rule_id) if self.rule_id else None,
            "ruleName": self.rule_name,
            "deviceId": str(self.device_id) if self.device_id else None,
            "deviceName": self.device_name,
            "severity": self.severity,
            "status": self.status,
            "title": self.title,
            "message": self.message,
            "metricName": self.metric_name,
            "metricValue": self.metric_value,
            "triggeredAt": format_time(self.triggered_at),
        }


@dataclass(frozen=True)
class Claim:
    """One delivery taken for one attempt: where to send what."""

    delivery_id: uuid.UUID
    channel: str
    target: str
    attempt: int  # 1 for the first attempt
    notice: Notice


def _notice(alert: Alert, rule: AlertRule | None, device: Device | None) -> Notice:
    rule_name = rule.name if rule is not None else alert.title
    device_name = device.name if device is not None else None
    message = alert.message or render_message(
        None,
        rule_name=rule_name,
        device_name=device_name,
        device_id=alert.device_id,
        value=alert.metric_value,
        metric=alert.metric_name,
        severity=alert.severity,
        at=alert.triggered_at,
    )
    return Notice(
        alert_id=alert.id,
        rule_id=alert.rule_id,
        rule_name=rule_name,
        device_id=alert.device_id,
        device_name=device_name,
        severity=str(alert.severity),
        status=str(alert.status),
        title=alert.title,
        message=message,
        metric_name=alert.metric_name,
        metric_value=alert.metric_value,
        triggered_at=alert.triggered_at,
        correlation_id=alert.correlation_id,
    )


def claim_due(
    session: Session,
    *,
    limit: int = 50,
    lease: timedelta = timedelta(seconds=60),
    now: datetime | None = None,
) -> list[Claim]:
    """Take up to `limit` due deliveries for one attempt each; commit to release them.

    On PostgreSQL the rows are locked with FOR UPDATE SKIP LOCKED, so concurrent
    dispatchers never take the same one; SQLite has one process. Each claimed row counts
    an attempt and is leased until `now + lease` (longer than a send may take).
    """
    now = now or utcnow()
    query = (
        select(NotificationDelivery)
        .where(NotificationDelivery.status == PENDING)
        .where(col(NotificationDelivery.next_attempt_at) <= now)
        .order_by(col(NotificationDelivery.next_attempt_at))
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    due = list(session.exec(query))
    if not due:
        return []
    alerts = {
        alert.id: alert
        for alert in session.exec(select(Alert).where(col(Alert.id).in_({d.alert_id for d in due})))
    }
    rule_ids = {a.rule_id for a in alerts.values() if a.rule_id is not None}
    device_ids = {a.device_id for a in alerts.values() if a.device_id is not None}
    rules = {
        r.id: r for r in session.exec(select(AlertRule).where(col(AlertRule.id).in_(rule_ids)))
    }
    devices = {d.id: d for d in session.exec(select(Device).where(col(Device.id).in_(device_ids)))}
    claims = []
    for delivery in due:
        alert = alerts[delivery.alert_id]
        delivery.attempts += 1
        delivery.next_attempt_at = now + lease
        delivery.updated_at = now
        session.add(delivery)
        notice = _notice(
            alert,
            rules.get(alert.rule_id) if alert.rule_id else None,
            devices.get(alert.device_id) if alert.device_id else None,
        )
        claims.append(
            Claim(delivery.id, delivery.channel, delivery.target, delivery.attempts, notice)
        )
    session.flush()
    return claims


def count_due(session: Session, *, now: datetime | None = None) -> int:
    """How many deliveries are due and not claimed (the dispatchers' backlog)."""
    query = (
        select(func.count())
        .select_from(NotificationDelivery)
        .where(NotificationDelivery.status == PENDING)
        .where(col(NotificationDelivery.next_attempt_at) <= (now or utcnow()))
    )
    return int(session.exec(query).one())


def _delivery(session: Session, delivery_id: uuid.UUID) -> NotificationDelivery:
    delivery = session.get(NotificationDelivery, delivery_id)
    if delivery is None:
        raise NotFoundError("notification delivery", delivery_id)
    return delivery


def record_success(
    session: Session, *, delivery_id: uuid.UUID, now: datetime | None = None
) -> NotificationDelivery:
    """The attempt reached the receiver: SENT (an earlier attempt's error stays as history)."""
    delivery = _delivery(session, delivery_id)
    delivery.status, delivery.next_attempt_at = SENT, None
    delivery.updated_at = now or utcnow()
    session.add(delivery)
    session.flush()
    return delivery


def record_failure(
    session: Session,
    *,
    delivery_id: uuid.UUID,
    error: str,
    permanent: bool = False,
    backoff: Backoff = DEFAULT_BACKOFF,
    now: datetime | None = None,
) -> NotificationDelivery:
    """The attempt failed: due again after the backoff, or FAILED when out of attempts.

    `permanent` failures (no SMTP server configured, an address that cannot work) are
    FAILED at once: trying again cannot help.
    """
    now = now or utcnow()
    delivery = _delivery(session, delivery_id)
    delivery.last_error = error[:MAX_ERROR_LENGTH]
    delivery.updated_at = now
    if permanent or delivery.attempts >= backoff.max_attempts:
        delivery.status, delivery.next_attempt_at = FAILED, None
    else:
        delivery.next_attempt_at = now + backoff.delay(delivery.attempts)
    session.add(delivery)
    session.flush()
    return delivery


def record_held(
    session: Session,
    *,
    delivery_id: uuid.UUID,
    reason: str,
    until: datetime,
    now: datetime | None = None,
) -> NotificationDelivery:
    """The delivery was claimed but not tried (its target's circuit is open): due at `until`.

    The claim's attempt is given back (nothing was sent), so waiting on an open circuit
    never uses up a delivery's attempts; `reason` ("circuit open: ...") is shown as its
    last error meanwhile.
    """
    delivery = _delivery(session, delivery_id)
    delivery.attempts = max(0, delivery.attempts - 1)
    delivery.last_error = reason[:MAX_ERROR_LENGTH]
    delivery.next_attempt_at = until
    delivery.updated_at = now or utcnow()
    session.add(delivery)
    session.flush()
    return delivery


def release_held(
    session: Session, *, held: dict[uuid.UUID, datetime], now: datetime | None = None
) -> int:
    """Make due now the deliveries `record_held` put off (delivery id -> its `until`).

    Only those still PENDING and still due at that very `until`: one that another
    dispatcher has claimed since (its lease moved `next_attempt_at`) is left alone.
    """
    now = now or utcnow()
    released = 0
    for delivery_id, until in held.items():
        # locked: a claim cannot take it between this check and the update
        delivery = session.get(NotificationDelivery, delivery_id, with_for_update=True)
        if delivery is None or delivery.status != PENDING or delivery.next_attempt_at is None:
            continue
        if as_utc(delivery.next_attempt_at) != as_utc(until):
            continue
        delivery.next_attempt_at, delivery.updated_at = now, now
        session.add(delivery)
        released += 1
    session.flush()
    return released
