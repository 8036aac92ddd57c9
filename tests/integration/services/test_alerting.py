"""Rules and alerts services, on SQLite and PostgreSQL alike."""

import pytest
from sqlmodel import Session

from app.core.errors import ValidationError
from app.core.models import AlertStatus, DeviceCreate, utcnow
from app.services import alerts, devices, rules
from app.services.rules import RuleInput

pytestmark = pytest.mark.all_backends

FULL = """
rule "Overheat"
  on type "thermostat"
  when avg(temperature, 5m) > 30 and humidity < 20 for 2m
  severity critical
  cooldown 10m
"""


def test_a_rule_from_text_keeps_the_text_and_derives_the_fields(session: Session) -> None:
    stored = rules.create_rule(session=session, data=RuleInput(expression=FULL))
    session.commit()
    assert stored.expression == FULL.strip()
    assert (stored.name, stored.device_type, stored.severity, stored.cooldown_minutes) == (
        "Overheat",
        "thermostat",
        "CRITICAL",
        10,
    )
    assert (stored.metric_name, stored.condition, stored.threshold) == (None, None, None)


def test_structured_fields_become_the_expression(session: Session) -> None:
    data = RuleInput(
        name="Hot",
        metric_name="temperature",
        condition="gt",
        threshold=30,
        device_type="thermostat",
    )
    stored = rules.create_rule(session=session, data=data)
    assert stored.expression == 'rule "Hot"\n  on type "thermostat"\n  when temperature > 30'
    assert (stored.metric_name, stored.condition, stored.threshold) == ("temperature", "gt", 30.0)


def test_a_bare_condition_takes_the_other_clauses_from_the_fields(session: Session) -> None:
    data = RuleInput(name="Dry", expression="humidity < 20", severity="INFO", cooldown_minutes=1)
    stored = rules.create_rule(session=session, data=data)
    assert (stored.severity, stored.cooldown_minutes, stored.condition) == ("INFO", 1, "lt")
    assert "severity info" in stored.expression


@pytest.mark.parametrize(
    ("field", "data"),
    [
        ("expression", RuleInput(name="x", expression="temperature = 30")),
        ("expression", RuleInput(name="x", expression="avg(t, 0m) > 1")),
        ("condition", RuleInput(name="x", metric_name="t", condition="above", threshold=1)),
        ("threshold", RuleInput(name="x", metric_name="t", condition="gt")),
        ("severity", RuleInput(expression=FULL, severity="INFO")),
        ("name", RuleInput(expression=FULL, name="Other")),
        ("name", RuleInput(expression="t > 1")),
        ("severity", RuleInput(name="x", expression="t > 1", severity="loud")),
        ("cooldownMinutes", RuleInput(name="x", expression="t > 1", cooldown_minutes=0)),
    ],
)
def test_bad_rules_name_the_field_and_store_nothing(
    session: Session, field: str, data: RuleInput
) -> None:
    with pytest.raises(ValidationError) as caught:
        rules.create_rule(session=session, data=data)
    assert caught.value.field == field
    session.rollback()
    assert rules.list_rules(session=session) == []


def test_update_and_delete(session: Session) -> None:
    stored = rules.create_rule(session=session, data=RuleInput(expression=FULL))
    updated = rules.update_rule(
        session=session, rule_id=stored.id, data=RuleInput(severity="WARNING", enabled=False)
    )
    assert (updated.severity, updated.enabled) == ("WARNING", False)
    assert "severity critical" not in updated.expression
    rules.delete_rule(session=session, rule_id=stored.id)
    assert rules.get_rule(session=session, rule_id=stored.id) is None


def test_updates_keep_what_they_do_not_change(session: Session) -> None:
    stored = rules.create_rule(session=session, data=RuleInput(expression=FULL))
    renamed = rules.update_rule(
        session=session, rule_id=stored.id, data=RuleInput(expression=FULL.replace("Overheat", "B"))
    )
    assert renamed.name == "B"
    narrowed = rules.update_rule(
        session=session, rule_id=stored.id, data=RuleInput(expression="temperature > 40")
    )
    assert (narrowed.severity, narrowed.cooldown_minutes, narrowed.device_type) == (
        "CRITICAL",
        10,
        "thermostat",
    )
    assert (narrowed.metric_name, narrowed.condition, narrowed.threshold) == (
        "temperature",
        "gt",
        40,
    )
    ruler = rules.create_rule(session=session, data=RuleInput(name="r", expression="ruler > 3"))
    assert ruler.metric_name == "ruler"


def test_one_open_alert_per_rule_and_device_and_the_lifecycle(session: Session) -> None:
    device = devices.create_device(session=session, data=DeviceCreate(name="d", type="t"))
    rule = rules.create_rule(session=session, data=RuleInput(name="r", expression="t > 1"))
    session.commit()
    first = alerts.open_alert(session=session, rule=rule, device_id=device.id, at=utcnow())
    second = alerts.open_alert(session=session, rule=rule, device_id=device.id, at=utcnow())
    session.commit()
    assert first is not None and second is None
    assert [a.id for a in alerts.active_alerts(session=session)] == [first.id]
    acknowledged = alerts.acknowledge_alert(session=session, alert_id=first.id, user_id=None)
    assert acknowledged.status == AlertStatus.ACKNOWLEDGED
    # acknowledged is still open: still no second one
    assert alerts.open_alert(session=session, rule=rule, device_id=device.id, at=utcnow()) is None
    resolved = alerts.resolve_alert(
        session=session, alert_id=first.id, user_id=None, message="fan replaced"
    )
    session.commit()
    assert (resolved.status, resolved.resolution) == (AlertStatus.RESOLVED, "fan replaced")
    again = alerts.open_alert(session=session, rule=rule, device_id=device.id, at=utcnow())
    session.commit()
    assert again is not None and again.id != first.id
    with pytest.raises(ValidationError):
        alerts.resolve_alert(session=session, alert_id=first.id, user_id=None)
