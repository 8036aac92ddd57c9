"""The rule parser: every construct of SPEC section 7, and errors that say where and why."""

import pytest

from rules.ast import (
    And,
    Arithmetic,
    Between,
    CommandAction,
    Comparison,
    Duration,
    Metric,
    Negative,
    NoData,
    Not,
    Notify,
    Number,
    Or,
    Position,
    Rule,
    Scope,
    Window,
)
from rules.errors import RuleSyntaxError
from rules.parser import parse, parse_condition, parse_rule

OVERHEAT = """\
rule "Overheat"
  on type "thermostat"                 # or: on device "<uuid>"; omitted = all devices
  when avg(temperature, 5m) > 30 and humidity < 20 for 2m
  severity critical                    # info | warning | critical (default warning)
  cooldown 10m                         # default 5m
  message "{device.name}: {value}°C"   # optional template
  notify email "ops@example.com", webhook "https://hooks.example.com/x"
  command set_fan {"speed": 3}         # optional: sent to the device on firing
  clear when temperature < 25          # optional: resolves the alert automatically
"""

# Shared with test_format: every valid text must round-trip through `format_rules`.
VALID = [
    OVERHEAT,
    'rule "all devices" when temperature > 30',
    'rule "by type" on type "thermostat" when temperature >= 30',
    'rule "by device" on device "3f2b8c1e-4a5d-4e6f-8a7b-9c0d1e2f3a4b" when t <= 1',
    *(f'rule "{f}" when {f}(temperature, 5m) != 0' for f in ("avg", "min", "max", "sum")),
    *(f'rule "{f}" when {f}(temperature, 30s) == 1' for f in ("count", "last", "delta")),
    'rule "rate" when rate(energy.total, 1h) > 2.5',
    'rule "stddev" when stddev(cpu-load, 1.5h) > 0.25',
    'rule "silent" when nodata(temperature, 10m)',
    'rule "band" when temperature between 18 and 24.5',
    'rule "band2" when avg(t, 5m) between -5 and 5 and humidity > 10',
    'rule "prec" when not a > 1 and b > 2 or c > 3',
    'rule "paren" when not (a > 1 and (b > 2 or c > 3))',
    'rule "right" when a > 1 or (b > 2 or c > 3)',
    'rule "arith" when a + b * c - d / 2 > (a + b) * (c - d)',
    'rule "unary" when -a * -(b - 1) < - -3',
    'rule "left" when a - (b - c) > a - b - c',
    'rule "minus in names" when a-b > 1 and a - b > 2 and a -b > 3 and 5-3 > 1',
    'rule "for" when temperature > 30 for 90s',
    'rule "days" when nodata(t, 1d) for 1h cooldown 2h',
    'rule "sev" when x > 1 severity info',
    'rule "msg" when x > 1 message "say \\"hi\\" \\\\ back\\n"',
    'rule "notify" when x > 1 notify email "a@b.c"',
    'rule "cmd" when x > 1 command reboot',
    'rule "cmd json" when x > 1 command set {"a": [1, -2.5, true, false, null], "b": {"c": "d"}}',
    'rule "clear" when x > 1 clear when x < 1 or nodata(x, 5m)',
    'rule "order" cooldown 1m clear when x < 0 severity warning when x > 0 on type "t"',
    'rule "decimals" when x > 0.001 and y < 1e3 and z == 1000000',
    'rule "one" when a > 1\nrule "two" when b > 2\n\n\nrule "three" when c > 3',
    '# leading comment\nrule "c" # after name\n  when # mid\n a > 1 # end\n# trailing',
    'rule   "odd"\twhen\n\n(  a>1  )and(b<2)\n\t\tfor 5m   severity\ncritical',
    'rule "" when metric_with.dots-and-dashes_1 > 0',
]


def test_every_valid_text_parses() -> None:
    for text in VALID:
        assert parse(text), text


def test_overheat_example_gives_the_exact_tree() -> None:
    assert parse_rule(OVERHEAT) == Rule(
        name="Overheat",
        scope=Scope("type", "thermostat"),
        when=And(
            Comparison(">", Window("avg", "temperature", Duration(300, "5m")), Number(30)),
            Comparison("<", Metric("humidity"), Number(20)),
        ),
        hold=Duration(120, "2m"),
        severity="critical",
        cooldown=Duration(600, "10m"),
        message="{device.name}: {value}°C",
        notify=(
            Notify("email", "ops@example.com"),
            Notify("webhook", "https://hooks.example.com/x"),
        ),
        command=CommandAction("set_fan", {"speed": 3}),
        clear=Comparison("<", Metric("temperature"), Number(25)),
    )


def test_defaults_when_clauses_are_omitted() -> None:
    rule = parse_rule('rule "x" when t > 1')
    assert (rule.scope, rule.severity, rule.cooldown) == (Scope(), "warning", Duration(300, "5m"))
    assert (rule.hold, rule.message, rule.command, rule.clear) == (None, None, None, None)
    assert rule.notify == ()


def test_positions_point_at_the_rule_and_the_values() -> None:
    rule = parse_rule('\n  rule "x"\n    when avg(t, 5m) > limit')
    assert rule.position == Position(2, 3)
    assert rule.when.left.position == Position(3, 10)
    assert rule.when.right.position == Position(3, 23)


def m(name: str) -> Metric:
    return Metric(name)


def n(value: float) -> Number:
    return Number(value)


def cmp(op: str, left: object, right: object) -> Comparison:
    return Comparison(op, left, right)  # type: ignore[arg-type]


def arith(op: str, left: object, right: object) -> Arithmetic:
    return Arithmetic(op, left, right)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        (
            "not a > 1 and b > 2 or c > 3",
            Or(And(Not(cmp(">", m("a"), n(1))), cmp(">", m("b"), n(2))), cmp(">", m("c"), n(3))),
        ),
        ("a + b * c > 1", cmp(">", arith("+", m("a"), arith("*", m("b"), m("c"))), n(1))),
        ("a - b - c > 1", cmp(">", arith("-", arith("-", m("a"), m("b")), m("c")), n(1))),
        ("-a * 2 < -3", cmp("<", arith("*", Negative(m("a")), n(2)), Negative(n(3)))),
        ("a-b > 1", cmp(">", m("a-b"), n(1))),
        ("a - b > 1", cmp(">", arith("-", m("a"), m("b")), n(1))),
        ("a -b > 1", cmp(">", arith("-", m("a"), m("b")), n(1))),
        ("5-3 > 1", cmp(">", arith("-", n(5), n(3)), n(1))),
        (
            "x between 1 and 2 and y > 0",
            And(Between(m("x"), n(1), n(2)), cmp(">", m("y"), n(0))),
        ),
        (
            "nodata(t, 10m) or (t > 1)",
            Or(NoData("t", Duration(600, "10m")), cmp(">", m("t"), n(1))),
        ),
        ("(a + 1) * 2 == 1.5", cmp("==", arith("*", arith("+", m("a"), n(1)), n(2)), n(1.5))),
    ],
)
def test_bare_condition_trees(text: str, tree: object) -> None:
    assert parse_condition(text) == tree


def test_several_rules_in_one_text() -> None:
    rules = parse('rule "one" when a > 1\nrule "two" when b > 2\n\n\nrule "three" when c > 3')
    assert [r.name for r in rules] == ["one", "two", "three"]
    assert [r.position for r in rules] == [Position(1, 1), Position(2, 1), Position(5, 1)]


def test_durations_in_seconds() -> None:
    rule = parse_rule('rule "d" when nodata(t, 1.5h) for 30s cooldown 1d')
    assert rule.when.duration == Duration(5400, "1.5h")
    assert (rule.hold, rule.cooldown) == (Duration(30, "30s"), Duration(86400, "1d"))


UNTERMINATED = 'unterminated string: close it with `"` on the same line'
INVALID = [
    # (text, line, column, message)
    ("", 1, 1, 'no rule: the text is empty; a rule starts with `rule "name"`'),
    ("# nothing\n", 1, 1, 'no rule: the text is empty; a rule starts with `rule "name"`'),
    (
        'rule "x"\n  when temperature = 30',
        2, 20,
        "found `=`, expected a comparison (>, >=, <, <=, ==, !=), `between`, "
        "an arithmetic operator (+, -, *, /) or `(`; did you mean `==`?",
    ),
    (
        'rule "x" when avg(t, 5) > 1',
        1, 22,
        "found `5`, expected a duration such as 5m; durations need a unit: 5s, 5m, 5h or 5d",
    ),
    (
        'rule "x" when t > 1 for 2',
        1, 25,
        "found `2`, expected a duration such as 5m; durations need a unit: 2s, 2m, 2h or 2d",
    ),
    ('rule "x" when avrg(t, 5m) > 1', 1, 15, "unknown function `avrg`; did you mean `avg`?"),
    ('rule "x" when nodat(t, 5m)', 1, 15, "unknown function `nodat`; did you mean `nodata`?"),
    (
        'rule "x" when foo(t, 5m) > 1',
        1, 15,
        "unknown function `foo`; "
        "known: avg, min, max, sum, count, last, delta, rate, stddev, nodata",
    ),
    (
        'rule "x"\n  severity critical',
        1, 1,
        'rule "x" has no `when` clause; every rule needs one, e.g. `when temperature > 30`',
    ),
    (
        'rule "x"\n  when a > 1\n  when b > 2',
        3, 3,
        "duplicate `when` clause (the first is at line 2, column 3); "
        "each clause may appear once per rule",
    ),
    (
        'rule "x" when a > 1 cooldown 1m cooldown 2m',
        1, 33,
        "duplicate `cooldown` clause (the first is at line 1, column 21); "
        "each clause may appear once per rule",
    ),
    ('rule "x" when a > 1\n  message "oops', 2, 11, UNTERMINATED),
    ('rule "x', 1, 6, UNTERMINATED),
    (
        'rule "x" when a > 1 severty critical',
        1, 21,
        "found `severty`, expected an arithmetic operator (+, -, *, /), a clause (`on`, `when`, "
        "`severity`, `cooldown`, `message`, `notify`, `command`, `clear`), `and`, `for`, `or`, "
        "`rule` or the end of the text; did you mean `severity`?",
    ),
    (
        'rule "x" on typ "t" when a > 1',
        1, 13,
        "found `typ`, expected `device` or `type`; did you mean `type`?",
    ),
    (
        'rul "x" when a > 1',
        1, 1,
        "found `rul`, expected `rule` or the end of the text; did you mean `rule`?",
    ),
    (
        'rule "x" when a > 1 command f [1]',
        1, 31,
        "found `[`, expected a clause (`on`, `when`, `severity`, `cooldown`, `message`, `notify`, "
        "`command`, `clear`), `{`, `rule` or the end of the text; "
        'command parameters must be a JSON object, e.g. {"speed": 3}',
    ),
    (
        'rule "x" when a > 1 command f "on"',
        1, 31,
        "found `\"on\"`, expected a clause (`on`, `when`, `severity`, `cooldown`, `message`, "
        "`notify`, "
        "`command`, `clear`), `{`, `rule` or the end of the text; "
        'command parameters must be a JSON object, e.g. {"speed": 3}',
    ),
    (
        'rule "x" when a > 1 command f {speed: 3}',
        1, 32,
        'found `speed`, expected `}` or a quoted string ("...")',
    ),
    (
        'rule "x" when a >',
        1, 18,
        "found the end of the text, "
        "expected a value (a number, a metric or a function such as avg(metric, 5m))",
    ),
    (
        'rule "x" when avg(t, 5m) 30',
        1, 26,
        "found `30`, expected a comparison (>, >=, <, <=, ==, !=), `between` "
        "or an arithmetic operator (+, -, *, /)",
    ),
    (
        'rule "x" when a > 1 severity',
        1, 29,
        "found the end of the text, expected a severity (info, warning, critical)",
    ),
    (
        'rule "x" when a > 1 message "a\\q"',
        1, 29,
        'found `"`, expected a quoted string ("..."); '
        "strings allow only the escapes \\\" \\\\ \\/ \\b \\f \\n \\r \\t and \\uXXXX",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "column", "message"), INVALID)
def test_invalid_text_reports_line_column_and_message(
    text: str, line: int, column: int, message: str
) -> None:
    with pytest.raises(RuleSyntaxError) as caught:
        parse(text)
    [diagnostic] = caught.value.diagnostics
    assert (diagnostic.line, diagnostic.column, diagnostic.message) == (line, column, message)
    assert diagnostic.severity == "ERROR"
    assert diagnostic.excerpt.endswith(" " * (column - 1) + "^")


def test_excerpt_shows_the_line_and_a_caret() -> None:
    with pytest.raises(RuleSyntaxError) as caught:
        parse('rule "x"\n  when t = 1')
    assert caught.value.diagnostics[0].excerpt == "  when t = 1\n         ^"
    assert "line 2, column 10" in str(caught.value)


def test_keywords_are_lowercase() -> None:
    with pytest.raises(RuleSyntaxError, match="did you mean `rule`"):
        parse('RULE "x" when a > 1')


def test_parse_rule_wants_exactly_one() -> None:
    with pytest.raises(RuleSyntaxError) as caught:
        parse_rule('rule "a" when a > 1\nrule "b" when b > 1')
    [diagnostic] = caught.value.diagnostics
    assert (diagnostic.line, diagnostic.column) == (2, 1)
    assert diagnostic.message == "expected exactly one rule, found 2"


def test_parse_condition_rejects_clauses_and_empty_text() -> None:
    with pytest.raises(RuleSyntaxError, match="found `for`"):
        parse_condition("t > 1 for 5m")
    with pytest.raises(RuleSyntaxError, match="expected a condition"):
        parse_condition("")
