"""The alerts page: role-based actions, acknowledge and resolve, filters, details, live pushes."""

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from nicegui import ElementFilter, ui
from nicegui.testing import User, UserInteraction

from app.core import db
from app.core.models import Alert, AlertStatus, Device, NotificationDelivery
from app.services import alerts, rules, users
from app.services.rules import RuleInput
from tests.pages.conftest import Account


async def _until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    """Wait until `condition()` holds (pushes arrive through the event loop)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _see(user: User, *args: object, **kwargs: object) -> None:
    """`should_see`, patient enough for a pushed change (it is redrawn after REFRESH_DELAY)."""
    await user.should_see(*args, retries=30, **kwargs)  # type: ignore[arg-type]


def _rule(text: str) -> uuid.UUID:
    with db.session_scope() as session:
        return rules.create_rule(session=session, data=RuleInput(expression=text)).id


def _fire(
    rule_id: uuid.UUID,
    device: Device,
    *,
    value: float = 31.5,
    ago: timedelta = timedelta(minutes=3),
    message: str | None = None,
) -> uuid.UUID:
    """Open an alert through the service, in a committed session (so it is announced)."""
    with db.session_scope() as session:
        rule = rules.get_rule(session=session, rule_id=rule_id)
        assert rule is not None
        alert = alerts.open_alert(
            session=session,
            rule=rule,
            device_id=device.id,
            at=datetime.now(UTC) - ago,
            message=message,
            metric_name="temperature",
            metric_value=value,
        )
        assert alert is not None
        return alert.id


def _stored(alert_id: uuid.UUID) -> Alert:
    with db.session_scope() as session:
        alert = alerts.get_alert(session=session, alert_id=alert_id)
        assert alert is not None
        return alert


def _titles(user: User) -> list[str]:
    with user:
        return [label.text for label in ElementFilter(kind=ui.label, marker="alert-title")]


def _choose(user: User, marker: str, option: str) -> None:
    select = user.find(marker=marker).click()
    UserInteraction(user, select.elements, option).click()


async def test_viewer_sees_alerts_without_actions(
    user: User, add_device: Callable[..., Device], viewer: Account
) -> None:
    del viewer
    device = add_device("Boiler")
    rule_id = _rule('rule "Overheat" when temperature > 30 severity critical')
    _fire(rule_id, device, message="Boiler at 31.5 °C")
    await user.open("/alerts")
    await _see(user, "Overheat")
    await _see(user, "Boiler at 31.5 °C")
    await _see(user, marker="alert-device", content="Boiler")
    await _see(user, marker="alert-value", content="31.5")
    await _see(user, marker="severity-critical")
    await _see(user, marker="status-active")
    await user.should_not_see(marker="acknowledge")
    await user.should_not_see(marker="resolve")


async def test_operator_acknowledges_and_the_stored_alert_changes(
    user: User, add_device: Callable[..., Device], operator: Account
) -> None:
    device = add_device("Boiler")
    alert_id = _fire(_rule('rule "Overheat" when temperature > 30'), device)
    await user.open("/alerts")
    await _see(user, marker="status-active")
    user.find(marker="acknowledge").click()
    await _see(user, "Alert acknowledged")
    stored = _stored(alert_id)
    assert stored.status == AlertStatus.ACKNOWLEDGED
    assert stored.acknowledged_at is not None
    await _see(user, marker="status-acknowledged")
    await _see(user, f"Acked by {operator.name}")
    await user.should_not_see(marker="acknowledge")  # only ACTIVE can be acknowledged
    await _see(user, marker="resolve")


async def test_operator_resolves_with_a_note(
    user: User, add_device: Callable[..., Device], operator: Account
) -> None:
    del operator
    device = add_device("Boiler")
    alert_id = _fire(_rule('rule "Overheat" when temperature > 30'), device)
    await user.open("/alerts")
    user.find(marker="resolve").click()
    await _see(user, marker="resolve-dialog")
    user.find(marker="resolve-note").type("Valve replaced")
    user.find(marker="resolve-confirm").click()
    await _see(user, "Alert resolved")
    stored = _stored(alert_id)
    assert (stored.status, stored.resolution) == (AlertStatus.RESOLVED, "Valve replaced")
    await _see(user, "No open alerts")  # it left the open list...
    user.find(marker="tab-history").click()
    await _see(user, marker="status-resolved")  # ...and stays in the history
    user.find(marker="expand-alert").click()
    await _see(user, marker="alert-resolution", content="Valve replaced")


async def test_a_too_long_note_is_refused_under_the_field(
    user: User, add_device: Callable[..., Device], operator: Account
) -> None:
    del operator
    alert_id = _fire(_rule('rule "Overheat" when temperature > 30'), add_device("Boiler"))
    await user.open("/alerts")
    user.find(marker="resolve").click()
    user.find(marker="resolve-note").type("x" * 2001)
    user.find(marker="resolve-confirm").click()
    await _see(user, "Message must be at most 2000 characters")
    assert _stored(alert_id).status == AlertStatus.ACTIVE


async def test_filters_by_severity_device_status_and_time(
    user: User, add_device: Callable[..., Device], operator: Account
) -> None:
    del operator
    boiler, freezer = add_device("Boiler"), add_device("Freezer")
    hot = _rule('rule "Hot" when temperature > 30 severity critical')
    warm = _rule('rule "Warm" when temperature > 25')
    old = _rule('rule "Old" when temperature > 20 severity info')
    _fire(hot, boiler)
    _fire(warm, freezer, ago=timedelta(minutes=1))
    _fire(old, boiler, ago=timedelta(days=3))
    with db.session_scope() as session:
        warm_alert = alerts.active_alerts(session=session, device_id=freezer.id)[0]
        alerts.acknowledge_alert(session=session, alert_id=warm_alert.id, user_id=None)
    await user.open("/alerts")
    await _see(user, "Hot")
    assert _titles(user) == ["Warm", "Hot", "Old"]  # newest first

    _choose(user, "severity-filter", "Critical")
    await _until(lambda: _titles(user) == ["Hot"])
    _choose(user, "severity-filter", "All severities")
    _choose(user, "device-filter", "Freezer")
    await _until(lambda: _titles(user) == ["Warm"])
    _choose(user, "device-filter", "All devices")
    _choose(user, "status-filter", "Active")
    await _until(lambda: _titles(user) == ["Hot", "Old"])
    _choose(user, "range-filter", "Last 24 hours")
    await _until(lambda: _titles(user) == ["Hot"])
    _choose(user, "severity-filter", "Info")
    await _see(user, "No alerts match")


async def test_history_shows_resolved_alerts_and_who_resolved(
    user: User, add_device: Callable[..., Device], admin: Account
) -> None:
    device = add_device("Boiler")
    first = _fire(_rule('rule "First" when a > 1'), device, ago=timedelta(hours=2))
    _fire(_rule('rule "Second" when b > 1'), device)
    with db.session_scope() as session:
        resolver = users.get_user_by_email(session=session, email=admin.email)
        assert resolver is not None
        alerts.resolve_alert(session=session, alert_id=first, user_id=resolver.id)
    await user.open("/alerts")
    await _until(lambda: _titles(user) == ["Second"])
    user.find(marker="tab-history").click()
    await _until(lambda: _titles(user) == ["Second", "First"])
    await _see(user, f"Resolved by {admin.name}")


async def test_details_show_notification_deliveries(
    user: User, add_device: Callable[..., Device], viewer: Account
) -> None:
    del viewer
    alert_id = _fire(_rule('rule "Overheat" when temperature > 30'), add_device("Boiler"))
    with db.session_scope() as session:
        session.add(
            NotificationDelivery(
                alert_id=alert_id,
                channel="webhook",
                target="https://hooks.example.com/x",
                status="PENDING",
                attempts=2,
                last_error="HTTP 503 from the receiver",
            )
        )
    await user.open("/alerts")
    await user.should_not_see(marker="delivery-row")
    user.find(marker="expand-alert").click()
    await _see(user, marker="delivery-row")
    await _see(user, "https://hooks.example.com/x")
    await _see(user, "HTTP 503 from the receiver")
    await _see(user, "Pending")
    user.find(marker="expand-alert").click()
    await user.should_not_see(marker="delivery-row")


async def test_new_alerts_and_changes_arrive_without_reload(
    user: User, add_device: Callable[..., Device], operator: Account
) -> None:
    del operator
    device = add_device("Boiler")
    rule_id = _rule('rule "Overheat" when temperature > 30')
    await user.open("/alerts")
    await _see(user, "No open alerts")
    (badge,) = user.find(marker="alert-badge").elements
    await _until(lambda: int(badge.props.get("data-count", -1)) == 0)  # counted after load

    alert_id = _fire(rule_id, device, message="pushed, not reloaded")
    await _see(user, "pushed, not reloaded")
    await _until(lambda: int(badge.props["data-count"]) == 1)

    with db.session_scope() as session:  # someone else acknowledges it
        alerts.acknowledge_alert(session=session, alert_id=alert_id, user_id=None)
    await _see(user, marker="status-acknowledged")
    with db.session_scope() as session:
        alerts.resolve_alert(session=session, alert_id=alert_id, user_id=None)
    await _see(user, "No open alerts")
    await _until(lambda: int(badge.props["data-count"]) == 0)


async def test_header_badge_counts_open_alerts_on_every_page(
    user: User, add_device: Callable[..., Device], viewer: Account
) -> None:
    del viewer
    device = add_device("Boiler")
    _fire(_rule('rule "A" when a > 1'), device)
    _fire(_rule('rule "B" when b > 1'), device)
    await user.open("/devices")
    await _see(user, marker="alert-count", content="2")
    user.find(marker="alert-badge").click()
    await _see(user, "What the rules found, and what was done about it")


async def test_device_page_shows_its_open_alerts_with_actions(
    user: User, add_device: Callable[..., Device], operator: Account
) -> None:
    del operator
    device, other = add_device("Boiler"), add_device("Freezer")
    rule_id = _rule('rule "Overheat" when temperature > 30')
    mine = _fire(rule_id, device)
    _fire(_rule('rule "Elsewhere" when t > 1'), other)
    await user.open(f"/devices/{device.id}")
    await _see(user, "Overheat")
    await user.should_not_see("Elsewhere")
    user.find(marker="acknowledge").click()
    await _see(user, "Alert acknowledged")
    assert _stored(mine).status == AlertStatus.ACKNOWLEDGED

    second = _rule('rule "Second" when pressure > 2')
    _fire(second, device, message="arrived live")  # a push, no reload
    await _see(user, "arrived live")


async def test_device_page_hides_actions_from_viewers(
    user: User, add_device: Callable[..., Device], viewer: Account
) -> None:
    del viewer
    device = add_device("Boiler")
    await user.open(f"/devices/{device.id}")
    await _see(user, marker="no-device-alerts")
    _fire(_rule('rule "Overheat" when temperature > 30'), device)
    await _see(user, "Overheat")
    await user.should_not_see(marker="acknowledge")
    await user.should_not_see(marker="resolve")


async def test_a_push_while_the_resolve_dialog_is_open_keeps_it_open(
    user: User, add_device: Callable[..., Device], operator: Account
) -> None:
    del operator
    device = add_device("Boiler")
    alert_id = _fire(_rule('rule "Overheat" when temperature > 30'), device)
    await user.open("/alerts")
    user.find(marker="resolve").click()
    await _see(user, marker="resolve-dialog")
    _fire(_rule('rule "Second" when humidity > 90'), device)  # redraws the rows under it
    await _until(lambda: _titles(user) == ["Second", "Overheat"])
    await _see(user, marker="resolve-dialog")
    user.find(marker="resolve-note").type("Fan replaced")
    user.find(marker="resolve-confirm").click()
    await _see(user, "Alert resolved")
    assert _stored(alert_id).resolution == "Fan replaced"
