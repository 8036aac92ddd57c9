"""A centred message for lists with nothing to show, with room for an action button."""

from nicegui import ui


def empty_state(icon: str, title: str, message: str) -> ui.column:
    """An icon, a title and an explanation; enter the result to add buttons below."""
    with ui.column().classes("w-full items-center text-center gap-2 py-14") as column:
        ui.icon(icon, size="2.5rem").classes("text-slate-300")
        ui.label(title).classes("text-base font-semibold text-slate-700")
        ui.label(message).classes("text-sm text-slate-500 max-w-md")
    return column.mark("empty-state")


def forbidden(message: str) -> None:
    """A page body for a user whose role may not see it: why, and a way back."""
    with ui.card().classes("w-full shadow-none border border-slate-200"):
        with empty_state("lock", "Not allowed", message):
            ui.button("Back to devices", on_click=lambda: ui.navigate.to("/devices")).props(
                "unelevated no-caps"
            )
