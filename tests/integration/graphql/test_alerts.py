"""Alerts and alert rules over GraphQL: the three ways to create a rule, errors, roles, alerts."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.core import db
from app.core.models import DeviceCreate, Role
from app.graphql.types import iso_utc
from app.services import alerts, devices, rules, telemetry
from tests.integration.graphql.client import GraphQLClient, code_of
from tests.integration.graphql.conftest import Account

pytestmark = pytest.mark.all_backends

RULE = (
    "id name description deviceId deviceType metricName condition threshold severity "
    "enabled cooldownMinutes expression"
)
ALERT = (
    "id deviceId device { id name } severity status title message metricName metricValue "
    "threshold triggeredAt acknowledgedAt resolvedAt"
)
CREATE = (
    f"mutation($input: CreateAlertRuleInput!) {{ createAlertRule(input: $input) {{ {RULE} }} }}"
)
UPDATE = (
    f"mutation($input: UpdateAlertRuleInput!) {{ updateAlertRule(input: $input) {{ {RULE} }} }}"
)
DELETE = "mutation($id: ID!) { deleteAlertRule(id: $id) { success id } }"
RULES = f"query($deviceId: ID) {{ alertRules(deviceId: $deviceId) {{ {RULE} }} }}"
VALIDATE = (
    "query($expression: String!) { validateRule(expression: $expression) "
    "{ line column message severity } }"
)
ACTIVE = (
    f"query($deviceId: ID, $severity: AlertSeverity) "
    f"{{ activeAlerts(deviceId: $deviceId, severity: $severity) {{ {ALERT} }} }}"
)
HISTORY = (
    f"query($deviceId: ID, $from: String!, $to: String!, $limit: Int) "
    f"{{ alertHistory(deviceId: $deviceId, from: $from, to: $to, limit: $limit) {{ {ALERT} }} }}"
)
ACK = f"mutation($id: ID!) {{ acknowledgeAlert(id: $id) {{ {ALERT} }} }}"
RESOLVE = (
    f"mutation($id: ID!, $message: String) "
    f"{{ resolveAlert(id: $id, message: $message) {{ {ALERT} }} }}"
)

OVERHEAT = (
    'rule "Overheat"\n  on type "thermostat"\n  when avg(temperature, 5m) > 30 and humidity < 20'
    "\n  severity critical\n  cooldown 10m"
)


@pytest.fixture
def operator(accounts: dict[Role, Account]) -> str:
    """The OPERATOR's token."""
    return accounts[Role.OPERATOR].token


def _device(name: str = "Boiler") -> str:
    with db.session_scope() as session:
        device = devices.create_device(
            session=session, data=DeviceCreate(name=name, type="thermostat")
        )
        return str(device.id)


async def _create(api: GraphQLClient, token: str, **fields: Any) -> dict[str, Any]:
    return (await api.data(CREATE, {"input": fields}, token=token))["createAlertRule"]


async def test_create_from_expression_fields_and_bare_condition(
    api: GraphQLClient, operator: str, viewer: str, accounts: dict[Role, Account]
) -> None:
    device = _device()
    text = await _create(api, operator, expression=OVERHEAT, description="boiler room")
    assert text["expression"] == OVERHEAT
    assert (text["name"], text["deviceType"], text["deviceId"]) == ("Overheat", "thermostat", None)
    assert (text["severity"], text["cooldownMinutes"], text["enabled"]) == ("CRITICAL", 10, True)
    # not one comparison: the seed's structured fields are null
    assert (text["metricName"], text["condition"], text["threshold"]) == (None, None, None)
    assert text["description"] == "boiler room"

    structured = await _create(
        api,
        operator,
        name="Cold",
        deviceId=device,
        metricName="temperature",
        condition="lt",
        threshold=5,
        severity="INFO",
        cooldownMinutes=15,
        enabled=False,
    )
    assert structured["expression"] == (
        f'rule "Cold"\n  on device "{device}"\n  when temperature < 5\n'
        "  severity info\n  cooldown 15m"
    )
    assert (structured["metricName"], structured["condition"], structured["threshold"]) == (
        "temperature",
        "lt",
        5.0,
    )
    assert (structured["deviceId"], structured["severity"], structured["enabled"]) == (
        device,
        "INFO",
        False,
    )

    bare = await _create(
        api, operator, name="Dry", expression="humidity <= 20", deviceType="thermostat"
    )
    assert bare["expression"] == 'rule "Dry"\n  on type "thermostat"\n  when humidity <= 20'
    assert (bare["metricName"], bare["condition"], bare["threshold"]) == ("humidity", "lte", 20.0)
    assert (bare["severity"], bare["cooldownMinutes"]) == ("WARNING", 5)

    listed = (await api.data(RULES, token=viewer))["alertRules"]
    assert listed == [structured, bare, text]  # by name
    mine = (await api.data(RULES, {"deviceId": device}, token=viewer))["alertRules"]
    assert mine == [structured]
    with db.session_scope() as session:
        stored = rules.get_rule(session=session, rule_id=text["id"])
        assert stored is not None and stored.created_by == accounts[Role.OPERATOR].user.id


async def test_contradicting_field_and_broken_expression(api: GraphQLClient, operator: str) -> None:
    contradiction = await api.error(
        CREATE, {"input": {"expression": OVERHEAT, "severity": "INFO"}}, token=operator
    )
    assert code_of(contradiction) == "BAD_USER_INPUT"
    assert contradiction["extensions"]["field"] == "severity"
    other = await api.error(
        CREATE, {"input": {"expression": OVERHEAT, "deviceType": "fridge"}}, token=operator
    )
    assert other["extensions"] == {"code": "BAD_USER_INPUT", "field": "deviceType"}

    broken = await api.error(
        CREATE, {"input": {"expression": 'rule "x"\n  when temperature >'}}, token=operator
    )
    assert broken["extensions"] == {"code": "BAD_USER_INPUT", "field": "expression"}
    assert broken["message"].startswith("expression: line 2, column ")
    bad_condition = await api.error(
        CREATE,
        {"input": {"name": "x", "metricName": "t", "condition": "above", "threshold": 1}},
        token=operator,
    )
    assert bad_condition["extensions"]["field"] == "condition"
    assert (await api.data(RULES, token=operator))["alertRules"] == []


async def test_validate_rule(api: GraphQLClient, viewer: str) -> None:
    valid = await api.data(VALIDATE, {"expression": OVERHEAT}, token=viewer)
    assert valid == {"validateRule": []}
    broken = (
        await api.data(VALIDATE, {"expression": 'rule "x"\n  when temperature >'}, token=viewer)
    )["validateRule"]
    assert broken and broken[0]["severity"] == "ERROR"
    assert (broken[0]["line"], broken[0]["column"]) == (2, 21)
    assert "expected a value" in broken[0]["message"]
    # semantic errors too: a window longer than the retention (90 days by default)
    long = 'rule "x" when avg(temperature, 100d) > 1'
    [too_long] = (await api.data(VALIDATE, {"expression": long}, token=viewer))["validateRule"]
    assert too_long["severity"] == "ERROR" and "retention" in too_long["message"]
    assert too_long["line"] == 1


async def test_update_and_delete(api: GraphQLClient, operator: str, viewer: str) -> None:
    rule = await _create(api, operator, expression=OVERHEAT)
    changed = await api.data(
        UPDATE,
        {"input": {"id": rule["id"], "severity": "WARNING", "enabled": False, "description": "d"}},
        token=operator,
    )
    updated = changed["updateAlertRule"]
    assert (updated["severity"], updated["enabled"], updated["description"]) == (
        "WARNING",
        False,
        "d",
    )
    assert "severity" not in updated["expression"]  # warning is the default: not written
    assert updated["cooldownMinutes"] == 10 and updated["deviceType"] == "thermostat"

    rewritten = (
        await api.data(
            UPDATE,
            {"input": {"id": rule["id"], "expression": 'rule "Overheat" when temperature > 40'}},
            token=operator,
        )
    )["updateAlertRule"]
    # a whole rule is stored as written
    assert rewritten["expression"] == 'rule "Overheat" when temperature > 40'
    assert (rewritten["metricName"], rewritten["condition"], rewritten["threshold"]) == (
        "temperature",
        "gt",
        40.0,
    )
    assert rewritten["deviceType"] is None and rewritten["enabled"] is False
    assert (await api.data(RULES, token=viewer))["alertRules"] == [rewritten]

    # a clause field the service only changes with a new condition is refused, not ignored
    scope = await api.error(UPDATE, {"input": {"id": rule["id"], "threshold": 50}}, token=operator)
    assert scope["extensions"] == {"code": "BAD_USER_INPUT", "field": "threshold"}

    deleted = await api.data(DELETE, {"id": rule["id"]}, token=operator)
    assert deleted == {"deleteAlertRule": {"success": True, "id": rule["id"]}}
    assert (await api.data(RULES, token=viewer))["alertRules"] == []
    assert code_of(await api.error(DELETE, {"id": rule["id"]}, token=operator)) == "NOT_FOUND"
    gone = await api.error(UPDATE, {"input": {"id": rule["id"], "name": "x"}}, token=operator)
    assert code_of(gone) == "NOT_FOUND"


def _open(rule_id: str, device_id: str, at: datetime, value: float) -> str:
    with db.session_scope() as session:
        rule = rules.get_rule(session=session, rule_id=rule_id)
        assert rule is not None
        alert = alerts.open_alert(
            session=session,
            rule=rule,
            device_id=uuid.UUID(device_id),
            at=at,
            message=f"too hot: {value}",
            metric_value=value,
        )
        assert alert is not None
        session.flush()
        return str(alert.id)


async def test_alert_life_cycle(
    api: GraphQLClient, operator: str, viewer: str, accounts: dict[Role, Account]
) -> None:
    boiler, attic = _device("Boiler"), _device("Attic")
    hot = await _create(
        api,
        operator,
        name="Hot",
        metricName="temperature",
        condition="gt",
        threshold=30,
        severity="CRITICAL",
    )
    warm = await _create(api, operator, name="Warm", expression="temperature > 25")
    now = datetime.now(UTC).replace(microsecond=0)
    first = _open(hot["id"], boiler, now - timedelta(hours=2), 31.5)
    second = _open(warm["id"], attic, now - timedelta(hours=1), 26.0)
    third = _open(warm["id"], boiler, now - timedelta(minutes=30), 27.0)

    everything = (await api.data(ACTIVE, token=viewer))["activeAlerts"]
    assert [alert["id"] for alert in everything] == [third, second, first]  # newest first
    [alert] = [a for a in everything if a["id"] == first]
    assert alert == {
        "id": first,
        "deviceId": boiler,
        "device": {"id": boiler, "name": "Boiler"},
        "severity": "CRITICAL",
        "status": "ACTIVE",
        "title": "Hot",
        "message": "too hot: 31.5",
        "metricName": "temperature",
        "metricValue": 31.5,
        "threshold": 30.0,
        "triggeredAt": (now - timedelta(hours=2)).isoformat(timespec="milliseconds")[:-6] + "Z",
        "acknowledgedAt": None,
        "resolvedAt": None,
    }
    on_boiler = (await api.data(ACTIVE, {"deviceId": boiler}, token=viewer))["activeAlerts"]
    assert [a["id"] for a in on_boiler] == [third, first]
    critical = (await api.data(ACTIVE, {"severity": "CRITICAL"}, token=viewer))["activeAlerts"]
    assert [a["id"] for a in critical] == [first]
    both = {"deviceId": attic, "severity": "WARNING"}
    assert [a["id"] for a in (await api.data(ACTIVE, both, token=viewer))["activeAlerts"]] == [
        second
    ]

    acked = (await api.data(ACK, {"id": first}, token=operator))["acknowledgeAlert"]
    assert acked["status"] == "ACKNOWLEDGED" and acked["acknowledgedAt"]
    again = await api.error(ACK, {"id": first}, token=operator)
    assert again["extensions"] == {"code": "BAD_USER_INPUT", "field": "id"}
    resolved = (await api.data(RESOLVE, {"id": first, "message": "fan fixed"}, token=operator))[
        "resolveAlert"
    ]
    assert resolved["status"] == "RESOLVED" and resolved["resolvedAt"] >= acked["acknowledgedAt"]
    with db.session_scope() as session:
        stored = alerts.get_alert(session=session, alert_id=first)
        assert stored is not None and stored.resolution == "fan fixed"
        operator_id = accounts[Role.OPERATOR].user.id
        assert stored.acknowledged_by == operator_id and stored.resolved_by == operator_id
    remaining = (await api.data(ACTIVE, {"deviceId": boiler}, token=viewer))["activeAlerts"]
    assert [a["id"] for a in remaining] == [third]
    missing = await api.error(ACK, {"id": str(uuid.uuid4())}, token=operator)
    assert code_of(missing) == "NOT_FOUND"

    window = {"from": (now - timedelta(days=1)).isoformat(), "to": now.isoformat()}
    history = (await api.data(HISTORY, window, token=viewer))["alertHistory"]
    assert [a["id"] for a in history] == [third, second, first]
    assert history[2]["status"] == "RESOLVED"
    recent = {"from": (now - timedelta(minutes=90)).isoformat(), "to": now.isoformat()}
    assert [a["id"] for a in (await api.data(HISTORY, recent, token=viewer))["alertHistory"]] == [
        third,
        second,
    ]
    scoped = {**window, "deviceId": attic}
    assert [a["id"] for a in (await api.data(HISTORY, scoped, token=viewer))["alertHistory"]] == [
        second
    ]
    limited = {**window, "limit": 1}
    assert len((await api.data(HISTORY, limited, token=viewer))["alertHistory"]) == 1
    # the range is half-open: an alert at `to` is outside it
    edge = {
        "from": (now - timedelta(hours=3)).isoformat(),
        "to": (now - timedelta(hours=2)).isoformat(),
    }
    assert (await api.data(HISTORY, edge, token=viewer))["alertHistory"] == []
    backwards = await api.error(HISTORY, {"from": window["to"], "to": window["from"]}, token=viewer)
    assert backwards["extensions"] == {"code": "BAD_USER_INPUT", "field": "from"}
    garbled = await api.error(HISTORY, {**window, "to": "yesterday"}, token=viewer)
    assert garbled["extensions"] == {"code": "BAD_USER_INPUT", "field": "to"}
    too_many = await api.error(HISTORY, {**window, "limit": 51}, token=viewer)
    assert too_many["extensions"] == {"code": "BAD_USER_INPUT", "field": "limit"}


async def test_role_matrix_for_every_mutation(
    api: GraphQLClient, operator: str, viewer: str, admin: str
) -> None:
    device = _device()
    rule = await _create(api, admin, name="Hot", expression="temperature > 30")
    alert = _open(rule["id"], device, datetime.now(UTC), 31.0)
    spare = await _create(api, operator, name="Spare", expression="temperature > 50")
    calls = [
        (CREATE, {"input": {"name": "New", "expression": "humidity < 10"}}),
        (UPDATE, {"input": {"id": rule["id"], "enabled": False}}),
        (ACK, {"id": alert}),
        (RESOLVE, {"id": alert, "message": "done"}),
        (DELETE, {"id": spare["id"]}),
    ]
    for query, variables in calls:
        assert code_of(await api.error(query, variables)) == "UNAUTHENTICATED"
        assert code_of(await api.error(query, variables, token=viewer)) == "FORBIDDEN"
        await api.data(query, variables, token=operator)
    # VIEWER reads; anonymous cannot
    for query, variables in [
        (RULES, None),
        (ACTIVE, None),
        (VALIDATE, {"expression": 'rule "x" when t > 1'}),
        (HISTORY, {"from": "2026-01-01", "to": "2027-01-01"}),
    ]:
        await api.data(query, variables, token=viewer)
        assert code_of(await api.error(query, variables)) == "UNAUTHENTICATED"


TEST_RULE = (
    "query($expression: String!, $from: String!, $to: String!, $ids: [ID!]) "
    "{ testRule(expression: $expression, from: $from, to: $to, deviceIds: $ids) "
    "{ deviceId deviceName metricName firedCount firings { firedAt clearedAt value } } }"
)


async def test_test_rule_replays_history_per_device(api: GraphQLClient, viewer: str) -> None:
    hot, calm = _device("a-hot"), _device("b-calm")
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    with db.session_scope() as session:
        points = [
            telemetry.Point(uuid.UUID(device), "temperature", start + timedelta(minutes=m), v)
            for device, values in ((hot, {5: 20, 6: 35, 7: 20}), (calm, {5: 20}))
            for m, v in values.items()
        ]
        telemetry.write_points(session=session, points=points, seen_at=start)
    window = {"from": start.isoformat(), "to": (start + timedelta(hours=1)).isoformat()}
    text = 'rule "Hot" when temperature > 30 clear when temperature < 25'
    results = (await api.data(TEST_RULE, {"expression": text, **window}, token=viewer))["testRule"]
    assert [(r["deviceName"], r["metricName"], r["firedCount"]) for r in results] == [
        ("a-hot", "temperature", 1),
        ("b-calm", "temperature", 0),
    ]
    (firing,) = results[0]["firings"]
    fired, cleared = (start + timedelta(minutes=m) for m in (6, 7))
    assert firing == {"firedAt": iso_utc(fired), "clearedAt": iso_utc(cleared), "value": 35.0}
    only = {"expression": text, "ids": [calm], **window}
    assert [r["deviceId"] for r in (await api.data(TEST_RULE, only, token=viewer))["testRule"]] == [
        calm
    ]
    for variables, field in [  # each bad argument is refused, naming it
        ({"expression": 'rule "x" when temperature = 3', **window}, "expression"),
        ({"expression": text, "ids": ["nope"], **window}, "deviceIds"),
        ({"expression": text, "from": "yesterday", "to": window["to"]}, "from"),
        ({"expression": text, "from": window["to"], "to": window["from"]}, "from"),
    ]:
        (error,) = (await api.post(TEST_RULE, variables, token=viewer))["errors"]
        assert (code_of(error), error["extensions"]["field"]) == ("BAD_USER_INPUT", field)
