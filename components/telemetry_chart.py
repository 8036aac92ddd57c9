"""Time-series charts of one metric (Plotly) and the range selector the charts share."""

from bisect import bisect_left
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from nicegui import ui

from app.core.errors import ValidationError
from app.core.models import as_utc
from app.services.charts import ChartData, parse_custom_range
from app.services.telemetry import Sample
from components.forms import clear_errors, show_error
from components.theme import PALETTE

HEIGHT = 260
SERIES_COLOURS = tuple(PALETTE[name] for name in ("primary", "accent", "warning", "info"))
CUSTOM = "Custom"
EN_DASH = "\u2013"
_GRID, _AXIS, _TEXT = "#f1f5f9", "#cbd5e1", "#64748b"
_FONT = 'Inter, ui-sans-serif, system-ui, -apple-system, "Segoe UI", Roboto, sans-serif'
_MARKERS_UP_TO = 120  # few points: show each one; many: a clean line
_NUMBER = ":.6~g"  # plotly's d3 format: up to 6 significant digits, no trailing zeros


def series_colour(index: int) -> str:
    """The line colour of the `index`-th chart on a page (theme colours, in turn)."""
    return SERIES_COLOURS[index % len(SERIES_COLOURS)]


def plot_time(moment: datetime) -> str:
    """A time as plotly reads it, in UTC (plotly ignores zones, so we convert first)."""
    return as_utc(moment).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def width_label(seconds: int) -> str:
    """A bucket width in words: "10 s", "15 min", "3 h", "1 d"."""
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def describe(data: ChartData) -> str:
    """What the chart shows, said plainly ("42 points", "15 min averages, shaded: min-max")."""
    if data.bucket_seconds is not None:
        return f"{width_label(data.bucket_seconds)} averages · shaded: min{EN_DASH}max"
    count = len(data.samples)
    return "1 point" if count == 1 else f"{count} points"


def time_range(start: datetime, end: datetime) -> list[str]:
    """The time axis for [start, end], with a little room so the newest point is not cut."""
    return [plot_time(start), plot_time(end + (end - start) / 60)]


def _rgba(colour: str, alpha: float) -> str:
    red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red}, {green}, {blue}, {alpha})"


def _bucket_traces(data: ChartData, colour: str, unit: str) -> list[dict[str, Any]]:
    xs: list[str | None] = []
    avg: list[float | None] = []
    low: list[float | None] = []
    high: list[float | None] = []
    extra: list[list[float] | None] = []
    step = timedelta(seconds=data.bucket_seconds or 1)
    previous = None
    for bucket in data.aggregates:
        if previous is not None and bucket.bucket - previous > step:
            # a missing bucket is a gap in the data: break the line rather than bridge it
            xs.append(plot_time(previous + step))
            avg.append(None)
            low.append(None)
            high.append(None)
            extra.append(None)
        xs.append(plot_time(bucket.bucket))
        avg.append(bucket.avg)
        low.append(bucket.min)
        high.append(bucket.max)
        extra.append([bucket.min, bucket.max, bucket.count])
        previous = bucket.bucket
    band = {"type": "scatter", "mode": "lines", "x": xs, "line": {"width": 0}}
    band |= {"hoverinfo": "skip", "showlegend": False}
    template = (
        f"avg %{{y{_NUMBER}}}{unit}<br>min %{{customdata[0]{_NUMBER}}}"
        f" · max %{{customdata[1]{_NUMBER}}} · %{{customdata[2]}} points<extra></extra>"
    )
    return [
        band | {"y": high, "name": "max"},
        band | {"y": low, "name": "min", "fill": "tonexty", "fillcolor": _rgba(colour, 0.22)},
        {
            "type": "scatter",
            "mode": "lines",
            "name": data.metric_name,
            "x": xs,
            "y": avg,
            "customdata": extra,
            "line": {"color": colour, "width": 1.75},
            "hovertemplate": template,
        },
    ]


def _raw_trace(data: ChartData, colour: str, unit: str) -> dict[str, Any]:
    few = len(data.samples) <= _MARKERS_UP_TO
    return {
        "type": "scatter",
        "mode": "lines+markers" if few else "lines",
        "name": data.metric_name,
        "x": [plot_time(sample.time) for sample in data.samples],
        "y": [sample.value for sample in data.samples],
        "line": {"color": colour, "width": 1.75},
        "marker": {"color": colour, "size": 5},
        "hovertemplate": f"%{{y{_NUMBER}}}{unit}<extra></extra>",
    }


def _axis(**extra: Any) -> dict[str, Any]:
    return {
        "gridcolor": _GRID,
        "linecolor": _AXIS,
        "zeroline": False,
        "fixedrange": True,  # the range selector moves in time; dragging would fight the refresh
        "automargin": True,
        "title": {"font": {"size": 11, "color": _TEXT}, "standoff": 8},
        **extra,
    }


def figure(data: ChartData, colour: str) -> dict[str, Any]:
    """The plotly figure dict of `data`: a line, plus a min-max band when bucketed."""
    unit = f" {data.unit}" if data.unit else ""
    traces = (
        _bucket_traces(data, colour, unit) if data.bucketed else [_raw_trace(data, colour, unit)]
    )
    empty = not (data.aggregates if data.bucketed else data.samples)
    note = {"text": "No points in this range", "showarrow": False, "xref": "paper"}
    note |= {"yref": "paper", "x": 0.5, "y": 0.5, "font": {"size": 13, "color": "#94a3b8"}}
    layout = {
        "height": HEIGHT,
        "margin": {"l": 8, "r": 16, "t": 12, "b": 8},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"family": _FONT, "size": 11, "color": _TEXT},
        "showlegend": False,
        "hovermode": "x unified",
        "hoverlabel": {"bgcolor": "white", "bordercolor": _AXIS, "font": {"color": "#0f172a"}},
        "xaxis": _axis(
            type="date",
            range=time_range(data.start, data.end),
            hoverformat="%Y-%m-%d %H:%M:%S UTC",
            showspikes=True,
            spikemode="across",
            spikesnap="cursor",
            spikecolor="#94a3b8",
            spikethickness=1,
            spikedash="dot",
            title={"text": "Time (UTC)", "font": {"size": 11, "color": _TEXT}, "standoff": 6},
        ),
        "yaxis": _axis(
            title={"text": data.unit or "", "font": {"size": 11, "color": _TEXT}, "standoff": 8},
            rangemode="normal",
        ),
        "annotations": [note] if empty else [],
    }
    config = {"displayModeBar": False, "responsive": True, "displaylogo": False}
    return {"data": traces, "layout": layout, "config": config}


def _last_time(data: ChartData) -> datetime | None:
    return data.samples[-1].time if data.samples else None


class TelemetryChart:
    """A metric's title row and its plotly chart; `show` redraws, `append` adds live points."""

    def __init__(self, data: ChartData, *, colour: str) -> None:
        """Draw `data` in `colour`."""
        self.colour = colour
        self.data = data
        self.drawn = False  # plotly.js drops calls made before its first drawing
        self.last_time = _last_time(data)  # the newest raw point plotted, if any
        with ui.column().classes("w-full gap-0 min-w-0") as self.root:
            with ui.row().classes("w-full items-baseline gap-2 no-wrap px-1"):
                ui.element("span").classes("inline-block w-2.5 h-2.5 rounded-sm shrink-0").style(
                    f"background: {colour}"
                )
                ui.label(data.metric_name).classes(
                    "font-mono text-sm font-semibold text-slate-800 truncate"
                )
                if data.unit:
                    ui.label(data.unit).classes("text-xs text-slate-500 whitespace-nowrap")
                ui.space()
                self.caption = ui.label(describe(data)).classes(
                    "text-xs text-slate-500 whitespace-nowrap"
                )
                self.caption.mark("chart-caption")
            self.plot = (
                ui.plotly(figure(data, colour)).classes("w-full").style(f"height: {HEIGHT}px")
            )
            self.plot.mark(f"telemetry-chart chart-{data.metric_name}")
            self.plot.props(f"data-metric={data.metric_name}")  # for browser tests and styles
        self.plot.on("plotly_afterplot", self._mark_drawn, [])

    def _mark_drawn(self) -> None:
        self.drawn = True

    @property
    def point_count(self) -> int:
        """How many points the chart holds."""
        return len(self.plot.figure["data"][-1]["x"])

    def show(self, data: ChartData) -> None:
        """Replace what the chart shows."""
        self.data = data
        self.last_time = _last_time(data)
        self.caption.text = describe(data)
        self.plot.update_figure(figure(data, self.colour))

    def append(self, samples: list[Sample], start: datetime, end: datetime) -> None:
        """Add raw points, forget those before `start`, and move the time axis to [start, end]."""
        trace = self.plot.figure["data"][0]
        layout = self.plot.figure["layout"]
        new_x = [plot_time(sample.time) for sample in samples]
        new_y = [sample.value for sample in samples]
        if samples:
            self.last_time = samples[-1].time
        trace["x"] += new_x
        trace["y"] += new_y
        gone = bisect_left(trace["x"], plot_time(start))  # texts in one format sort as times
        del trace["x"][:gone], trace["y"][:gone]
        window = time_range(start, end)
        layout["xaxis"]["range"] = window
        if trace["x"]:
            layout["annotations"] = []
        self.caption.text = f"{len(trace['x'])} points" if len(trace["x"]) != 1 else "1 point"
        if not self.drawn:
            self.plot.update()  # not drawn yet: the next drawing uses the whole figure
            return
        if new_x:
            kept = len(trace["x"])
            self.plot.run_plot_method("extendTraces", {"x": [new_x], "y": [new_y]}, [0], kept)
        changes = {"xaxis.range": window, "annotations": layout["annotations"]}
        self.plot.run_plot_method("relayout", changes)


class RangePicker(ui.column):
    """Preset ranges as one button group, plus a custom range typed as two UTC times."""

    def __init__(
        self,
        presets: list[str],
        value: str,
        on_change: Callable[[str, tuple[datetime, datetime] | None], None],
    ) -> None:
        """Show `presets` with `value` selected; `on_change(name, custom_range_or_None)`."""
        super().__init__()
        self.classes("w-full gap-2")
        self.value = value
        self._on_change = on_change
        self.buttons: dict[str, ui.button] = {}
        with self:
            with ui.row().classes("w-full items-center gap-3"):
                with (
                    ui.button_group()
                    .props("unelevated")
                    .classes("border border-slate-300 rounded-md overflow-hidden")
                ):
                    for name in [*presets, CUSTOM]:
                        self.buttons[name] = ui.button(
                            name, on_click=lambda _, name=name: self.pick(name)
                        ).mark(f"range-{name.replace(' ', '').lower()}")
            with ui.row().classes("items-start gap-3") as self.custom_row:
                field = "outlined dense stack-label type=datetime-local"
                self.start = ui.input("From (UTC)").props(field).classes("w-56").mark("range-from")
                self.end = ui.input("To (UTC)").props(field).classes("w-56").mark("range-to")
                ui.button("Apply", on_click=self.apply).props("unelevated no-caps").classes(
                    "mt-1"
                ).mark("range-apply")
        self.custom_row.set_visibility(False)
        self._highlight()

    def _highlight(self) -> None:
        for name, button in self.buttons.items():
            chosen = name == self.value
            tone = "color=primary text-color=white" if chosen else "color=white text-color=grey-8"
            button.props(f"unelevated no-caps padding='4px 12px' {tone}")

    def pick(self, name: str) -> None:
        """Select a preset, or open the custom range inputs."""
        if name == CUSTOM:
            if not self.custom_row.visible:
                now = datetime.now(UTC).replace(second=0, microsecond=0)
                self.start.value = self.start.value or f"{now - timedelta(hours=1):%Y-%m-%dT%H:%M}"
                self.end.value = self.end.value or f"{now:%Y-%m-%dT%H:%M}"
            self.custom_row.set_visibility(not self.custom_row.visible)
            return
        self.custom_row.set_visibility(False)
        clear_errors({"from": self.start, "to": self.end})
        self.value = name
        self._highlight()
        self._on_change(name, None)

    def apply(self) -> None:
        """Check the custom range; show the error under its field or switch to it."""
        fields = {"from": self.start, "to": self.end}
        clear_errors(fields)
        try:
            chosen = parse_custom_range(self.start.value, self.end.value)
        except ValidationError as error:
            show_error(fields, error)
            return
        self.value = CUSTOM
        self._highlight()
        self._on_change(CUSTOM, chosen)
