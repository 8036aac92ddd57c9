"""Alerts and alert rules over GraphQL (seed section 3.3): reads for all, changes for OPERATOR."""

from typing import Annotated, Any

import strawberry
from anyio import to_thread

from app.core.errors import ValidationError
from app.graphql import arguments
from app.graphql.alert_types import (
    Alert,
    AlertRule,
    AlertSeverity,
    CreateAlertRuleInput,
    RuleDiagnostic,
    RuleTestResult,
    UpdateAlertRuleInput,
)
from app.graphql.context import Info, in_session
from app.graphql.permissions import IsAuthenticated, IsOperator, requires
from app.graphql.types import DeleteResult, given
from app.services import alerts, rule_testing, rules
from app.services.rules import RuleInput
from rules.checks import validate

DEFAULT_HISTORY_LIMIT = 100
DEFAULT_LIMIT = 100
# `from` is a Python keyword: the argument keeps its GraphQL name, the parameter cannot
From = Annotated[str, strawberry.argument(name="from")]
# clause fields `updateAlertRule` can only change together with a new condition
_WITH_CONDITION = ("device_id", "device_type", "condition", "threshold")


def _value(data: Any, field: str) -> Any:
    """An input field's value; absent and null both give None ("not given")."""
    value = getattr(data, field)
    return value if given(value) else None


def _rule_input(data: CreateAlertRuleInput | UpdateAlertRuleInput) -> RuleInput:
    """The service's rule input for a GraphQL input; the severity enum becomes its value."""
    severity = _value(data, "severity")
    return RuleInput(
        expression=_value(data, "expression"),
        name=_value(data, "name"),
        description=_value(data, "description"),
        device_id=_value(data, "device_id"),
        device_type=_value(data, "device_type"),
        metric_name=_value(data, "metric_name"),
        condition=_value(data, "condition"),
        threshold=_value(data, "threshold"),
        severity=None if severity is None else severity.value,
        cooldown_minutes=_value(data, "cooldown_minutes"),
        enabled=_value(data, "enabled"),
    )


def _rule_update(data: UpdateAlertRuleInput) -> RuleInput:
    """The service update; refuses clause fields the service would ignore without a condition."""
    change = _rule_input(data)
    if change.expression is None and change.metric_name is None:
        for field in _WITH_CONDITION:
            if _value(data, field) is not None:
                raise ValidationError(field, "give it with a new expression or metricName")
    return change


@strawberry.type
class AlertsQuery:
    """Read access to alerts and rules, for every signed-in role."""

    @strawberry.field(
        description="Open (ACTIVE or ACKNOWLEDGED) alerts, newest first, one page; `limit` is "
        "1 to the server's page size.",
        extensions=requires(IsAuthenticated()),
    )
    async def active_alerts(
        self,
        info: Info,
        device_id: strawberry.ID | None = strawberry.UNSET,
        severity: AlertSeverity | None = strawberry.UNSET,
        limit: int | None = DEFAULT_LIMIT,
        offset: int | None = 0,
    ) -> list[Alert]:
        """One page of the open alerts matching every given filter."""
        device = device_id if given(device_id) else None
        level = severity if given(severity) else None
        max_limit = info.context.settings.max_page_size
        count, skip = arguments.page(limit, offset, default=DEFAULT_LIMIT, max_limit=max_limit)
        return await in_session(
            lambda session: [
                Alert.from_model(alert)
                for alert in alerts.active_alerts(
                    session=session,
                    device_id=device,
                    severity=level,
                    limit=count,
                    offset=skip,
                    max_limit=max_limit,
                )
            ]
        )

    @strawberry.field(
        description="Alerts triggered with from <= time < to, newest first; "
        "`limit` is 1 to the server's page size.",
        extensions=requires(IsAuthenticated()),
    )
    async def alert_history(
        self,
        info: Info,
        *,
        device_id: strawberry.ID | None = strawberry.UNSET,
        from_: From,
        to: str,
        limit: int | None = DEFAULT_HISTORY_LIMIT,
    ) -> list[Alert]:
        """The first `limit` alerts of the range."""
        start, end = arguments.moment(from_, "from"), arguments.moment(to, "to")
        device = device_id if given(device_id) else None
        max_limit = info.context.settings.max_page_size
        count = arguments.page_limit(limit, DEFAULT_HISTORY_LIMIT, max_limit)
        return await in_session(
            lambda session: [
                Alert.from_model(alert)
                for alert in alerts.alert_history(
                    session=session,
                    start=start,
                    end=end,
                    device_id=device,
                    limit=count,
                    max_limit=max_limit,
                )
            ]
        )

    @strawberry.field(
        description="Alert rules by name, one page; with `deviceId`, those scoped to that "
        "device; `limit` is 1 to the server's page size.",
        extensions=requires(IsAuthenticated()),
    )
    async def alert_rules(
        self,
        info: Info,
        device_id: strawberry.ID | None = strawberry.UNSET,
        limit: int | None = DEFAULT_LIMIT,
        offset: int | None = 0,
    ) -> list[AlertRule]:
        """One page of the rules, optionally of one device."""
        device = device_id if given(device_id) else None
        max_limit = info.context.settings.max_page_size
        count, skip = arguments.page(limit, offset, default=DEFAULT_LIMIT, max_limit=max_limit)
        return await in_session(
            lambda session: [
                AlertRule.from_model(rule)
                for rule in rules.list_rules(
                    session=session, device_id=device, limit=count, offset=skip, max_limit=max_limit
                )
            ]
        )

    @strawberry.field(
        description="Diagnostics of a rule text (one or several rules, at most "
        f"{rules.MAX_EXPRESSION_LENGTH:,} characters); empty when it is valid.",
        extensions=requires(IsAuthenticated()),
    )
    async def validate_rule(self, info: Info, expression: str) -> list[RuleDiagnostic]:
        """Syntax errors, or else the semantic findings, each at its line and column."""
        rules.check_length(expression)
        retention = info.context.settings.retention_days
        # parsing is CPU work: in a worker thread, the event loop keeps serving others
        found = await to_thread.run_sync(
            lambda: validate(expression, retention_days=retention, known_metrics=None)
        )
        return [RuleDiagnostic.from_diagnostic(diagnostic) for diagnostic in found]

    @strawberry.field(
        description="Replay a draft rule (one rule, or a bare condition) over the stored "
        "telemetry of from <= time < to (at most 31 days): when it would have fired and "
        "cleared, per device in its scope (or of `deviceIds`), at most "
        f"{rule_testing.MAX_DEVICES} devices. Nothing is stored. A replay stops after "
        f"{rule_testing.BUDGET_SECONDS:g} s of work or {rule_testing.MAX_FIRINGS:,} firings "
        "(`truncated`); one runs at a time per user (RATE_LIMITED otherwise).",
        extensions=requires(IsAuthenticated()),
    )
    async def test_rule(
        self,
        info: Info,
        expression: str,
        from_: From,
        to: str,
        device_ids: list[strawberry.ID] | None = strawberry.UNSET,
    ) -> list[RuleTestResult]:
        """One result per device, by device name."""
        user = await info.context.require_user()
        rules.check_length(expression)
        start, end = arguments.moment(from_, "from"), arguments.moment(to, "to")
        chosen = list(device_ids) if given(device_ids) and device_ids is not None else None
        return await in_session(
            lambda session: [
                RuleTestResult.from_replay(result)
                for result in rule_testing.replay(
                    session=session,
                    expression=expression,
                    start=start,
                    end=end,
                    device_ids=chosen,
                    user_id=user.id,
                )
            ]
        )


@strawberry.type
class AlertsMutation:
    """Rule management and alert handling, OPERATOR and ADMIN."""

    @strawberry.mutation(
        description="Store a new rule (OPERATOR).", extensions=requires(IsOperator())
    )
    async def create_alert_rule(self, info: Info, input: CreateAlertRuleInput) -> AlertRule:
        """The new rule, its structured fields derived from its text."""
        user = await info.context.require_user()
        data = _rule_input(input)
        return await in_session(
            lambda session: AlertRule.from_model(
                rules.create_rule(session=session, data=data, created_by=user.id)
            )
        )

    @strawberry.mutation(description="Change a rule (OPERATOR).", extensions=requires(IsOperator()))
    async def update_alert_rule(self, input: UpdateAlertRuleInput) -> AlertRule:
        """The rule after the change; nothing changes when any field is refused."""
        data = _rule_update(input)
        return await in_session(
            lambda session: AlertRule.from_model(
                rules.update_rule(session=session, rule_id=input.id, data=data)
            )
        )

    @strawberry.mutation(
        description="Remove a rule; its alerts stay (OPERATOR).",
        extensions=requires(IsOperator()),
    )
    async def delete_alert_rule(self, id: strawberry.ID) -> DeleteResult:
        """The id of the removed rule; NOT_FOUND when there is none."""
        deleted = await in_session(lambda session: rules.delete_rule(session=session, rule_id=id))
        return DeleteResult(success=True, id=strawberry.ID(str(deleted)))

    @strawberry.mutation(
        description="Mark an ACTIVE alert as seen (OPERATOR).", extensions=requires(IsOperator())
    )
    async def acknowledge_alert(self, info: Info, id: strawberry.ID) -> Alert:
        """The alert, now ACKNOWLEDGED by the signed-in user."""
        user = await info.context.require_user()
        return await in_session(
            lambda session: Alert.from_model(
                alerts.acknowledge_alert(session=session, alert_id=id, user_id=user.id)
            )
        )

    @strawberry.mutation(
        description="Close an open alert, with an optional note (OPERATOR).",
        extensions=requires(IsOperator()),
    )
    async def resolve_alert(
        self, info: Info, id: strawberry.ID, message: str | None = strawberry.UNSET
    ) -> Alert:
        """The alert, now RESOLVED by the signed-in user."""
        user = await info.context.require_user()
        note = message if given(message) else None
        return await in_session(
            lambda session: Alert.from_model(
                alerts.resolve_alert(session=session, alert_id=id, user_id=user.id, message=note)
            )
        )
