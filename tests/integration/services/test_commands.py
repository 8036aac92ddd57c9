"""The commands service on both databases: validation, idempotency, answers, expiry, config."""

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from app.core.errors import NotFoundError, ValidationError
from app.core.models import CommandStatus, DeviceCommand, DeviceCreate, DeviceStatus, utcnow
from app.services import commands, devices
from app.services.commands import Answer, CommandInput

pytestmark = pytest.mark.all_backends


def _device(session: Session, name: str = "pump", *, online: bool = False) -> uuid.UUID:
    device = devices.create_device(session=session, data=DeviceCreate(name=name, type="pump"))
    if online:
        devices.set_status(
            session=session, device_id=device.id, status=DeviceStatus.ONLINE, at=utcnow()
        )
    return device.id


def _send(session: Session, device_id: uuid.UUID, **fields: object) -> commands.DeviceCommand:
    data = CommandInput(device_id=device_id, **{"action": "set_interval", **fields})
    return commands.send_command(session=session, data=data)


def test_a_command_is_stored_pending_with_its_expiry(session: Session) -> None:
    device_id = _device(session)
    command = _send(session, device_id, params={"seconds": 5}, timeout_seconds=60)
    assert (command.status, command.params, command.sent_at) == (
        CommandStatus.PENDING,
        {"seconds": 5},
        None,
    )
    assert command.expires_at - command.created_at == timedelta(seconds=60)
    message = commands.device_message(command)
    assert set(message) == {"command_id", "action", "params", "timestamp", "expires_at"}
    assert message["command_id"] == str(command.id) and message["expires_at"].endswith("Z")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"action": "Set Interval"}, "action"),
        ({"action": ""}, "action"),
        ({"action": "x" * 101}, "action"),
        ({"params": [1, 2]}, "params"),
        ({"params": {"blob": "x" * 17_000}}, "params"),
        ({"timeout_seconds": 0}, "timeoutSeconds"),
        ({"timeout_seconds": 24 * 3600 + 1}, "timeoutSeconds"),
        ({"idempotency_key": "k" * 256}, "idempotencyKey"),
        ({"idempotency_key": "  "}, "idempotencyKey"),
    ],
)
def test_bad_input_names_the_field_and_stores_nothing(
    session: Session, fields: dict, field: str
) -> None:
    device_id = _device(session)
    with pytest.raises(ValidationError) as caught:
        _send(session, device_id, **fields)
    assert caught.value.field == field
    assert commands.device_commands(session=session, device_id=device_id) == []


def test_an_unknown_device_is_not_found(session: Session) -> None:
    with pytest.raises(NotFoundError):
        _send(session, uuid.uuid4())
    with pytest.raises(ValidationError) as caught:
        _send(session, "not-an-id")  # type: ignore[arg-type]
    assert caught.value.field == "deviceId"


def test_the_same_idempotency_key_returns_the_existing_command(session: Session) -> None:
    first, second = _device(session, "a"), _device(session, "b")
    original = _send(session, first, idempotency_key="k-1", params={"seconds": 5})
    again = _send(session, first, idempotency_key="k-1", params={"seconds": 99})
    assert again.id == original.id and again.params == {"seconds": 5}
    other = _send(session, second, idempotency_key="k-1")  # per device
    assert other.id != original.id
    assert len(commands.device_commands(session=session, device_id=first)) == 1


def test_device_commands_lists_newest_first_and_filters_by_status(session: Session) -> None:
    device_id = _device(session)
    made = [_send(session, device_id, action=f"a{n}") for n in range(3)]
    commands.cancel_command(session=session, command_id=made[1].id)
    listed = commands.device_commands(session=session, device_id=device_id)
    assert [c.action for c in listed] == ["a2", "a1", "a0"]
    cancelled = commands.device_commands(session=session, device_id=device_id, status="CANCELLED")
    assert [c.action for c in cancelled] == ["a1"]
    assert [
        c.action for c in commands.device_commands(session=session, device_id=device_id, limit=1)
    ] == ["a2"]
    with pytest.raises(ValidationError) as caught:
        commands.device_commands(session=session, device_id=device_id, status="DONE")
    assert caught.value.field == "status"
    with pytest.raises(NotFoundError):
        commands.device_commands(session=session, device_id=uuid.uuid4())


def test_answers_move_the_status_and_bad_ones_are_refused(session: Session) -> None:
    device_id, other = _device(session, "a"), _device(session, "b")
    command = _send(session, device_id)
    now = utcnow()
    commands.mark_sent(session=session, command_id=command.id, at=now)

    def answer(status: str, device: uuid.UUID = device_id, **fields: object) -> str | None:
        return commands.record_answer(
            session=session,
            device_id=device,
            answer=Answer(fields.pop("command_id", command.id), status, **fields),  # type: ignore[arg-type]
            at=utcnow(),
        )

    assert answer("acknowledged", other) == "wrong_device"
    assert answer("acknowledged", command_id=uuid.uuid4()) == "unknown_command"
    assert answer("acknowledged") is None
    assert command.status == CommandStatus.ACKNOWLEDGED and command.acknowledged_at is not None
    assert answer("acknowledged") is None  # a redelivery: no change, not refused
    assert answer("executed", result={"interval": 5}) is None
    assert (command.status, command.result, command.error) == (
        CommandStatus.EXECUTED,
        {"interval": 5},
        None,
    )
    assert command.executed_at is not None and command.sent_at == now
    assert answer("acknowledged") == "finished"
    assert answer("failed", error="late") == "finished"


def test_a_failed_answer_keeps_the_device_error(session: Session) -> None:
    device_id = _device(session)
    command = _send(session, device_id)
    # answered before the dispatcher could mark it SENT: the device has it, so it was sent
    assert (
        commands.record_answer(
            session=session,
            device_id=device_id,
            answer=Answer(command.id, "failed", error="unknown action"),
            at=utcnow(),
        )
        is None
    )
    assert (command.status, command.error) == (CommandStatus.FAILED, "unknown action")
    assert command.sent_at is not None and command.acknowledged_at is not None


def test_cancel_only_before_the_device_acknowledged(session: Session) -> None:
    device_id = _device(session)
    pending, sent, acknowledged = (_send(session, device_id) for _ in range(3))
    for command in (sent, acknowledged):
        commands.mark_sent(session=session, command_id=command.id, at=utcnow())
    commands.record_answer(
        session=session,
        device_id=device_id,
        answer=Answer(acknowledged.id, "acknowledged"),
        at=utcnow(),
    )
    for command in (pending, sent):
        assert commands.cancel_command(session=session, command_id=command.id).status == (
            CommandStatus.CANCELLED
        )
    with pytest.raises(ValidationError) as caught:
        commands.cancel_command(session=session, command_id=acknowledged.id)
    assert caught.value.field == "id" and "ACKNOWLEDGED" in caught.value.reason
    with pytest.raises(NotFoundError):
        commands.cancel_command(session=session, command_id=uuid.uuid4())
    # a cancelled command's late answer is refused
    assert (
        commands.record_answer(
            session=session, device_id=device_id, answer=Answer(sent.id, "executed"), at=utcnow()
        )
        == "finished"
    )


def test_only_unexpired_pending_commands_of_online_devices_are_due(session: Session) -> None:
    online, offline = _device(session, "on", online=True), _device(session, "off")
    due = _send(session, online)
    _send(session, offline)
    short = _send(session, online, timeout_seconds=1)
    later = utcnow() + timedelta(seconds=2)
    assert [c.id for c in commands.due_for_sending(session=session, now=utcnow())] == [
        due.id,
        short.id,
    ]
    assert [c.id for c in commands.due_for_sending(session=session, now=later)] == [due.id]


def test_expiry_marks_what_still_waits_for_the_device(session: Session) -> None:
    device_id = _device(session)
    never_sent = _send(session, device_id, timeout_seconds=1)
    unanswered = _send(session, device_id, timeout_seconds=1)
    answered = _send(session, device_id, timeout_seconds=1)
    commands.mark_sent(session=session, command_id=unanswered.id, at=utcnow())
    commands.record_answer(
        session=session, device_id=device_id, answer=Answer(answered.id, "executed"), at=utcnow()
    )
    assert commands.next_expiry(session=session) == never_sent.expires_at
    assert commands.expire_due(session=session, now=utcnow()) == []  # not yet
    expired = commands.expire_due(session=session, now=utcnow() + timedelta(seconds=2))
    assert {c.id for c in expired} == {never_sent.id, unanswered.id}
    assert never_sent.status == CommandStatus.EXPIRED and "never sent" in never_sent.error
    assert "no final answer" in unanswered.error
    assert answered.status == CommandStatus.EXECUTED
    assert commands.next_expiry(session=session) is None


def test_a_config_is_stored_then_marked_published(session: Session) -> None:
    device_id = _device(session)
    assert commands.configs_to_publish(session=session) == []
    device = commands.update_config(session=session, device_id=device_id, config={"interval": 9})
    assert device.config == {"interval": 9}
    assert [d.id for d in commands.configs_to_publish(session=session)] == [device_id]
    version = device.config_updated_at
    assert version is not None
    commands.mark_config_published(session=session, device_id=device_id, version=version)
    assert commands.configs_to_publish(session=session) == []
    for bad in ([1], "x", {"blob": "x" * 70_000}):
        with pytest.raises(ValidationError) as caught:
            commands.update_config(session=session, device_id=device_id, config=bad)
        assert caught.value.field == "config"
    assert device.config == {"interval": 9}


def test_a_change_decided_on_a_stale_read_never_overwrites_a_newer_one(
    session: Session, engine: Engine
) -> None:
    device_id = _device(session)
    command = _send(session, device_id, timeout_seconds=1)
    session.commit()
    # the dispatcher and the expiry job read the command while it was PENDING...
    with Session(engine) as dispatcher, Session(engine) as expiry:
        stale = dispatcher.get(DeviceCommand, command.id)
        assert stale is not None and stale.status == CommandStatus.PENDING
        expiry.get(DeviceCommand, command.id)
        # ...then ingest commits the device's answer
        with Session(engine) as ingest:
            answer = Answer(command.id, "executed", result={"ok": True})
            commands.record_answer(session=ingest, device_id=device_id, answer=answer, at=utcnow())
            ingest.commit()
        assert commands.mark_sent(session=dispatcher, command_id=command.id, at=utcnow()) is False
        dispatcher.commit()
        later = utcnow() + timedelta(seconds=2)
        assert commands.expire_due(session=expiry, now=later) == []
        expiry.commit()
    with Session(engine) as fresh:
        stored = fresh.get(DeviceCommand, command.id)
        assert stored is not None
        assert (stored.status, stored.result) == (CommandStatus.EXECUTED, {"ok": True})
