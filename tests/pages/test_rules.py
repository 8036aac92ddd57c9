"""The rules list: what each rule watches, its last firing, enable/disable by role."""

import sqlite3
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from nicegui import ui
from nicegui.testing import User

from app.core import db
from app.core.models import AlertRule, Device
from app.services import alerts, rules
from app.services.rules import RuleInput
from tests.pages.conftest import Account
from tests.waiting import wait_for


def _rule(text: str) -> uuid.UUID:
    with db.session_scope() as session:
        return rules.create_rule(session=session, data=RuleInput(expression=text)).id


def _stored(rule_id: uuid.UUID) -> AlertRule:
    with db.session_scope() as session:
        stored = rules.get_rule(session=session, rule_id=rule_id)
        assert stored is not None
        return stored


def _switch(user: User, rule_id: uuid.UUID) -> ui.switch:
    (switch,) = user.find(marker=f"enabled-{rule_id}").elements
    assert isinstance(switch, ui.switch)
    return switch


async def test_rules_list_shows_scope_severity_and_last_fired(
    user: User, add_device: Callable[..., Device], viewer: Account
) -> None:
    del viewer
    device = add_device("Server room")
    scoped = _rule(
        f'rule "Server room too hot" on device "{device.id}" when temperature > 27 '
        "severity critical"
    )
    _rule('rule "Thermostats silent" on type "thermostat" when nodata(temperature, 10m)')
    _rule('rule "Battery low" when battery < 15 severity info')
    with db.session_scope() as session:
        stored = rules.get_rule(session=session, rule_id=scoped)
        assert stored is not None
        alerts.open_alert(
            session=session,
            rule=stored,
            device_id=device.id,
            at=datetime.now(UTC) - timedelta(minutes=7),
            metric_value=29.0,
        )
    await user.open("/rules")
    await user.should_see("Server room too hot")
    await user.should_see("temperature > 27")  # the seed's derived fields, as a hint
    await user.should_see("Server room")
    await user.should_see("thermostat")
    await user.should_see("All devices")
    await user.should_see(marker="severity-critical")
    await user.should_see(marker="severity-info")
    await user.should_see(marker="rule-last-fired", content="7 min ago")
    await user.should_see(marker="rule-last-fired", content="never")
    await user.should_see(marker="rule-open-alerts", content="1")


async def test_operator_disables_and_enables_a_rule(user: User, operator: Account) -> None:
    del operator
    rule_id = _rule('rule "Overheat" when temperature > 30')
    await user.open("/rules")
    await user.should_see("Overheat")
    assert _switch(user, rule_id).value is True
    user.find(marker=f"enabled-{rule_id}").click()
    await user.should_see("Rule “Overheat” disabled")
    assert _stored(rule_id).enabled is False
    assert _switch(user, rule_id).value is False  # the table redraws from storage
    user.find(marker=f"enabled-{rule_id}").click()
    await user.should_see("Rule “Overheat” enabled")
    assert _stored(rule_id).enabled is True


async def test_a_stalled_write_leaves_the_app_serving_pages(user: User, operator: Account) -> None:
    """The switch's write waits for the database off the event loop, so pages still load."""
    del operator
    rule_id = _rule('rule "Overheat" when temperature > 30')
    await user.open("/rules")
    await user.should_see("Overheat")
    # another writer holds SQLite's write lock: the switch's write waits until it lets go
    blocker = sqlite3.connect(db.get_engine().url.database, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        clicked = time.monotonic()
        user.find(marker=f"enabled-{rule_id}").click()
        assert time.monotonic() - clicked < 1, "the click waited for the database on the loop"
        await user.open("/devices")  # meanwhile the app serves another page
        await user.should_see("Every device registered on this platform")
        assert _stored(rule_id).enabled is True  # and the write is still waiting
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await wait_for(lambda: _stored(rule_id).enabled is False)


async def test_viewer_sees_switches_read_only_and_no_new_button(
    user: User, viewer: Account
) -> None:
    del viewer
    rule_id = _rule('rule "Overheat" when temperature > 30')
    await user.open("/rules")
    await user.should_see("Overheat")
    assert _switch(user, rule_id).enabled is False
    user.find(marker=f"enabled-{rule_id}").click()  # a disabled switch ignores the click
    assert _stored(rule_id).enabled is True
    await user.should_not_see(marker="new-rule")
    await user.should_see(marker="edit-rule", content="View")


async def test_new_rule_button_and_edit_link_open_the_editor(user: User, operator: Account) -> None:
    del operator
    _rule('rule "Overheat" when temperature > 30')
    await user.open("/rules")
    user.find(marker="edit-rule").click()
    await user.should_see(marker="rule-title", content="Overheat")
    await user.open("/rules")
    user.find(marker="new-rule").click()
    await user.should_see(marker="rule-title", content="New rule")


async def test_empty_list_invites_the_first_rule(user: User, operator: Account) -> None:
    del operator
    await user.open("/rules")
    await user.should_see("No rules yet")
