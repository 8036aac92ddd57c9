"""The command form of a device page: offered actions, the action name, JSON params, timeout.

It checks what it can as the operator types (params must be a JSON object of at most
16 KiB, the timeout 1 s to 24 h) and awaits the page's callback to send; the page's service
call may still refuse with a ValidationError, shown under the field it names. It never reads
storage itself.
"""

import json
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from nicegui import ui

from app.core.errors import ValidationError
from app.core.models import DeviceStatus
from app.services import validation
from app.services.commands import DEFAULT_TIMEOUT, MAX_PARAMS_BYTES, MAX_TIMEOUT, MIN_TIMEOUT

# the words a field's error starts with; the service names fields as GraphQL does
LABELS = {"action": "Action", "params": "Params", "timeoutSeconds": "Timeout", "config": "Config"}
DOUBLE_CLICK_SECONDS = 2.0  # the same command again this soon is the same press, sent once
_CARD = "w-full rounded-lg border text-left"
_CARD_IDLE = "border-slate-200 bg-white"
_CARD_CHOSEN = "border-primary bg-blue-50 ring-1 ring-primary"


@dataclass(frozen=True)
class CommandType:
    """An action a device type understands, as `command_types` in seeds/demo.json offers it."""

    action: str
    label: str
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CommandRequest:
    """What the operator asked to send, checked as far as the form can."""

    action: str
    params: dict[str, Any]
    timeout_seconds: int
    idempotency_key: str  # a double click repeats it, so the service stores one command


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_object(text: str | None, name: str, *, max_bytes: int) -> dict[str, Any]:
    """A JSON object from an editor's text (empty means {}); ValidationError naming `name`."""
    if not (text or "").strip():
        return {}
    try:
        value = json.loads(text or "", parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        reason = f"is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        raise ValidationError(name, reason) from None
    except ValueError as exc:  # NaN, Infinity: Python reads them, JSON has none
        raise ValidationError(name, f"is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValidationError(name, 'must be a JSON object, like {"speed": 3}')
    return validation.json_object(value, name, max_bytes=max_bytes)


def error_text(error: ValidationError) -> str:
    """A field's error as the form shows it: "Params must be a JSON object, ..."."""
    return f"{LABELS.get(error.field, error.field)} {error.reason}"


def checked(check: Callable[[Any], object]) -> Callable[[Any], str | None]:
    """A NiceGUI validation function from a check that raises ValidationError."""

    def validate(value: Any) -> str | None:
        try:
            check(value)
        except ValidationError as error:
            return error_text(error)
        return None

    return validate


def params_of(text: str | None) -> dict[str, Any]:
    """The params editor's text as a JSON object of at most 16 KiB."""
    return parse_object(text, "params", max_bytes=MAX_PARAMS_BYTES)


def timeout_of(value: float | None) -> int:
    """The timeout field's value as whole seconds, 1 to 86400."""
    if value is None:
        raise ValidationError("timeoutSeconds", "is required (seconds)")
    if not math.isfinite(value) or value != int(value) or not MIN_TIMEOUT <= value <= MAX_TIMEOUT:
        raise ValidationError(
            "timeoutSeconds", f"must be {MIN_TIMEOUT} to {MAX_TIMEOUT} seconds (24 h)"
        )
    return int(value)


def pretty(document: dict[str, Any]) -> str:
    """A JSON object as an editor starts with it."""
    return json.dumps(document, indent=2, ensure_ascii=False) if document else "{}"


def _description(text: str) -> None:
    """A description whose `backticked` words are parameter names, set in monospace."""
    with ui.element("div").classes("text-xs leading-5 text-slate-500 font-normal text-left"):
        for index, part in enumerate(text.split("`")):
            if not part:
                continue
            tone = "font-mono text-slate-700" if index % 2 else ""
            ui.label(part).classes(f"inline whitespace-pre-wrap {tone}")


class CommandForm(ui.column):
    """Cards for the offered actions, the action name, params, timeout, and Send."""

    def __init__(
        self, offered: list[CommandType], *, on_send: Callable[[CommandRequest], Awaitable[None]]
    ) -> None:
        """`on_send` stores the command; it may raise ValidationError naming a field."""
        super().__init__()
        self._on_send = on_send
        self._last: tuple[object, float, str] | None = None  # what was sent, when, its key
        self.cards: dict[str, ui.button] = {}
        self.classes("w-full gap-3").mark("command-form")
        with self:
            if offered:
                with ui.column().classes("w-full gap-2").mark("command-actions"):
                    for offer in offered:
                        self.cards[offer.action] = self._card(offer)
            else:
                ui.label(
                    "No actions are listed for this device type: name one it understands."
                ).classes("text-sm text-slate-500")
            self.action = ui.input(
                "Action", on_change=lambda event: self._highlight(event.value or "")
            )
            self.action.props(
                "outlined dense stack-label input-class='font-mono text-sm' "
                'hint="One of the above, or any action the device understands"'
            ).classes("w-full").mark("command-action")
            self.params = ui.textarea(
                "Params (JSON object)", value="{}", validation=checked(params_of)
            )
            self.params.props("outlined stack-label rows=4 input-class='font-mono text-sm'")
            self.params.classes("w-full").mark("command-params")
            with ui.row().classes("w-full items-start gap-3 no-wrap"):
                self.timeout = ui.number(
                    "Timeout",
                    value=DEFAULT_TIMEOUT,
                    precision=0,
                    suffix="s",
                    validation=checked(timeout_of),
                )
                self.timeout.props(
                    'outlined dense stack-label hint="Expires without a final answer"'
                ).classes("w-44").mark("command-timeout")
                ui.space()
                self.send_button = ui.button("Send command", icon="send", on_click=self.send)
                self.send_button.props("unelevated no-caps").classes("mt-1").mark("send-command")
        self.fields = {"action": self.action, "params": self.params, "timeoutSeconds": self.timeout}

    def _card(self, offer: CommandType) -> ui.button:
        card = ui.button(on_click=lambda _, chosen=offer: self.choose(chosen))
        card.props("flat no-caps align=left padding=0").classes(f"{_CARD} {_CARD_IDLE}")
        with card, ui.column().classes("w-full gap-0.5 items-start px-3 py-2 text-left"):
            ui.label(offer.label).classes("text-sm font-medium text-slate-900 leading-5")
            if offer.description:
                _description(offer.description)
        return card.mark(f"command-card action-{offer.action}")

    def choose(self, offer: CommandType) -> None:
        """Fill the form from an offered action: its name and its example params."""
        self.action.value = offer.action
        self.params.value = pretty(offer.params)
        self.action.error = None

    def _highlight(self, action: str) -> None:
        for name, card in self.cards.items():
            chosen = name == action.strip()
            card.classes(
                add=_CARD_CHOSEN if chosen else _CARD_IDLE,
                remove=_CARD_IDLE if chosen else _CARD_CHOSEN,
            )

    def _show(self, error: ValidationError) -> None:
        target = self.fields.get(error.field)
        if target is None:
            ui.notify(error_text(error), type="negative")
        else:
            target.error = error_text(error)

    def _key_for(self, what: object, now: float) -> str:
        """The last key when the same command is pressed again within DOUBLE_CLICK_SECONDS."""
        if self._last is not None:
            last_what, last_at, last_key = self._last
            if last_what == what and now - last_at < DOUBLE_CLICK_SECONDS:
                return last_key
        return uuid.uuid4().hex

    async def send(self) -> None:
        """Check the fields, hand the command to `on_send`; errors go under their field."""
        if not self.send_button.enabled:  # a second press while the first one is sending
            return
        for element in self.fields.values():
            element.error = None
        self.send_button.disable()
        try:
            action = (self.action.value or "").strip()
            if not action:
                raise ValidationError("action", "is required: choose one above or type its name")
            params = params_of(self.params.value)
            timeout = timeout_of(self.timeout.value)
            what = (action, json.dumps(params, sort_keys=True), timeout)
            now = time.monotonic()
            key = self._key_for(what, now)
            await self._on_send(CommandRequest(action, params, timeout, idempotency_key=key))
        except ValidationError as error:
            self._show(error)
            return
        finally:
            self.send_button.enable()
        self._last = (what, now, key)


class OfflineHint(ui.row):
    """Says that commands wait, while the device is not ONLINE; `set_status` follows it."""

    def __init__(self, status: DeviceStatus | str) -> None:
        """Show the hint unless `status` is ONLINE."""
        super().__init__()
        self.classes(
            "w-full items-start gap-2 no-wrap rounded bg-amber-50 text-amber-900 px-3 py-2"
        ).mark("offline-hint")
        with self:
            ui.icon("cloud_off", size="xs").classes("mt-0.5")
            self._words = ui.label().classes("text-sm")
        self.set_status(status)

    def set_status(self, status: DeviceStatus | str) -> None:
        """Hide the hint once the device is ONLINE, show it again when it is not."""
        never = str(status) == DeviceStatus.UNKNOWN
        state = "has not connected yet" if never else "is offline"
        self._words.text = (
            f"The device {state}: commands wait until the device is online (or expire)."
        )
        self.set_visibility(str(status) != DeviceStatus.ONLINE)
