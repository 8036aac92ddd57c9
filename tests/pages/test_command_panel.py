"""The command panel on a device's page: send, validate, cancel, configure, live statuses."""

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from nicegui import ElementFilter, ui
from nicegui.testing import User

from app.core import db
from app.core.models import CommandStatus, Device, DeviceCommand, DeviceStatus, Role, utcnow
from app.services import commands, devices, rules, users
from app.services.commands import Answer, CommandInput
from app.services.rules import RuleInput
from components import command_panel
from tests.pages.conftest import Account
from tests.waiting import wait_for

PUSH_RETRIES = 30  # 3 s: a bus push and the panel's short redraw delay


def _user_id(account: Account) -> uuid.UUID:
    with db.session_scope() as session:
        found = users.get_user_by_email(session=session, email=account.email)
        assert found is not None
        return found.id


def _send(
    device: Device,
    action: str,
    params: dict | None = None,
    *,
    created_by: uuid.UUID | None = None,
    rule_id: uuid.UUID | None = None,
) -> DeviceCommand:
    """Store a command as GraphQL or a rule would, committed (so the bus announces it)."""
    with db.session_scope() as session:
        data = CommandInput(device_id=device.id, action=action, params=params)
        return commands.send_command(
            session=session, data=data, created_by=created_by, rule_id=rule_id
        )


def _stored(device: Device) -> list[DeviceCommand]:
    with db.session_scope() as session:
        return commands.device_commands(session=session, device_id=device.id)


def _answer(
    device: Device, command: DeviceCommand, status: str, *, error: str | None = None, result=None
) -> None:
    with db.session_scope() as session:
        answer = Answer(command_id=command.id, status=status, error=error, result=result)
        refused = commands.record_answer(
            session=session, device_id=device.id, answer=answer, at=datetime.now(UTC)
        )
    assert refused is None


def _chips(user: User) -> list[str]:
    """The words of every command status chip, newest command first."""
    with user:
        return [
            label.text for label in ElementFilter(kind=ui.label).within(marker="command-status")
        ]


def _rows(user: User) -> int:
    return len(user.find(marker="command-row").elements)


def _queued(user: User) -> int:
    """How many sends the page has confirmed so far."""
    return sum(message.endswith(" queued") for message in user.notify.messages)


async def test_viewer_sees_the_history_but_cannot_act(
    user: User,
    add_device: Callable[..., Device],
    add_account: Callable[..., Account],
    viewer: Account,
) -> None:
    del viewer
    operator = add_account(Role.OPERATOR, name="Otto Operator")
    device = add_device("Boiler", "thermostat")
    _send(device, "set_setpoint", {"celsius": 22}, created_by=_user_id(operator))
    await user.open(f"/devices/{device.id}")
    await user.should_see(marker="command-row")
    await user.should_see("set_setpoint")
    await user.should_see('{"celsius": 22}')
    await user.should_see("by Otto Operator")
    assert _chips(user) == ["Pending"]
    # the hint explains why it is still pending, for every reader
    await user.should_see("commands wait until the device is online (or expire)")
    await user.should_not_see(marker="command-form")
    await user.should_not_see(marker="send-command")
    await user.should_not_see(marker="cancel-command")
    await user.should_not_see(marker="edit-config")
    await user.should_see("No configuration pushed yet.")


async def test_operator_sends_an_offered_action_with_its_params(
    user: User, add_device: Callable[..., Device], operator: Account
) -> None:
    device = add_device("Boiler", "thermostat", DeviceStatus.OFFLINE)
    await user.open(f"/devices/{device.id}")
    await user.should_see("No commands sent to this device yet.")
    await user.should_see("The device is offline: commands wait until the device is online")
    await user.should_see("Set temperature setpoint")
    user.find(marker="action-set_setpoint").click()
    (params,) = user.find(marker="command-params").elements
    (action,) = user.find(marker="command-action").elements
    assert (action.value, json.loads(params.value)) == ("set_setpoint", {"celsius": 21})
    user.find(marker="command-params").clear().type('{"celsius": 23.5}')
    user.find(marker="command-timeout").clear().type("120")
    user.find(marker="send-command").click()
    await user.should_see("Command “set_setpoint” queued")
    (stored,) = _stored(device)
    assert stored.status == CommandStatus.PENDING
    assert (stored.action, stored.params) == ("set_setpoint", {"celsius": 23.5})
    assert stored.created_by == _user_id(operator)
    assert stored.idempotency_key
    assert (stored.expires_at - stored.created_at).total_seconds() == 120
    await user.should_see(marker="command-row")
    assert _chips(user) == ["Pending"]
    await user.should_see("by Otto Operator")


async def test_a_double_click_sends_once_and_a_later_press_again(
    user: User,
    add_device: Callable[..., Device],
    operator: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    del operator
    device = add_device("Boiler", "thermostat")
    await user.open(f"/devices/{device.id}")
    user.find(marker="action-reboot").click()
    user.find(marker="send-command").click()
    user.find(marker="send-command").click()  # while the first press is still sending
    await wait_for(lambda: _queued(user) == 1)
    user.find(marker="send-command").click()  # once it is sent: the same press, stored once
    await wait_for(lambda: _queued(user) == 2)
    assert len(_stored(device)) == 1
    user.find(marker="command-params").clear().type('{"delay": 1}')
    user.find(marker="send-command").click()  # something else: a new command
    await wait_for(lambda: _queued(user) == 3)
    assert len(_stored(device)) == 2
    monkeypatch.setattr(command_panel, "DOUBLE_CLICK_SECONDS", 0.0)  # as if seconds passed
    user.find(marker="send-command").click()
    await wait_for(lambda: _queued(user) == 4)
    assert [c.params for c in _stored(device)] == [{"delay": 1}, {"delay": 1}, {}]


async def test_invalid_params_are_shown_as_typed_and_nothing_is_stored(
    user: User, add_device: Callable[..., Device], operator: Account
) -> None:
    del operator
    device = add_device("Boiler", "thermostat")
    await user.open(f"/devices/{device.id}")
    user.find(marker="action-reboot").click()
    user.find(marker="command-params").clear().type('{"delay": }')
    # shown as typed, before any press of Send
    await user.should_see("Params is not valid JSON: Expecting value (line 1, column 11)")
    user.find(marker="send-command").click()
    await user.should_see("Params is not valid JSON")
    user.find(marker="command-params").clear().type("[1, 2]")
    await user.should_see('Params must be a JSON object, like {"speed": 3}')
    user.find(marker="command-params").clear().type(json.dumps({"blob": "x" * 17_000}))
    await user.should_see("Params is 17011 bytes; at most 16384 allowed")
    user.find(marker="send-command").click()
    user.find(marker="command-params").clear().type('{"delay": NaN}')
    await user.should_see("Params is not valid JSON: NaN is not a JSON number")
    user.find(marker="send-command").click()
    assert _stored(device) == []
    await user.should_see("No commands sent to this device yet.")


async def test_refusals_name_their_field_and_store_nothing(
    user: User, add_device: Callable[..., Device], operator: Account
) -> None:
    del operator
    device = add_device("Boiler", "thermostat")
    await user.open(f"/devices/{device.id}")
    user.find(marker="send-command").click()
    await user.should_see("Action is required: choose one above or type its name")
    # the service's own check: its field and reason, under the field
    user.find(marker="command-action").type("Reboot now!")
    user.find(marker="send-command").click()
    await user.should_see("Action must be 1 to 100 characters of a-z, 0-9, '_', '.', '-'")
    user.find(marker="command-action").clear().type("reboot")
    user.find(marker="command-timeout").clear().type("90000")
    await user.should_see("Timeout must be 1 to 86400 seconds (24 h)")
    user.find(marker="send-command").click()
    assert _stored(device) == []
    user.find(marker="command-timeout").clear().type("60")
    await user.should_not_see("Timeout must be")
    user.find(marker="send-command").click()
    await user.should_see("Command “reboot” queued")
    assert [c.action for c in _stored(device)] == ["reboot"]


async def test_a_custom_action_is_sent_as_typed(
    user: User, add_device: Callable[..., Device], operator: Account
) -> None:
    del operator
    device = add_device("Lab gadget", "gadget")  # a type with no listed actions
    await user.open(f"/devices/{device.id}")
    await user.should_see("No actions are listed for this device type")
    user.find(marker="command-action").type("blink_led")
    user.find(marker="command-params").clear().type('{"times": 3}')
    user.find(marker="send-command").click()
    await user.should_see("Command “blink_led” queued")
    ((action, params),) = [(c.action, c.params) for c in _stored(device)]
    assert (action, params) == ("blink_led", {"times": 3})


async def test_cancel_asks_first_then_withdraws_the_command(
    user: User, add_device: Callable[..., Device], operator: Account
) -> None:
    del operator
    device = add_device("Boiler", "thermostat")
    command = _send(device, "reboot")
    await user.open(f"/devices/{device.id}")
    user.find(marker="cancel-command").click()
    await user.should_see("Cancel this command?")
    await user.should_see("It will not be sent to the device.")
    user.find(marker="confirm-cancel").click()  # "Keep it"
    await user.should_not_see("Cancel this command?")
    assert _stored(device)[0].status == CommandStatus.PENDING

    user.find(marker="cancel-command").click()
    await user.should_see("Cancel this command?")
    user.find(marker="confirm-ok").click()
    await user.should_see("Command cancelled")
    (stored,) = _stored(device)
    assert (stored.id, stored.status) == (command.id, CommandStatus.CANCELLED)
    await wait_for(lambda: _chips(user) == ["Cancelled"])  # the history reloads after
    await user.should_see("cancelled by an operator")
    await user.should_not_see(marker="cancel-command")


async def test_status_changes_move_the_chip_without_reload(
    user: User, add_device: Callable[..., Device], operator: Account
) -> None:
    del operator
    device = add_device("Boiler", "thermostat")  # never online: the dispatcher leaves it be
    command = _send(device, "set_setpoint", {"celsius": 19})
    await user.open(f"/devices/{device.id}")
    assert _chips(user) == ["Pending"]

    with db.session_scope() as session:
        assert commands.mark_sent(session=session, command_id=command.id, at=utcnow())
    await user.should_see(marker="status-sent", retries=PUSH_RETRIES)
    _answer(device, command, "acknowledged")
    await user.should_see(marker="status-acknowledged", retries=PUSH_RETRIES)
    await user.should_not_see(marker="cancel-command")  # acknowledged: too late to cancel
    _answer(device, command, "executed", result={"celsius": 19, "took_ms": 12})
    await user.should_see(marker="status-executed", retries=PUSH_RETRIES)
    await user.should_see('{"celsius": 19, "took_ms": 12}')
    assert _chips(user) == ["Executed"]

    # another device's commands leave this page alone; a new one of ours appears
    other = add_device("Elsewhere", "thermostat")
    _send(other, "reboot")
    _send(device, "reboot")
    await user.should_see(marker="status-pending", retries=PUSH_RETRIES)
    assert _chips(user) == ["Pending", "Executed"]


async def test_failures_and_rule_commands_say_what_and_who(
    user: User, add_device: Callable[..., Device], operator: Account
) -> None:
    del operator
    device = add_device("Boiler", "thermostat")
    with db.session_scope() as session:
        text = 'rule "Too hot"\n  when temperature > 30\n  command reboot {}'
        rule_id = rules.create_rule(session=session, data=RuleInput(expression=text)).id
    command = _send(device, "reboot", rule_id=rule_id)
    _answer(device, command, "failed", error="firmware busy")
    _send(device, "upload", {"blob": "x" * 100})
    await user.open(f"/devices/{device.id}")
    assert _chips(user) == ["Pending", "Failed"]
    await user.should_see(marker="command-params", content='{"blob": "xxx')
    await user.should_see(marker="command-params", content="x\u2026")  # cut, whole on hover
    await user.should_see("firmware busy")
    await user.should_see("by rule")
    await user.should_see(marker="command-rule", content="Too hot")


async def test_older_commands_are_one_click_away(
    user: User, add_device: Callable[..., Device], operator: Account
) -> None:
    del operator
    device = add_device("Boiler", "thermostat")
    for number in range(7):
        _send(device, f"step_{number}")
    await user.open(f"/devices/{device.id}")
    await user.should_see("step_6")
    assert _rows(user) == 5
    user.find("Show 2 older").click()
    await user.should_see("step_0")
    assert _rows(user) == 7
    user.find("Show fewer").click()
    await user.should_not_see("step_0")


async def test_offline_hint_follows_the_device_status(
    user: User, add_device: Callable[..., Device], operator: Account
) -> None:
    del operator
    device = add_device("Boiler", "thermostat", DeviceStatus.OFFLINE)
    await user.open(f"/devices/{device.id}")
    await user.should_see(marker="offline-hint")
    with db.session_scope() as session:
        devices.set_status(
            session=session, device_id=device.id, status=DeviceStatus.ONLINE, at=utcnow()
        )
    await user.should_not_see(marker="offline-hint", retries=PUSH_RETRIES)
    with db.session_scope() as session:
        devices.set_status(
            session=session, device_id=device.id, status=DeviceStatus.OFFLINE, at=utcnow()
        )
    await user.should_see(marker="offline-hint", retries=PUSH_RETRIES)


async def test_operator_pushes_a_configuration(
    user: User, add_device: Callable[..., Device], operator: Account
) -> None:
    del operator
    device = add_device("Boiler", "thermostat")
    await user.open(f"/devices/{device.id}")
    await user.should_see("No configuration pushed yet.")
    user.find(marker="edit-config").click()
    await user.should_see(marker="config-dialog")
    user.find(marker="config-editor").clear().type('{"interval": }')
    await user.should_see("Config is not valid JSON")
    user.find(marker="config-save").click()
    with db.session_scope() as session:
        unchanged = devices.get_device(session=session, device_id=device.id)
        assert unchanged is not None and unchanged.config is None
    user.find(marker="config-editor").clear().type('{"interval": 10}')
    user.find(marker="config-save").click()
    await user.should_see("Configuration pushed")
    await user.should_see(marker="device-config", content='"interval": 10')
    with db.session_scope() as session:
        stored = devices.get_device(session=session, device_id=device.id)
        assert stored is not None and stored.config == {"interval": 10}


async def test_a_push_while_the_cancel_dialog_is_open_keeps_it_open(
    user: User, add_device: Callable[..., Device], operator: Account
) -> None:
    del operator
    device = add_device("Boiler", "thermostat")
    command = _send(device, "reboot")
    await user.open(f"/devices/{device.id}")
    user.find(marker="cancel-command").click()
    await user.should_see("Cancel this command?")
    with db.session_scope() as session:  # the row is redrawn under the open dialog
        assert commands.mark_sent(session=session, command_id=command.id, at=utcnow())
    await user.should_see(marker="status-sent", retries=PUSH_RETRIES)
    await user.should_see("Cancel this command?")
    user.find(marker="confirm-ok").click()
    await user.should_see("Command cancelled")
    assert _stored(device)[0].status == CommandStatus.CANCELLED
