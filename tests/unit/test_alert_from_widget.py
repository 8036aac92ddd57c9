""" "Create alert from this widget": the rule text a widget hands the rule editor."""

from pages.dashboards import alert_rule_text
from rules.parser import parse_rule

DEVICE = "6f1c2a8e-0c1b-4a51-9d1e-1a0000000004"
THRESHOLDS = [{"value": 8, "color": "red"}, {"value": 2, "color": "green"}]


def _stat(device: str, **source: str) -> dict:
    options = {"device": device, **source, "thresholds": THRESHOLDS}
    return {"id": "t", "type": "stat", "title": "Cold store", "options": options}


def _series(device: str, **source: str) -> dict:
    options = {"series": [{"device": device, **source}], "thresholds": THRESHOLDS}
    return {"id": "t", "type": "timeseries", "title": "Cold store", "options": options}


def test_a_widget_of_one_device_watches_that_device_above_its_top_threshold() -> None:
    text = alert_rule_text(_stat(DEVICE, expression="avg(temperature, 5m)"), None, None)
    assert text == (
        'rule "Cold store too high"\n'
        f'  on device "{DEVICE}"\n'
        "  when avg(temperature, 5m) > 8\n"
        "  severity warning\n"
    )
    assert parse_rule(text).name == "Cold store too high"


def test_a_device_variable_watches_its_type_or_else_the_device_picked() -> None:
    widgets = (_stat("$device", metric="temperature"), _series("$device", metric="temperature"))
    for widget in widgets:
        assert 'on type "thermostat"' in alert_rule_text(widget, DEVICE, "thermostat")
        assert f'on device "{DEVICE}"' in alert_rule_text(widget, DEVICE, None)
        assert alert_rule_text(widget, None, None) is None  # nothing to watch yet
