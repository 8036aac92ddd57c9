"""A device's configuration: the JSON last pushed, and the dialog that pushes a new one."""

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from nicegui import ui

from app.core.errors import ValidationError
from app.services.commands import MAX_CONFIG_BYTES
from components.command_panel import checked, error_text, parse_object, pretty
from components.json_viewer import json_block
from components.relative_time import time_label


def config_of(text: str | None) -> dict[str, Any]:
    """The editor's text as a JSON object of at most 64 KiB."""
    return parse_object(text, "config", max_bytes=MAX_CONFIG_BYTES)


def config_view(config: dict[str, Any] | None, updated_at: datetime | None) -> None:
    """The stored configuration and when it changed, or that none was pushed."""
    if config is None:
        ui.label("No configuration pushed yet.").classes("text-sm text-slate-500 py-1").mark(
            "no-config"
        )
        return
    json_block(config).mark("device-config")
    with ui.row().classes("items-center gap-1 pt-2 text-xs text-slate-500"):
        ui.label("Pushed")
        time_label(updated_at)


class ConfigDialog(ui.dialog):
    """A JSON editor for the whole configuration; `on_save` may raise ValidationError."""

    def __init__(
        self,
        config: dict[str, Any] | None,
        topic: str,
        on_save: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        """Start from the current configuration; saving replaces it whole."""
        super().__init__()
        self._on_save = on_save
        self.on_value_change(lambda event: None if event.value else self.delete())
        with self, ui.card().classes("w-[34rem] max-w-full p-6 gap-3").mark("config-dialog"):
            ui.label("Push a new configuration").classes("text-lg font-semibold text-slate-900")
            with ui.column().classes("gap-0 text-sm text-slate-600"):
                ui.label("It replaces the whole configuration. The broker keeps it (retained) on")
                ui.label(topic).classes("font-mono text-xs text-slate-700 break-all")
                ui.label("so the device gets it now, or when it next connects.")
            self.editor = ui.textarea(
                "Configuration (JSON object)",
                value=pretty(config or {}),
                validation=checked(config_of),
            )
            self.editor.props("outlined stack-label rows=10 input-class='font-mono text-sm'")
            self.editor.classes("w-full").mark("config-editor")
            with ui.row().classes("w-full justify-end gap-2 pt-2"):
                ui.button("Cancel", on_click=self.close).props("flat no-caps color=secondary")
                self.button = ui.button("Push configuration", icon="publish", on_click=self.save)
                self.button.props("unelevated no-caps").mark("config-save")

    async def save(self) -> None:
        """Check the JSON, await `on_save`, close on success; errors stay under the editor."""
        if not self.button.enabled:  # a second press while the first one is pushing
            return
        self.editor.error = None
        self.button.disable()
        try:
            await self._on_save(config_of(self.editor.value))
        except ValidationError as error:
            self.editor.error = error_text(error)
            return
        finally:
            self.button.enable()
        self.close()
