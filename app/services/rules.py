"""Alert rules: stored as rule-language text, created from text or the seed's fields.

One path for every edge: the rule editor, GraphQL `createAlertRule` and the seeds all
call `create_rule`. The text is the truth; the seed's structured columns (scope,
severity, cooldown, and metric/condition/threshold for a single comparison) are derived
from it, and input fields that contradict the text are refused, naming the field.
"""

import math
import re
import uuid
from dataclasses import dataclass, replace

from sqlmodel import Session, col, select

from app.core import bus, outbound
from app.core.config import get_settings
from app.core.errors import NotFoundError, ValidationError
from app.core.models import AlertRule, AlertSeverity, utcnow
from app.services import events, validation
from rules import ast
from rules.checks import check
from rules.errors import RuleSyntaxError
from rules.format import format_rule
from rules.parser import parse_condition, parse_rule

# the seed's structured conditions and the comparison each one means
CONDITIONS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "eq": "=="}
_OPERATORS = {operator: name for name, operator in CONDITIONS.items()}
_RULE_KEYWORD = re.compile(r"rule\b")
# a rule text is parsed on every check; past this, parsing alone would be a denial of service
MAX_EXPRESSION_LENGTH = 10_000
MAX_DESCRIPTION = 2000  # characters, as an alert's resolution note


@dataclass(frozen=True, kw_only=True)
class RuleInput:
    """A rule as an edge submits it: text, the seed's fields, or a bare condition plus fields."""

    expression: str | None = None
    name: str | None = None
    description: str | None = None
    device_id: uuid.UUID | str | None = None
    device_type: str | None = None
    metric_name: str | None = None
    condition: str | None = None
    threshold: float | None = None
    severity: str | None = None
    cooldown_minutes: int | None = None
    enabled: bool | None = None


def _syntax(text: str, parse: object) -> object:
    try:
        return parse(text)  # type: ignore[operator]
    except RuleSyntaxError as error:
        first = error.diagnostics[0]
        raise ValidationError(
            "expression", f"line {first.line}, column {first.column}: {first.message}"
        ) from None


def _scope(data: RuleInput) -> ast.Scope:
    if data.device_id is not None and data.device_type is not None:
        raise ValidationError("deviceType", "give deviceId or deviceType, not both")
    if data.device_id is not None:
        return ast.Scope("device", str(validation.parse_id(data.device_id, "deviceId")))
    if data.device_type is not None:
        return ast.Scope("type", validation.device_type(data.device_type, "deviceType"))
    return ast.Scope()


def _structured_condition(data: RuleInput) -> ast.Condition:
    if data.metric_name is None:
        raise ValidationError("expression", "give an expression or metricName/condition/threshold")
    if data.condition not in CONDITIONS:
        raise ValidationError("condition", f"must be one of {', '.join(CONDITIONS)}")
    if data.threshold is None or not math.isfinite(data.threshold):
        raise ValidationError("threshold", "must be a finite number")
    metric = validation.text(data.metric_name, "metricName", max_length=100)
    if not validation.METRIC_NAME.fullmatch(metric):
        raise ValidationError("metricName", f"must be {validation.METRIC_NAME_RULE}")
    operator = CONDITIONS[data.condition]
    return ast.Comparison(operator, ast.Metric(metric), ast.Number(float(data.threshold)))


def _severity(value: str) -> ast.Severity:
    severity = validation.any_of(value.upper(), "severity", AlertSeverity)
    return severity.value.lower()


def _cooldown(minutes: int) -> ast.Duration:
    if minutes < 1:  # the language refuses a zero cooldown too
        raise ValidationError("cooldownMinutes", "must be 1 or more")
    return ast.Duration(minutes * 60.0, f"{minutes}m")


def _from_fields(data: RuleInput, condition: ast.Condition) -> ast.Rule:
    name = validation.text(data.name or "", "name", max_length=255)
    rule = ast.Rule(name=name, when=condition, scope=_scope(data))
    if data.severity is not None:
        rule = replace(rule, severity=_severity(data.severity))
    if data.cooldown_minutes is not None:
        rule = replace(rule, cooldown=_cooldown(data.cooldown_minutes))
    return rule


def _contradictions(data: RuleInput, rule: ast.Rule) -> None:
    """Refuse input fields that say something else than the rule text."""
    derived = derive(rule)
    given = {
        "name": data.name,
        "deviceType": data.device_type,
        "severity": data.severity.upper() if data.severity else None,
        "cooldownMinutes": data.cooldown_minutes,
        "metricName": data.metric_name,
        "condition": data.condition,
        "threshold": data.threshold,
    }
    if data.device_id is not None:
        given["deviceId"] = str(validation.parse_id(data.device_id, "deviceId"))
    for field, value in given.items():
        if value is not None and value != derived[field]:
            raise ValidationError(field, f"'{value}' contradicts the expression")


def check_length(text: str | None, field: str = "expression") -> None:
    """Refuse a rule text longer than MAX_EXPRESSION_LENGTH characters, before any parsing."""
    if text is not None and len(text) > MAX_EXPRESSION_LENGTH:
        reason = f"is {len(text)} characters long; at most {MAX_EXPRESSION_LENGTH} allowed"
        raise ValidationError(field, reason)


def build_rule(data: RuleInput) -> tuple[ast.Rule, str]:
    """The rule the input describes, and the text to store."""
    check_length(data.expression)
    text = (data.expression or "").strip()
    if is_rule_text(text):
        rule = _syntax(text, parse_rule)
        _contradictions(data, rule)
    else:
        condition = _syntax(text, parse_condition) if text else _structured_condition(data)
        rule = _from_fields(data, condition)
        text = format_rule(rule).strip()
    _check(rule, text)
    return rule, text


def _check(rule: ast.Rule, text: str) -> None:
    errors = [d for d in check([rule], text=text) if d.severity == "ERROR"]
    if errors:
        raise ValidationError(
            "expression", f"line {errors[0].line}, column {errors[0].column}: {errors[0].message}"
        )


def _check_webhooks(rule: ast.Rule) -> None:
    """Refuse a webhook whose host is, or resolves to, a non-public address (SPEC 8.2).

    Here, at save time, so the author hears of it at once; the sender checks again at
    each attempt (a name may point elsewhere by then). A name that does not resolve now
    is accepted: see `outbound.url_problem`. The message repeats the author's own URL
    (without path or credentials) and the kind of address, never a resolved address.
    """
    allow_private = get_settings().webhook_allow_private
    for target in rule.notify:
        if target.channel != "webhook":
            continue
        problem = outbound.url_problem(target.target, allow_private=allow_private)
        if problem is not None:
            shown = outbound.host_only(target.target)
            raise ValidationError("expression", f"webhook {shown} {problem}")


def is_rule_text(text: str | None) -> bool:
    # a whole rule starts with the keyword `rule`; `ruler > 3` is a bare condition
    return bool(text) and _RULE_KEYWORD.match(text.strip()) is not None


def derive(rule: ast.Rule) -> dict[str, object]:
    """The seed's structured fields of a rule, in GraphQL's names."""
    single = rule.when if isinstance(rule.when, ast.Comparison) else None
    simple = (
        single is not None
        and isinstance(single.left, ast.Metric)
        and isinstance(single.right, ast.Number)
        and single.op in _OPERATORS
    )
    return {
        "name": rule.name,
        "deviceId": rule.scope.value if rule.scope.kind == "device" else None,
        "deviceType": rule.scope.value if rule.scope.kind == "type" else None,
        "severity": rule.severity.upper(),
        "cooldownMinutes": math.ceil(rule.cooldown.seconds / 60),
        "metricName": single.left.name if simple else None,
        "condition": _OPERATORS[single.op] if simple else None,
        "threshold": single.right.value if simple else None,
    }


def _description(value: str | None) -> str | None:
    if value is not None and len(validation.plain(value, "description")) > MAX_DESCRIPTION:
        raise ValidationError("description", f"must be at most {MAX_DESCRIPTION} characters")
    return value


def _apply(stored: AlertRule, rule: ast.Rule, text: str, data: RuleInput) -> None:
    description = _description(data.description)  # checked before anything is set
    fields = derive(rule)
    stored.name = rule.name
    stored.expression = text
    stored.device_id = uuid.UUID(fields["deviceId"]) if fields["deviceId"] else None
    stored.device_type = fields["deviceType"]
    stored.severity = AlertSeverity(fields["severity"])
    stored.cooldown_minutes = fields["cooldownMinutes"]
    stored.metric_name = fields["metricName"]
    stored.condition = fields["condition"]
    stored.threshold = fields["threshold"]
    if description is not None:
        stored.description = description
    if data.enabled is not None:
        stored.enabled = data.enabled
    stored.updated_at = utcnow()


def create_rule(
    *, session: Session, data: RuleInput, created_by: uuid.UUID | None = None
) -> AlertRule:
    """Check and store a new rule."""
    rule, text = build_rule(data)
    _check_webhooks(rule)
    stored = AlertRule(name=rule.name, expression=text, created_by=created_by)
    _apply(stored, rule, text, data)
    session.add(stored)
    session.flush()
    _announce(session, stored.id, "CREATED")
    return stored


def _announce(session: Session, rule_id: uuid.UUID, kind: str) -> None:
    # evaluators reload their rules when this arrives (after the commit)
    events.emit(session, bus.RULES, {"type": kind, "rule_id": str(rule_id)})


def get_rule(*, session: Session, rule_id: uuid.UUID | str) -> AlertRule | None:
    """The rule with this id, or None."""
    return session.get(AlertRule, validation.parse_id(rule_id))


def _existing(session: Session, rule_id: uuid.UUID | str) -> AlertRule:
    stored = get_rule(session=session, rule_id=rule_id)
    if stored is None:
        raise NotFoundError("alert rule", rule_id)
    return stored


def update_rule(*, session: Session, rule_id: uuid.UUID | str, data: RuleInput) -> AlertRule:
    """Replace a rule's text, or change some of its parts; what is not given stays."""
    stored = _existing(session, rule_id)
    if is_rule_text(data.expression):
        rule, text = build_rule(data)  # a whole new text says everything itself
        _check_webhooks(rule)  # a partial change keeps the stored targets as they are
    else:
        current = parse_rule(stored.expression)
        rule = current
        if data.expression is not None or data.metric_name is not None:
            condition = (
                _syntax(data.expression.strip(), parse_condition)
                if data.expression
                else _structured_condition(data)
            )
            rule = replace(rule, when=condition)
        if data.device_id is not None or data.device_type is not None:
            rule = replace(rule, scope=_scope(data))
        if data.name is not None:
            rule = replace(rule, name=validation.text(data.name, "name", max_length=255))
        if data.severity is not None:
            rule = replace(rule, severity=_severity(data.severity))
        if data.cooldown_minutes is not None:
            rule = replace(rule, cooldown=_cooldown(data.cooldown_minutes))
        text = format_rule(rule).strip() if rule != current else stored.expression
        _check(rule, text)
    _apply(stored, rule, text, data)
    session.add(stored)
    session.flush()
    _announce(session, stored.id, "UPDATED")
    return stored


def delete_rule(*, session: Session, rule_id: uuid.UUID | str) -> uuid.UUID:
    """Remove a rule (its alerts stay, without their rule)."""
    stored = _existing(session, rule_id)
    session.delete(stored)
    session.flush()
    _announce(session, stored.id, "DELETED")
    return stored.id


def list_rules(
    *,
    session: Session,
    device_id: uuid.UUID | str | None = None,
    enabled_only: bool = False,
    limit: int | None = None,
    offset: int = 0,
    max_limit: int = 1000,
) -> list[AlertRule]:
    """Rules by name; with `device_id`, those scoped to that device; a page with `limit`."""
    query = select(AlertRule).order_by(col(AlertRule.name), col(AlertRule.id))
    if device_id is not None:
        query = query.where(AlertRule.device_id == validation.parse_id(device_id, "deviceId"))
    if enabled_only:
        query = query.where(AlertRule.enabled)
    if limit is not None:
        limit, offset = validation.page(limit, offset, max_limit=max_limit)
        query = query.offset(offset).limit(limit)
    return list(session.exec(query))
