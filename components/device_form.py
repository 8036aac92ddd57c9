"""The dialog that creates or edits a device: name, type and metadata JSON."""

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nicegui import ui

from app.core.errors import ValidationError
from components.forms import clear_errors, show_error


@dataclass(frozen=True)
class DeviceFormData:
    """What the operator typed, metadata already parsed."""

    name: str
    type: str
    metadata: dict[str, Any]


class DeviceForm(ui.dialog):
    """Name, type and metadata fields; `on_save` may raise ValidationError naming a field."""

    def __init__(
        self,
        *,
        title: str,
        action: str,
        on_save: Callable[[DeviceFormData], Awaitable[None]],
        types: list[str],
        initial: DeviceFormData | None = None,
    ) -> None:
        """Build the dialog; it stays open showing the error until a save succeeds."""
        super().__init__()
        self._on_save = on_save
        # a closed dialog is gone for good: the next "New device" builds a fresh one
        self.on_value_change(lambda event: None if event.value else self.delete())
        initial = initial or DeviceFormData(name="", type="", metadata={})
        with self, ui.card().classes("w-[34rem] max-w-full p-6 gap-3").mark("device-form"):
            ui.label(title).classes("text-lg font-semibold text-slate-900 pb-1")
            field_props = "outlined stack-label"
            self.name = ui.input("Name", value=initial.name).props(field_props).classes("w-full")
            self.type = ui.input("Type", value=initial.type, autocomplete=types)
            self.type.props(f'{field_props} hint="Lower-case letters, digits, _ and -"')
            self.type.classes("w-full")
            metadata_text = json.dumps(initial.metadata, indent=2) if initial.metadata else "{}"
            self.metadata = ui.textarea("Metadata (JSON object)", value=metadata_text)
            self.metadata.props(f"{field_props} rows=7 input-class='font-mono text-sm'")
            self.metadata.classes("w-full")
            self.fields = {"name": self.name, "type": self.type, "metadata": self.metadata}
            with ui.row().classes("w-full justify-end gap-2 pt-2"):
                ui.button("Cancel", on_click=self.close).props("flat no-caps color=secondary")
                self.button = ui.button(action, on_click=self.save)
                self.button.props("unelevated no-caps").mark("device-form-save")

    def _parsed_metadata(self) -> dict[str, Any]:
        try:
            value = json.loads(self.metadata.value or "{}")
        except json.JSONDecodeError as exc:
            reason = f"is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
            raise ValidationError("metadata", reason) from None
        if not isinstance(value, dict):
            raise ValidationError("metadata", 'must be a JSON object, like {"site": "Lyon"}')
        return value

    async def save(self) -> None:
        """Validate, await `on_save`, close on success; errors go under their field."""
        if not self.button.enabled:  # a second press while the first one is saving
            return
        clear_errors(self.fields)
        self.button.disable()
        try:
            data = DeviceFormData(
                name=self.name.value or "",
                type=(self.type.value or "").strip(),
                metadata=self._parsed_metadata(),
            )
            await self._on_save(data)
        except ValidationError as error:
            show_error(self.fields, error)
            return
        finally:
            self.button.enable()
        self.close()
