"""A reusable "are you sure?" dialog for destructive or important actions."""

from nicegui import ui


class ConfirmDialog(ui.dialog):
    """A modal asking one question; `await dialog` gives True only when confirmed."""

    def __init__(
        self, title: str, message: str, *, action: str, danger: bool = True, dismiss: str = "Cancel"
    ) -> None:
        """Build the dialog; `action` labels the confirming button ("Delete device")."""
        super().__init__()
        with self, ui.card().classes("w-[28rem] max-w-full p-6 gap-4"):
            with ui.row().classes("items-center gap-3 no-wrap"):
                icon = "warning" if danger else "help_outline"
                ui.icon(icon, size="sm").classes("text-negative" if danger else "text-primary")
                ui.label(title).classes("text-lg font-semibold")
            ui.label(message).classes("text-sm text-slate-600")
            with ui.row().classes("w-full justify-end gap-2 pt-2"):
                ui.button(dismiss, on_click=lambda: self.submit(False)).props(
                    "flat no-caps color=secondary"
                ).mark("confirm-cancel")
                ui.button(action, on_click=lambda: self.submit(True)).props(
                    f"unelevated no-caps color={'negative' if danger else 'primary'}"
                ).mark("confirm-ok")


async def confirm(
    title: str, message: str, *, action: str, danger: bool = True, dismiss: str = "Cancel"
) -> bool:
    """Show a ConfirmDialog and wait for the answer; closing it counts as "no".

    `dismiss` labels the other button: "Keep it" where "Cancel" would be ambiguous.
    """
    dialog = ConfirmDialog(title, message, action=action, danger=danger, dismiss=dismiss)
    try:
        return bool(await dialog)
    finally:
        dialog.delete()
