"""Canonical rule text: formatting a parsed rule and parsing it again gives the same tree."""

import pytest

from rules.ast import Arithmetic, Comparison, Metric, Negative, Number, Or, Rule
from rules.format import format_condition, format_rule, format_rules
from rules.parser import parse, parse_rule
from tests.unit.rules.test_parser import OVERHEAT, VALID


@pytest.mark.parametrize("text", VALID)
def test_round_trip(text: str) -> None:
    rules = parse(text)
    formatted = format_rules(rules)
    assert parse(formatted) == rules
    assert format_rules(parse(formatted)) == formatted  # canonical: formatting is stable


def test_canonical_layout_of_the_spec_example() -> None:
    assert format_rule(parse_rule(OVERHEAT)) == (
        'rule "Overheat"\n'
        '  on type "thermostat"\n'
        "  when avg(temperature, 5m) > 30 and humidity < 20 for 2m\n"
        "  severity critical\n"
        "  cooldown 10m\n"
        '  message "{device.name}: {value}°C"\n'
        '  notify email "ops@example.com", webhook "https://hooks.example.com/x"\n'
        '  command set_fan {"speed": 3}\n'
        "  clear when temperature < 25\n"
    )


def test_defaults_are_omitted() -> None:
    text = 'rule "x" when t > 1 severity warning cooldown 5m command reboot {}'
    assert format_rule(parse_rule(text)) == 'rule "x"\n  when t > 1\n  command reboot\n'


def test_rules_are_separated_by_a_blank_line() -> None:
    assert format_rules(parse('rule "a" when a > 1 rule "b" when b > 1')) == (
        'rule "a"\n  when a > 1\n\nrule "b"\n  when b > 1\n'
    )


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("((a > 1)) and (b > 2)", "a > 1 and b > 2"),
        ("(a > 1 and b > 2) or c > 3", "a > 1 and b > 2 or c > 3"),
        ("a > 1 and (b > 2 or c > 3)", "a > 1 and (b > 2 or c > 3)"),
        ("not (a > 1)", "not a > 1"),
        ("not (a > 1 or b > 1)", "not (a > 1 or b > 1)"),
        ("(a * b) + (c / d) > 1", "a * b + c / d > 1"),
        ("(a + b) * (c - d) > 1", "(a + b) * (c - d) > 1"),
        ("a - (b + c) > (a - b) + c", "a - (b + c) > a - b + c"),
        ("-(a) < -(a + 1)", "-a < -(a + 1)"),
        ("x > 30.0 and y < 0.50 and z == 1e3", "x > 30 and y < 0.5 and z == 1000"),
    ],
)
def test_minimal_parentheses_and_plain_numbers(text: str, canonical: str) -> None:
    assert format_rule(parse_rule(f'rule "x" when {text}')) == f'rule "x"\n  when {canonical}\n'


def test_strings_are_escaped() -> None:
    rule = Rule(
        name='say "hi" \\ back', when=Comparison(">", Metric("t"), Number(1)), message="a\nb"
    )
    formatted = format_rule(rule)
    assert formatted == 'rule "say \\"hi\\" \\\\ back"\n  when t > 1\n  message "a\\nb"\n'
    assert parse_rule(formatted) == rule


def test_hand_built_trees_round_trip() -> None:
    condition = Or(
        Comparison("<", Negative(Arithmetic("-", Metric("a"), Number(1e-7))), Number(2.5)),
        Or(Comparison(">", Metric("b"), Number(1)), Comparison(">", Metric("c"), Number(2))),
    )
    assert format_condition(condition) == "-(a - 0.0000001) < 2.5 or (b > 1 or c > 2)"
    rule = Rule(name="x", when=condition)
    assert parse_rule(format_rule(rule)) == rule
