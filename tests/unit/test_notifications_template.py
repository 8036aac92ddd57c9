"""The `message` template of a rule, filled when the rule fires."""

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.core.models import AlertSeverity
from app.services.notifications import Backoff, format_value, render_message

DEVICE_ID = uuid.UUID("3f2b8c1e-4a5d-4e6f-8a7b-9c0d1e2f3a4b")
AT = datetime(2026, 11, 29, 4, 52, 7, 123456, tzinfo=UTC)


def render(template: str | None, **changes: object) -> str:
    fields: dict = {
        "rule_name": "Overheat",
        "device_name": "thermostat-3",
        "device_id": DEVICE_ID,
        "value": 31.5,
        "metric": "temperature",
        "severity": AlertSeverity.CRITICAL,
        "at": AT,
    }
    return render_message(template, **(fields | changes))


def test_every_placeholder_is_filled() -> None:
    text = render(
        "{rule.name} | {device.name} | {device.id} | {metric} | {value} | {severity} | {time}"
    )
    assert text == (
        f"Overheat | thermostat-3 | {DEVICE_ID} | temperature | 31.5 | critical"
        " | 2026-11-29T04:52:07Z"
    )


def test_the_language_example_reads_naturally() -> None:
    assert render("{device.name}: {value}°C") == "thermostat-3: 31.5°C"


def test_no_template_gives_the_default_text() -> None:
    assert render(None) == "Overheat on thermostat-3: temperature = 31.5"


def test_an_empty_template_stays_empty() -> None:
    assert render("") == ""


@pytest.mark.parametrize(
    "template",
    [
        "{unknown}",
        "{device.secret}",
        "{0}",
        "{value!r}",
        "{value:>10}",
        "{device.__class__}",
        "{",
        "}",
        "{}",
        "{{value}}",
        "{ value }",
    ],
)
def test_what_is_not_a_known_placeholder_is_left_as_written(template: str) -> None:
    rendered = render(template)
    # whatever the text holds, nothing is evaluated and nothing raises
    assert rendered == template.replace("{value}", "31.5")


def test_a_missing_value_reads_n_a() -> None:
    assert render("{value}", value=None) == "n/a"
    assert render("{metric}", metric=None) == "n/a"


def test_a_device_without_a_name_is_named_by_its_id() -> None:
    assert render("{device.name}", device_name=None) == str(DEVICE_ID)


def test_a_placeholder_repeated_is_filled_each_time() -> None:
    assert render("{value}/{value}") == "31.5/31.5"


def test_a_substituted_value_is_not_expanded_again() -> None:
    assert render("{device.name}", device_name="{value}") == "{value}"


def test_severity_is_written_as_in_the_rule_language() -> None:
    assert render("{severity}", severity=AlertSeverity.WARNING) == "warning"
    assert render("{severity}", severity="info") == "info"


def test_time_is_utc_with_z_whatever_the_zone() -> None:
    paris = AT.astimezone(timezone(timedelta(hours=1)))
    assert render("{time}", at=paris) == "2026-11-29T04:52:07Z"
    assert render("{time}", at=AT.replace(tzinfo=None)) == "2026-11-29T04:52:07Z"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (31.5, "31.5"),
        (31.500000, "31.5"),
        (30.0, "30"),
        (30, "30"),
        (-5.25, "-5.25"),
        (0.1 + 0.2, "0.3"),
        (23.456789123, "23.4568"),
        (1234567.0, "1234567"),
        (0.0, "0"),
        (-0.0, "0"),
        (0.00012, "0.00012"),
        (1e-9, "1e-09"),
        (2e20, "2e+20"),
        (True, "1"),
        (float("nan"), "nan"),
    ],
)
def test_numbers_are_compact(value: float, text: str) -> None:
    assert format_value(value) == text


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(base=30, cap=600, max_attempts=8)
    delays = [backoff.delay(n).total_seconds() for n in range(1, 8)]
    assert delays == [30, 60, 120, 240, 480, 600, 600]
    assert backoff.delay(10_000).total_seconds() == 600  # no overflow on absurd counts
