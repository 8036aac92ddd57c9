"""Placing widgets on the 12-column grid: moves and resizes that never overlap, free spots.

Pure functions over the spec's widget dicts (JSON normal form), so the editor, the tests
and any future API share one set of rules: a widget moved or resized keeps the place it was
dropped on, and whatever it lands on is pushed down, as far as needed and no further.
"""

import re
from typing import Any

from app.dashboards.spec import GRID_COLUMNS

Widget = dict[str, Any]


def _overlap(a: Widget, b: Widget) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


def clamp(x: int, y: int, w: int, h: int) -> tuple[int, int, int, int]:
    """A rectangle forced onto the grid: inside the 12 columns, at least one cell."""
    w = min(max(1, w), GRID_COLUMNS)
    x = min(max(0, x), GRID_COLUMNS - w)
    return x, max(0, y), w, min(max(1, h), 100)


def place(
    widgets: list[Widget], widget_id: str, rectangle: tuple[int, int, int, int]
) -> list[Widget]:
    """The widgets with `widget_id` at `rectangle` (x, y, w, h), those it covers pushed down."""
    x, y, w, h = clamp(*rectangle)
    placed = [dict(widget) for widget in widgets]
    moved = next(widget for widget in placed if widget["id"] == widget_id)
    moved.update(x=x, y=y, w=w, h=h)
    settled = [moved]
    # the others in reading order: each goes down just far enough to clear what is settled
    for widget in sorted(
        (widget for widget in placed if widget is not moved), key=lambda w: (w["y"], w["x"])
    ):
        while (blocker := next((s for s in settled if _overlap(widget, s)), None)) is not None:
            widget["y"] = blocker["y"] + blocker["h"]
        settled.append(widget)
    return placed


def free_spot(widgets: list[Widget], w: int, h: int) -> tuple[int, int]:
    """The first (x, y) in reading order where a w x h widget overlaps nothing."""
    w = min(max(1, w), GRID_COLUMNS)
    y = 0
    while True:
        for x in range(GRID_COLUMNS - w + 1):
            candidate = {"x": x, "y": y, "w": w, "h": h}
            if not any(_overlap(candidate, widget) for widget in widgets):
                return x, y
        y += 1


def new_id(widgets: list[Widget], kind: str) -> str:
    """An id for a new widget of `kind`, unused in the dashboard (`stat-3`)."""
    base = re.sub(r"[^A-Za-z0-9_-]", "-", kind)[:30]
    taken = {widget["id"] for widget in widgets}
    number = 1
    while f"{base}-{number}" in taken:
        number += 1
    return f"{base}-{number}"
