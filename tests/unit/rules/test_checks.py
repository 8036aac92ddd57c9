"""Semantic checks: what the grammar accepts but the platform cannot run."""

from rules.ast import Comparison, Duration, Metric, Number, Rule, Window
from rules.checks import check, validate
from rules.parser import parse

DEVICE_ID = "3f2b8c1e-4a5d-4e6f-8a7b-9c0d1e2f3a4b"


def messages(text: str, **options: object) -> list[tuple[str, int, int, str]]:
    return [(d.severity, d.line, d.column, d.message) for d in validate(text, **options)]  # type: ignore[arg-type]


def test_a_valid_rule_has_no_findings() -> None:
    text = f'rule "ok" on device "{DEVICE_ID}" when avg(t, 90d) > 1 for 1m severity info'
    assert validate(text, known_metrics={"t"}) == []


def test_syntax_errors_are_returned_not_raised() -> None:
    [diagnostic] = validate('rule "x" when t = 1')
    assert (diagnostic.line, diagnostic.column, diagnostic.severity) == (1, 17, "ERROR")
    assert diagnostic.message.endswith("did you mean `==`?")


def test_zero_durations_are_errors() -> None:
    assert messages('rule "z"\n  when avg(t, 0m) > 1 or nodata(t, 0s) for 0m\n  cooldown 0s') == [
        ("ERROR", 1, 1, "rule 'z': `for 0m` must be longer than zero"),
        ("ERROR", 1, 1, "rule 'z': `cooldown 0s` must be longer than zero"),
        ("ERROR", 2, 8, "`avg(t, 0m)`: the window must be longer than zero"),
        ("ERROR", 2, 26, "`nodata(t, 0s)`: the window must be longer than zero"),
    ]


def test_negative_durations_are_errors() -> None:
    rule = Rule(name="n", when=Comparison(">", Metric("t"), Number(1)), hold=Duration(-60, "-1m"))
    [diagnostic] = check([rule])
    assert diagnostic.message == "rule 'n': `for -1m` must be longer than zero"


def test_unknown_severity_is_an_error_with_a_suggestion() -> None:
    assert messages('rule "s" when t > 1 severity critcal') == [
        (
            "ERROR",
            1,
            1,
            "rule 's': unknown severity `critcal` (use info, warning, critical); "
            "did you mean `critical`?",
        )
    ]


def test_window_longer_than_retention_is_an_error() -> None:
    text = 'rule "r" when max(t, 91d) > 1 and nodata(t, 30d)'
    assert messages(text) == [
        ("ERROR", 1, 15, "`max(t, 91d)`: the window is longer than the 90-day retention"),
    ]
    assert messages(text, retention_days=7) == [
        ("ERROR", 1, 15, "`max(t, 91d)`: the window is longer than the 7-day retention"),
        ("ERROR", 1, 35, "`nodata(t, 30d)`: the window is longer than the 7-day retention"),
    ]


def test_unknown_metrics_are_warnings_only_when_known_metrics_are_given() -> None:
    text = 'rule "m" when temp > 1 and avg(hum, 5m) > 2\n  clear when nodata(pressure, 1h)'
    assert messages(text) == []
    assert messages(text, known_metrics={"temp"}) == [
        ("WARNING", 1, 28, "unknown metric `hum`: no device has reported it yet"),
        ("WARNING", 2, 14, "unknown metric `pressure`: no device has reported it yet"),
    ]


def test_on_device_needs_a_uuid() -> None:
    assert messages('rule "d" on device "kitchen" when t > 1') == [
        ("ERROR", 1, 1, "rule 'd': `on device` needs a device id (a UUID), got 'kitchen'"),
    ]


def test_unknown_function_in_a_hand_built_tree() -> None:
    window = Window("avrg", "t", Duration(60, "1m"))
    [diagnostic] = check([Rule(name="f", when=Comparison(">", window, Number(1)))])
    assert diagnostic.message == "unknown function `avrg`; did you mean `avg`?"
    assert (diagnostic.line, diagnostic.column, diagnostic.excerpt) == (1, 1, "")


def test_findings_carry_an_excerpt_and_cover_every_rule() -> None:
    text = 'rule "a" when t > 1\nrule "b" when t > 1 cooldown 0s'
    [diagnostic] = validate(text)
    assert (diagnostic.line, diagnostic.column) == (2, 1)
    assert diagnostic.excerpt == 'rule "b" when t > 1 cooldown 0s\n^'
    assert check(parse(text), 90, None) == [diagnostic.__class__(2, 1, diagnostic.message)]


def test_a_command_the_platform_could_not_send_is_an_error() -> None:
    assert messages('rule "c" when t > 1 command Set_Fan {"speed": 3}') == [
        (
            "ERROR",
            1,
            1,
            "rule 'c': command `Set_Fan`: an action is 1 to 100 characters of a-z, 0-9, "
            "'_', '.', '-'",
        )
    ]
    assert validate('rule "c" when t > 1 command set_fan.v2 {"speed": 3}') == []


def test_notification_targets_must_be_an_address_and_an_http_url() -> None:
    text = 'rule "n" when t > 1 notify email "ops", webhook "ftp://example.com/x"'
    assert messages(text) == [
        ("ERROR", 1, 1, "rule 'n': email 'ops' is not an e-mail address"),
        (
            "ERROR",
            1,
            1,
            "rule 'n': webhook 'ftp://example.com/x' must be an http:// or https:// URL",
        ),
    ]
    good = 'rule "n" when t > 1 notify email "ops@example.com", webhook "https://h.example/x"'
    assert validate(good) == []
