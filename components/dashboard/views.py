"""What a widget shows: one view class per widget type, fed off the event loop and live.

A view receives its widget's JSON (the spec's normal form) with the page's variables
already put in, loads its data through `app.dashboards.data` in a worker thread, and
follows the live stream through the process's `LiveValues`: one subscription per device
and metric for the whole process, however many widgets and viewers watch it. A view never
queries the database per live point; lists (alerts, devices, fleet counts) reload at most
once a second when the page's feed says something changed.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import markdown2
from nicegui import run, ui

from app.core import bus, db, logs
from app.core.auth import has_role
from app.core.errors import DomainError
from app.core.models import Role, User, as_utc
from app.dashboards import data
from app.dashboards.live import LiveValues
from app.dashboards.spec import TimeRange
from app.services import commands
from app.services.commands import CommandInput
from components.chips import command_status_chip, severity_chip
from components.confirm_dialog import confirm
from components.dashboard import figures
from components.deferred import Deferred
from components.relative_time import set_time, time_label
from components.status_badge import status_badge
from components.telemetry_chart import EN_DASH, plot_time, time_range

logger = logging.getLogger(__name__)

ROW_HEIGHT = 72  # px of one grid row
GAP = 12  # px between grid cells
HEADER = 40  # px of a widget card's title bar
# how often a widget's chart takes live changes: each drawing costs every viewer's browser
LINE_SECONDS = 0.5  # time series
SPARK_SECONDS = 1.0  # a stat's sparkline (its value itself changes at once)
DIAL_SECONDS = 0.5  # gauges
BARS_SECONDS = 1.0  # bar charts (a point of any of their devices)
RELOAD_SECONDS = 1.0  # lists reload at most this often on pushed changes
SHARE_SECONDS = 1.0  # a query's answer serves every page that asks the same meanwhile
T = TypeVar("T")


def _with_session(function: Callable[..., T], kwargs: dict[str, Any], ids: Mapping[str, str]) -> T:
    with logs.bind(**ids), db.session_scope() as session:
        return function(session=session, **kwargs)


async def fetch(function: Callable[..., T], **kwargs: Any) -> T:
    """`function(session=..., **kwargs)` in a worker thread: the event loop never waits."""
    # the page request's ids go along (run.io_bound's thread does not inherit them): its log
    # lines, and a command it sends, keep them
    return await run.io_bound(_with_session, function, kwargs, logs.bound())


_SHARED: dict[tuple[Any, ...], tuple[float, "asyncio.Future[Any]"]] = {}


async def fetch_shared(function: Callable[..., T], **kwargs: Any) -> T:
    """`fetch`, shared by every page of the process asking the same within SHARE_SECONDS.

    Twenty viewers opening one dashboard, or reloading a list on the same pushed alert,
    cost one query, not twenty. Widget data is the same for every signed-in user.
    """
    key = (
        function,
        *((name, tuple(v) if isinstance(v, list) else v) for name, v in sorted(kwargs.items())),
    )
    now = time.monotonic()
    found = _SHARED.get(key)
    if found is None or now - found[0] > SHARE_SECONDS:
        for old in [k for k, (at, _) in _SHARED.items() if now - at > SHARE_SECONDS]:
            del _SHARED[old]
        found = (now, asyncio.ensure_future(fetch(function, **kwargs)))
        _SHARED[key] = found
    return await asyncio.shield(found[1])


@dataclass
class Scope:
    """What every widget of a page shares: who looks, the variables, the range, the stream."""

    user: User
    variables: dict[str, str | None] = field(default_factory=dict)
    time: dict[str, str] = field(default_factory=lambda: {"from": "now-24h", "to": "now"})
    live: LiveValues | None = None

    @property
    def can_act(self) -> bool:
        """OPERATOR and above send commands."""
        return has_role(self.user, Role.OPERATOR)


def substitute(options: Any, variables: dict[str, str | None]) -> Any:
    """`options` with `$device` and `$type` replaced by the variables' current values."""
    if isinstance(options, dict):
        return {key: substitute(value, variables) for key, value in options.items()}
    if isinstance(options, list):
        return [substitute(value, variables) for value in options]
    if options in ("$device", "$type"):
        return variables.get(options[1:])
    return options


def unresolved(options: Any) -> bool:
    """True when a variable the widget needs has no value yet (it was put in as None)."""
    if isinstance(options, dict):
        return any(
            (key in ("device", "deviceType") and value is None) or unresolved(value)
            for key, value in options.items()
        )
    if isinstance(options, list):
        return any(unresolved(value) for value in options)
    return False


def _now() -> datetime:
    """Now, in whole seconds: pages asking within the same second share their queries."""
    return datetime.now(UTC).replace(microsecond=0)


class View:
    """A widget's content; subclasses fill `build`, `load` and, when live, `follow`."""

    kind: ClassVar[str] = ""
    channels: ClassVar[frozenset[str]] = frozenset()  # page-feed channels it reloads on

    def __init__(self, widget: dict[str, Any], scope: Scope) -> None:
        """Build the view's skeleton in the current container."""
        self.widget = widget
        self.scope = scope
        self.raw_options: dict[str, Any] = widget.get("options", {})
        self.options: dict[str, Any] = substitute(self.raw_options, scope.variables)
        self.client = ui.context.client
        self._unwatch: list[Callable[[], None]] = []
        self.following = False  # live updates wanted: each load watches what it shows
        self._reload = Deferred(self.refresh, RELOAD_SECONDS)
        with ui.column().classes("w-full h-full gap-1 min-h-0 min-w-0") as self.root:
            self.build()

    # -- sizes and time ----------------------------------------------------------------------
    @property
    def height(self) -> int:
        """Pixels the content may use."""
        rows = int(self.widget["h"])
        return max(40, rows * ROW_HEIGHT + (rows - 1) * GAP - HEADER - 16)

    @property
    def time(self) -> dict[str, str]:
        """The widget's own range when it has one, else the dashboard's."""
        return self.options.get("time") or self.scope.time

    def window(self) -> tuple[datetime, datetime]:
        """[start, end] of the range, now."""
        return data.resolve_range(TimeRange.model_validate(self.time), _now())

    @property
    def follows_now(self) -> bool:
        """A range that ends now moves live."""
        return self.time.get("to", "now") == "now"

    # -- lifecycle ---------------------------------------------------------------------------
    def build(self) -> None:
        """The skeleton (no data yet)."""

    async def load(self) -> None:
        """Fetch and show the data; subclasses override."""

    def follow(self) -> None:
        """Start live updates; subclasses override."""

    async def refresh(self) -> None:
        """Load again, showing a problem in place rather than failing the page."""
        if self.client.is_deleted:
            return
        if unresolved(self.options):
            self.placeholder("Pick a device above to fill this widget")
            return
        try:
            with self.root:  # a view loads in a task of its own: give it its slot
                await self.load()
            if self.following:
                self.unwatch()
                self.follow()
        except DomainError as error:
            self.placeholder(str(error), icon="error_outline")
        except Exception:  # one broken widget must not blank the dashboard
            logger.exception("dashboard widget %s failed to load", self.widget.get("id"))
            self.placeholder("This widget could not load its data", icon="error_outline")

    async def start(self) -> None:
        """First load, then live updates."""
        self.following = self.scope.live is not None
        await self.refresh()

    def on_message(self, channel: str, _message: bus.Message) -> None:
        """A page-feed message: reload soon when it concerns this view."""
        if channel in self.channels:
            self._reload.soon()

    def watch(
        self, device_id: str, metric: str, handler: Callable[[datetime, float], None]
    ) -> None:
        """Follow one device's metric (shared with every other watcher in the process)."""
        assert self.scope.live is not None
        self._unwatch.append(self.scope.live.watch(device_id, metric, self._guarded(handler)))

    def watch_expression(
        self, device_id: str, expression: str, handler: Callable[[datetime, float | None], None]
    ) -> None:
        """Follow an expression over one device (one evaluator per process)."""
        assert self.scope.live is not None
        unwatch = self.scope.live.watch_expression(device_id, expression, self._guarded(handler))
        self._unwatch.append(unwatch)

    def watch_source(self, handler: Callable[[datetime, float | None], None]) -> None:
        """Follow the view's own value: its `metric`, or its `expression`."""
        device = self.options["device"]
        if self.options.get("metric"):
            self.watch(device, self.options["metric"], handler)
        elif self.options.get("expression"):
            self.watch_expression(device, self.options["expression"], handler)

    def _guarded(self, handler: Callable[..., None]) -> Callable[..., None]:
        def call(*args: Any) -> None:
            if self.client.is_deleted:
                return
            with self.client:
                handler(*args)

        return call

    def unwatch(self) -> None:
        """Stop following what the view watches."""
        for unwatch in self._unwatch:
            unwatch()
        self._unwatch.clear()

    def close(self) -> None:
        """Stop every live update of this view."""
        self.following = False
        self._reload.cancel()
        self.unwatch()

    def placeholder(self, message: str, *, icon: str = "tune") -> None:
        """Replace the content with a short message."""
        self.root.clear()
        with self.root, ui.column().classes("w-full h-full items-center justify-center gap-1"):
            ui.icon(icon, size="1.5rem").classes("text-slate-300")
            ui.label(message).classes("text-sm text-slate-500 text-center").mark("widget-message")


class LivePlot:
    """A plotly element that takes live changes without redrawing its whole figure.

    A browser pays for every drawing, and a wall screen has a dozen charts: points are
    sent in batches (`extendTraces`), values restyled in place, and the time axis moved
    only once it has drifted by a two-hundredth of the range.
    """

    def __init__(self, figure: dict[str, Any], height: int, *, every: float) -> None:
        """Draw `figure`; changes are sent at most every `every` seconds."""
        self.drawn = False  # plotly.js drops calls made before its first drawing
        self.plot = ui.plotly(figure).classes("w-full").style(f"height: {height}px")
        self.plot.on("plotly_afterplot", self._drawn, [])
        self._pending: dict[int, tuple[list[str], list[float | None]]] = {}
        self._restyle: dict[str, list[Any]] = {}
        self._flush = Deferred(self._send, every)
        self.window: tuple[datetime, datetime] | None = None
        self._axis_start: datetime | None = None  # where the browser's time axis starts

    def _drawn(self) -> None:
        self.drawn = True

    def show(self, figure: dict[str, Any]) -> None:
        """Replace the figure."""
        self._pending.clear()
        self._restyle.clear()
        self._axis_start = None
        self.plot.update_figure(figure)

    def add(self, trace: int, moment: datetime, value: float | None) -> None:
        """Queue one point for trace `trace`."""
        xs, ys = self._pending.setdefault(trace, ([], []))
        xs.append(plot_time(moment))
        ys.append(value)
        self._flush.soon()

    def restyle(self, changes: dict[str, Any]) -> None:
        """Queue new attributes of the first trace (`{"value": 3}`, `{"marker.color": [...]}`)."""
        trace = self.plot.figure["data"][0]
        for path, value in changes.items():
            *parents, leaf = path.split(".")
            place = trace
            for key in parents:
                place = place.setdefault(key, {})
            place[leaf] = value
            self._restyle[path] = [value]
        self._flush.soon()

    def _send(self) -> None:
        figure = self.plot.figure
        pending, self._pending = self._pending, {}
        restyle, self._restyle = self._restyle, {}
        for index, (xs, ys) in pending.items():
            trace = figure["data"][index]
            trace["x"] = [*trace["x"], *xs]
            trace["y"] = [*trace["y"], *ys]
        relayout = self._moved_axis(figure)
        if not self.drawn:
            self.plot.update()  # not drawn yet: the first drawing takes the whole figure
            return
        if pending:
            indices = sorted(pending)
            update = {"x": [pending[i][0] for i in indices], "y": [pending[i][1] for i in indices]}
            self.plot.run_plot_method("extendTraces", update, indices)
        if restyle:
            self.plot.run_plot_method("restyle", restyle, [0])
        if relayout:
            self.plot.run_plot_method("relayout", relayout)

    def _moved_axis(self, figure: dict[str, Any]) -> dict[str, Any]:
        """Forget points before the window; the axis change once it drifted enough."""
        if self.window is None:
            return {}
        start, end = self.window
        if self._axis_start is not None and start - self._axis_start < (end - start) / 200:
            return {}
        self._axis_start = start
        first = plot_time(start)
        for trace in figure["data"]:
            keep = next((i for i, x in enumerate(trace["x"]) if x >= first), len(trace["x"]))
            del trace["x"][:keep], trace["y"][:keep]
        figure["layout"]["xaxis"]["range"] = time_range(start, end)
        figure["layout"]["annotations"] = []
        return {"xaxis.range": figure["layout"]["xaxis"]["range"], "annotations": []}


class TimeseriesView(View):
    """Lines of metrics and expressions over the range; live when it ends now."""

    kind = "timeseries"

    def build(self) -> None:
        """An empty chart until the data comes."""
        self.chart = LivePlot(self._figure([], *self.window()), self.height, every=LINE_SECONDS)
        self.chart.plot.mark("widget-timeseries")

    def _figure(self, traces: list[dict[str, Any]], start: datetime, end: datetime) -> dict:
        return figures.timeseries_figure(
            traces,
            start=start,
            end=end,
            height=self.height,
            thresholds=self.options.get("thresholds", []),
            unit=self.options.get("unit"),
            low=self.options.get("min"),
            high=self.options.get("max"),
        )

    async def load(self) -> None:
        """One bounded, bucketed query per series."""
        start, end = self.window()
        traces = []
        unit = f" {self.options['unit']}" if self.options.get("unit") else ""
        for index, series in enumerate(self.options["series"]):
            line = await fetch_shared(
                data.series,
                device_id=series["device"],
                metric=series.get("metric"),
                expression=series.get("expression"),
                start=start,
                end=end,
            )
            label = series.get("label") or line.label
            line_colour = figures.colour(series.get("color"), index)
            traces.append(figures.line_trace(label, line.times, line.values, line_colour, unit))
        self.chart.show(self._figure(traces, start, end))

    def follow(self) -> None:
        """Append each series' live points."""
        if not self.follows_now:
            return
        for index, series in enumerate(self.options["series"]):

            def add(moment: datetime, value: float | None, index: int = index) -> None:
                self.chart.window = self.window()
                self.chart.add(index, moment, value)

            if series.get("metric"):
                self.watch(series["device"], series["metric"], add)
            else:
                self.watch_expression(series["device"], series["expression"], add)


class StatView(View):
    """The latest value, large, in its threshold's colour, over a sparkline."""

    kind = "stat"

    def build(self) -> None:
        """The value, the unit, the time of the value and the sparkline."""
        with ui.row().classes("w-full items-baseline gap-1.5 no-wrap px-1"):
            self.value = ui.label(EN_DASH).classes(
                "text-4xl font-semibold tracking-tight text-slate-900 tabular-nums"
            )
            self.value.mark("widget-value")
            if unit := self.options.get("unit"):
                ui.label(unit).classes("text-base text-slate-500")
            ui.space()
            self.when = time_label(None).classes("text-xs text-slate-400 whitespace-nowrap")
        self.spark: LivePlot | None = None
        if self.options.get("sparkline", True):
            self.spark = LivePlot(
                figures.sparkline_figure([], [], figures.colour(None), self.spark_height),
                self.spark_height,
                every=SPARK_SECONDS,
            )
            self.spark.plot.mark("widget-sparkline")

    @property
    def spark_height(self) -> int:
        """Pixels for the sparkline: what the value's row leaves."""
        return max(24, self.height - 56)

    def show_value(self, moment: datetime | None, value: float | None) -> None:
        """Show `value` (None: unknown) as of `moment`."""
        self.value.text = figures.format_value(value, self.options.get("decimals"))
        tone = figures.threshold_colour(value, self.options.get("thresholds", []))
        self.value.style(f"color: {tone or '#0f172a'}")
        self.value.props(f'data-value="{"" if value is None else value!r}"')
        if moment is not None:
            self.value.props(f'data-time="{as_utc(moment).isoformat()}"')
        set_time(self.when, moment)

    async def load(self) -> None:
        """The latest value and, for the sparkline, the range's line."""
        source = {
            "device_id": self.options["device"],
            "metric": self.options.get("metric"),
            "expression": self.options.get("expression"),
        }
        found = await fetch_shared(data.latest, **source, now=_now())
        self.show_value(*(found or (None, None)))
        if self.spark is not None:
            start, end = self.window()
            line = await fetch_shared(data.series, **source, start=start, end=end, max_points=200)
            tone = figures.fill_colour(
                found[1] if found else None, self.options.get("thresholds", [])
            )
            figure = figures.sparkline_figure(line.times, line.values, tone, self.spark_height)
            self.spark.show(figure)

    def follow(self) -> None:
        """Each live point updates the value and extends the sparkline."""

        def point(moment: datetime, value: float | None) -> None:
            self.show_value(moment, value)
            if self.spark is not None and self.follows_now:
                self.spark.window = self.window()
                self.spark.add(0, moment, value)

        self.watch_source(point)


class GaugeView(View):
    """The latest value on a dial."""

    kind = "gauge"

    def build(self) -> None:
        """An empty dial."""
        self.current: float | None = None
        self.dial = LivePlot(self._figure(), self.height, every=DIAL_SECONDS)
        self.plot = self.dial.plot.mark("widget-gauge")

    def _figure(self) -> dict[str, Any]:
        return figures.gauge_figure(
            self.current,
            low=self.options.get("min", 0),
            high=self.options.get("max", 100),
            thresholds=self.options.get("thresholds", []),
            unit=self.options.get("unit"),
            decimals=self.options.get("decimals"),
            height=self.height,
        )

    async def load(self) -> None:
        """The latest value."""
        found = await fetch_shared(
            data.latest,
            device_id=self.options["device"],
            metric=self.options.get("metric"),
            expression=self.options.get("expression"),
            now=_now(),
        )
        self.current = found[1] if found else None
        self.plot.props(f'data-value="{"" if self.current is None else self.current!r}"')
        self.dial.show(self._figure())

    def follow(self) -> None:
        """Each live point moves the needle."""

        def point(_moment: datetime, value: float | None) -> None:
            self.current = value
            self.plot.props(f'data-value="{"" if value is None else value!r}"')
            thresholds = self.options.get("thresholds", [])
            bar = figures.fill_colour(value, thresholds)
            self.dial.restyle({"value": value, "gauge.bar.color": bar})

        self.watch_source(point)


class BarView(View):
    """The latest value of one metric for each device of a type."""

    kind = "bar"

    def build(self) -> None:
        """An empty bar chart."""
        self.rows: list[data.BarRow] = []
        self.bars = LivePlot(self._figure(), self.height, every=BARS_SECONDS)
        self.bars.plot.mark("widget-bar")

    def _figure(self) -> dict[str, Any]:
        return figures.bar_figure(
            [row.name for row in self.rows],
            [row.value for row in self.rows],
            thresholds=self.options.get("thresholds", []),
            unit=self.options.get("unit"),
            height=self.height,
        )

    async def load(self) -> None:
        """One query for every device's latest value."""
        self.rows = list(  # a copy: live points change this page's bars only
            await fetch_shared(
                data.bar,
                device_type=self.options["deviceType"],
                metric=self.options["metric"],
                sort=self.options.get("sort", "desc"),
                limit=self.options.get("limit", 20),
            )
        )
        self.bars.show(self._figure())

    def follow(self) -> None:
        """Live points change their device's bar (the order is kept until the next load)."""
        for position, row in enumerate(self.rows):

            def point(_moment: datetime, value: float, position: int = position) -> None:
                self.rows[position] = data.BarRow(
                    self.rows[position].device_id, self.rows[position].name, value, _moment
                )
                values = [row.value for row in self.rows]
                thresholds = self.options.get("thresholds", [])
                colours = [figures.fill_colour(v, thresholds) for v in values]
                self.bars.restyle({"y": values, "marker.color": colours})

            self.watch(row.device_id, self.options["metric"], point)


class DeviceTableView(View):
    """Devices with their status and latest values, a page at a time."""

    kind = "device_table"
    channels = frozenset({bus.DEVICE_STATUS, bus.DEVICE_EVENTS})

    def build(self) -> None:
        """The table's frame; rows come with the data."""
        self.offset = 0
        self.cells: dict[tuple[str, str], ui.label] = {}
        self.table = (
            ui.column()
            .classes("w-full gap-0 min-h-0 overflow-auto")
            .style(f"max-height: {self.height - 32}px")
        )
        with ui.row().classes("w-full items-center gap-2 px-1") as self.footer:
            self.count = ui.label("").classes("text-xs text-slate-500")
            ui.space()
            self.back = ui.button(icon="chevron_left", on_click=lambda: self.page(-1))
            self.back.props("flat dense round size=sm").mark("table-previous")
            self.next = ui.button(icon="chevron_right", on_click=lambda: self.page(1))
            self.next.props("flat dense round size=sm").mark("table-next")

    async def page(self, step: int) -> None:
        """Show the previous or next page."""
        self.offset = max(0, self.offset + step * self.options.get("pageSize", 20))
        await self.refresh()

    async def load(self) -> None:
        """One query for the page's devices and their values."""
        size = self.options.get("pageSize", 20)
        metrics = self.options.get("metrics", [])
        found = await fetch_shared(
            data.device_table,
            device_type=self.options.get("deviceType"),
            metrics=metrics,
            status=self.options.get("status"),
            offset=self.offset,
            limit=size,
        )
        self.cells.clear()
        self.table.clear()
        with self.table:
            if not found.rows:
                message = (
                    "No device is offline"
                    if self.options.get("status") == "OFFLINE"
                    else "No devices"
                )
                ui.label(message).classes("text-sm text-slate-500 p-3").mark("widget-message")
            else:
                self._table(found.rows, metrics)
        last = min(found.total, self.offset + size)
        self.count.text = f"{self.offset + 1 if found.total else 0}{EN_DASH}{last} of {found.total}"
        self.back.set_enabled(self.offset > 0)
        self.next.set_enabled(last < found.total)
        self.footer.set_visibility(found.total > size or self.offset > 0)

    def _table(self, rows: list[data.DeviceRow], metrics: list[str]) -> None:
        with ui.element("table").classes("iotdeck-table dashboard-table"):
            with ui.element("thead"), ui.element("tr"):
                for header in ["Device", "Status", *metrics, "Last seen"]:
                    with ui.element("th"):
                        ui.label(header)
            with ui.element("tbody"):
                for row in rows:
                    with ui.element("tr").mark("table-row"):
                        with ui.element("td"):
                            ui.link(row.name, f"/devices/{row.device_id}").classes(
                                "text-primary no-underline font-medium"
                            )
                        with ui.element("td"):
                            status_badge(row.status)
                        for metric in metrics:
                            with ui.element("td").classes("tabular-nums"):
                                value = row.values.get(metric)
                                label = ui.label(figures.format_value(value, None))
                                self.cells[(row.device_id, metric)] = label
                        with ui.element("td"):
                            time_label(row.last_seen).classes("text-slate-500")

    def follow(self) -> None:
        """Live values in the page's cells."""
        for (device_id, metric), label in self.cells.items():

            def point(_moment: datetime, value: float, label: ui.label = label) -> None:
                label.text = figures.format_value(value, None)

            self.watch(device_id, metric, point)


class AlertsView(View):
    """Open alerts, newest first; pushed alert changes reload it."""

    kind = "alerts"
    channels = frozenset({bus.ALERTS})

    def build(self) -> None:
        """The list's frame."""
        self.list = (
            ui.column().classes("w-full gap-0 overflow-auto").style(f"max-height: {self.height}px")
        )

    async def load(self) -> None:
        """One query."""
        found = await fetch_shared(
            data.alerts,
            severities=self.options.get("severities", []),
            device_id=self.options.get("device"),
            device_type=self.options.get("deviceType"),
            limit=self.options.get("limit", 10),
        )
        self.list.clear()
        with self.list:
            if not found:
                with ui.row().classes("w-full items-center gap-2 p-3"):
                    ui.icon("check_circle", size="sm").classes("text-green-600")
                    ui.label("No open alerts").classes("text-sm text-slate-600").mark(
                        "widget-message"
                    )
            for alert in found:
                row = ui.row().classes(
                    "w-full items-center gap-3 px-2 py-2 border-b border-slate-100 no-wrap"
                )
                with row.mark("alert-row"):
                    severity_chip(alert.severity)
                    with ui.column().classes("gap-0 min-w-0 grow overflow-hidden"):
                        ui.label(alert.rule_name).classes("text-sm font-medium truncate w-full")
                        with ui.row().classes(
                            "w-full gap-1 items-center no-wrap text-xs text-slate-500 min-w-0"
                        ):
                            ui.link(alert.device_name, f"/devices/{alert.device_id}").classes(
                                "text-slate-600 no-underline hover:underline truncate"
                            )
                            if alert.message:
                                ui.label("·")
                                ui.label(alert.message).classes("truncate")
                    time_label(alert.fired_at).classes(
                        "text-xs text-slate-500 whitespace-nowrap shrink-0"
                    )


class FleetView(View):
    """A whole-fleet figure: devices online, points per second, or open alerts."""

    kind = "fleet"
    channels = frozenset({bus.DEVICE_STATUS, bus.ALERTS})

    def build(self) -> None:
        """A row of large figures; throughput ticks every two seconds, with no query."""
        self.figures = ui.row().classes("w-full h-full items-center gap-6 px-2 no-wrap")
        if self.options.get("show") == "throughput":
            with self.figures:
                self.rate = self._figure(
                    "0", "points / s, last minute", "text-slate-900", "fleet-throughput"
                )
            ui.timer(2.0, self._rate)

    def _figure(self, value: str, label: str, tone: str, mark: str) -> ui.label:
        with ui.column().classes("gap-0"):
            number = ui.label(value).classes(f"text-3xl font-semibold tabular-nums {tone}")
            ui.label(label).classes("text-xs uppercase tracking-wide text-slate-500")
        return number.mark(mark)

    async def load(self) -> None:
        """Counts in a few queries (none for throughput: the stream is counted here)."""
        show = self.options.get("show", "devices")
        if show == "throughput":
            self._rate()
            return
        fleet = await fetch_shared(data.fleet)
        self.figures.clear()
        with self.figures:
            if show == "devices":
                self._figure(str(fleet.online), "online", "text-green-700", "fleet-online")
                self._figure(str(fleet.offline), "offline", "text-slate-500", "fleet-offline")
                self._figure(str(fleet.total), "devices", "text-slate-900", "fleet-total")
            else:
                for severity, tone in (
                    ("CRITICAL", "text-red-700"),
                    ("WARNING", "text-amber-700"),
                    ("INFO", "text-sky-700"),
                ):
                    count = fleet.open_by_severity.get(severity, 0)
                    self._figure(
                        str(count),
                        severity.lower(),
                        tone if count else "text-slate-400",
                        f"fleet-alerts-{severity.lower()}",
                    )

    def _rate(self) -> None:
        if self.scope.live is not None:
            self.rate.text = f"{self.scope.live.points_per_second():,.1f}"

    def on_message(self, channel: str, message: bus.Message) -> None:
        """Throughput needs no reload."""
        if self.options.get("show") != "throughput":
            super().on_message(channel, message)


class MarkdownView(View):
    """Markdown with raw HTML escaped, never rendered."""

    kind = "markdown"

    def build(self) -> None:
        """The text, rendered once."""
        html = markdown2.markdown(
            self.raw_options.get("content", ""),
            safe_mode="escape",
            extras=["tables", "fenced-code-blocks"],
        )
        with (
            ui.element("div")
            .classes("w-full overflow-auto dashboard-markdown")
            .style(f"max-height: {self.height}px")
        ):
            ui.html(html, sanitize=True).classes("prose prose-sm max-w-none").mark(
                "widget-markdown"
            )


class CommandView(View):
    """A button, switch or slider sending a command after a confirmation (OPERATOR+)."""

    kind = "command"
    channels = frozenset({bus.COMMANDS})

    def build(self) -> None:
        """The control and the last command's status."""
        self.command_id: str | None = None
        options = self.options
        label = options.get("label") or options["action"]
        control = options.get("control", "button")
        with ui.column().classes("w-full h-full justify-center gap-2 px-1"):
            with ui.row().classes("w-full items-center gap-3 no-wrap"):
                if control == "button":
                    self.control = ui.button(label, icon="send", on_click=lambda: self.send(None))
                    self.control.props("unelevated no-caps")
                elif control == "switch":
                    self.control = ui.switch(label, on_change=lambda e: self.send(e.value))
                    self._switch_value = False
                else:
                    with ui.column().classes("grow gap-1 min-w-0"):
                        with ui.row().classes("w-full items-baseline no-wrap"):
                            ui.label(label).classes("text-sm text-slate-700 grow truncate")
                            shown = ui.label().classes("text-sm font-semibold tabular-nums")
                        self.control = ui.slider(
                            min=options["min"],
                            max=options["max"],
                            step=options.get("step"),
                            value=options["min"],
                        ).props("label")
                        shown.bind_text_from(self.control, "value", backward=lambda v: f"{v:g}")
                        self.control.on("change", lambda e: self.send(e.args))
                self.control.mark("widget-command")
                ui.space()
                with ui.row().classes("items-center") as self.status:
                    pass
            if not self.scope.can_act:
                self.control.disable()
                ui.label("Commands need the OPERATOR role").classes("text-xs text-slate-500").mark(
                    "command-read-only"
                )

    async def send(self, value: Any) -> None:
        """Ask, then send; the status chip follows the command."""
        if not self.scope.can_act:
            return
        options = self.options
        params = dict(options.get("params", {}))
        if options.get("control", "button") != "button" and options.get("param"):
            params[options["param"]] = value
        question = options.get("confirm") or f"Send {options['action']} to this device?"
        if not await confirm("Send command", question, action="Send", danger=False):
            return
        data_in = CommandInput(device_id=options["device"], action=options["action"], params=params)
        try:
            command = await fetch(
                commands.send_command, data=data_in, created_by=self.scope.user.id
            )
        except DomainError as error:
            ui.notify(str(error), type="negative")
            return
        self.command_id = str(command.id)
        self._status(str(command.status))

    def _status(self, status: str) -> None:
        self.status.clear()
        with self.status:
            command_status_chip(status)

    def on_message(self, channel: str, message: bus.Message) -> None:
        """Follow the status of the command this widget sent."""
        command = message.get("command", {})
        if channel == bus.COMMANDS and command.get("id") == self.command_id:
            self._status(command.get("status", ""))


VIEWS: dict[str, type[View]] = {
    view.kind: view
    for view in (
        TimeseriesView,
        StatView,
        GaugeView,
        BarView,
        DeviceTableView,
        AlertsView,
        FleetView,
        MarkdownView,
        CommandView,
    )
}
