"""GraphQL types of alerts and alert rules (seed section 3.3, SPEC sections 6 and 7)."""

from collections.abc import Sequence
from enum import Enum

import strawberry

from app import models
from app.graphql.context import Info, in_session
from app.graphql.types import Device, iso_utc, iso_utc_or_none
from app.services import devices
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

    @classmethod
    def from_model(cls, alert: models.Alert) -> "Alert":
        """The GraphQL view of a stored alert."""
        return cls(
            id=strawberry.ID(str(alert.id)),
            device_id=strawberry.ID(str(alert.device_id)),
            severity=models.AlertSeverity(alert.severity),
            status=models.AlertStatus(alert.status),
            title=alert.title,
            message=alert.message,
            metric_name=alert.metric_name,
            metric_value=alert.metric_value,
            threshold=alert.threshold,
            triggered_at=iso_utc(alert.triggered_at),
            acknowledged_at=iso_utc_or_none(alert.acknowledged_at),
            resolved_at=iso_utc_or_none(alert.resolved_at),
        )

    @strawberry.field(description="The device the alert is about; null once it was deleted.")
    async def device(self, info: Info) -> Device | None:
        """The alert's device (batched across the alerts of one request)."""
        found = await info.context.loader(devices_by_id).load(str(self.device_id))
        return None if found is None else Device.from_model(found)


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
