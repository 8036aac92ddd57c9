"""A device's commands on its page: the history for everyone, pushed live from `iot:commands`;
sending, cancelling and pushing a configuration for operators and admins."""

import uuid
from collections.abc import Mapping, Sequence

from nicegui import run, ui
from sqlmodel import Session

from app.core import bus, db, logs
from app.core.errors import NotFoundError, ValidationError
from app.core.models import CommandStatus, Device, DeviceCommand, DeviceStatus, Role
from app.mqtt.topics import config_topic
from app.services import alert_views, commands, devices, seed, users
from app.services.commands import CommandInput
from components.command_history import CommandHistory, CommandView
from components.command_panel import CommandForm, CommandRequest, CommandType, OfflineHint
from components.confirm_dialog import confirm
from components.deferred import Deferred
from components.device_config import ConfigDialog, config_view
from components.live import SAFETY_SECONDS
from components.section import section
from pages.auth import load_acting_user

HISTORY_LIMIT = 50
REFRESH_DELAY = 0.2  # a burst of status changes (sent, acknowledged, executed) redraws once


def offered(device_type: str) -> list[CommandType]:
    """The actions listed for a device type (`command_types` in seeds/demo.json)."""
    return [
        CommandType(
            action=entry["action"],
            label=entry.get("label") or entry["action"],
            description=entry.get("description") or "",
            params=entry.get("params") or {},
        )
        for entry in seed.command_types().get(device_type, [])
    ]


def _views(session: Session, found: Sequence[DeviceCommand]) -> list[CommandView]:
    """Each command with the name of who sent it: an operator, or a rule."""
    rule_ids = {command.rule_id for command in found if command.rule_id is not None}
    rules = alert_views.rule_names(session=session, rule_ids=rule_ids)
    people: dict[uuid.UUID, str] = {}
    for user_id in {command.created_by for command in found if command.created_by is not None}:
        if (user := users.get_user(session=session, user_id=user_id)) is not None:
            people[user_id] = user.name or user.email
    return [
        CommandView(
            command=command,
            user_name=people.get(command.created_by) if command.created_by else None,
            rule_name=rules.get(command.rule_id) if command.rule_id else None,
        )
        for command in found
    ]


def _command_views(device_id: uuid.UUID) -> list[CommandView]:
    with db.session_scope() as session:
        found = commands.device_commands(session=session, device_id=device_id, limit=HISTORY_LIMIT)
        return _views(session, found)


def _configured_device(device_id: uuid.UUID) -> Device | None:
    with db.session_scope() as session:
        return devices.get_device(session=session, device_id=device_id)


def _send_command(data: CommandInput, user_id: uuid.UUID, ids: Mapping[str, str]) -> None:
    with logs.bind(**ids), db.session_scope() as session:  # the command stores the request id
        commands.send_command(session=session, data=data, created_by=user_id)


def _cancel_command(command_id: uuid.UUID) -> None:
    with db.session_scope() as session:
        commands.cancel_command(session=session, command_id=command_id)


def _push_config(device_id: uuid.UUID, config: dict) -> None:
    with db.session_scope() as session:
        commands.update_config(session=session, device_id=device_id, config=config)


class DeviceCommands:
    """The Commands history (main column), Send a command and Configuration (side column)."""

    def __init__(self, device: Device, *, can_act: bool) -> None:
        """`can_act`: the viewer may send, cancel and configure (OPERATOR and above)."""
        self.device_id = device.id
        self.device_type = device.type
        self.status = device.status
        self.can_act = can_act
        self.views: list[CommandView] | None = []  # None: the device was deleted meanwhile
        self.configured: Device | None = device  # its configuration as last loaded
        self.history = CommandHistory(cancel=self.cancel if can_act else None)
        self.history.on_change = self.rows.refresh  # shows more or fewer of those loaded
        self.hints: list[OfflineHint] = []
        # dialogs live beside the redrawn parts: a push while one is open must not close it
        self._history_body: ui.column | None = None
        self._config_body: ui.column | None = None
        self._later = Deferred(self.reload_rows, REFRESH_DELAY)
        self._config_later = Deferred(self.reload_config, REFRESH_DELAY)
        # reload after a send or a push returns: the form and the dialog need not wait for it
        self._rows_now = Deferred(self.reload_rows, 0)
        self._config_now = Deferred(self.reload_config, 0)

    async def load(self) -> None:
        """Read the history (off the event loop); the configuration came with the device."""
        try:
            found = await run.io_bound(_command_views, self.device_id)
        except NotFoundError:
            self.views = None  # deleted meanwhile: the page says so on its next load
            return
        if found is not None:  # None: the app is shutting down
            self.views = found

    async def reload_rows(self) -> None:
        """Read the history again and redraw it."""
        await self.load()
        self.rows.refresh()

    async def reload_config(self) -> None:
        """Read the configuration again and redraw it."""
        self.configured = await run.io_bound(_configured_device, self.device_id)
        self.config.refresh()

    def receive(self, message: bus.Message) -> None:
        """An `iot:commands` message: redraw soon what it changed on this device."""
        if message.get("type") == "CONFIG":
            if message.get("device_id") == str(self.device_id):
                self._config_later.soon()
            return
        if (message.get("command") or {}).get("device_id") == str(self.device_id):
            self._later.soon()

    def set_status(self, status: DeviceStatus) -> None:
        """The device went online or offline: the hint follows."""
        self.status = status
        for hint in self.hints:
            hint.set_status(status)

    def create_history(self) -> None:
        """The history section; viewers get the offline hint here, having no form."""
        with section("Commands", icon="terminal") as self._history_body:
            if not self.can_act:
                self.hints.append(OfflineHint(self.status).classes("mb-3"))
            self.rows()
        # relative times age, and a push may be missed: reload now and then anyway
        ui.timer(SAFETY_SECONDS, self.reload_rows, immediate=False)

    @ui.refreshable_method
    def rows(self) -> None:
        """The device's commands, newest first, or a quiet line saying there are none."""
        views = self.views
        if views is None:
            return
        if not views:
            with ui.row().classes("items-center gap-2 py-1 text-sm text-slate-500"):
                ui.icon("history", size="xs").classes("text-slate-400")
                ui.label("No commands sent to this device yet.").mark("no-commands")
            return
        with ui.element("div").classes("w-full -mx-4 -my-3").style("width: calc(100% + 2rem)"):
            self.history.show(views, more=len(views) >= HISTORY_LIMIT)

    def create_side(self) -> None:
        """The form (operators only) and the configuration card."""
        if self.can_act:
            with section("Send a command", icon="send"):
                self.hints.append(OfflineHint(self.status).classes("mb-3"))
                CommandForm(offered(self.device_type), on_send=self.send)
        with section("Configuration", icon="tune") as self._config_body:
            self.config()

    async def send(self, request: CommandRequest) -> None:
        """Store the command as the signed-in operator; a refusal raises ValidationError."""
        if (user := await load_acting_user(Role.OPERATOR)) is None:
            return
        data = CommandInput(
            device_id=self.device_id,
            action=request.action,
            params=request.params,
            timeout_seconds=request.timeout_seconds,
            idempotency_key=request.idempotency_key,
        )
        try:
            # the page request's ids go along: run.io_bound's thread does not inherit them
            await run.io_bound(_send_command, data, user.id, logs.bound())
        except NotFoundError:
            ui.notify("This device was deleted in the meantime", type="warning")
            return
        ui.notify(f"Command “{request.action}” queued", type="positive")
        self._rows_now.soon()

    async def cancel(self, command: DeviceCommand) -> None:
        """Ask, then withdraw a PENDING or SENT command."""
        if command.status == CommandStatus.SENT:
            fate = "It has reached the broker: the device may still carry it out, but its "
            fate += "answers will be ignored."
        else:
            fate = "It will not be sent to the device."
        question = f"“{command.action}” becomes Cancelled. {fate}"
        assert self._history_body is not None  # the rows live in it
        with self._history_body:
            confirmed = await confirm(
                "Cancel this command?", question, action="Cancel command", dismiss="Keep it"
            )
        if not confirmed:
            return
        if await load_acting_user(Role.OPERATOR) is None:
            return
        try:
            await run.io_bound(_cancel_command, command.id)
        except NotFoundError:
            ui.notify("This command no longer exists", type="warning")
        except ValidationError as error:  # the device answered meanwhile
            ui.notify(f"Not cancelled: {error.reason}", type="warning")
        else:
            ui.notify("Command cancelled", type="positive")
        await self.reload_rows()

    @ui.refreshable_method
    def config(self) -> None:
        """The configuration last pushed, and the button to push another."""
        device = self.configured
        if device is None:
            return
        config_view(device.config, device.config_updated_at)
        if self.can_act:
            ui.button(
                "Push a configuration", icon="tune", on_click=lambda: self.edit_config(device)
            ).props("outline no-caps color=secondary").classes("mt-3 self-start").mark(
                "edit-config"
            )

    def edit_config(self, device: Device) -> None:
        """Open the configuration editor, starting from the stored configuration."""
        assert self._config_body is not None  # the button lives in it
        with self._config_body:
            ConfigDialog(device.config, config_topic(self.device_id), self.push_config).open()

    async def push_config(self, config: dict) -> None:
        """Store a new configuration; the dispatcher publishes it, retained."""
        if await load_acting_user(Role.OPERATOR) is None:
            return
        try:
            await run.io_bound(_push_config, self.device_id, config)
        except NotFoundError:
            ui.notify("This device was deleted in the meantime", type="warning")
            return
        ui.notify("Configuration pushed", type="positive")
        self._config_now.soon()
