"""Canonical rule text: one clause per line, two-space indent, defaults omitted, and only
the parentheses the precedence needs, so that `parse(format_rules(rules)) == rules`."""

import json
from decimal import Decimal

from rules import ast

# binding strength: a looser child of a tighter parent needs parentheses
_CONDITION_PRECEDENCE = {ast.Or: 1, ast.And: 2, ast.Not: 3}
_VALUE_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_ATOM = 4


def format_rules(rules: list[ast.Rule] | tuple[ast.Rule, ...]) -> str:
    """Several rules as one text, separated by blank lines."""
    return "\n".join(format_rule(rule) for rule in rules)


def format_rule(rule: ast.Rule) -> str:
    """One rule as canonical text, ending with a newline."""
    lines = [f"rule {_string(rule.name)}"]
    if rule.scope.kind != "all":
        lines.append(f"on {rule.scope.kind} {_string(rule.scope.value or '')}")
    hold = f" for {rule.hold.text}" if rule.hold is not None else ""
    lines.append(f"when {format_condition(rule.when)}{hold}")
    if rule.severity != ast.DEFAULT_SEVERITY:
        lines.append(f"severity {rule.severity}")
    if rule.cooldown != ast.Rule.cooldown:
        lines.append(f"cooldown {rule.cooldown.text}")
    if rule.message is not None:
        lines.append(f"message {_string(rule.message)}")
    if rule.notify:
        channels = ", ".join(f"{n.channel} {_string(n.target)}" for n in rule.notify)
        lines.append(f"notify {channels}")
    if rule.command is not None:
        params = rule.command.params
        suffix = f" {json.dumps(params, ensure_ascii=False)}" if params else ""
        lines.append(f"command {rule.command.action}{suffix}")
    if rule.clear is not None:
        lines.append(f"clear when {format_condition(rule.clear)}")
    return lines[0] + "\n" + "".join(f"  {line}\n" for line in lines[1:])


def format_condition(condition: ast.Condition) -> str:
    """A condition with the fewest parentheses that keep its meaning."""
    match condition:
        case ast.Or(left, right) | ast.And(left, right):
            keyword = "or" if isinstance(condition, ast.Or) else "and"
            own = _CONDITION_PRECEDENCE[type(condition)]
            return f"{_cond(left, own, False)} {keyword} {_cond(right, own, True)}"
        case ast.Not(operand):
            return f"not {_cond(operand, _CONDITION_PRECEDENCE[ast.Not], False)}"
        case ast.Comparison(op, left, right):
            return f"{format_value(left)} {op} {format_value(right)}"
        case ast.Between(value, low, high):
            return f"{format_value(value)} between {format_value(low)} and {format_value(high)}"
        case ast.NoData(metric, duration):
            return f"nodata({metric}, {duration.text})"
    raise TypeError(f"not a condition: {condition!r}")


def format_value(value: ast.Value) -> str:
    """A value with the fewest parentheses that keep its meaning."""
    match value:
        case ast.Number(number):
            return _number(number)
        case ast.Metric(name):
            return name
        case ast.Window(function, metric, duration):
            return f"{function}({metric}, {duration.text})"
        case ast.Negative(operand):
            return f"-{_val(operand, 3, False)}"
        case ast.Arithmetic(op, left, right):
            own = _VALUE_PRECEDENCE[op]
            return f"{_val(left, own, False)} {op} {_val(right, own, True)}"
    raise TypeError(f"not a value: {value!r}")


def _cond(condition: ast.Condition, parent: int, right: bool) -> str:
    text = format_condition(condition)
    own = _CONDITION_PRECEDENCE.get(type(condition), _ATOM)
    # operators associate to the left, so an equally strong right child keeps its parentheses
    return f"({text})" if own < parent or (right and own == parent) else text


def _val(value: ast.Value, parent: int, right: bool) -> str:
    text = format_value(value)
    if isinstance(value, ast.Arithmetic):
        own = _VALUE_PRECEDENCE[value.op]
    else:
        own = 3 if isinstance(value, ast.Negative) else _ATOM
    return f"({text})" if own < parent or (right and own == parent) else text


def _number(number: float) -> str:
    number = float(number)  # hand-built trees may hold ints
    if number.is_integer():
        return str(int(number))
    return format(Decimal(repr(number)), "f")  # positional: the grammar has no `1e-07` form


def _string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)
