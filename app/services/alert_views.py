"""What the alert pages show: alerts with their device and people, rules with their last firing.

Reads only. The alerts and rules services own every change; these functions gather, in a
few queries, the names a page needs next to each alert so that a page never runs one query
per row.
"""

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, union
from sqlmodel import Session, col, select

from app.core.models import (
    Alert,
    AlertRule,
    AlertSeverity,
    AlertStatus,
    Device,
    TelemetryHourly,
    TelemetryPoint,
    User,
    as_utc,
    utcnow,
)
from app.services import alerts
from app.services.alerts import OPEN

DEFAULT_LIMIT = 200
RETENTION_DAYS_SHOWN = 365  # "any time" in the history: alerts outlive telemetry
RECENT_METRICS = timedelta(hours=2)  # rollups lag the newest points by up to this much


@dataclass(frozen=True, kw_only=True)
class AlertFilter:
    """Which alerts a list shows; None means "any"."""

    severity: AlertSeverity | None = None
    status: AlertStatus | None = None
    device_id: uuid.UUID | None = None
    start: datetime | None = None  # triggered at or after
    end: datetime | None = None  # triggered before


@dataclass(frozen=True)
class AlertView:
    """An alert with the names shown beside it."""

    alert: Alert
    device_name: str | None  # None: the device was deleted (its alerts go with it) or unknown
    acknowledged_by: str | None
    resolved_by: str | None


def open_alerts(*, session: Session, where: AlertFilter = AlertFilter()) -> list[Alert]:
    """Open (ACTIVE or ACKNOWLEDGED) alerts matching `where`, newest first."""
    if where.status is not None and where.status not in OPEN:
        return []
    found = alerts.active_alerts(
        session=session, device_id=where.device_id, severity=where.severity
    )
    return [
        alert
        for alert in found
        if (where.status is None or alert.status == where.status)
        and (where.start is None or as_utc(alert.triggered_at) >= where.start)
        and (where.end is None or as_utc(alert.triggered_at) < where.end)
    ]


def history(*, session: Session, where: AlertFilter, limit: int = DEFAULT_LIMIT) -> list[Alert]:
    """Alerts of every status matching `where` (at most `limit`, newest first)."""
    end = where.end or utcnow() + timedelta(minutes=1)
    start = where.start or end - timedelta(days=RETENTION_DAYS_SHOWN)
    return alerts.alert_history(
        session=session,
        start=start,
        end=end,
        device_id=where.device_id,
        severity=where.severity,
        status=where.status,
        limit=limit,
    )


def _people(user: User) -> str:
    return user.name or user.email


def describe(*, session: Session, shown: Sequence[Alert]) -> list[AlertView]:
    """Each alert with its device's name and the names of who acknowledged and resolved it."""
    device_ids = {alert.device_id for alert in shown if alert.device_id is not None}
    user_ids = {
        user_id
        for alert in shown
        for user_id in (alert.acknowledged_by, alert.resolved_by)
        if user_id is not None
    }
    names: dict[uuid.UUID, str] = {}
    if device_ids:
        query = select(Device.id, Device.name).where(col(Device.id).in_(device_ids))
        names.update({row[0]: row[1] for row in session.exec(query)})
    people: dict[uuid.UUID, str] = {}
    if user_ids:
        found = session.exec(select(User).where(col(User.id).in_(user_ids)))
        people = {user.id: _people(user) for user in found}
    return [
        AlertView(
            alert=alert,
            device_name=names.get(alert.device_id) if alert.device_id else None,
            acknowledged_by=people.get(alert.acknowledged_by) if alert.acknowledged_by else None,
            resolved_by=people.get(alert.resolved_by) if alert.resolved_by else None,
        )
        for alert in shown
    ]


def open_alerts_by_rule(*, session: Session) -> dict[uuid.UUID, int]:
    """How many open alerts each rule has (rules with none are absent)."""
    query = (
        select(Alert.rule_id, func.count())
        .where(col(Alert.status).in_(OPEN), col(Alert.rule_id).is_not(None))
        .group_by(col(Alert.rule_id))
    )
    return {rule_id: count for rule_id, count in session.exec(query) if rule_id is not None}


def device_names(
    *, session: Session, device_ids: Iterable[uuid.UUID] | None = None, limit: int = 500
) -> dict[uuid.UUID, str]:
    """Devices' names by id: these devices, or the first `limit` by name (for pickers)."""
    query = select(Device.id, Device.name)
    if device_ids is not None:
        query = query.where(col(Device.id).in_(list(device_ids)))
    else:
        query = query.order_by(col(Device.name), col(Device.id)).limit(limit)
    return {row[0]: row[1] for row in session.exec(query)}


def known_metrics(*, session: Session) -> set[str]:
    """Every metric name some device has reported: the hourly rollups plus the newest points.

    The rollups stay small however much raw telemetry is stored; the raw points of the last
    hours cover a metric that appeared after the rollup job's last run.
    """
    since = utcnow() - RECENT_METRICS
    recent = select(TelemetryPoint.metric_name).where(TelemetryPoint.time >= since)
    query = union(select(TelemetryHourly.metric_name), recent)
    return {row[0] for row in session.execute(query)}


def rule_names(*, session: Session, rule_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The names of these rules (deleted ones are absent)."""
    wanted = list(rule_ids)
    if not wanted:
        return {}
    query = select(AlertRule.id, AlertRule.name).where(col(AlertRule.id).in_(wanted))
    return {row[0]: row[1] for row in session.exec(query)}
