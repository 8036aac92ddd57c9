"""Device commands and configuration: every status is what really happened (SPEC section 5).

A command is stored PENDING; the command dispatcher (`app/workers/command_dispatch.py`) publishes
it once its device is ONLINE and marks it SENT when the broker acknowledges the publish;
the device's answers on `devices/{id}/commands/ack` (read by ingest) make it
ACKNOWLEDGED, EXECUTED or FAILED; without a final answer by `expires_at` it is EXPIRED.
An operator may cancel it until the device acknowledges it. Each change is announced on
`iot:commands` after its commit.

Three writers race on a command (the dispatcher, ingest, an operator), so every status
change is a compare-and-set: `UPDATE ... WHERE status = <the status it was decided from>`.
A change that lost the race is decided again from the fresh row; none is ever overwritten
(a device's EXECUTED can not turn back into SENT, then EXPIRED).
"""

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from app.core import bus, logs
from app.core.errors import NotFoundError, ValidationError
from app.core.models import CommandStatus, Device, DeviceCommand, DeviceStatus, utcnow
from app.services import events, validation
from rules.ast import COMMAND_ACTION, COMMAND_ACTION_RULE

logger = logging.getLogger(__name__)

MAX_PARAMS_BYTES = 16 * 1024
MAX_CONFIG_BYTES = 64 * 1024
MAX_RESULT_BYTES = 16 * 1024
MAX_ERROR_LENGTH = 2000
MIN_TIMEOUT, MAX_TIMEOUT = 1, 24 * 3600
DEFAULT_TIMEOUT = 300
MAX_KEY_LENGTH = 255
# still waiting for the device: these expire at expires_at
OPEN = (CommandStatus.PENDING, CommandStatus.SENT, CommandStatus.ACKNOWLEDGED)
CANCELLABLE = (CommandStatus.PENDING, CommandStatus.SENT)
FINAL = (
    CommandStatus.EXECUTED,
    CommandStatus.FAILED,
    CommandStatus.EXPIRED,
    CommandStatus.CANCELLED,
)
# what each answer makes of a command still OPEN (it may skip ACKNOWLEDGED, or come before
# the dispatcher recorded SENT)
_ANSWERS = {
    "acknowledged": CommandStatus.ACKNOWLEDGED,
    "executed": CommandStatus.EXECUTED,
    "failed": CommandStatus.FAILED,
}
_RACE_RETRIES = 5


@dataclass(frozen=True, kw_only=True)
class CommandInput:
    """A command as an edge submits it (GraphQL `SendCommandInput`, a rule's action)."""

    device_id: uuid.UUID | str
    action: str
    params: Any = None
    timeout_seconds: int = DEFAULT_TIMEOUT
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Answer:
    """A device's answer on `devices/{id}/commands/ack`, validated (`app.mqtt.payloads`)."""

    command_id: uuid.UUID
    status: str  # acknowledged | executed | failed
    error: str | None = None
    result: Any = None


def command_payload(command: DeviceCommand) -> dict[str, Any]:
    """A command as `iot:commands` messages carry it (ISO 8601 UTC times)."""
    return {
        "id": str(command.id),
        "device_id": str(command.device_id),
        "action": command.action,
        "params": command.params,
        "status": str(command.status),
        "idempotency_key": command.idempotency_key,
        "created_by": events.ident(command.created_by),
        "rule_id": events.ident(command.rule_id),
        "alert_id": events.ident(command.alert_id),
        "created_at": command.created_at.isoformat(),
        "updated_at": command.updated_at.isoformat(),
        "sent_at": events.moment(command.sent_at),
        "acknowledged_at": events.moment(command.acknowledged_at),
        "executed_at": events.moment(command.executed_at),
        "expires_at": command.expires_at.isoformat(),
        "error": command.error,
        "result": command.result,
        "correlation_id": command.correlation_id,
    }


def device_message(command: DeviceCommand) -> dict[str, Any]:
    """What the device receives on `devices/{id}/commands` (seed section 4.1)."""
    return {
        "command_id": str(command.id),
        "action": command.action,
        "params": command.params,
        "timestamp": _utc_text(command.created_at),
        "expires_at": _utc_text(command.expires_at),
    }


def _utc_text(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _announce(session: Session, kind: str, command: DeviceCommand) -> None:
    events.emit(session, bus.COMMANDS, {"type": kind, "command": command_payload(command)})


def _validated(data: CommandInput) -> tuple[uuid.UUID, str, dict[str, Any], int, str | None]:
    device_id = validation.parse_id(data.device_id, "deviceId")
    if not isinstance(data.action, str) or not COMMAND_ACTION.fullmatch(data.action):
        raise ValidationError("action", f"must be {COMMAND_ACTION_RULE}")
    params = {} if data.params is None else data.params
    params = validation.json_object(params, "params", max_bytes=MAX_PARAMS_BYTES)
    timeout = data.timeout_seconds
    if isinstance(timeout, bool) or not isinstance(timeout, int):
        raise ValidationError("timeoutSeconds", "must be a whole number of seconds")
    if not MIN_TIMEOUT <= timeout <= MAX_TIMEOUT:
        raise ValidationError(
            "timeoutSeconds", f"must be between {MIN_TIMEOUT} and {MAX_TIMEOUT} (24 h)"
        )
    key = data.idempotency_key
    if key is not None:
        key = validation.text(key, "idempotencyKey", max_length=MAX_KEY_LENGTH)
    return device_id, data.action, params, timeout, key


def send_command(
    *,
    session: Session,
    data: CommandInput,
    created_by: uuid.UUID | None = None,
    rule_id: uuid.UUID | None = None,
    alert_id: uuid.UUID | None = None,
) -> DeviceCommand:
    """Store a PENDING command; with a known idempotency key, the existing one instead."""
    device_id, action, params, timeout, key = _validated(data)
    if session.get(Device, device_id) is None:
        raise NotFoundError("device", device_id)
    if key is not None and (existing := _by_key(session, device_id, key)) is not None:
        return existing
    now = utcnow()
    command = DeviceCommand(
        device_id=device_id,
        action=action,
        params=params,
        idempotency_key=key,
        created_by=created_by,
        rule_id=rule_id,
        alert_id=alert_id,
        # the sending request's id, or the alert's batch: what its log lines carry
        correlation_id=logs.correlation_id(),
        created_at=now,
        updated_at=now,
        expires_at=now + timedelta(seconds=timeout),
    )
    try:
        with session.begin_nested():  # a racing twin with the same key wins; return it
            session.add(command)
    except IntegrityError:
        existing = _by_key(session, device_id, key) if key is not None else None
        if existing is None:
            raise
        return existing
    _announce(session, "CREATED", command)
    logger.info(
        "command %s (%s) created for device %s",
        command.id,
        action,
        device_id,
        extra={"command_id": command.id, "device_id": device_id},
    )
    return command


def _by_key(session: Session, device_id: uuid.UUID, key: str) -> DeviceCommand | None:
    query = select(DeviceCommand).where(
        DeviceCommand.device_id == device_id, DeviceCommand.idempotency_key == key
    )
    return session.exec(query).first()


def get_command(*, session: Session, command_id: uuid.UUID | str) -> DeviceCommand | None:
    """The command with this id, or None."""
    return session.get(DeviceCommand, validation.parse_id(command_id))


def device_commands(
    *,
    session: Session,
    device_id: uuid.UUID | str,
    status: CommandStatus | str | None = None,
    limit: int = 50,
    max_limit: int = 1000,
    offset: int = 0,
) -> list[DeviceCommand]:
    """A device's commands, newest first; NOT_FOUND for an unknown device."""
    device = validation.parse_id(device_id, "deviceId")
    limit, offset = validation.page(limit, offset, max_limit=max_limit)
    if session.get(Device, device) is None:
        raise NotFoundError("device", device)
    query = select(DeviceCommand).where(DeviceCommand.device_id == device)
    if status is not None:
        wanted = validation.any_of(status, "status", CommandStatus)
        query = query.where(DeviceCommand.status == wanted)
    query = query.order_by(col(DeviceCommand.created_at).desc(), col(DeviceCommand.id))
    return list(session.exec(query.offset(offset).limit(limit)))


def cancel_command(*, session: Session, command_id: uuid.UUID | str) -> DeviceCommand:
    """Withdraw a command the device has not acknowledged yet (PENDING or SENT)."""
    command = get_command(session=session, command_id=command_id)
    if command is None:
        raise NotFoundError("command", command_id)
    for _ in range(_RACE_RETRIES):
        if command.status not in CANCELLABLE:
            raise ValidationError(
                "id", f"command is {command.status}; only PENDING or SENT can be cancelled"
            )
        if _change(session, command, CommandStatus.CANCELLED, error="cancelled by an operator"):
            return command
    raise RuntimeError(f"command {command.id} kept changing while being cancelled")


def _change(session: Session, command: DeviceCommand, status: CommandStatus, **fields: Any) -> bool:
    """Move `command` from the status it has in memory to `status`, unless it moved meanwhile.

    True when applied (and announced); False when another writer changed it first, in
    which case `command` is refreshed from the database.
    """
    values = {"status": status, "updated_at": utcnow(), **fields}
    applied = session.execute(
        update(DeviceCommand)
        .where(col(DeviceCommand.id) == command.id, col(DeviceCommand.status) == command.status)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.refresh(command)
    if applied.rowcount != 1:
        return False
    _announce(session, "STATUS_CHANGED", command)
    return True


DeviceFilter = Callable[[uuid.UUID], bool]  # which devices a dispatcher serves


def due_for_sending(
    *,
    session: Session,
    now: datetime,
    device_id: uuid.UUID | None = None,
    limit: int = 500,
    devices: DeviceFilter | None = None,
) -> list[DeviceCommand]:
    """PENDING, unexpired commands of ONLINE devices (those `devices` accepts), oldest first.

    With `devices`, the due commands' ids are read first and filtered here (a device's
    partition is not known to SQL), then at most `limit` of them loaded.
    """
    query = (
        select(DeviceCommand.id, DeviceCommand.device_id)
        .join(Device, col(Device.id) == col(DeviceCommand.device_id))
        .where(
            DeviceCommand.status == CommandStatus.PENDING,
            DeviceCommand.expires_at > now,
            Device.status == DeviceStatus.ONLINE,
        )
    )
    if device_id is not None:
        query = query.where(DeviceCommand.device_id == device_id)
    query = query.order_by(col(DeviceCommand.created_at), col(DeviceCommand.id))
    if devices is None:
        query = query.limit(limit)
    ids = [ident for ident, device in session.exec(query) if devices is None or devices(device)]
    if not ids:
        return []
    rows = {
        c.id: c
        for c in session.exec(select(DeviceCommand).where(col(DeviceCommand.id).in_(ids[:limit])))
    }
    return [rows[ident] for ident in ids[:limit] if ident in rows]


def mark_sent(*, session: Session, command_id: uuid.UUID, at: datetime) -> bool:
    """The broker has the command: PENDING becomes SENT (False if it moved on meanwhile)."""
    command = session.get(DeviceCommand, command_id)
    if command is None or command.status != CommandStatus.PENDING:
        return False
    return _change(session, command, CommandStatus.SENT, sent_at=at)


def record_answer(
    *, session: Session, device_id: uuid.UUID, answer: Answer, at: datetime
) -> str | None:
    """Apply a device's answer; None when applied, else why it was rejected.

    Reasons: `unknown_command`, `wrong_device` (the command is another device's),
    `finished` (already EXECUTED, FAILED, EXPIRED or CANCELLED). The same answer twice (a
    redelivery) is applied once and not counted as rejected.
    """
    command = session.get(DeviceCommand, answer.command_id)
    if command is None:
        return "unknown_command"
    if command.device_id != device_id:
        return "wrong_device"
    status = _ANSWERS[answer.status]
    for _ in range(_RACE_RETRIES):
        if command.status == status:
            return None  # a redelivered answer: already applied
        if command.status in FINAL:
            return "finished"
        if _change(session, command, status, **_answer_fields(command, status, answer, at)):
            return None
    raise RuntimeError(f"command {command.id} kept changing while its answer was recorded")


def _answer_fields(
    command: DeviceCommand, status: CommandStatus, answer: Answer, at: datetime
) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if command.sent_at is None or command.sent_at > at:
        fields["sent_at"] = at  # the device has it, so it was sent, by `at` at the latest
    if status == CommandStatus.ACKNOWLEDGED or command.acknowledged_at is None:
        fields["acknowledged_at"] = at
    if status in (CommandStatus.EXECUTED, CommandStatus.FAILED):
        fields["executed_at"] = at
        fields["result"] = answer.result
        fields["error"] = answer.error
    return fields


def expire_due(
    *, session: Session, now: datetime, devices: DeviceFilter | None = None
) -> list[DeviceCommand]:
    """Commands still waiting for the device at `expires_at` become EXPIRED (those of the
    devices `devices` accepts)."""
    query = select(DeviceCommand).where(
        col(DeviceCommand.status).in_(OPEN), DeviceCommand.expires_at <= now
    )
    expired = []
    for command in list(session.exec(query)):
        if devices is not None and not devices(command.device_id):
            continue
        reason = (
            "never sent: the device stayed offline"
            if command.status == CommandStatus.PENDING
            else f"no final answer from the device (last status {command.status})"
        )
        # lost to an answer or a cancel that came first: that one stands
        if _change(session, command, CommandStatus.EXPIRED, error=reason):
            expired.append(command)
    return expired


def next_expiry(*, session: Session) -> datetime | None:
    """The soonest `expires_at` of a command still waiting for its device."""
    query = (
        select(DeviceCommand.expires_at)
        .where(col(DeviceCommand.status).in_(OPEN))
        .order_by(col(DeviceCommand.expires_at))
        .limit(1)
    )
    return session.exec(query).first()


def update_config(*, session: Session, device_id: uuid.UUID | str, config: Any) -> Device:
    """Store a device's configuration; the dispatcher publishes it, retained."""
    ident = validation.parse_id(device_id, "deviceId")
    document = validation.json_object(config, "config", max_bytes=MAX_CONFIG_BYTES)
    device = session.get(Device, ident)
    if device is None:
        raise NotFoundError("device", ident)
    now = utcnow()
    device.config, device.config_updated_at, device.updated_at = document, now, now
    session.add(device)
    session.flush()
    events.device_event(session, "UPDATED", device, now.isoformat())
    events.emit(session, bus.COMMANDS, {"type": "CONFIG", "device_id": str(ident)})
    return device


def configs_to_publish(
    *, session: Session, limit: int = 500, devices: DeviceFilter | None = None
) -> list[Device]:
    """Devices (those `devices` accepts) whose stored configuration has not been published
    since it changed."""
    due = (
        col(Device.config_updated_at).is_not(None),
        or_(
            col(Device.config_published_at).is_(None),
            col(Device.config_published_at) < col(Device.config_updated_at),
        ),
    )
    if devices is None:
        return list(session.exec(select(Device).where(*due).limit(limit)))
    ids = [ident for ident in session.exec(select(Device.id).where(*due)) if devices(ident)]
    if not ids:
        return []
    return list(session.exec(select(Device).where(col(Device.id).in_(ids[:limit]))))


def mark_config_published(*, session: Session, device_id: uuid.UUID, version: datetime) -> None:
    """The broker holds the configuration stored at `version` (its config_updated_at)."""
    device = session.get(Device, device_id)
    if device is not None and device.config_updated_at == version:
        device.config_published_at = version
        session.add(device)
