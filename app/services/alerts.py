"""Alerts: opened when a rule fires, acknowledged and resolved by operators or by the rule.

At most one open (ACTIVE or ACKNOWLEDGED) alert exists per (rule, device): a partial
unique index guarantees it even when several evaluations race, and `open_alert` turns
the losing insert into "already open". Every change is announced on `iot:alerts` after
its commit (TRIGGERED, ACKNOWLEDGED, RESOLVED), for pages, subscriptions, notifications
and the rule evaluator.
"""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from app.core import bus, logs
from app.core.errors import NotFoundError, ValidationError
from app.core.models import Alert, AlertRule, AlertSeverity, AlertStatus, utcnow
from app.services import events, validation

OPEN = (AlertStatus.ACTIVE, AlertStatus.ACKNOWLEDGED)


def alert_payload(alert: Alert) -> dict[str, Any]:
    """An alert as `iot:alerts` messages carry it (ISO 8601 UTC times)."""
    return {
        "id": str(alert.id),
        "rule_id": events.ident(alert.rule_id),
        "device_id": events.ident(alert.device_id),
        "severity": str(alert.severity),
        "status": str(alert.status),
        "title": alert.title,
        "message": alert.message,
        "metric_name": alert.metric_name,
        "metric_value": alert.metric_value,
        "threshold": alert.threshold,
        "triggered_at": events.moment(alert.triggered_at),
        "acknowledged_at": events.moment(alert.acknowledged_at),
        "acknowledged_by": events.ident(alert.acknowledged_by),
        "resolved_at": events.moment(alert.resolved_at),
        "resolved_by": events.ident(alert.resolved_by),
        "resolution": alert.resolution,
        "correlation_id": alert.correlation_id,
    }


def _announce(session: Session, kind: str, alert: Alert) -> None:
    """Queue the change for `iot:alerts`; it goes out when the session commits."""
    payload = alert_payload(alert)
    events.emit(
        session,
        bus.ALERTS,
        {
            "type": kind,
            "alert_id": payload["id"],
            "rule_id": payload["rule_id"],
            "device_id": payload["device_id"],
            "severity": payload["severity"],
            "status": payload["status"],
            "title": alert.title,
            "at": utcnow().isoformat(),
            "alert": payload,
        },
    )


def open_alert(
    *,
    session: Session,
    rule: AlertRule,
    device_id: uuid.UUID,
    at: datetime,
    message: str | None = None,
    metric_name: str | None = None,
    metric_value: float | None = None,
) -> Alert | None:
    """Open an alert for `rule` on a device; None when one is already open for them."""
    alert = Alert(
        rule_id=rule.id,
        device_id=device_id,
        severity=rule.severity,
        title=rule.name,
        message=message,
        metric_name=metric_name or rule.metric_name,
        metric_value=metric_value,
        threshold=rule.threshold,
        triggered_at=at,
        correlation_id=logs.correlation_id(),  # the batch whose points fired it
    )
    try:
        with session.begin_nested():  # a savepoint: losing the race undoes only this insert
            session.add(alert)
    except IntegrityError:
        return None
    _announce(session, "TRIGGERED", alert)
    return alert


def get_alert(*, session: Session, alert_id: uuid.UUID | str) -> Alert | None:
    """The alert with this id, or None."""
    return session.get(Alert, validation.parse_id(alert_id))


def _existing(session: Session, alert_id: uuid.UUID | str) -> Alert:
    alert = get_alert(session=session, alert_id=alert_id)
    if alert is None:
        raise NotFoundError("alert", alert_id)
    return alert


def acknowledge_alert(
    *, session: Session, alert_id: uuid.UUID | str, user_id: uuid.UUID | None
) -> Alert:
    """An operator has seen it; only an ACTIVE alert can be acknowledged."""
    alert = _existing(session, alert_id)
    if alert.status != AlertStatus.ACTIVE:
        raise ValidationError("id", f"alert is {alert.status}, only ACTIVE can be acknowledged")
    alert.status = AlertStatus.ACKNOWLEDGED
    alert.acknowledged_at, alert.acknowledged_by = utcnow(), user_id
    session.add(alert)
    session.flush()
    _announce(session, "ACKNOWLEDGED", alert)
    return alert


def resolve_alert(
    *,
    session: Session,
    alert_id: uuid.UUID | str,
    user_id: uuid.UUID | None,
    message: str | None = None,
) -> Alert:
    """Close an open alert (by an operator, or by the rule's `clear when` with no user)."""
    alert = _existing(session, alert_id)
    if alert.status == AlertStatus.RESOLVED:
        raise ValidationError("id", "alert is already RESOLVED")
    if message is not None and len(validation.plain(message, "message")) > 2000:
        raise ValidationError("message", "must be at most 2000 characters")
    alert.status = AlertStatus.RESOLVED
    alert.resolved_at, alert.resolved_by, alert.resolution = utcnow(), user_id, message
    session.add(alert)
    session.flush()
    _announce(session, "RESOLVED", alert)
    return alert


def open_alert_for(*, session: Session, rule_id: uuid.UUID, device_id: uuid.UUID) -> Alert | None:
    """The open alert of a rule on a device, if any."""
    query = select(Alert).where(
        Alert.rule_id == rule_id, Alert.device_id == device_id, col(Alert.status).in_(OPEN)
    )
    return session.exec(query).first()


def active_alerts(
    *,
    session: Session,
    device_id: uuid.UUID | str | None = None,
    severity: AlertSeverity | str | None = None,
    limit: int | None = None,
    offset: int = 0,
    max_limit: int = 1000,
) -> list[Alert]:
    """Open alerts, newest first; a page of them with `limit`."""
    query = select(Alert).where(col(Alert.status).in_(OPEN))
    if device_id is not None:
        query = query.where(Alert.device_id == validation.parse_id(device_id, "deviceId"))
    if severity is not None:
        query = query.where(
            Alert.severity == validation.any_of(severity, "severity", AlertSeverity)
        )
    query = query.order_by(col(Alert.triggered_at).desc(), col(Alert.id))
    if limit is not None:
        limit, offset = validation.page(limit, offset, max_limit=max_limit)
        query = query.offset(offset).limit(limit)
    return list(session.exec(query))


def count_open_alerts(*, session: Session) -> int:
    """How many alerts are ACTIVE or ACKNOWLEDGED (the header badge)."""
    query = select(func.count()).select_from(Alert).where(col(Alert.status).in_(OPEN))
    return int(session.exec(query).one())


def last_fired(*, session: Session) -> dict[uuid.UUID, datetime]:
    """When each rule last opened an alert, by rule id (rules that never fired are absent)."""
    query = (
        select(Alert.rule_id, func.max(Alert.triggered_at))
        .where(col(Alert.rule_id).is_not(None))
        .group_by(col(Alert.rule_id))
    )
    return {rule_id: at for rule_id, at in session.exec(query) if rule_id is not None}


def last_triggered(
    *, session: Session, since: datetime
) -> dict[tuple[uuid.UUID, uuid.UUID], datetime]:
    """The newest alert time per (rule, device) among alerts triggered at or after `since`."""
    query = (
        select(Alert.rule_id, Alert.device_id, func.max(Alert.triggered_at))
        .where(Alert.triggered_at >= since)
        .group_by(col(Alert.rule_id), col(Alert.device_id))
    )
    return {
        (rule_id, device_id): at
        for rule_id, device_id, at in session.exec(query)
        if rule_id is not None and device_id is not None
    }


def alert_history(
    *,
    session: Session,
    start: datetime,
    end: datetime,
    device_id: uuid.UUID | str | None = None,
    severity: AlertSeverity | str | None = None,
    status: AlertStatus | str | None = None,
    limit: int = 100,
    max_limit: int = 1000,
) -> list[Alert]:
    """Alerts triggered with start <= time < end, newest first, matching every filter."""
    if start >= end:
        raise ValidationError("from", "must be before 'to'")
    limit, _ = validation.page(limit, 0, max_limit=max_limit)
    query = select(Alert).where(Alert.triggered_at >= start, Alert.triggered_at < end)
    if device_id is not None:
        query = query.where(Alert.device_id == validation.parse_id(device_id, "deviceId"))
    if severity is not None:
        query = query.where(
            Alert.severity == validation.any_of(severity, "severity", AlertSeverity)
        )
    if status is not None:
        query = query.where(Alert.status == validation.any_of(status, "status", AlertStatus))
    return list(session.exec(query.order_by(col(Alert.triggered_at).desc()).limit(limit)))
