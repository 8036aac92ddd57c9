"""Checks a widget's value expression with the rule language's own parser and checks.

The rule language parses rules and bare conditions, not bare values. A value is checked as
the left side of a condition, as the threshold form builds one (`value == 0`), so the
same grammar, function names and window checks apply to charts and to alerts: what a
dashboard accepts is exactly what a rule can watch.
"""

import re

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
    if (reason := _unbalanced(text)) is not None:
        return reason
    # `0 + (` leaves the parser expecting a value, not a condition; the text sits on a line
    # of its own, so a `#` comment in it cannot swallow the closing `)`
    wrapped = f"0 + (\n{text}\n) == 0"
    try:
        condition = parse_condition(wrapped)
    except RuleSyntaxError as exc:
        return _syntax_reason(text, exc)
    rule = ast.Rule(name="expression", when=condition)
    errors = [d for d in check([rule], _NO_RETENTION_LIMIT_DAYS) if d.severity == "ERROR"]
    return errors[0].message if errors else None


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
