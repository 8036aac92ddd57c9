"""Latest-value tiles: one per metric, its value with unit and how old it is."""

from datetime import UTC, datetime, timedelta

from nicegui import ui

from app.services.charts import Tile
from components.relative_time import absolute_time, relative_time

STALE_AFTER = timedelta(minutes=5)


def format_value(value: float) -> str:
    """A reading as people write it: "23.5", "1013.25", "0.0035", "12000"."""
    number = float(value)
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    return f"{number:.6g}"


def is_stale(tile: Tile, now: datetime) -> bool:
    """True when the metric has not reported for longer than STALE_AFTER."""
    return now - tile.time > STALE_AFTER


class MetricTiles(ui.element):
    """A wrapping grid of tiles; `show` redraws it with new values (ages move on too)."""

    def __init__(self, tiles: list[Tile]) -> None:
        """Draw the tiles in a responsive grid."""
        super().__init__("div")
        self.classes("w-full grid grid-cols-[repeat(auto-fill,minmax(11rem,1fr))] gap-3")
        self.mark("metric-tiles")
        self.show(tiles)

    def show(self, tiles: list[Tile], now: datetime | None = None) -> None:
        """Replace the tiles with these values."""
        now = now or datetime.now(UTC)
        self.clear()
        with self:
            for tile in tiles:
                _tile(tile, now)


def _tile(tile: Tile, now: datetime) -> None:
    stale = is_stale(tile, now)
    tone = "bg-slate-50 border-slate-200" if stale else "bg-white border-slate-200"
    with ui.column().classes(f"gap-1 rounded-lg border px-4 py-3 min-w-0 {tone}") as box:
        ui.label(tile.metric_name).classes(
            "font-mono text-xs text-slate-500 truncate w-full"
        ).tooltip(tile.metric_name)
        with ui.row().classes("items-baseline gap-1 no-wrap"):
            value = ui.label(format_value(tile.value)).classes(
                "text-2xl font-semibold tabular-nums tracking-tight "
                + ("text-slate-400" if stale else "text-slate-900")
            )
            value.mark("tile-value")
            if tile.unit:
                ui.label(tile.unit).classes("text-sm text-slate-500").mark("tile-unit")
        with ui.row().classes("items-center gap-1 no-wrap text-xs text-slate-500"):
            if stale:
                ui.icon("schedule", size="0.9rem").classes("text-amber-600")
            age = ui.label(relative_time(tile.time, now)).classes("whitespace-nowrap")
            age.tooltip(absolute_time(tile.time)).mark("tile-age")
    box.mark(f"tile tile-{tile.metric_name} {'tile-stale' if stale else 'tile-fresh'}")
    box.props(f"data-metric={tile.metric_name}")  # for browser tests
