"""A titled card: the building block of detail pages."""

from collections.abc import Iterator
from contextlib import contextmanager

from nicegui import ui


@contextmanager
def section(title: str, *, icon: str | None = None) -> Iterator[ui.column]:
    """A bordered card with a title bar; content goes inside the block."""
    with ui.card().classes("w-full p-0 gap-0 shadow-none border border-slate-200") as card:
        with ui.row().classes(
            "w-full items-center gap-2 px-4 py-3 border-b border-slate-200 no-wrap"
        ) as bar:
            if icon:
                ui.icon(icon, size="xs").classes("text-slate-400")
            ui.label(title).classes("text-sm font-semibold text-slate-800")
            ui.space()
        bar.mark("section-bar")
        with ui.column().classes("w-full px-4 py-3 gap-0") as body:
            yield body
    card.mark(f"section-{title.lower().replace(' ', '-')}")
