"""The parser facade: rule text in, syntax tree out, or a `RuleSyntaxError` that names the
line, the column, what was found, what was expected, and a hint for the common slips."""

import difflib
import json
import re
from copy import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedInput, UnexpectedToken, VisitError
from lark.tree import Meta, Tree

from rules import ast
from rules.errors import Diagnostic, RuleSyntaxError, excerpt

# Built once at import: LALR is fast and reports the first error at its exact position.
_PARSER = Lark(
    Path(__file__).with_name("grammar.lark").read_text(encoding="utf-8"),
    parser="lalr",
    propagate_positions=True,
    start=["start", "condition_only"],
)
MAX_DEPTH = 100  # levels of the parse tree; a long `and` chain adds one per condition
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_FUNCTIONS = (*ast.WINDOW_FUNCTIONS, "nodata")
_CLAUSES = ("on", "when", "severity", "cooldown", "message", "notify", "command", "clear")
_KEYWORDS = frozenset(
    t.pattern.value
    for t in _PARSER.terminals
    if t.pattern.type == "str" and t.pattern.value.isalpha()
)


class _Problem(Exception):
    """A mistake found while building the tree (after the grammar accepted the text)."""

    def __init__(self, line: int, column: int, message: str) -> None:
        super().__init__(message)
        self.line, self.column, self.message = line, column, message


@dataclass(frozen=True)
class _Clause:
    keyword: str  # as the user writes it, for messages: `on`, `when`, `clear when` ...
    meta: Meta
    values: dict[str, Any]


def _string(token: Token) -> str:
    # the grammar only admits JSON's escapes, so json decodes every STRING token
    return json.loads(token, strict=False)


def _duration(token: Token) -> ast.Duration:
    return ast.Duration(float(token[:-1]) * _UNIT_SECONDS[token[-1]], str(token))


def _position(meta: Meta) -> ast.Position:
    return ast.Position(meta.line, meta.column)


def _suggest(word: str, candidates: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def _unknown_function(name: str) -> str:
    known = ", ".join(_FUNCTIONS)
    return f"unknown function `{name}`" + (_suggest(name, _FUNCTIONS) or f"; known: {known}")


@v_args(meta=True)
class _ToAst(Transformer):
    """Turns Lark's parse tree into `rules.ast` nodes."""

    def start(self, meta: Meta, children: list[ast.Rule]) -> list[ast.Rule]:
        return children

    def condition_only(self, meta: Meta, children: list[ast.Condition]) -> ast.Condition:
        return children[0]

    def rule(self, meta: Meta, children: list[Any]) -> ast.Rule:
        name, *clauses = children
        fields: dict[str, Any] = {}
        seen: dict[str, _Clause] = {}
        for clause in clauses:
            if first := seen.get(clause.keyword):
                raise _Problem(
                    clause.meta.line,
                    clause.meta.column,
                    f"duplicate `{clause.keyword}` clause (the first is at line {first.meta.line}, "
                    f"column {first.meta.column}); each clause may appear once per rule",
                )
            seen[clause.keyword] = clause
            fields.update(clause.values)
        if "when" not in fields:
            raise _Problem(
                meta.line,
                meta.column,
                f"rule {json.dumps(_string(name))} has no `when` clause; every rule needs one, "
                "e.g. `when temperature > 30`",
            )
        return ast.Rule(name=_string(name), position=_position(meta), **fields)

    # -- clauses --------------------------------------------------------------------------
    def scope_type(self, meta: Meta, children: list[Token]) -> _Clause:
        return _Clause("on", meta, {"scope": ast.Scope("type", _string(children[0]))})

    def scope_device(self, meta: Meta, children: list[Token]) -> _Clause:
        return _Clause("on", meta, {"scope": ast.Scope("device", _string(children[0]))})

    def when(self, meta: Meta, children: list[Any]) -> _Clause:
        hold = _duration(children[1]) if len(children) > 1 else None
        return _Clause("when", meta, {"when": children[0], "hold": hold})

    def severity(self, meta: Meta, children: list[Token]) -> _Clause:
        return _Clause("severity", meta, {"severity": str(children[0])})

    def cooldown(self, meta: Meta, children: list[Token]) -> _Clause:
        return _Clause("cooldown", meta, {"cooldown": _duration(children[0])})

    def message(self, meta: Meta, children: list[Token]) -> _Clause:
        return _Clause("message", meta, {"message": _string(children[0])})

    def notify(self, meta: Meta, children: list[ast.Notify]) -> _Clause:
        return _Clause("notify", meta, {"notify": tuple(children)})

    def email(self, meta: Meta, children: list[Token]) -> ast.Notify:
        return ast.Notify("email", _string(children[0]))

    def webhook(self, meta: Meta, children: list[Token]) -> ast.Notify:
        return ast.Notify("webhook", _string(children[0]))

    def command(self, meta: Meta, children: list[Any]) -> _Clause:
        params = children[1] if len(children) > 1 else {}
        return _Clause("command", meta, {"command": ast.CommandAction(str(children[0]), params)})

    def clear(self, meta: Meta, children: list[ast.Condition]) -> _Clause:
        return _Clause("clear when", meta, {"clear": children[0]})

    # -- conditions -----------------------------------------------------------------------
    def or_(self, meta: Meta, children: list[ast.Condition]) -> ast.Or:
        return ast.Or(children[0], children[1])

    def and_(self, meta: Meta, children: list[ast.Condition]) -> ast.And:
        return ast.And(children[0], children[1])

    def not_(self, meta: Meta, children: list[ast.Condition]) -> ast.Not:
        return ast.Not(children[0])

    def comparison(self, meta: Meta, children: list[Any]) -> ast.Comparison:
        left, op, right = children
        return ast.Comparison(str(op), left, right)  # type: ignore[arg-type]

    def between(self, meta: Meta, children: list[ast.Value]) -> ast.Between:
        return ast.Between(*children)

    def nodata(self, meta: Meta, children: list[Token]) -> ast.NoData:
        return ast.NoData(str(children[0]), _duration(children[1]), _position(meta))

    # -- values ---------------------------------------------------------------------------
    def add(self, meta: Meta, children: list[ast.Value]) -> ast.Arithmetic:
        return ast.Arithmetic("+", children[0], children[1])

    def sub(self, meta: Meta, children: list[ast.Value]) -> ast.Arithmetic:
        return ast.Arithmetic("-", children[0], children[1])

    def mul(self, meta: Meta, children: list[ast.Value]) -> ast.Arithmetic:
        return ast.Arithmetic("*", children[0], children[1])

    def div(self, meta: Meta, children: list[ast.Value]) -> ast.Arithmetic:
        return ast.Arithmetic("/", children[0], children[1])

    def neg(self, meta: Meta, children: list[ast.Value]) -> ast.Negative:
        return ast.Negative(children[0])

    def number(self, meta: Meta, children: list[Token]) -> ast.Number:
        return ast.Number(float(children[0]))

    def metric(self, meta: Meta, children: list[Token]) -> ast.Metric:
        return ast.Metric(str(children[0]), _position(meta))

    def window(self, meta: Meta, children: list[Token]) -> ast.Window:
        function, metric, duration = children
        if function not in ast.WINDOW_FUNCTIONS:
            raise _Problem(meta.line, meta.column, _unknown_function(str(function)))
        return ast.Window(str(function), str(metric), _duration(duration), _position(meta))

    # -- command parameters (JSON) ----------------------------------------------------------
    def json_object(self, meta: Meta, children: list[Any]) -> dict[str, Any]:
        return dict(pair for pair in children if pair is not None)

    def json_pair(self, meta: Meta, children: list[Any]) -> tuple[str, Any]:
        return _string(children[0]), children[1]

    def json_array(self, meta: Meta, children: list[Any]) -> list[Any]:
        return [item for item in children if item is not None]

    def json_string(self, meta: Meta, children: list[Token]) -> str:
        return _string(children[0])

    def json_number(self, meta: Meta, children: list[Token]) -> int | float:
        text = str(children[0])
        return float(text) if any(c in text for c in ".eE") else int(text)

    def json_negative(self, meta: Meta, children: list[Token]) -> int | float:
        return -self.json_number(meta, children)

    def json_true(self, meta: Meta, children: list[Any]) -> bool:
        return True

    def json_false(self, meta: Meta, children: list[Any]) -> bool:
        return False

    def json_null(self, meta: Meta, children: list[Any]) -> None:
        return None


_TO_AST = _ToAst()


# -- public API -------------------------------------------------------------------------------
def parse(text: str) -> list[ast.Rule]:
    """Parse one or several rules; raise `RuleSyntaxError` if there are none or one is invalid."""
    rules: list[ast.Rule] = _run(text, "start")
    if not rules:
        raise _error(text, 1, 1, 'no rule: the text is empty; a rule starts with `rule "name"`')
    return rules


def parse_rule(text: str) -> ast.Rule:
    """Parse a text that holds exactly one rule."""
    rules = parse(text)
    if len(rules) > 1:
        where = rules[1].position or ast.Position(1, 1)
        message = f"expected exactly one rule, found {len(rules)}"
        raise _error(text, where.line, where.column, message)
    return rules[0]


def parse_condition(text: str) -> ast.Condition:
    """Parse a bare condition such as `temperature > 30`."""
    return _run(text, "condition_only")


def _run(text: str, start: str) -> Any:
    try:
        tree = _PARSER.parse(text, start=start)
        _check_depth(text, tree)
        return _TO_AST.transform(tree)
    except UnexpectedInput as exc:
        raise RuleSyntaxError([_diagnose(text, exc)]) from None
    except VisitError as exc:
        if isinstance(exc.orig_exc, _Problem):
            problem = exc.orig_exc
            raise _error(text, problem.line, problem.column, problem.message) from None
        raise


def _check_depth(text: str, tree: Tree) -> None:
    """Refuse a text nested deeper than MAX_DEPTH before anything walks it recursively.

    `- - - ... x` or a long chain of `and` parse fine, but turning them into an AST (and
    checking, formatting, compiling it) recurses once per level: a few hundred levels
    would end in a RecursionError instead of a diagnostic.
    """
    pending = [(tree, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > MAX_DEPTH:
            line, column = getattr(node.meta, "line", 1), getattr(node.meta, "column", 1)
            message = f"nested more than {MAX_DEPTH} levels deep; split it into simpler rules"
            raise _error(text, line, column, message)
        pending += [(child, depth + 1) for child in node.children if isinstance(child, Tree)]


def _error(text: str, line: int, column: int, message: str) -> RuleSyntaxError:
    diagnostic = Diagnostic(line, column, message, "ERROR", excerpt(text, line, column))
    return RuleSyntaxError([diagnostic])


# -- error reporting ----------------------------------------------------------------------------
_DESCRIPTIONS = {
    "COMPARATOR": "a comparison (>, >=, <, <=, ==, !=)",
    "DURATION": "a duration such as 5m",
    "NUMBER": "a number",
    "STRING": 'a quoted string ("...")',
    "$END": "the end of the text",
}
_A_VALUE = "a value (a number, a metric or a function such as avg(metric, 5m))"
_ARITHMETIC = {"PLUS", "MINUS", "STAR", "SLASH"}
_VALUE_START = {"NAME", "NUMBER", "LPAR", "MINUS"}
# the last alternative consumes a name that is not a call whole: a scan restarting inside it
# would make a long word (a pasted megabyte) cost quadratic time
_CALL = re.compile(
    r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|([A-Za-z_][A-Za-z0-9_.-]*)\s*\(|[A-Za-z_][A-Za-z0-9_.-]*'
)
_STRICT_STRING = re.compile(next(t.pattern.value for t in _PARSER.terminals if t.name == "STRING"))
_LENIENT_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_NAME_CONTEXT = {
    "severity": "a severity (info, warning, critical)",
    "command": "a command name",
}


def _diagnose(text: str, exc: UnexpectedInput) -> Diagnostic:
    """One diagnostic for a Lark error: where, what was found, what was expected, a hint."""
    if isinstance(exc, UnexpectedToken) and exc.token.type == "$END":
        token = exc.token
        line, column = (token.end_line or 1, token.end_column or 1) if token.end_pos else (1, 1)
        offset, found = len(text), "the end of the text"
    else:
        line, column = exc.line, exc.column
        offset = exc.pos_in_stream or 0
        found = _found(text, exc, offset)
    unknown = _unknown_call_before(text, offset)
    if unknown is not None:
        return unknown
    expected = _acceptable(exc)
    message = f"found {found}, expected {_describe(expected, text, offset)}"
    if hint := _hint(text, offset, expected):
        message = hint if hint.startswith("unterminated") else f"{message}{hint}"
    return Diagnostic(line, column, message, "ERROR", excerpt(text, line, column))


def _found(text: str, exc: UnexpectedInput, offset: int) -> str:
    if isinstance(exc, UnexpectedToken):
        return f"`{exc.token}`"
    word = _WORD.match(text, offset)
    return f"`{word.group() if word else text[offset]}`"


def _acceptable(exc: UnexpectedInput) -> set[str]:
    """The terminals the parser could really take here (LALR's own lists over-approximate)."""
    state = getattr(exc, "state", None)
    if state is None:
        return set(getattr(exc, "expected", None) or getattr(exc, "allowed", None) or ())
    conf = copy(state.parse_conf)
    conf.callbacks = {}
    accepted = set()
    for terminal in conf.parse_table.states[state.position]:
        if not terminal.isupper():  # the table also holds goto entries for rules
            continue
        trial = state.copy(deepcopy_values=False)
        trial.parse_conf = conf
        try:
            trial.feed_token(Token(terminal, ""), terminal == "$END")
        except UnexpectedToken:
            continue
        accepted.add(terminal)
    return accepted


def _describe(expected: set[str], text: str, offset: int) -> str:
    """Readable names for the expected terminals, most relevant first."""
    pending = set(expected)
    parts: list[str] = []
    if _VALUE_START <= pending:
        has_not = "NOT" in pending
        parts.append("a condition such as `temperature > 30`" if has_not else _A_VALUE)
        pending -= _VALUE_START | {"NOT", "NODATA"}
    if "NAME" in pending:
        previous = re.findall(r"[A-Za-z_]\w*", text[:offset])
        context = previous[-1] if previous else ""
        parts.append(_NAME_CONTEXT.get(context, "a name"))
        pending.discard("NAME")
    for terminal in ("COMPARATOR", "BETWEEN"):
        if terminal in pending:
            parts.append(_DESCRIPTIONS.get(terminal, _literal(terminal)))
            pending.discard(terminal)
    if _ARITHMETIC <= pending:
        parts.append("an arithmetic operator (+, -, *, /)")
        pending -= _ARITHMETIC
    clauses = sorted(
        (t for t in pending if _literal(t).strip("`") in _CLAUSES),
        key=lambda t: _CLAUSES.index(_literal(t).strip("`")),
    )
    if len(clauses) > 2:
        parts.append("a clause (" + ", ".join(_literal(t) for t in clauses) + ")")
        pending -= set(clauses)
    ending = [t for t in ("RULE", "$END") if t in pending]
    pending -= set(ending)
    parts += [_DESCRIPTIONS.get(t, _literal(t)) for t in sorted(pending)]
    parts += [_DESCRIPTIONS.get(t, _literal(t)) for t in ending]
    if not parts:
        return "nothing more"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def _literal(terminal: str) -> str:
    for definition in _PARSER.terminals:
        if definition.name == terminal and definition.pattern.type == "str":
            return f"`{definition.pattern.value}`"
    return _DESCRIPTIONS.get(terminal, terminal)


def _hint(text: str, offset: int, expected: set[str]) -> str:
    """A hint for the common slips, or an empty string."""
    rest = text[offset:]
    number = re.match(r"\d+(\.\d+)?", rest)
    word = _WORD.match(rest)
    hint = ""
    if "LBRACE" in expected and rest[:1] in '["0123456789-tfn':
        hint = '; command parameters must be a JSON object, e.g. {"speed": 3}'
    elif _STRICT_STRING.match(rest):
        hint = ""  # a well-formed string in the wrong place: the generic message says it
    elif rest.startswith('"') and _LENIENT_STRING.match(rest):
        hint = r"; strings allow only the escapes \" \\ \/ \b \f \n \r \t and \uXXXX"
    elif rest.startswith('"'):
        hint = 'unterminated string: close it with `"` on the same line'
    elif rest.startswith("=") and not rest.startswith("=="):
        hint = "; did you mean `==`?"
    elif number and "DURATION" in expected:
        value = number.group()
        hint = f"; durations need a unit: {value}s, {value}m, {value}h or {value}d"
    elif word:
        keywords = [_literal(t).strip("`") for t in expected]
        # keywords are lowercase: `RULE` is a slip for `rule`
        hint = _suggest(word.group().lower(), [k for k in keywords if k.isalpha()])
    return hint


def _unknown_call_before(text: str, offset: int) -> Diagnostic | None:
    """An unknown function call before the error is its likely cause: report it instead."""
    for match in _CALL.finditer(text, 0, offset):
        name = match.group(1)
        if name and name not in _FUNCTIONS and name not in _KEYWORDS:
            line = text.count("\n", 0, match.start()) + 1
            column = match.start() - (text.rfind("\n", 0, match.start()) + 1) + 1
            message = _unknown_function(name)
            return Diagnostic(line, column, message, "ERROR", excerpt(text, line, column))
    return None
