"""The editor's parts: the widget type picker, the configuration drawer, the JSON view.

The drawer edits a draft of one widget with pickers (devices, types and the metrics those
devices report) and hands each change to the page, which checks the whole spec and, when
it is valid, shows it at once in the grid (the live preview). A refusal is shown under the
drawer with the JSON path the spec checks name (`widgets[2].options.metric`).
"""

import copy
import json
from collections.abc import Awaitable, Callable
from typing import Any

from nicegui import ui

from app.dashboards import data
from app.dashboards.spec import NAMED_COLORS, SEVERITIES
from components.dashboard.views import fetch

Draft = dict[str, Any]
OnChange = Callable[[Draft], None]

# the type picker: what each widget is for, in the operator's words
KINDS: dict[str, tuple[str, str, str]] = {
    "timeseries": ("Time series", "show_chart", "Lines of metrics or expressions over time"),
    "stat": ("Stat", "looks_one", "The latest value, large, with a sparkline"),
    "gauge": ("Gauge", "speed", "The latest value on a dial"),
    "bar": ("Bar chart", "bar_chart", "One metric across the devices of a type"),
    "device_table": ("Device table", "table_rows", "Devices, their status and latest values"),
    "alerts": ("Alerts", "notifications_active", "Open alerts, filtered"),
    "command": ("Command", "smart_button", "A button, switch or slider sending a command"),
    "markdown": ("Text", "notes", "Notes and links in Markdown"),
    "fleet": ("Fleet figure", "hub", "Devices online, throughput or open alerts"),
}
PRESETS = {
    "now-15m": "Last 15 minutes",
    "now-1h": "Last hour",
    "now-6h": "Last 6 hours",
    "now-24h": "Last 24 hours",
    "now-7d": "Last 7 days",
    "now-30d": "Last 30 days",
}
SIZES = {"timeseries": (6, 4), "bar": (6, 4), "device_table": (6, 5), "alerts": (6, 4)}
DEFAULT_SIZE = (3, 2)
_FIELD = "outlined dense stack-label"


def default_options(
    kind: str, device: str | None, metric: str | None, device_type: str | None
) -> dict:
    """Options that make a new widget of `kind` valid at once, from the first device seen."""
    source = {"device": device, "metric": metric or "value"}
    return {
        "timeseries": {"series": [source]},
        "stat": source,
        "gauge": source,
        "bar": {"deviceType": device_type, "metric": metric or "value"},
        "device_table": {},
        "alerts": {},
        "command": {"device": device, "action": "reboot"},
        "markdown": {"content": "## Notes\n\nWrite **Markdown** here."},
        "fleet": {"show": "devices"},
    }[kind]


async def pick_kind() -> str | None:
    """Ask which type of widget to add."""
    with ui.dialog() as dialog, ui.card().classes("w-[40rem] max-w-full p-5 gap-3"):
        ui.label("Add a widget").classes("text-lg font-semibold")
        with ui.element("div").classes("grid grid-cols-3 gap-2 w-full"):
            for kind, (name, icon, blurb) in KINDS.items():
                choice = ui.button(on_click=lambda _, kind=kind: dialog.submit(kind)).props(
                    "flat no-caps align=left"
                )
                choice.classes("border border-slate-200 rounded-lg p-2 h-full").props(
                    f"data-kind={kind}"
                )
                with choice, ui.column().classes("gap-0.5 items-start text-left"):
                    ui.icon(icon, size="sm").classes("text-primary")
                    ui.label(name).classes("text-sm font-semibold text-slate-800")
                    ui.label(blurb).classes("text-xs text-slate-500 leading-snug")
        with ui.row().classes("w-full justify-end"):
            ui.button("Cancel", on_click=dialog.close).props("flat no-caps")
    try:
        return await dialog
    finally:
        dialog.delete()


def _number(text: Any) -> float | int | None:
    if text in (None, ""):
        return None
    number = float(text)
    return int(number) if number.is_integer() else number


class Choices:
    """What the pickers offer: devices, types and the metrics they report."""

    def __init__(self, variables: list[str]) -> None:
        """Empty until `load`; `variables` are the dashboard's (`device`, `type`)."""
        self.variables = variables
        self.devices: dict[str, str] = {}
        self.types: list[str] = []

    async def load(self) -> None:
        """Devices and types, off the loop."""
        self.devices = dict(await fetch(data.device_choices, device_type=None))
        self.types = await fetch(data.type_choices)

    def device_options(self) -> dict[str, str]:
        """Device id -> name, `$device` first when the dashboard has it."""
        variable = (
            {"$device": "$device (the dashboard's device)"} if "device" in self.variables else {}
        )
        return variable | self.devices

    def type_options(self) -> dict[str, str]:
        """Type -> label, `$type` first when the dashboard has it."""
        variable = {"$type": "$type (the dashboard's type)"} if "type" in self.variables else {}
        return variable | {name: name for name in self.types}

    async def metrics(self, device: str | None = None, device_type: str | None = None) -> list[str]:
        """Metrics the device (or the devices of the type) reported."""
        if (device and device.startswith("$")) or (device_type and device_type.startswith("$")):
            device, device_type = None, None  # a variable: any metric the fleet reports
        return await fetch(data.metric_choices, device_id=device, device_type=device_type)


class WidgetDrawer:
    """A panel on the right that configures one widget; the grid stays visible."""

    def __init__(self, choices: Choices, on_change: OnChange, on_close: Callable[[], None]) -> None:
        """Build the (closed) panel."""
        self.choices = choices
        self.on_change = on_change
        self.on_close = on_close
        self.draft: Draft = {}
        self.dialog = ui.dialog().props("position=right seamless")
        with self.dialog, ui.card().classes("w-[26rem] max-w-full h-screen p-0 gap-0 rounded-none"):
            with ui.row().classes(
                "w-full items-center px-4 h-14 border-b border-slate-200 no-wrap"
            ):
                self.heading = ui.label("Widget").classes("text-base font-semibold grow")
                ui.button(icon="close", on_click=self.close).props("flat round dense").mark(
                    "drawer-close"
                )
            self.form = ui.column().classes("w-full grow overflow-auto p-4 gap-3")
            with ui.row().classes("w-full px-4 py-2 border-t border-slate-200 min-h-[2.5rem]"):
                self.error = ui.label("").classes("text-sm text-red-700").mark("drawer-error")
        self.dialog.mark("widget-drawer")

    async def open(self, widget: Draft) -> None:
        """Show the form for `widget` (a copy is edited)."""
        self.draft = copy.deepcopy(widget)
        self.heading.text = f"{KINDS[widget['type']][0]} widget"
        self.error.text = ""
        await self.rebuild()
        self.dialog.open()

    def close(self) -> None:
        """Hide the panel."""
        self.dialog.close()
        self.on_close()

    def show_error(self, message: str | None) -> None:
        """The spec check's refusal of the draft, or nothing."""
        self.error.text = message or ""

    @property
    def options(self) -> dict[str, Any]:
        """The draft's options."""
        return self.draft.setdefault("options", {})

    def set(self, key: str, value: Any, *, target: dict[str, Any] | None = None) -> None:
        """Set (or, for None and "", drop) one option and preview the change."""
        place = self.options if target is None else target
        if value is None or value in ("", []):
            place.pop(key, None)
        else:
            place[key] = value
        self.on_change(copy.deepcopy(self.draft))

    async def rebuild(self) -> None:
        """Lay the form out again (after adding or removing a series or a threshold)."""
        self.form.clear()
        with self.form:
            title = ui.input("Title", value=self.draft.get("title", "")).props(_FIELD)
            title.classes("w-full").mark("field-title")
            title.on_value_change(lambda e: self._title(e.value))
            await FORMS[self.draft["type"]](self)

    def _title(self, value: str) -> None:
        self.draft["title"] = value
        self.on_change(copy.deepcopy(self.draft))

    # -- field builders ----------------------------------------------------------------------
    def text(self, label: str, key: str, *, target: dict | None = None, mark: str = "") -> ui.input:
        """A text field bound to an option."""
        place = self.options if target is None else target
        field = ui.input(label, value=str(place.get(key, ""))).props(_FIELD).classes("w-full")
        field.on_value_change(lambda e: self.set(key, e.value.strip(), target=target))
        return field.mark(mark or f"field-{key}")

    def number(self, label: str, key: str, *, whole: bool = False) -> ui.number:
        """A number field bound to an option (empty: the option is left out)."""
        field = ui.number(label, value=self.options.get(key), precision=0 if whole else None)
        field.props(_FIELD).classes("w-full").mark(f"field-{key}")
        field.on_value_change(lambda e: self.set(key, _number(e.value)))
        return field

    def choice(
        self,
        label: str,
        key: str,
        options: dict[str, str] | list[str],
        *,
        target: dict | None = None,
        multiple: bool = False,
        clearable: bool = False,
        on_pick: Callable[[Any], Awaitable[None] | None] | None = None,
    ) -> ui.select:
        """A dropdown bound to an option."""
        place = self.options if target is None else target
        value = place.get(key, [] if multiple else None)
        known = options if isinstance(options, dict) else {o: o for o in options}
        if not multiple and value is not None and value not in known:
            known = {value: value} | known  # keep what the spec says, even when unknown here
        select = ui.select(
            known,
            label=label,
            value=value,
            multiple=multiple,
            with_input=not multiple,
            clearable=clearable,
        )
        select.props(_FIELD + (" use-chips" if multiple else "")).classes("w-full")

        async def picked(event: Any) -> None:
            self.set(key, event.value, target=target)
            if on_pick is not None:
                result = on_pick(event.value)
                if result is not None:
                    await result

        select.on_value_change(picked)
        return select.mark(f"field-{key}")

    async def source(self, target: dict[str, Any], *, index: int | None = None) -> None:
        """Device, then a metric picked from what it reports or an expression."""
        suffix = "" if index is None else f"-{index}"
        metric_field: ui.select | None = None

        async def device_picked(device: str | None) -> None:
            if metric_field is not None:
                metric_field.set_options(await self.choices.metrics(device=device))

        self.choice(
            "Device", "device", self.choices.device_options(), target=target, on_pick=device_picked
        ).mark(f"field-device{suffix}")
        mode = "expression" if target.get("expression") else "metric"
        toggle = ui.toggle({"metric": "Metric", "expression": "Expression"}, value=mode)
        toggle.props("no-caps dense unelevated toggle-color=primary").mark(f"field-mode{suffix}")
        holder = ui.column().classes("w-full gap-1")

        async def show(which: str) -> None:
            nonlocal metric_field
            holder.clear()
            with holder:
                if which == "metric":
                    metrics = await self.choices.metrics(device=target.get("device"))
                    metric_field = self.choice("Metric", "metric", metrics, target=target)
                    metric_field.mark(f"field-metric{suffix}")
                else:
                    metric_field = None
                    expression = self.text(
                        "Expression", "expression", target=target, mark=f"field-expression{suffix}"
                    )
                    expression.props(
                        "hint='The rule language, e.g. avg(temperature, 5m) - setpoint'"
                    )

        async def switch(event: Any) -> None:
            # one of metric and expression: switching drops the other
            target.pop("expression" if event.value == "metric" else "metric", None)
            await show(event.value)

        toggle.on_value_change(switch)
        await show(mode)

    def time_override(self) -> None:
        """This widget's own range, or the dashboard's."""
        own = self.options.get("time")
        value = own["from"] if own and own.get("to") == "now" else ""
        choices = {"": "The dashboard's range"} | PRESETS
        if own and value not in choices:
            choices[value] = f"{own['from']} to {own['to']}"  # set in the JSON: kept as is
        select = ui.select(choices, label="Time range", value=value).props(_FIELD)
        select.classes("w-full").mark("field-time")
        select.on_value_change(
            lambda e: self.set("time", {"from": e.value, "to": "now"} if e.value else None)
        )

    def thresholds(self) -> None:
        """Rows of value and colour; the colour applies from the value up."""
        rows = self.options.setdefault("thresholds", [])
        ui.label("Thresholds").classes("text-xs font-medium text-slate-500 uppercase mt-1")
        for position, threshold in enumerate(rows):
            with ui.row().classes("w-full items-center gap-2 no-wrap"):
                value = ui.number("From", value=threshold["value"]).props(_FIELD).classes("grow")
                value.on_value_change(
                    lambda e, t=threshold: self._threshold(t, "value", _number(e.value))
                )
                value.mark(f"threshold-value-{position}")
                tone = ui.select(list(NAMED_COLORS), value=threshold["color"]).props(_FIELD)
                tone.classes("w-28").on_value_change(
                    lambda e, t=threshold: self._threshold(t, "color", e.value)
                )
                ui.button(
                    icon="delete", on_click=lambda _, p=position: self._drop_threshold(p)
                ).props("flat round dense color=grey-7")
        ui.button("Add threshold", icon="add", on_click=self._add_threshold).props(
            "flat dense no-caps"
        ).mark("add-threshold")

    def _threshold(self, threshold: dict[str, Any], key: str, value: Any) -> None:
        threshold[key] = value
        self.on_change(copy.deepcopy(self.draft))

    async def _add_threshold(self) -> None:
        rows = self.options.setdefault("thresholds", [])
        top = max((t["value"] for t in rows if isinstance(t.get("value"), int | float)), default=0)
        rows.append({"value": top + 10 if rows else 80, "color": "red" if rows else "orange"})
        self.on_change(copy.deepcopy(self.draft))
        await self.rebuild()

    async def _drop_threshold(self, position: int) -> None:
        del self.options["thresholds"][position]
        self.on_change(copy.deepcopy(self.draft))
        await self.rebuild()


# -- one form per widget type ------------------------------------------------------------------
async def _timeseries(drawer: WidgetDrawer) -> None:
    series = drawer.options.setdefault("series", [])
    for index, line in enumerate(series):
        with ui.column().classes("w-full gap-2 p-3 border border-slate-200 rounded-lg"):
            with ui.row().classes("w-full items-center no-wrap"):
                ui.label(f"Series {index + 1}").classes("text-sm font-semibold grow")
                if len(series) > 1:
                    ui.button(
                        icon="delete", on_click=lambda _, i=index: _drop_series(drawer, i)
                    ).props("flat round dense color=grey-7").mark(f"drop-series-{index}")
            await drawer.source(line, index=index)
            drawer.text("Label", "label", target=line, mark=f"field-label-{index}")
    ui.button("Add series", icon="add", on_click=lambda: _add_series(drawer)).props(
        "flat dense no-caps"
    ).mark("add-series")
    drawer.text("Unit", "unit")
    with ui.row().classes("w-full gap-2 no-wrap"):
        drawer.number("Y min", "min")
        drawer.number("Y max", "max")
    drawer.time_override()
    drawer.thresholds()


async def _add_series(drawer: WidgetDrawer) -> None:
    series = drawer.options["series"]
    series.append(
        {key: series[-1][key] for key in ("device", "metric", "expression") if key in series[-1]}
    )
    drawer.on_change(copy.deepcopy(drawer.draft))
    await drawer.rebuild()


async def _drop_series(drawer: WidgetDrawer, index: int) -> None:
    del drawer.options["series"][index]
    drawer.on_change(copy.deepcopy(drawer.draft))
    await drawer.rebuild()


async def _stat(drawer: WidgetDrawer) -> None:
    await drawer.source(drawer.options)
    with ui.row().classes("w-full gap-2 no-wrap"):
        drawer.text("Unit", "unit")
        drawer.number("Decimals", "decimals", whole=True)
    spark = ui.switch("Sparkline", value=drawer.options.get("sparkline", True))
    spark.on_value_change(lambda e: drawer.set("sparkline", e.value)).mark("field-sparkline")
    drawer.time_override()
    drawer.thresholds()


async def _gauge(drawer: WidgetDrawer) -> None:
    await drawer.source(drawer.options)
    with ui.row().classes("w-full gap-2 no-wrap"):
        drawer.number("Min", "min")
        drawer.number("Max", "max")
    with ui.row().classes("w-full gap-2 no-wrap"):
        drawer.text("Unit", "unit")
        drawer.number("Decimals", "decimals", whole=True)
    drawer.thresholds()


async def _bar(drawer: WidgetDrawer) -> None:
    metric_field: ui.select | None = None

    async def type_picked(device_type: str | None) -> None:
        if metric_field is not None:
            metric_field.set_options(await drawer.choices.metrics(device_type=device_type))

    drawer.choice("Device type", "deviceType", drawer.choices.type_options(), on_pick=type_picked)
    metrics = await drawer.choices.metrics(device_type=drawer.options.get("deviceType"))
    metric_field = drawer.choice("Metric", "metric", metrics)
    drawer.choice(
        "Order", "sort", {"desc": "Highest first", "asc": "Lowest first", "name": "By name"}
    )
    with ui.row().classes("w-full gap-2 no-wrap"):
        drawer.text("Unit", "unit")
        drawer.number("Bars", "limit", whole=True)
    drawer.thresholds()


async def _device_table(drawer: WidgetDrawer) -> None:
    drawer.choice("Device type", "deviceType", drawer.choices.type_options(), clearable=True)
    metrics = await drawer.choices.metrics(device_type=drawer.options.get("deviceType"))
    drawer.choice("Metric columns", "metrics", metrics, multiple=True)
    drawer.choice(
        "Status", "status", {"ONLINE": "Online only", "OFFLINE": "Offline only"}, clearable=True
    )
    drawer.number("Rows per page", "pageSize", whole=True)


async def _alerts(drawer: WidgetDrawer) -> None:
    drawer.choice("Severities", "severities", list(SEVERITIES), multiple=True)
    drawer.choice("Device", "device", drawer.choices.device_options(), clearable=True)
    drawer.choice("Device type", "deviceType", drawer.choices.type_options(), clearable=True)
    drawer.number("Alerts shown", "limit", whole=True)


async def _command(drawer: WidgetDrawer) -> None:
    drawer.choice("Device", "device", drawer.choices.device_options())
    drawer.text("Action", "action")
    drawer.choice(
        "Control", "control", {"button": "Button", "switch": "Switch", "slider": "Slider"}
    )
    drawer.text("Label", "label")
    params = ui.input("Parameters (JSON)", value=json.dumps(drawer.options.get("params", {})))
    params.props(_FIELD).classes("w-full font-mono").mark("field-params")

    def params_changed(text: str) -> None:
        try:
            drawer.set("params", json.loads(text or "{}"))
        except json.JSONDecodeError as exc:
            drawer.show_error(f"options.params: not JSON ({exc.msg}, column {exc.colno})")

    params.on_value_change(lambda e: params_changed(e.value))
    drawer.text("Parameter the switch or slider sets", "param")
    with ui.row().classes("w-full gap-2 no-wrap"):
        drawer.number("Min", "min")
        drawer.number("Max", "max")
        drawer.number("Step", "step")
    drawer.text("Confirmation question", "confirm")


async def _markdown(drawer: WidgetDrawer) -> None:
    content = ui.textarea("Markdown", value=drawer.options.get("content", "")).props(_FIELD)
    content.classes("w-full font-mono").props("rows=12").mark("field-content")
    content.on_value_change(lambda e: drawer.set("content", e.value))


async def _fleet(drawer: WidgetDrawer) -> None:
    drawer.choice(
        "Show",
        "show",
        {
            "devices": "Devices online and offline",
            "throughput": "Points per second",
            "alerts": "Open alerts by severity",
        },
    )


FORMS: dict[str, Callable[[WidgetDrawer], Awaitable[None]]] = {
    "timeseries": _timeseries,
    "stat": _stat,
    "gauge": _gauge,
    "bar": _bar,
    "device_table": _device_table,
    "alerts": _alerts,
    "command": _command,
    "markdown": _markdown,
    "fleet": _fleet,
}


class JsonView:
    """The whole spec as JSON text for power users; errors shown inline, nothing applied."""

    def __init__(self, apply: Callable[[Any], str | None]) -> None:
        """`apply(parsed)` returns the spec check's refusal, or None once applied."""
        self.apply = apply
        with (
            ui.dialog().props("maximized=false") as self.dialog,
            ui.card().classes("w-[56rem] max-w-full p-5 gap-3"),
        ):
            ui.label("Edit JSON").classes("text-lg font-semibold")
            ui.label(
                "The whole dashboard as its export. Apply checks it; the grid shows it once valid."
            ).classes("text-sm text-slate-500")
            self.editor = ui.codemirror("", language="JSON").classes(
                "w-full h-[60vh] border rounded"
            )
            self.editor.mark("json-editor")
            self.error = ui.label("").classes("text-sm text-red-700 font-mono").mark("json-error")
            with ui.row().classes("w-full justify-end gap-2"):
                ui.button("Cancel", on_click=self.dialog.close).props("flat no-caps")
                ui.button("Apply", on_click=self._apply).props("unelevated no-caps").mark(
                    "json-apply"
                )

    def open(self, spec: dict[str, Any]) -> None:
        """Show `spec`, indented."""
        self.editor.value = json.dumps(spec, indent=2, ensure_ascii=False)
        self.error.text = ""
        self.dialog.open()

    def _apply(self) -> None:
        try:
            parsed = json.loads(self.editor.value)
        except json.JSONDecodeError as exc:
            self.error.text = f"Not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
            return
        refusal = self.apply(parsed)
        if refusal is None:
            self.dialog.close()
        else:
            self.error.text = refusal
