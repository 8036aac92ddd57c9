"""The dashboard's 12-column grid: widget cards placed by CSS grid, dragged and resized.

Placement is plain CSS grid (`grid-column: x+1 / span w`), so the server's spec is the
only truth about the layout and Vue owns every element. In edit mode a small script
follows the pointer: dragging a card's title bar moves a ghost of it, its corner handle
resizes it; on release the script rounds to grid cells and emits `dashboard_layout`
with the new rectangle. The server applies it (`app.dashboards.layout.place`, which
pushes down what the card lands on) and re-places the cards. A library such as gridstack
moves elements itself, which fights Vue's rendering of the same elements.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nicegui import ui

from components.dashboard.views import GAP, HEADER, ROW_HEIGHT

_CSS = f"""
.dashboard-grid {{ display: grid; grid-template-columns: repeat(12, minmax(0, 1fr));
  grid-auto-rows: {ROW_HEIGHT}px; gap: {GAP}px; width: 100%; }}
.dashboard-card {{ background: white; border: 1px solid #e2e8f0; border-radius: 10px;
  display: flex; flex-direction: column; min-width: 0; min-height: 0; overflow: hidden;
  position: relative; }}
.dashboard-card-head {{ height: {HEADER}px; flex: none; display: flex; align-items: center;
  gap: 6px; padding: 0 8px 0 14px; border-bottom: 1px solid #f1f5f9; }}
.dashboard-card-body {{ flex: 1; min-height: 0; padding: 8px 10px; }}
.dashboard-grid.editing {{ background-image:
  linear-gradient(to right, rgba(148,163,184,.12) 1px, transparent 1px);
  background-size: calc((100% + {GAP}px) / 12) 100%; border-radius: 10px; }}
.dashboard-grid.editing .dashboard-card {{ border-style: dashed; border-color: #93c5fd; }}
.dashboard-grid.editing .dashboard-card-head {{ cursor: grab; background: #f8fafc; }}
.dashboard-card.dragging {{ opacity: .85; z-index: 20; box-shadow: 0 12px 28px rgba(15,23,42,.18);
  cursor: grabbing; }}
.dashboard-resize {{ display: none; position: absolute; right: 2px; bottom: 2px; width: 18px;
  height: 18px; cursor: nwse-resize; color: #64748b; }}
.dashboard-grid.editing .dashboard-resize {{ display: block; }}
.dashboard-grid:not(.editing) .dashboard-card.untitled .dashboard-card-head {{ display: none; }}
.dashboard-table td, .dashboard-table th {{ white-space: nowrap; }}
.dashboard-card.selected {{ border: 2px solid #1d4ed8 !important; }}
"""

_SCRIPT = f"""
<script>
if (!window.iotdeckGrid) {{
  window.iotdeckGrid = true;
  const ROW = {ROW_HEIGHT}, GAP = {GAP}, COLS = 12;
  let drag = null;
  const clamp = (v, lo, hi) => Math.min(Math.max(v, lo), hi);
  document.addEventListener('pointerdown', (event) => {{
    const handle = event.target.closest('[data-grid-handle]');
    if (!handle || event.button !== 0 || event.target.closest('button')) return;
    const card = handle.closest('[data-widget-id]');
    const grid = card && card.closest('.dashboard-grid.editing');
    if (!grid) return;
    event.preventDefault();
    const box = card.getBoundingClientRect();
    drag = {{ mode: handle.dataset.gridHandle, card, x0: event.clientX, y0: event.clientY,
      col: (grid.getBoundingClientRect().width - GAP * (COLS - 1)) / COLS,
      width: box.width, height: box.height,
      x: +card.dataset.x, y: +card.dataset.y, w: +card.dataset.w, h: +card.dataset.h }};
    card.classList.add('dragging');
  }});
  document.addEventListener('pointermove', (event) => {{
    if (!drag) return;
    const dx = event.clientX - drag.x0, dy = event.clientY - drag.y0;
    if (drag.mode === 'move') drag.card.style.transform = `translate(${{dx}}px, ${{dy}}px)`;
    else {{
      drag.card.style.width = Math.max(40, drag.width + dx) + 'px';
      drag.card.style.height = Math.max(40, drag.height + dy) + 'px';
    }}
  }});
  document.addEventListener('pointerup', (event) => {{
    if (!drag) return;
    const {{ card, mode }} = drag;
    const cols = Math.round((event.clientX - drag.x0) / (drag.col + GAP));
    const rows = Math.round((event.clientY - drag.y0) / (ROW + GAP));
    let {{ x, y, w, h }} = drag;
    if (mode === 'move') {{ x = clamp(x + cols, 0, COLS - w); y = Math.max(0, y + rows); }}
    else {{ w = clamp(w + cols, 1, COLS - x); h = clamp(h + rows, 1, 100); }}
    card.classList.remove('dragging');
    card.style.transform = ''; card.style.width = ''; card.style.height = '';
    drag = null;
    emitEvent('dashboard_layout', {{ id: card.dataset.widgetId, x, y, w, h }});
  }});
}}
</script>
"""


@dataclass(frozen=True)
class Card:
    """A widget's card: the element placed on the grid, its title, its buttons, its body."""

    element: ui.element
    title: ui.label
    actions: ui.row
    body: ui.element


def grid_style(widget: dict[str, Any]) -> str:
    """The CSS that puts a widget at its grid cells."""
    return (
        f"grid-column: {widget['x'] + 1} / span {widget['w']};"
        f" grid-row: {widget['y'] + 1} / span {widget['h']}"
    )


class DashboardGrid(ui.element):
    """The grid; `on_layout(id, (x, y, w, h))` gets each drop or resize in edit mode."""

    def __init__(self, on_layout: Callable[[str, tuple[int, int, int, int]], None]) -> None:
        """An empty grid; add cards with `card`."""
        super().__init__("div")
        ui.add_css(_CSS)
        ui.add_body_html(_SCRIPT)
        self.classes("dashboard-grid").mark("dashboard-grid")
        self.cards: dict[str, Card] = {}
        ui.on(
            "dashboard_layout",
            lambda event: on_layout(
                str(event.args["id"]), tuple(int(event.args[key]) for key in "xywh")
            ),
        )

    def set_editing(self, editing: bool) -> None:
        """Show or hide the editing affordances (grid lines, handles)."""
        if editing:
            self.classes(add="editing")
        else:
            self.classes(remove="editing")

    def card(self, widget: dict[str, Any]) -> Card:
        """A card for `widget`, placed on its cells."""
        with self:
            element = ui.element("div").classes("dashboard-card")
            with element:
                head = ui.row().classes("dashboard-card-head no-wrap")
                with head.props("data-grid-handle=move"):
                    title = ui.label(widget.get("title") or "").classes(
                        "text-sm font-semibold text-slate-700 truncate grow"
                    )
                    actions = ui.row().classes("items-center gap-0 no-wrap")
                body = ui.element("div").classes("dashboard-card-body")
                with (
                    ui.element("div")
                    .classes("dashboard-resize")
                    .props("data-grid-handle=resize")
                    .mark("widget-resize")
                ):
                    ui.icon("south_east", size="xs")
        element.mark(f"widget widget-{widget['id']}")
        card = Card(element, title.mark("widget-title"), actions, body)
        self.cards[widget["id"]] = card
        self.set_title(widget)
        self.place(widget)
        return card

    def place(self, widget: dict[str, Any]) -> None:
        """Move a card to the widget's cells."""
        card = self.cards[widget["id"]].element
        card.style(grid_style(widget))
        card.props(
            f"data-widget-id={widget['id']} data-type={widget['type']} data-x={widget['x']}"
            f" data-y={widget['y']} data-w={widget['w']} data-h={widget['h']}"
        )

    def set_title(self, widget: dict[str, Any]) -> None:
        """Show a widget's new title (an untitled card hides its title bar outside editing)."""
        card = self.cards[widget["id"]]
        card.title.text = widget.get("title") or ""
        if widget.get("title"):
            card.element.classes(remove="untitled")
        else:
            card.element.classes(add="untitled")  # no title: the content uses the card alone

    def remove_card(self, widget_id: str) -> None:
        """Take a widget's card off the grid."""
        card = self.cards.pop(widget_id, None)
        if card is not None:
            self.remove(card.element)

    def clear(self) -> None:
        """Take every card off."""
        super().clear()
        self.cards.clear()
