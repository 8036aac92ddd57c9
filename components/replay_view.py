"""What a draft rule would have done: a summary, the devices it fired on, and a chart of one
device's metric with the would-be alerts shaded over it."""

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from nicegui import ui

from app.services.charts import ChartData
from app.services.rule_testing import DeviceReplay, Firing
from components.data_table import cell, data_table, row
from components.metric_tiles import format_value
from components.relative_time import absolute_time
from components.telemetry_chart import HEIGHT, figure, plot_time, series_colour

FIRING_FILL = "rgba(220, 38, 38, 0.12)"
FIRING_EDGE = "#dc2626"


def summary(replays: list[DeviceReplay]) -> str:
    """ "Would have fired 3 times on 2 devices" (of the devices in the rule's scope)."""
    fired = [replay for replay in replays if replay.firings]
    count = sum(len(replay.firings) for replay in fired)
    if count == 0:
        return f"Would not have fired on any of the {_devices(len(replays))} it watches"
    times = "once" if count == 1 else f"{count} times"
    return f"Would have fired {times} on {_devices(len(fired))}"


def _devices(count: int) -> str:
    return "1 device" if count == 1 else f"{count} devices"


def replay_figure(data: ChartData, firings: list[Firing], end: datetime) -> dict[str, Any]:
    """The metric's chart with each firing shaded until it cleared (or the end) and marked."""
    fig = figure(data, series_colour(0))
    shapes = [
        {
            "type": "rect",
            "xref": "x",
            "yref": "paper",
            "x0": plot_time(firing.fired_at),
            "x1": plot_time(firing.cleared_at or end),
            "y0": 0,
            "y1": 1,
            "fillcolor": FIRING_FILL,
            "line": {"width": 0},
            "layer": "below",
        }
        for firing in firings
    ]
    shapes += [
        {
            "type": "line",
            "xref": "x",
            "yref": "paper",
            "x0": plot_time(firing.fired_at),
            "x1": plot_time(firing.fired_at),
            "y0": 0,
            "y1": 1,
            "line": {"color": FIRING_EDGE, "width": 1, "dash": "dot"},
        }
        for firing in firings
    ]
    fig["layout"]["shapes"] = shapes
    marked = [firing for firing in firings if firing.value is not None]
    if marked:
        fig["data"].append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": "would fire",
                "x": [plot_time(firing.fired_at) for firing in marked],
                "y": [firing.value for firing in marked],
                "marker": {"color": FIRING_EDGE, "size": 9, "symbol": "triangle-up"},
                "hovertemplate": "would fire at %{y}<extra></extra>",
            }
        )
    return fig


class ReplayView(ui.column):
    """The result of one replay; choosing a device redraws its chart."""

    def __init__(
        self,
        replays: list[DeviceReplay],
        *,
        end: datetime,
        chart: Callable[[uuid.UUID, str], Awaitable[ChartData | None]],
    ) -> None:
        """Show `replays`, and their first chart once `draw` is awaited; `chart(device_id,
        metric)` loads a device's metric over the range (None while the app stops)."""
        super().__init__()
        self.replays = replays
        self.end = end
        self._load_chart = chart
        self.classes("w-full gap-4").mark("replay-result")
        fired = [replay for replay in replays if replay.firings]
        self.chosen = (fired or replays or [None])[0]
        with self:
            tone = "text-red-700" if fired else "text-green-700"
            with ui.row().classes(f"items-center gap-2 no-wrap {tone}"):
                ui.icon("notifications_active" if fired else "notifications_off", size="sm")
                ui.label(summary(replays)).classes("text-base font-semibold").mark("replay-summary")
            self._table(fired)
            self.plot_area = ui.column().classes("w-full gap-1 min-w-0")

    def _table(self, fired: list[DeviceReplay]) -> None:
        if not fired:
            return
        with (
            ui.element("div").classes("w-full rounded border border-slate-200"),
            data_table(["Device", "Alerts", "First", "Last", ""], align_right=frozenset({1})),
        ):
            for replay in fired:
                with row().mark("replay-row"):
                    with cell(classes="font-medium"):
                        ui.label(replay.device_name)
                    with cell(right=True, classes="tabular-nums"):
                        ui.label(str(len(replay.firings))).mark("replay-count")
                    with cell(classes="text-slate-600 whitespace-nowrap"):
                        ui.label(absolute_time(replay.firings[0].fired_at))
                    with cell(classes="text-slate-600 whitespace-nowrap"):
                        ui.label(absolute_time(replay.firings[-1].fired_at))
                    with cell(right=True):
                        ui.button(
                            "Chart", icon="show_chart", on_click=lambda _, r=replay: self.choose(r)
                        ).props("flat dense no-caps size=sm color=primary").mark("replay-chart")

    async def choose(self, replay: DeviceReplay) -> None:
        """Chart this device."""
        self.chosen = replay
        await self.draw()

    async def draw(self) -> None:
        """The chosen device's metric with its firings, or why there is no chart."""
        replay = self.chosen
        data = None
        if replay is not None and replay.metric is not None:
            data = await self._load_chart(replay.device_id, replay.metric)
            if data is None or replay is not self.chosen:
                return  # the app is stopping, or another device was chosen meanwhile
        self.plot_area.clear()
        with self.plot_area:
            if replay is None:
                return
            if replay.metric is None or data is None:
                ui.label("This rule reads no single metric to chart.").classes(
                    "text-sm text-slate-500"
                )
                return
            with ui.row().classes("w-full items-baseline gap-2 no-wrap px-1"):
                ui.label(replay.device_name).classes("text-sm font-semibold text-slate-800")
                ui.label(replay.metric).classes("font-mono text-xs text-slate-500")
                ui.space()
                with ui.row().classes("items-center gap-1.5 text-xs text-slate-500 no-wrap"):
                    ui.element("span").classes("inline-block w-3 h-3 rounded-sm").style(
                        f"background: {FIRING_FILL}; border: 1px solid {FIRING_EDGE}"
                    )
                    ui.label("would-be alert, until it would have cleared")
            fig = replay_figure(data, replay.firings, self.end)
            plot = ui.plotly(fig).classes("w-full").style(f"height: {HEIGHT}px")
            plot.mark("replay-chart-plot").props(f"data-device={replay.device_id}")
            values = [f.value for f in replay.firings if f.value is not None]
            if values:
                ui.label(
                    f"Values when it would have fired: {', '.join(map(format_value, values[:8]))}"
                    + (" …" if len(values) > 8 else "")
                ).classes("text-xs text-slate-500 px-1")
