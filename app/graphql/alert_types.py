"""GraphQL types of alerts and alert rules (seed section 3.3, SPEC sections 6 and 7)."""

from collections.abc import Sequence
from enum import Enum
from typing import Any

import strawberry

from app.core import models
from app.graphql.context import Info, in_session
from app.graphql.types import (
    Device,
    iso_utc,
    iso_utc_or_none,
    iso_utc_text,
    iso_utc_text_or_none,
)
from app.services import alerts, devices, notifications, rule_testing
from app.services.rule_testing import DeviceReplay
from rules.errors import Diagnostic

# the models' enums are the GraphQL enums: one name per concept, no copy to keep in step
AlertSeverity = strawberry.enum(models.AlertSeverity, name="AlertSeverity")
AlertStatus = strawberry.enum(models.AlertStatus, name="AlertStatus")


async def devices_by_id(device_ids: Sequence[str]) -> list[models.Device | None]:
    """The device of each id, or None when it is gone, in one session."""
    return await in_session(
        lambda session: [
            devices.get_device(session=session, device_id=device_id) for device_id in device_ids
        ]
    )


async def deliveries_by_alert(alert_ids: Sequence[str]) -> list[list[models.NotificationDelivery]]:
    """The notification deliveries of each alert, newest first, in one session."""
    return await in_session(
        lambda session: [
            notifications.deliveries_for_alert(session, alert_id) for alert_id in alert_ids
        ]
    )


@strawberry.type(
    description="One notification of an alert (an e-mail or a webhook call) and its attempts."
)
class NotificationDelivery:
    """A delivery as GraphQL shows it; times are ISO 8601 UTC."""

    id: strawberry.ID
    channel: str = strawberry.field(description="`email` or `webhook`.")
    target: str
    status: str = strawberry.field(description="PENDING (to be tried), SENT or FAILED.")
    attempts: int
    last_error: str | None
    next_attempt_at: str | None
    created_at: str
    updated_at: str

    @classmethod
    def from_model(cls, delivery: models.NotificationDelivery) -> "NotificationDelivery":
        """The GraphQL view of a stored delivery."""
        return cls(
            id=strawberry.ID(str(delivery.id)),
            channel=delivery.channel,
            target=delivery.target,
            status=delivery.status,
            attempts=delivery.attempts,
            last_error=delivery.last_error,
            next_attempt_at=iso_utc_or_none(delivery.next_attempt_at),
            created_at=iso_utc(delivery.created_at),
            updated_at=iso_utc(delivery.updated_at),
        )


@strawberry.type(description="A rule that fired on a device; times are ISO 8601 UTC.")
class Alert:
    """An alert as GraphQL shows it."""

    id: strawberry.ID
    device_id: strawberry.ID
    severity: AlertSeverity
    status: AlertStatus
    title: str
    message: str | None
    metric_name: str | None
    metric_value: float | None
    threshold: float | None
    triggered_at: str
    acknowledged_at: str | None
    resolved_at: str | None
    rule_id: strawberry.ID | None = strawberry.field(
        description="The rule that fired; null once it was deleted."
    )
    resolution: str | None = strawberry.field(
        description='The note given when it was resolved ("cleared by the rule" when the '
        "rule's `clear when` resolved it)."
    )
    correlation_id: str | None = strawberry.field(
        description="The id on every log line of the MQTT batch whose points fired it, and "
        "on its webhooks (X-Correlation-ID) and commands (docs/operations.md)."
    )

    @classmethod
    def from_model(cls, alert: models.Alert) -> "Alert":
        """The GraphQL view of a stored alert."""
        return cls.from_payload(alerts.alert_payload(alert))

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "Alert":
        """The GraphQL view of an alert as `iot:alerts` carries it."""
        return cls(
            id=strawberry.ID(payload["id"]),
            device_id=strawberry.ID(payload["device_id"]),
            severity=models.AlertSeverity(payload["severity"]),
            status=models.AlertStatus(payload["status"]),
            title=payload["title"],
            message=payload["message"],
            metric_name=payload["metric_name"],
            metric_value=payload["metric_value"],
            threshold=payload["threshold"],
            triggered_at=iso_utc_text(payload["triggered_at"]),
            acknowledged_at=iso_utc_text_or_none(payload["acknowledged_at"]),
            resolved_at=iso_utc_text_or_none(payload["resolved_at"]),
            rule_id=None if payload["rule_id"] is None else strawberry.ID(payload["rule_id"]),
            resolution=payload["resolution"],
            # .get: a process of the previous release announces alerts without it
            correlation_id=payload.get("correlation_id"),
        )

    @strawberry.field(description="The device the alert is about; null once it was deleted.")
    async def device(self, info: Info) -> Device | None:
        """The alert's device (batched across the alerts of one request)."""
        found = await info.context.loader(devices_by_id).load(str(self.device_id))
        return None if found is None else Device.from_model(found)

    @strawberry.field(description="Its e-mails and webhook calls, newest first, with attempts.")
    async def notifications(self, info: Info) -> list[NotificationDelivery]:
        """The alert's deliveries (batched across the alerts of one request)."""
        found = await info.context.loader(deliveries_by_alert).load(str(self.id))
        return [NotificationDelivery.from_model(delivery) for delivery in found]


@strawberry.type(
    description="A rule in the rule language (`expression`). The other fields are derived "
    "from it; `metricName`, `condition` and `threshold` are null unless the condition is one "
    "comparison `metric <op> number`."
)
class AlertRule:
    """An alert rule as GraphQL shows it."""

    id: strawberry.ID
    name: str
    description: str | None
    device_id: strawberry.ID | None
    device_type: str | None
    metric_name: str | None
    condition: str | None = strawberry.field(description="gt, gte, lt, lte or eq; or null.")
    threshold: float | None
    severity: AlertSeverity
    enabled: bool
    cooldown_minutes: int
    expression: str = strawberry.field(description="The whole rule in the rule language.")

    @classmethod
    def from_model(cls, rule: models.AlertRule) -> "AlertRule":
        """The GraphQL view of a stored rule."""
        return cls(
            id=strawberry.ID(str(rule.id)),
            name=rule.name,
            description=rule.description,
            device_id=None if rule.device_id is None else strawberry.ID(str(rule.device_id)),
            device_type=rule.device_type,
            metric_name=rule.metric_name,
            condition=rule.condition,
            threshold=rule.threshold,
            severity=models.AlertSeverity(rule.severity),
            enabled=rule.enabled,
            cooldown_minutes=rule.cooldown_minutes,
            expression=rule.expression,
        )


@strawberry.type(description="One alert a rule would have opened in a `testRule` replay.")
class RuleFiring:
    """When it fired and cleared; times are ISO 8601 UTC."""

    fired_at: str
    cleared_at: str | None = strawberry.field(
        description="When `clear when` (or, for a rule without it, the condition turning "
        "false) would have closed it; null when still open at the end of the range."
    )
    value: float | None


@strawberry.type(description="What a draft rule would have done on one device (`testRule`).")
class RuleTestResult:
    """The replay of one device."""

    device_id: strawberry.ID
    device_name: str
    metric_name: str | None = strawberry.field(
        description="The metric the condition reads first: the one to chart."
    )
    firings: list[RuleFiring]
    truncated: bool = strawberry.field(
        description="True when the replay stopped early (its time budget, or "
        f"{rule_testing.MAX_FIRINGS:,} firings in all): the firings cover `from` up to "
        "`replayedUntil` only.",
    )
    replayed_until: str = strawberry.field(
        description="How far the replay got: `to`, or when `truncated` the time of the last "
        "point replayed (`from` when none was).",
    )

    @strawberry.field(description="How many alerts it would have opened.")
    def fired_count(self) -> int:
        """len(firings)."""
        return len(self.firings)

    @classmethod
    def from_replay(cls, replay: DeviceReplay) -> "RuleTestResult":
        """The GraphQL view of one device's replay."""
        assert replay.replayed_until is not None, "replay() sets how far it got"
        return cls(
            device_id=strawberry.ID(str(replay.device_id)),
            device_name=replay.device_name,
            metric_name=replay.metric,
            firings=[
                RuleFiring(
                    fired_at=iso_utc(firing.fired_at),
                    cleared_at=iso_utc_or_none(firing.cleared_at),
                    value=firing.value,
                )
                for firing in replay.firings
            ],
            truncated=replay.truncated,
            replayed_until=iso_utc(replay.replayed_until),
        )


@strawberry.enum(description="How bad a rule diagnostic is: an ERROR stops the rule.")
class DiagnosticSeverity(Enum):
    """The severities of the rule language's diagnostics."""

    ERROR = "ERROR"
    WARNING = "WARNING"


@strawberry.type(description="One finding in a rule text, at a 1-based line and column.")
class RuleDiagnostic:
    """A diagnostic of `validateRule`."""

    line: int
    column: int
    message: str
    severity: DiagnosticSeverity

    @classmethod
    def from_diagnostic(cls, diagnostic: Diagnostic) -> "RuleDiagnostic":
        """The GraphQL view of a rule-language diagnostic."""
        return cls(
            line=diagnostic.line,
            column=diagnostic.column,
            message=diagnostic.message,
            severity=DiagnosticSeverity(diagnostic.severity),
        )


@strawberry.input(
    description='A new rule: a whole `expression` (`rule "..." when ...`), the structured '
    "fields `metricName`/`condition`/`threshold`, or a bare condition as `expression` with "
    "the other clauses from the fields. Fields contradicting the text are BAD_USER_INPUT."
)
class CreateAlertRuleInput:
    """Arguments of `createAlertRule`; null and absent both mean "not given"."""

    name: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    device_id: strawberry.ID | None = strawberry.UNSET
    device_type: str | None = strawberry.UNSET
    metric_name: str | None = strawberry.UNSET
    condition: str | None = strawberry.UNSET
    threshold: float | None = strawberry.UNSET
    severity: AlertSeverity | None = strawberry.UNSET
    enabled: bool | None = strawberry.UNSET
    cooldown_minutes: int | None = strawberry.UNSET
    expression: str | None = strawberry.UNSET


@strawberry.input(
    description="Changes to a rule. An absent (or null) field stays as it is; a new "
    "`expression` or `metricName` rewrites the condition."
)
class UpdateAlertRuleInput:
    """Arguments of `updateAlertRule`; null and absent both mean "unchanged"."""

    id: strawberry.ID
    name: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    device_id: strawberry.ID | None = strawberry.UNSET
    device_type: str | None = strawberry.UNSET
    metric_name: str | None = strawberry.UNSET
    condition: str | None = strawberry.UNSET
    threshold: float | None = strawberry.UNSET
    severity: AlertSeverity | None = strawberry.UNSET
    enabled: bool | None = strawberry.UNSET
    cooldown_minutes: int | None = strawberry.UNSET
    expression: str | None = strawberry.UNSET
