"""Device commands and configuration over GraphQL (seed section 4.2, SPEC sections 5 and 6)."""

from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON

from app.core import bus, models
from app.core.errors import NotFoundError
from app.graphql import arguments
from app.graphql.context import Info, in_session
from app.graphql.permissions import IsAuthenticated, IsOperator, requires
from app.graphql.subscriptions import UserCheck, subscribed
from app.graphql.types import Device, given, iso_utc_text, iso_utc_text_or_none
from app.services import commands, validation

CommandStatus = strawberry.enum(
    models.CommandStatus,
    name="CommandStatus",
    description="PENDING: stored, waiting for the device to be ONLINE; SENT: the broker "
    "acknowledged the publish; ACKNOWLEDGED, EXECUTED, FAILED: what the device answered; "
    "EXPIRED: no final answer before expiresAt; CANCELLED: withdrawn by an operator.",
)
DEFAULT_LIMIT = 50


@strawberry.type(description="A command for a device; times are ISO 8601 UTC.")
class Command:
    """A command as GraphQL shows it."""

    id: strawberry.ID
    device_id: strawberry.ID
    action: str
    params: JSON | None
    status: CommandStatus
    sent_at: str = strawberry.field(
        description="When the broker took it; until then (PENDING, or EXPIRED or CANCELLED "
        "before it went out) the time it was requested, as `createdAt`."
    )
    acknowledged_at: str | None
    executed_at: str | None = strawberry.field(
        description="When the device reported it EXECUTED or FAILED."
    )
    error: str | None = strawberry.field(
        description="The device's error (FAILED), or why it EXPIRED or was CANCELLED."
    )
    created_at: str
    updated_at: str
    expires_at: str
    result: JSON | None = strawberry.field(description="What the device returned, if anything.")
    idempotency_key: str | None
    created_by: strawberry.ID | None = strawberry.field(
        description="The user who sent it; null when a rule did."
    )
    rule_id: strawberry.ID | None = strawberry.field(
        description="The rule whose `command` clause sent it, if a rule did."
    )
    alert_id: strawberry.ID | None = strawberry.field(
        description="The alert whose firing sent it, if a rule did."
    )
    correlation_id: str | None = strawberry.field(
        description="The id on every log line about it: its alert's when a rule sent it, "
        "else the X-Request-ID of the request that did (docs/operations.md)."
    )

    @classmethod
    def from_model(cls, command: models.DeviceCommand) -> "Command":
        """The GraphQL view of a stored command."""
        return cls.from_payload(commands.command_payload(command))

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "Command":
        """The GraphQL view of a command as `iot:commands` carries it."""

        def ident(name: str) -> strawberry.ID | None:
            value = payload[name]
            return None if value is None else strawberry.ID(value)

        return cls(
            id=strawberry.ID(payload["id"]),
            device_id=strawberry.ID(payload["device_id"]),
            action=payload["action"],
            params=payload["params"],
            status=models.CommandStatus(payload["status"]),
            sent_at=iso_utc_text(payload["sent_at"] or payload["created_at"]),
            acknowledged_at=iso_utc_text_or_none(payload["acknowledged_at"]),
            executed_at=iso_utc_text_or_none(payload["executed_at"]),
            error=payload["error"],
            created_at=iso_utc_text(payload["created_at"]),
            updated_at=iso_utc_text(payload["updated_at"]),
            expires_at=iso_utc_text(payload["expires_at"]),
            result=payload["result"],
            idempotency_key=payload["idempotency_key"],
            created_by=ident("created_by"),
            rule_id=ident("rule_id"),
            alert_id=ident("alert_id"),
            # .get: a process of the previous release announces commands without it
            correlation_id=payload.get("correlation_id"),
        )


@strawberry.input(description="A command to send (seed section 4.2).")
class SendCommandInput:
    """What `sendCommand` takes."""

    device_id: strawberry.ID
    action: str = strawberry.field(description="1 to 100 characters of a-z, 0-9, '_', '.', '-'.")
    params: JSON | None = strawberry.field(
        default=strawberry.UNSET, description="A JSON object of at most 16 KiB."
    )
    timeout_seconds: int | None = strawberry.field(
        default=commands.DEFAULT_TIMEOUT,
        description="1 s to 24 h: without a final answer by then, the command is EXPIRED.",
    )
    idempotency_key: str | None = strawberry.field(
        default=strawberry.UNSET,
        description="The same key for the same device returns the existing command and sends "
        "nothing again.",
    )


@strawberry.type
class CommandsQuery:
    """Command history, for every signed-in role."""

    @strawberry.field(
        description="A device's commands, newest first, one page; `limit` is 1 to the "
        "server's page size.",
        extensions=requires(IsAuthenticated()),
    )
    async def device_commands(
        self,
        info: Info,
        device_id: strawberry.ID,
        status: CommandStatus | None = strawberry.UNSET,
        limit: int | None = DEFAULT_LIMIT,
        offset: int | None = 0,
    ) -> list[Command]:
        """NOT_FOUND when no device has this id."""
        device = arguments.device_id(device_id)
        wanted = status if given(status) else None
        max_limit = info.context.settings.max_page_size
        count, skip = arguments.page(limit, offset, default=DEFAULT_LIMIT, max_limit=max_limit)
        return await in_session(
            lambda session: [
                Command.from_model(command)
                for command in commands.device_commands(
                    session=session,
                    device_id=device,
                    status=wanted,
                    limit=count,
                    max_limit=max_limit,
                    offset=skip,
                )
            ]
        )

    @strawberry.field(
        description="One command, or null when none has this id.",
        extensions=requires(IsAuthenticated()),
    )
    async def command(self, id: strawberry.ID) -> Command | None:
        """The command with this id."""
        found = await in_session(
            lambda session: commands.get_command(session=session, command_id=id)
        )
        return None if found is None else Command.from_model(found)


@strawberry.type
class CommandsMutation:
    """Sending, cancelling and configuring, OPERATOR and ADMIN."""

    @strawberry.mutation(
        description="Store a command (PENDING) and send it once the device is ONLINE (OPERATOR).",
        extensions=requires(IsOperator()),
    )
    async def send_command(self, info: Info, input: SendCommandInput) -> Command:
        """The new command, or the existing one of the same idempotency key."""
        user = await info.context.require_user()
        timeout = input.timeout_seconds
        timeout = commands.DEFAULT_TIMEOUT if timeout is None else timeout  # null: the default
        data = commands.CommandInput(
            device_id=input.device_id,
            action=input.action,
            params=input.params if given(input.params) else None,
            timeout_seconds=timeout,
            idempotency_key=input.idempotency_key if given(input.idempotency_key) else None,
        )
        return await in_session(
            lambda session: Command.from_model(
                commands.send_command(session=session, data=data, created_by=user.id)
            )
        )

    @strawberry.mutation(
        description="Withdraw a command the device has not acknowledged (PENDING or SENT) "
        "(OPERATOR).",
        extensions=requires(IsOperator()),
    )
    async def cancel_command(self, id: strawberry.ID) -> Command:
        """The command, now CANCELLED."""
        return await in_session(
            lambda session: Command.from_model(
                commands.cancel_command(session=session, command_id=id)
            )
        )

    @strawberry.mutation(
        description="Store a device's configuration (a JSON object of at most 64 KiB) and "
        "publish it, retained, on devices/{id}/config (OPERATOR).",
        extensions=requires(IsOperator()),
    )
    async def update_device_config(self, device_id: strawberry.ID, config: JSON) -> Device:
        """The device with its new configuration."""
        device = arguments.device_id(device_id)
        return await in_session(
            lambda session: Device.from_model(
                commands.update_config(session=session, device_id=device, config=config)
            )
        )


@strawberry.type
class CommandsSubscription:
    """Live command statuses."""

    @strawberry.subscription(
        description="The command now, then again after each change of its status; NOT_FOUND "
        "when no command has this id.",
        extensions=requires(IsAuthenticated()),
    )
    async def command_status_changed(
        self, info: Info, command_id: strawberry.ID
    ) -> AsyncGenerator[Command, None]:
        """The command's current state first, so no step is missed between send and here."""
        ident = validation.parse_id(command_id, "commandId")
        recheck = UserCheck(info)
        async with subscribed(info, bus.COMMANDS) as changes:
            current = await in_session(
                lambda session: commands.get_command(session=session, command_id=ident)
            )
            if current is None:
                raise NotFoundError("command", ident)
            last = commands.command_payload(current)
            yield Command.from_payload(last)
            if last["status"] in _FINAL:
                return
            async for _channel, message in changes:
                payload = message.get("command")
                if payload is None or payload["id"] != str(ident):
                    continue
                if _changed_at(payload) <= _changed_at(last):
                    continue  # already shown (it changed before the first answer was read)
                last = payload
                await recheck()
                yield Command.from_payload(payload)
                if payload["status"] in _FINAL:
                    return


_FINAL = {str(status) for status in commands.FINAL}


def _changed_at(payload: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(payload["updated_at"])
