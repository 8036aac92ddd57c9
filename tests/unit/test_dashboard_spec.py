"""The dashboard spec: every widget type, each error at its JSON path, exact round trips."""

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from app.core.errors import ValidationError
from app.core.models import AlertSeverity
from app.dashboards.spec import WIDGET_TYPES, DashboardSpec, parse_spec, spec_to_json
from app.services import validation

EXAMPLE = Path(__file__).parents[2] / "seeds" / "dashboards" / "cold-store.dashboard.json"
DEVICE = "6f1c2a8e-0c1b-4a51-9d1e-1a0000000004"

OPTIONS: dict[str, dict[str, Any]] = {
    "timeseries": {
        "series": [
            {"device": DEVICE, "metric": "temperature"},
            {"device": DEVICE, "expression": "avg(temperature, 5m) - setpoint", "label": "Drift"},
        ],
        "thresholds": [{"value": 8, "color": "red"}],
        "min": -10,
        "max": 30.5,
        "time": {"from": "now-7d", "to": "now"},
    },
    "stat": {"device": DEVICE, "metric": "temperature", "unit": "°C", "decimals": 1},
    "gauge": {"device": DEVICE, "expression": "max(humidity, 1h)", "min": 0, "max": 100},
    "bar": {"deviceType": "power_meter", "metric": "power.active", "sort": "name"},
    "device_table": {"deviceType": "thermostat", "metrics": ["temperature", "battery"]},
    "fleet": {"show": "throughput"},
    "alerts": {"severities": ["CRITICAL"], "deviceType": "thermostat"},
    "command": {
        "device": DEVICE,
        "action": "set_interval",
        "control": "switch",
        "param": "fast",
        "params": {"seconds": 5},
        "confirm": "Switch the polling mode?",
    },
    "markdown": {"content": "# Night shift\n<script>alert(1)</script> is stored as text"},
}


def widget(kind: str = "stat", **fields: Any) -> dict[str, Any]:
    """A valid widget of `kind` (top-left, 3 by 3) with `fields` replacing its own."""
    base = {"id": kind, "type": kind, "x": 0, "y": 0, "w": 3, "h": 3}
    base["options"] = copy.deepcopy(OPTIONS[kind])
    return base | fields


def spec(*widgets: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A valid spec holding `widgets`, with `fields` replacing its own."""
    return {"version": 1, "name": "Test", "widgets": list(widgets)} | fields


def refused(data: object) -> str:
    """`field: reason` of the ValidationError parsing `data` raises."""
    with pytest.raises(ValidationError) as caught:
        parse_spec(data)
    return f"{caught.value.field}: {caught.value.reason}"


# -- valid specs -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", WIDGET_TYPES)
def test_each_widget_type_parses_and_round_trips(kind: str) -> None:
    parsed = parse_spec(spec(widget(kind)))
    assert parsed.widgets[0].type == kind
    exported = spec_to_json(parsed)
    assert parse_spec(exported) == parsed
    assert spec_to_json(parse_spec(exported)) == exported


def test_the_example_file_validates_and_is_in_normal_form() -> None:
    data = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    parsed = parse_spec(data)
    assert {w.type for w in parsed.widgets} >= {"timeseries", "stat", "gauge", "command"}
    assert spec_to_json(parsed) == data


def test_defaults_are_written_out_and_unset_options_left_out() -> None:
    exported = spec_to_json(parse_spec(spec(widget("alerts", options={}))))
    assert exported["time"] == {"from": "now-24h", "to": "now"}
    assert exported["refresh"] == "off"
    assert exported["description"] == ""
    assert exported["variables"] == []
    assert exported["widgets"][0]["title"] == ""
    assert exported["widgets"][0]["options"] == {"severities": [], "limit": 10}


def test_widgets_without_required_options_may_leave_them_out() -> None:
    for kind in ("device_table", "alerts", "markdown", "fleet"):
        data = widget(kind)
        del data["options"]
        assert parse_spec(spec(data)).widgets[0].options is not None
    stat = widget("stat")
    del stat["options"]
    assert refused(spec(stat)) == "widgets[0].options: is required"


def test_an_empty_dashboard_is_valid() -> None:
    assert parse_spec(spec()).widgets == []


def test_texts_are_stripped_and_ints_stay_ints() -> None:
    parsed = parse_spec(spec(widget("gauge", title="  Tank  "), name="  Depot "))
    assert parsed.name == "Depot"
    exported = spec_to_json(parsed)
    assert exported["widgets"][0]["title"] == "Tank"
    assert json.dumps(exported["widgets"][0]["options"]["max"]) == "100"


def test_variables_make_one_dashboard_serve_a_type() -> None:
    variables = [
        {"name": "type", "label": "Type", "default": "thermostat"},
        {"name": "device", "label": "Device", "deviceType": "$type", "default": DEVICE},
    ]
    stat = widget("stat", options={"device": "$device", "metric": "temperature"})
    bar = widget("bar", x=3, options={"deviceType": "$type", "metric": "temperature"})
    parsed = parse_spec(spec(stat, bar, variables=variables))
    assert parsed.variables[1].device_type == "$type"


def test_absolute_time_ranges() -> None:
    time = {"from": "2026-11-29T00:00:00Z", "to": "2026-11-30T00:00:00+01:00"}
    assert spec_to_json(parse_spec(spec(time=time)))["time"] == time


def test_alert_severities_are_the_platforms() -> None:
    severities = [s.value for s in AlertSeverity]
    assert parse_spec(spec(widget("alerts", options={"severities": severities})))


# -- errors, each at its path ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (spec(version=2), "version: 2 is not supported; this server reads 1"),
        (spec(version=True), "version: True is not supported; this server reads 1"),
        ({"name": "x", "widgets": []}, "version: is required"),
        (spec(name=""), "name: must be 1 to 200 characters"),
        (spec(name="x" * 201), "name: must be 1 to 200 characters"),
        (spec(name="a\x00b"), "name: must not contain control characters such as NUL"),
        (spec(colour="red"), "colour: is not a known key"),
        (
            spec(refresh="2s"),
            "refresh: must be one of 'off', '5s', '10s', '30s', '1m', '5m', '15m' or '1h'",
        ),
        (
            spec(time={"from": "yesterday"}),
            "time.from: must be now-<n>m, now-<n>h, now-<n>d or an ISO 8601 time",
        ),
        (spec(time={"from": "now-400d"}), "time.from: must reach back at most 365 days"),
        (
            spec(time={"from": "now-1h", "to": "now-2h"}),
            "time.from: must reach further back than `to`",
        ),
        (
            spec(time={"from": "now-1h", "to": "2026-01-01T00:00:00Z"}),
            "time.from: must be absolute too when `to` is absolute",
        ),
        (
            spec(time={"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}),
            "time.from: must be before `to`",
        ),
        (spec(widget(title="t" * 201)), "widgets[0].title: must be 0 to 200 characters"),
        (
            spec(widget(type="pie")),
            "widgets[0].type: 'pie' is not a widget type; use one of "
            "timeseries, stat, gauge, bar, device_table, alerts, command, markdown, fleet",
        ),
        (spec(widget(id="a b")), "widgets[0].id: must be 1 to 40 characters of A-Z a-z 0-9 _ -"),
        (spec(widget(x="1")), "widgets[0].x: must be a whole number"),
        (spec(widget(x=1.0)), "widgets[0].x: must be a whole number"),
        (spec(widget(w=0)), "widgets[0].w: must be at least 1"),
        (spec(widget(x=12)), "widgets[0].x: must be at most 11"),
        (spec(widget(y=-1)), "widgets[0].y: must be at least 0"),
        (
            spec(widget(x=10, w=3)),
            "widgets[0].w: x + w is 13; the grid has 12 columns (x + w <= 12)",
        ),
        (
            spec(widget(options={"device": DEVICE, "metric": "t", "colour": 1})),
            "widgets[0].options.colour: is not a known key",
        ),
        (
            spec(widget(options={"device": DEVICE, "metric": "bad metric"})),
            f"widgets[0].options.metric: must be {validation.METRIC_NAME_RULE}",
        ),
        (
            spec(widget(options={"device": DEVICE})),
            "widgets[0].options.metric: is required (or an expression instead)",
        ),
        (
            spec(widget(options={"device": DEVICE, "metric": "t", "expression": "t"})),
            "widgets[0].options.expression: give a metric or an expression, not both",
        ),
        (
            spec(widget(options={"device": "freezer-1", "metric": "t"})),
            "widgets[0].options.device: 'freezer-1' is not a device id (a UUID) or $device",
        ),
        (
            spec(widget(options={"device": "$device", "metric": "t"})),
            "widgets[0].options.device: uses $device, but the dashboard has no 'device' variable",
        ),
        (
            spec(widget("bar", options={"deviceType": "$type", "metric": "t"})),
            "widgets[0].options.deviceType: uses $type, but the dashboard has no 'type' variable",
        ),
        (
            spec(widget("bar", options={"deviceType": "Power Meter", "metric": "t"})),
            f"widgets[0].options.deviceType: must be {validation.DEVICE_TYPE_RULE}",
        ),
        (
            spec(widget("gauge", options={"device": DEVICE, "metric": "t", "min": 5, "max": 5})),
            "widgets[0].options.max: must be greater than min (5)",
        ),
        (
            spec(widget("gauge", options={"device": DEVICE, "metric": "t", "max": True})),
            "widgets[0].options.max: must be a number",
        ),
        (
            spec(widget("markdown", options={"content": "x" * 20_001})),
            "widgets[0].options.content: must be at most 20000 characters",
        ),
        (
            spec(widget("alerts", options={"severities": ["urgent"]})),
            "widgets[0].options.severities[0]: must be one of 'INFO', 'WARNING' or 'CRITICAL'",
        ),
    ],
)
def test_errors_name_their_path(data: dict[str, Any], expected: str) -> None:
    assert refused(data) == expected


def test_unknown_key_at_depth_names_its_path() -> None:
    timeseries = widget("timeseries")
    timeseries["options"]["series"][1]["colour"] = "red"
    assert refused(spec(timeseries)) == "widgets[0].options.series[1].colour: is not a known key"


def test_a_bad_expression_reports_the_rule_languages_message() -> None:
    timeseries = widget("timeseries")
    timeseries["options"]["series"][1]["expression"] = "avgg(temperature, 5m) - setpoint"
    assert refused(spec(timeseries)) == (
        "widgets[0].options.series[1].expression: unknown function `avgg`; "
        "did you mean `avg`? (column 1)"
    )


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("temperature > 30", "is a condition; a value is wanted"),
        ("avg(temperature, 5m) -", "is incomplete: found the end of the expression"),
        ("avg(temperature, 0m)", "`avg(temperature, 0m)`: the window must be longer than zero"),
        ("a) + (b", "unbalanced `)` at column 2"),
        ("", "is empty"),
        ("x" * 2001, "must be at most 2000 characters"),
    ],
)
def test_expressions_are_checked_by_the_rule_language(expression: str, reason: str) -> None:
    stat = widget(options={"device": DEVICE, "expression": expression})
    assert refused(spec(stat)).startswith(f"widgets[0].options.expression: {reason}")


def test_duplicate_widget_id_names_the_later_one() -> None:
    first, second = widget(id="a"), widget("gauge", id="a", x=3)
    assert refused(spec(first, second)) == "widgets[1].id: duplicate id 'a'"


def test_overlapping_widgets_name_the_later_one() -> None:
    first, second = widget(id="a", w=6, h=4), widget("gauge", id="b", x=5, y=3)
    assert refused(spec(first, second)) == (
        "widgets[1]: overlaps widgets[0] ('a'); move it or make it smaller"
    )


def test_touching_widgets_do_not_overlap() -> None:
    right, below = widget("gauge", id="r", x=3), widget("bar", id="b", y=3, w=12)
    assert len(parse_spec(spec(widget(), right, below)).widgets) == 3


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ([{"name": "device"}], "variables[0].label: is required"),
        ([{"name": "site", "label": "S"}], "variables[0].name: must be one of 'device' or 'type'"),
        (
            [{"name": "type", "label": "T"}, {"name": "type", "label": "U"}],
            "variables[1].name: duplicate variable 'type'",
        ),
        (
            [{"name": "device", "label": "D", "default": "nope"}],
            "variables[0].default: 'nope' is not a valid id (UUID)",
        ),
        (
            [{"name": "type", "label": "T", "deviceType": "thermostat"}],
            "variables[0].deviceType: only a device variable has a type",
        ),
        (
            [{"name": "device", "label": "D", "deviceType": "$type"}],
            "variables[0].deviceType: uses $type, but the dashboard has no 'type' variable",
        ),
    ],
)
def test_variable_errors(variables: list[dict[str, Any]], expected: str) -> None:
    assert refused(spec(variables=variables)) == expected


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"control": "button", "param": "x"}, "param: only a switch or a slider sets a parameter"),
        ({"control": "switch", "param": None}, "param: is required for a switch"),
        ({"control": "switch", "min": 1}, "min: only a slider has min, max and step"),
        ({"control": "slider", "min": 0}, "max: is required for a slider"),
        ({"control": "slider", "min": 5, "max": 1}, "max: must be greater than min (5)"),
        ({"control": "slider", "min": 0, "max": 9, "step": 0}, "step: must be greater than 0"),
        ({"action": "Set Point"}, "action: must be 1 to 100 characters of a-z, 0-9, '_', '.', '-'"),
        ({"params": {"blob": "x" * 20_000}}, "params: is 20011 bytes; at most 16384 allowed"),
        ({"params": [1]}, "params: must be a JSON object"),
        ({"control": "dial"}, "control: must be one of 'button', 'switch' or 'slider'"),
    ],
)
def test_command_errors(options: dict[str, Any], expected: str) -> None:
    command = widget("command")
    command["options"] = {k: v for k, v in (command["options"] | options).items() if v is not None}
    assert refused(spec(command)) == f"widgets[0].options.{expected}"


def test_thresholds_must_ascend() -> None:
    thresholds = [{"value": 5, "color": "green"}, {"value": 5, "color": "red"}]
    stat = widget(options={"device": DEVICE, "metric": "t", "thresholds": thresholds})
    assert refused(spec(stat)) == (
        "widgets[0].options.thresholds[1].value: must be greater than the threshold before it (5)"
    )


def test_threshold_colours_are_named_or_hex() -> None:
    thresholds = [{"value": 1, "color": "#12345g"}]
    stat = widget(options={"device": DEVICE, "metric": "t", "thresholds": thresholds})
    assert refused(spec(stat)).startswith("widgets[0].options.thresholds[0].color: must be one")


# -- hostile input -----------------------------------------------------------------------------
@pytest.mark.parametrize("data", [None, [], "spec", 1, b"{}"])
def test_anything_but_an_object_is_refused(data: object) -> None:
    assert refused(data) == "spec: must be a JSON object"


def test_too_many_widgets() -> None:
    many = [widget(id=f"w{i}", y=3 * i) for i in range(101)]
    assert refused(spec(*many)) == "widgets: must have at most 100 items"


def test_a_huge_list_is_refused_without_a_crash() -> None:
    assert refused(spec(*[{}] * 200_000)) == "widgets: must have at most 100 items"


def test_deep_nesting_in_params_is_refused() -> None:
    deep: dict[str, Any] = {}
    for _ in range(100_000):
        deep = {"a": deep}
    command = widget("command")
    command["options"]["params"] = deep
    assert refused(spec(command)) == "widgets[0].options.params: is nested too deeply"


def test_a_cycle_in_params_is_refused() -> None:
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    command = widget("command")
    command["options"]["params"] = cycle
    assert refused(spec(command)).startswith("widgets[0].options.params: is not valid JSON")


def test_deep_nesting_elsewhere_is_a_type_error() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    assert refused(spec(name=deep)) == "name: must be a string"
    assert refused(spec(widget(options=deep))) == "widgets[0].options: must be a JSON object"


def test_a_huge_unknown_key_is_not_echoed_whole() -> None:
    error = refused(spec(**{"k" * 1_000_000: 1}))
    assert error == f"{'k' * 60}: is not a known key"


def test_a_non_string_key_is_refused() -> None:
    assert refused(spec(widget("command", options={**OPTIONS["command"], 1: 2})))


def test_parsed_specs_are_immutable() -> None:
    parsed: DashboardSpec = parse_spec(spec(widget()))
    with pytest.raises(Exception, match="frozen"):
        parsed.name = "changed"  # type: ignore[misc]


def test_the_documented_spec_is_valid_and_in_normal_form() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "dashboards.md").read_text(encoding="utf-8")
    block = docs.split("```json\n", 1)[1].split("```", 1)[0]
    data = json.loads(block)
    exported = spec_to_json(parse_spec(data))
    assert exported["widgets"][0]["options"]["sparkline"] is True
    assert parse_spec(exported) == parse_spec(data)
