"""Checks and parses a widget's value expression with the rule language's own parser and checks.

The rule language parses rules and bare conditions, not bare values. A value is checked as
the left side of a condition, as the threshold form builds one (`value == 0`), so the
same grammar, function names and window checks apply to charts and to alerts: what a
dashboard accepts is exactly what a rule can watch.
"""

import re

from app.core.errors import ValidationError
from rules import ast
from rules.checks import check
from rules.errors import RuleSyntaxError
from rules.parser import parse_condition

MAX_EXPRESSION_LENGTH = 2000
# durations are the only limit the checks take from the platform; a dashboard spec is pure,
# so the retention bound is applied where the widget is queried, not here
_NO_RETENTION_LIMIT_DAYS = 100 * 365
_COMMENT = re.compile(r"#[^\n]*")
_EXAMPLE = "e.g. `avg(temperature, 5m) - setpoint`"


def check_expression(text: str) -> str | None:
    """Why `text` is not a value expression of the rule language, or None when it is one."""
    return _parse(text)[1]


def parse_expression(text: str) -> ast.Value:
    """The syntax tree of a value expression; ValidationError("expression", why) otherwise."""
    value, reason = _parse(text)
    if value is None:
        raise ValidationError("expression", reason or "is not a value")
    return value


def _parse(text: str) -> tuple[ast.Value | None, str | None]:
    """The value and None, or None and why `text` is not a value expression."""
    if (reason := _unbalanced(text)) is not None:
        return None, reason
    # `0 + (` leaves the parser expecting a value, not a condition; the text sits on a line
    # of its own, so a `#` comment in it cannot swallow the closing `)`
    wrapped = f"0 + (\n{text}\n) == 0"
    try:
        condition = parse_condition(wrapped)
    except RuleSyntaxError as exc:
        return None, _syntax_reason(text, exc)
    rule = ast.Rule(name="expression", when=condition)
    errors = [d for d in check([rule], _NO_RETENTION_LIMIT_DAYS) if d.severity == "ERROR"]
    if errors:
        return None, errors[0].message
    # the wrapping parses as Comparison(Arithmetic("+", Number(0), value), Number(0))
    assert isinstance(condition, ast.Comparison) and isinstance(condition.left, ast.Arithmetic)
    return condition.left.right, None


def _syntax_reason(text: str, exc: RuleSyntaxError) -> str:
    """The parser's message, placed in the user's text rather than in our wrapping."""
    if _is_condition(text):
        return f"is a condition; a value is wanted, without a comparison ({_EXAMPLE})"
    diagnostic = exc.diagnostics[0]
    if diagnostic.line == 2:  # the user's text is line 2 of the wrapped text
        return f"{diagnostic.message} (column {diagnostic.column})"
    if not text.strip():
        return f"is empty; write a value, {_EXAMPLE}"
    message = diagnostic.message.replace("found `)`", "found the end of the expression")
    return f"is incomplete: {message}"


def _is_condition(text: str) -> bool:
    try:
        parse_condition(text)
    except RuleSyntaxError:
        return False
    return True


def _unbalanced(text: str) -> str | None:
    """Parentheses that do not pair up; `a) + (b` would otherwise parse once wrapped."""
    depth = 0
    for column, char in enumerate(_COMMENT.sub("", text), start=1):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return f"unbalanced `)` at column {column}"
    return None if depth == 0 else "unbalanced `(`: a parenthesis is not closed"
