"""Semantic checks on parsed rules: what the grammar accepts but the platform cannot run.

`validate` is the one call for GraphQL's `validateRule` and the editor's inline
diagnostics: syntax errors if the text does not parse, else the semantic findings.
"""

import difflib
import re
import uuid
from collections.abc import Iterator, Sequence

from rules import ast
from rules.errors import Diagnostic, RuleSyntaxError, excerpt
from rules.parser import parse

_DAY_SECONDS = 86400.0
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")  # a plausible address; the server decides
_Located = tuple[ast.Position, str]  # where to report, and what to say


def validate(
    text: str, *, retention_days: int = 90, known_metrics: set[str] | None = None
) -> list[Diagnostic]:
    """Syntax errors, or else the semantic findings, for a rule text; empty when it is valid."""
    try:
        rules = parse(text)
    except RuleSyntaxError as exc:
        return exc.diagnostics
    return check(rules, retention_days, known_metrics, text=text)


def check(
    rules: Sequence[ast.Rule],
    retention_days: int = 90,
    known_metrics: set[str] | None = None,
    *,
    text: str | None = None,
) -> list[Diagnostic]:
    """Semantic findings for parsed rules: ERRORs stop a rule, WARNINGs do not."""
    found: list[Diagnostic] = []
    for rule in rules:
        here = rule.position or ast.Position(1, 1)
        for position, message in _errors(rule, here, retention_days * _DAY_SECONDS):
            found.append(_diagnostic(text, position, message, "ERROR"))
        if known_metrics is not None:
            for position, name in _metrics(rule, here):
                if name not in known_metrics:
                    message = f"unknown metric `{name}`: no device has reported it yet"
                    found.append(_diagnostic(text, position, message, "WARNING"))
    return found


def _diagnostic(text: str | None, where: ast.Position, message: str, severity: str) -> Diagnostic:
    shown = excerpt(text, where.line, where.column) if text is not None else ""
    return Diagnostic(where.line, where.column, message, severity, shown)  # type: ignore[arg-type]


def _errors(rule: ast.Rule, here: ast.Position, retention: float) -> Iterator[_Located]:
    # durations and clauses carry no position of their own: report them at the rule
    name = f"rule {rule.name!r}"
    if rule.severity not in ast.SEVERITIES:
        choices = ", ".join(ast.SEVERITIES)
        yield here, f"{name}: unknown severity `{rule.severity}` (use {choices}){_hint(rule)}"
    if rule.scope.kind == "device" and not _is_uuid(rule.scope.value):
        yield here, f"{name}: `on device` needs a device id (a UUID), got {rule.scope.value!r}"
    if rule.hold is not None and rule.hold.seconds <= 0:
        yield here, f"{name}: `for {rule.hold.text}` must be longer than zero"
    if rule.cooldown.seconds <= 0:
        yield here, f"{name}: `cooldown {rule.cooldown.text}` must be longer than zero"
    for condition in (rule.when, rule.clear):
        if condition is not None:
            yield from _window_errors(condition, here, retention)
    if rule.command is not None and not ast.COMMAND_ACTION.fullmatch(rule.command.action):
        action = rule.command.action
        yield here, f"{name}: command `{action}`: an action is {ast.COMMAND_ACTION_RULE}"
    for target in rule.notify:
        if target.channel == "webhook" and not target.target.startswith(("http://", "https://")):
            yield here, f"{name}: webhook {target.target!r} must be an http:// or https:// URL"
        if target.channel == "email" and not _EMAIL.fullmatch(target.target):
            yield here, f"{name}: email {target.target!r} is not an e-mail address"


def _hint(rule: ast.Rule) -> str:
    close = difflib.get_close_matches(rule.severity, ast.SEVERITIES, n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def _is_uuid(value: str | None) -> bool:
    try:
        uuid.UUID(value or "")
    except ValueError:
        return False
    return True


def _window_errors(
    condition: ast.Condition, here: ast.Position, retention: float
) -> Iterator[_Located]:
    for node in _nodes(condition):
        if not isinstance(node, ast.Window | ast.NoData):
            continue
        where = node.position or here
        call = f"{getattr(node, 'function', 'nodata')}({node.metric}, {node.duration.text})"
        if isinstance(node, ast.Window) and node.function not in ast.WINDOW_FUNCTIONS:
            close = difflib.get_close_matches(node.function, ast.WINDOW_FUNCTIONS, n=1)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            yield where, f"unknown function `{node.function}`{hint}"
        if node.duration.seconds <= 0:
            yield where, f"`{call}`: the window must be longer than zero"
        elif node.duration.seconds > retention:
            days = retention / _DAY_SECONDS
            yield where, f"`{call}`: the window is longer than the {days:g}-day retention"


def _metrics(rule: ast.Rule, here: ast.Position) -> Iterator[tuple[ast.Position, str]]:
    for condition in (rule.when, rule.clear):
        if condition is None:
            continue
        for node in _nodes(condition):
            if isinstance(node, ast.Metric):
                yield node.position or here, node.name
            elif isinstance(node, ast.Window | ast.NoData):
                yield node.position or here, node.metric


def _nodes(node: ast.Condition | ast.Value) -> Iterator[ast.Condition | ast.Value]:
    """Every node under `node`, itself included, in reading order."""
    yield node
    match node:
        case ast.And(left, right) | ast.Or(left, right) | ast.Arithmetic(_, left, right):
            yield from _nodes(left)
            yield from _nodes(right)
        case ast.Comparison(_, left, right):
            yield from _nodes(left)
            yield from _nodes(right)
        case ast.Not(operand) | ast.Negative(operand):
            yield from _nodes(operand)
        case ast.Between(value, low, high):
            yield from _nodes(value)
            yield from _nodes(low)
            yield from _nodes(high)
