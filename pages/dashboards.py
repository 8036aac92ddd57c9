"""Dashboards: `/dashboards` lists them, `/dashboards/{id}` shows one live and edits it in
place, and `/` is the signed-in user's home dashboard (the built-in "Fleet overview" until
they choose another).

Everything the page reads or writes goes through `app.services.dashboards` and
`app.dashboards.data` in worker threads: the event loop never waits on the database.
"""

import asyncio
import copy
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import Request
from nicegui import ui

from app.core import bus
from app.core.auth import has_role
from app.core.errors import DomainError, ValidationError
from app.core.models import DashboardVisibility, Role, User
from app.dashboards import data, layout
from app.dashboards.live import get_live_values
from app.dashboards.spec import (
    DEVICE_VARIABLE,
    REFRESH_INTERVALS,
    TimeRange,
    parse_spec,
    spec_to_json,
)
from app.services import dashboards, users
from app.services.dashboards import DashboardChange
from components.confirm_dialog import confirm
from components.dashboard.editor import (
    DEFAULT_SIZE,
    KINDS,
    PRESETS,
    SIZES,
    Choices,
    JsonView,
    WidgetDrawer,
    default_options,
    pick_kind,
)
from components.dashboard.grid import DashboardGrid
from components.dashboard.views import VIEWS, Scope, View, fetch
from components.deferred import Deferred
from components.empty_state import empty_state
from components.frame import frame, page_heading
from components.live import LiveFeed
from pages.auth import current_user

CUSTOM = "custom"
TIMED = frozenset({"timeseries", "stat"})  # the widgets that show a range
PAGE_CHANNELS = frozenset({bus.DEVICE_STATUS, bus.DEVICE_EVENTS, bus.ALERTS, bus.COMMANDS})
_REFRESH_SECONDS = {"5s": 5, "10s": 10, "30s": 30, "1m": 60, "5m": 300, "15m": 900, "1h": 3600}
_PREVIEW_SECONDS = 0.3  # typing in the drawer redraws the widget once the typing pauses


@dataclass(frozen=True)
class Opened:
    """What the page needs of one dashboard, read in one go off the loop."""

    id: str
    name: str
    description: str
    visibility: str
    provisioned_from: str | None
    can_edit: bool
    spec: dict[str, Any]
    owner: str | None
    is_home: bool


def _opened(session: Any, user: User, dashboard: Any) -> Opened:
    owner = dashboard.owner_id and session.get(User, dashboard.owner_id)
    home = dashboards.home_dashboard(session=session, user=user)
    return Opened(
        id=str(dashboard.id),
        name=dashboard.name,
        description=dashboard.description or "",
        visibility=str(dashboard.visibility),
        provisioned_from=dashboard.provisioned_from,
        can_edit=dashboards.can_edit(user, dashboard),
        spec=dashboards.export_spec(dashboard),
        owner=owner.email if owner else None,
        is_home=home.id == dashboard.id,
    )


def _open(*, session: Any, user: User, dashboard_id: str) -> Opened | None:
    try:
        found = dashboards.get_dashboard(session=session, user=user, dashboard_id=dashboard_id)
    except (DomainError, ValueError):
        return None  # unknown, not visible, or not an id: all "not found"
    return _opened(session, user, found)


def _home(*, session: Any, user: User) -> Opened:
    return _opened(session, user, dashboards.home_dashboard(session=session, user=user))


def _save(*, session: Any, user: User, dashboard_id: str, spec: dict[str, Any]) -> None:
    change = DashboardChange(spec=spec)
    dashboards.update_dashboard(session=session, user=user, dashboard_id=dashboard_id, data=change)


def _copy(*, session: Any, user: User, dashboard_id: str) -> str:
    return str(dashboards.copy_dashboard(session=session, user=user, dashboard_id=dashboard_id).id)


def _set_home(*, session: Any, user: User, dashboard_id: str | None) -> None:
    dashboards.set_home(session=session, user=user, dashboard_id=dashboard_id)


def _share(*, session: Any, user: User, dashboard_id: str, shared: bool) -> None:
    visibility = DashboardVisibility.SHARED if shared else DashboardVisibility.PRIVATE
    change = DashboardChange(visibility=visibility)
    dashboards.update_dashboard(session=session, user=user, dashboard_id=dashboard_id, data=change)


def _delete(*, session: Any, user: User, dashboard_id: str) -> None:
    dashboards.delete_dashboard(session=session, user=user, dashboard_id=dashboard_id)


def _create(*, session: Any, user: User, name: str) -> str:
    change = DashboardChange(name=name)
    return str(dashboards.create_dashboard(session=session, user=user, data=change).id)


def _first_source(*, session: Any) -> tuple[str | None, str | None, str | None]:
    """A device, a metric it reports and its type: what a new widget starts with."""
    devices = data.device_choices(session=session, device_type=None, limit=1)
    if not devices:
        return None, None, None
    device_id = devices[0][0]
    metrics = data.metric_choices(session=session, device_id=device_id, device_type=None)
    types = data.type_choices(session=session)
    return device_id, (metrics[0] if metrics else None), (types[0] if types else None)


@dataclass(frozen=True)
class Listed:
    """A row of the dashboard list."""

    id: str
    name: str
    description: str
    visibility: str
    provisioned: bool
    built_in: bool
    widgets: int
    owner: str | None
    is_home: bool
    for_type: bool


def _serves_type(spec: dict[str, Any], device_type: str) -> bool:
    """Whether a dashboard is made for devices of `device_type` (variables or widgets)."""
    variables = spec.get("variables", [])
    if any(
        v.get("deviceType") == device_type or v.get("default") == device_type for v in variables
    ):
        return True
    if any(v["name"] == "type" for v in variables):
        return True
    return any(w.get("options", {}).get("deviceType") == device_type for w in spec["widgets"])


def _listing(*, session: Any, user: User, device_type: str | None) -> list[Listed]:
    home = dashboards.home_dashboard(session=session, user=user)
    rows = []
    listed = dashboards.list_dashboards(session=session, user=user)
    owner_ids = {d.owner_id for d in listed if d.owner_id is not None}
    owners = {u.id: u.email for u in users.users_by_id(session=session, ids=owner_ids)}
    for dashboard in listed:
        for_type = device_type is not None and _serves_type(dashboard.spec, device_type)
        if device_type is not None and not for_type:
            continue
        rows.append(
            Listed(
                id=str(dashboard.id),
                name=dashboard.name,
                description=dashboard.description or "",
                visibility=str(dashboard.visibility),
                provisioned=dashboard.provisioned,
                built_in=(dashboard.provisioned_from or "").startswith(dashboards.BUILT_IN),
                widgets=len(dashboard.spec.get("widgets", [])),
                owner=owners.get(dashboard.owner_id),
                is_home=dashboard.id == home.id,
                for_type=for_type,
            )
        )
    return rows


def alert_rule_text(
    widget: dict[str, Any], device: str | None, device_type: str | None
) -> str | None:
    """The rule "Create alert from this widget" opens: its value above its top threshold.

    A widget of `$device` watches the devices of the variable's `device_type` when it has
    one, else the `device` picked in the header.
    """
    options = widget.get("options", {})
    source = options["series"][0] if widget["type"] == "timeseries" else options
    value = source.get("expression") or source.get("metric")
    watched = source.get("device")
    if watched == DEVICE_VARIABLE:
        watched = None if device_type else device
    if value is None or (watched is None and not device_type):
        return None
    thresholds = sorted(options.get("thresholds", []), key=lambda t: t["value"])
    limit = thresholds[-1]["value"] if thresholds else 0
    name = widget.get("title") or value
    scope = f'on device "{watched}"' if watched else f'on type "{device_type}"'
    lines = [f"rule {orjson.dumps(name + ' too high').decode()}", f"  {scope}"]
    lines += [f"  when {value} > {limit:g}", "  severity warning"]
    return "\n".join(lines) + "\n"


class DashboardPage:
    """One dashboard, live, with its editor."""

    def __init__(self, opened: Opened, user: User, query: dict[str, str], *, home: bool) -> None:
        """Keep what the page starts from; `build` lays it out."""
        self.opened = opened
        self.user = user
        self.home = home
        self.saved = copy.deepcopy(opened.spec)
        self.spec = copy.deepcopy(opened.spec)
        self.history: list[dict[str, Any]] = []
        self.editing = False
        self.views: dict[str, View] = {}
        self.query = query
        self.variables: dict[str, str | None] = {}
        self.time = dict(self.spec["time"])
        self.refresh = self.spec["refresh"]
        self.live = get_live_values()
        self.feed = LiveFeed(self._message, channels=PAGE_CHANNELS)
        self.choices = Choices([v["name"] for v in self.spec.get("variables", [])])
        self._drafting: str | None = None  # the widget the drawer edits
        self._drafted_once = False  # the drawer's session has its undo step
        self._preview = Deferred(self._redraw_drafted, _PREVIEW_SECONDS, restart=True)
        self._device_type: str | None = None

    # -- layout ------------------------------------------------------------------------------
    async def build(self) -> None:
        """The header, the toolbars and the grid; widgets fill in once the browser is there."""
        with frame(self.opened.name, user=self.user, live=self.feed):
            self._heading()
            self._banner()
            with ui.row().classes("w-full items-center gap-3 no-wrap") as self.controls:
                self.variable_row = ui.row().classes("items-center gap-3 no-wrap")
                ui.space()
                self._time_controls()
            self._show_controls()
            self._edit_bar()
            self.grid = DashboardGrid(self._moved)
            self.empty = ui.column().classes("w-full")
        self.drawer = WidgetDrawer(self.choices, self._drafted, self._drawer_closed)
        self.json_view = JsonView(self._apply_json)
        self.timer = ui.timer(self._refresh_seconds(), self._reload_all, active=False)
        self._set_refresh(self.refresh)
        await ui.context.client.connected()
        await self._variables()
        await self.render()
        if self.query.get("edit") and self.opened.can_edit:
            self.start_editing()

    def _heading(self) -> None:
        opened = self.opened
        subtitle = opened.description or None
        with page_heading(opened.name, subtitle).mark("dashboard-heading"):
            self.view_actions = ui.row().classes("items-center gap-2 no-wrap")
            with self.view_actions:
                if self.home:
                    ui.button(
                        "All dashboards",
                        icon="dashboard",
                        on_click=lambda: ui.navigate.to("/dashboards"),
                    ).props("flat no-caps")
                self._home_button()
                if opened.can_edit:
                    self._share_toggle()
                with ui.button(icon="more_vert").props("flat round dense").mark("dashboard-menu"):
                    with ui.menu():
                        ui.menu_item("Export JSON", on_click=self._export).mark("export-json")
                        if has_role(self.user, Role.OPERATOR):
                            ui.menu_item("Save as copy", on_click=self._save_copy).mark("save-copy")
                        if opened.can_edit:
                            ui.menu_item("Delete dashboard", on_click=self._delete).mark(
                                "delete-dashboard"
                            )
                if opened.can_edit:
                    ui.button("Edit", icon="edit", on_click=self.start_editing).props(
                        "unelevated no-caps"
                    ).mark("edit-dashboard")

    def _home_button(self) -> None:
        if self.opened.is_home:
            ui.chip("Home", icon="home", color="blue-1", text_color="primary").props(
                "dense square"
            ).mark("is-home")
            return
        ui.button("Make my home", icon="home", on_click=self._make_home).props("flat no-caps").mark(
            "make-home"
        )

    def _share_toggle(self) -> None:
        shared = self.opened.visibility == DashboardVisibility.SHARED
        toggle = ui.switch("Shared", value=shared).props("dense").classes("text-sm")
        toggle.on_value_change(lambda e: self._share(e.value))
        toggle.mark("share-switch").tooltip("Shared dashboards are seen by everyone signed in")

    def _banner(self) -> None:
        source = self.opened.provisioned_from
        if source is None:
            return
        built_in = source.startswith(dashboards.BUILT_IN)
        text = (
            "Built in and read-only. Save a copy to make one of your own."
            if built_in
            else f"Provisioned from {source}: change the file, or save a copy to edit here."
        )
        with (
            ui.row()
            .classes(
                "w-full items-center gap-2 px-4 py-2 rounded-md bg-slate-100 text-slate-600 text-sm"
            )
            .mark("read-only-banner")
        ):
            ui.icon("lock", size="xs")
            ui.label(text)

    def _time_controls(self) -> None:
        options = dict(PRESETS)
        current = self.time["from"] if self.time.get("to") == "now" else CUSTOM
        if current not in options:
            options[current] = current
        custom = self.time if current == CUSTOM else None
        options[CUSTOM] = f"{custom['from']} to {custom['to']}" if custom else "Custom range…"
        self.range_select = ui.select(
            options, label="Time range", value=current, on_change=self._range_picked
        )
        self.range_select.props("outlined dense options-dense stack-label").classes("w-56")
        self.range_select.mark("time-range")
        refresh = {
            value: ("Off: live updates only" if value == "off" else f"Every {value}")
            for value in REFRESH_INTERVALS
        }
        self.refresh_select = ui.select(
            refresh,
            label="Reload",
            value=self.refresh,
            on_change=lambda e: self._set_refresh(e.value),
        )
        self.refresh_select.props("outlined dense options-dense stack-label").classes("w-52")
        self.refresh_select.mark("refresh")

    def _edit_bar(self) -> None:
        with ui.row().classes(
            "w-full items-center gap-2 px-3 py-2 rounded-lg bg-blue-50 border border-blue-200"
        ) as self.edit_bar:
            ui.icon("edit", size="xs").classes("text-primary")
            ui.label("Editing: drag a title to move, the corner to resize.").classes(
                "text-sm text-slate-700"
            )
            ui.space()
            ui.button("Add widget", icon="add", on_click=self.add_widget).props(
                "unelevated no-caps"
            ).mark("add-widget")
            self.undo_button = (
                ui.button("Undo", icon="undo", on_click=self.undo)
                .props("flat no-caps")
                .mark("undo")
            )
            self.undo_button.disable()
            ui.button(
                "Edit JSON",
                icon="data_object",
                on_click=lambda: self.json_view.open(self._current_spec()),
            ).props("flat no-caps").mark("edit-json")
            ui.button("Discard", on_click=self.discard).props("flat no-caps color=grey-8").mark(
                "discard"
            )
            ui.button("Save", icon="save", on_click=self.save).props(
                "unelevated no-caps color=positive"
            ).mark("save-dashboard")
        self.edit_bar.set_visibility(False)

    # -- variables and time -----------------------------------------------------------------
    async def _variables(self) -> None:
        """The header's dropdowns; values from the URL, the spec's defaults, or the first."""
        self.variable_row.clear()
        specs = {v["name"]: v for v in self.spec.get("variables", [])}
        if "type" in specs:
            types = await fetch(data.type_choices)
            wanted = self.query.get("var-type") or specs["type"].get("default")
            self.variables["type"] = wanted if wanted in types else (types[0] if types else None)
            with self.variable_row:
                select = ui.select(
                    types, label=specs["type"]["label"], value=self.variables["type"]
                )
                select.props("outlined dense options-dense").classes("w-48").mark("var-type")
                select.on_value_change(lambda e: self._variable("type", e.value))
        if "device" in specs:
            device_type = specs["device"].get("deviceType")
            if device_type == "$type":
                device_type = self.variables.get("type")
            self._device_type = device_type
            devices = dict(await fetch(data.device_choices, device_type=device_type))
            wanted = self.query.get("var-device") or specs["device"].get("default")
            self.variables["device"] = wanted if wanted in devices else next(iter(devices), None)
            with self.variable_row:
                select = ui.select(
                    devices,
                    label=specs["device"]["label"],
                    value=self.variables["device"],
                    with_input=True,
                )
                select.props("outlined dense options-dense").classes("w-64").mark("var-device")
                select.on_value_change(lambda e: self._variable("device", e.value))

    async def _variable(self, name: str, value: str | None) -> None:
        if self.variables.get(name) == value:
            return
        self.variables[name] = value
        self.query[f"var-{name}"] = value or ""
        if name == "type":
            self.query.pop("var-device", None)
            await self._variables()  # the device list follows the type
        wanted = {k: v for k, v in self.query.items() if k.startswith("var-") and v}
        path = ui.context.client.request.url.path
        ui.navigate.history.replace(f"{path}?{urlencode(wanted)}" if wanted else path)
        await self.render()

    async def _range_picked(self, event: Any) -> None:
        if event.value == CUSTOM:
            chosen = await _custom_range(self.time)
            if chosen is None:
                self.range_select.set_value(
                    self.time["from"] if self.time["to"] == "now" else CUSTOM
                )
                return
            self.time = chosen
            options = dict(self.range_select.options)
            options[CUSTOM] = f"{chosen['from']} to {chosen['to']}"
            self.range_select.set_options(options, value=CUSTOM)
        elif event.value in PRESETS or event.value.startswith("now-"):
            if self.time == {"from": event.value, "to": "now"}:
                return
            self.time = {"from": event.value, "to": "now"}
        await self.render()

    def _show_controls(self) -> None:
        """The header's row when it has something to offer: variables, or a range to pick."""
        timed = any(w["type"] in TIMED for w in self.spec["widgets"])
        self.controls.set_visibility(timed or self.editing or bool(self.spec.get("variables")))

    def _refresh_seconds(self) -> float:
        return float(_REFRESH_SECONDS.get(self.refresh, 60))

    def _set_refresh(self, value: str) -> None:
        self.refresh = value
        self.timer.interval = self._refresh_seconds()
        self.timer.active = value != "off"

    async def _reload_all(self) -> None:
        await asyncio.gather(*(view.refresh() for view in self.views.values()))

    # -- the widgets --------------------------------------------------------------------------
    def _scope(self) -> Scope:
        return Scope(
            user=self.user, variables=dict(self.variables), time=dict(self.time), live=self.live
        )

    async def render(self) -> None:
        """Every widget anew (variables or range changed, or a whole new spec)."""
        for view in self.views.values():
            view.close()
        self.views.clear()
        self.grid.clear()
        self.empty.clear()
        widgets = self.spec["widgets"]
        if not widgets:
            with (
                self.empty,
                empty_state("dashboard_customize", "No widgets yet", self._empty_hint()),
            ):
                if self.opened.can_edit and not self.editing:
                    ui.button("Edit dashboard", icon="edit", on_click=self.start_editing).props(
                        "unelevated no-caps"
                    )
        for widget in widgets:
            self._card(widget)
        await asyncio.gather(*(view.start() for view in self.views.values()))

    def _empty_hint(self) -> str:
        if self.opened.can_edit:
            return "Edit the dashboard and add a widget: charts, values, tables, alerts, commands."
        return "Its owner has not added any widget yet."

    def _card(self, widget: dict[str, Any]) -> View:
        card = self.grid.card(widget)
        with card.actions:
            self._card_actions(widget)
        with card.body:
            view = VIEWS[widget["type"]](widget, self._scope())
        self.views[widget["id"]] = view
        return view

    def _card_actions(self, widget: dict[str, Any]) -> None:
        if self.editing:
            ui.button(icon="tune", on_click=lambda: self.configure(widget["id"])).props(
                "flat round dense size=sm color=grey-8"
            ).mark("configure-widget").tooltip("Configure")
            ui.button(icon="close", on_click=lambda: self.remove_widget(widget["id"])).props(
                "flat round dense size=sm color=grey-8"
            ).mark("remove-widget").tooltip("Remove")
            return
        if widget["type"] in ("timeseries", "stat", "gauge") and has_role(self.user, Role.OPERATOR):
            with (
                ui.button(icon="more_horiz")
                .props("flat round dense size=sm color=grey-7")
                .mark("widget-menu"),
                ui.menu(),
            ):
                ui.menu_item(
                    "Create alert from this widget", on_click=lambda: self.alert_from(widget["id"])
                ).mark("create-alert")

    async def _restart(self, widget_id: str) -> None:
        """Rebuild one widget's view in its card (its options or size changed)."""
        widget = next(w for w in self.spec["widgets"] if w["id"] == widget_id)
        old = self.views.pop(widget_id, None)
        if old is not None:
            old.close()
        body = self.grid.cards[widget_id].body
        body.clear()
        with body:
            view = VIEWS[widget["type"]](widget, self._scope())
        self.views[widget_id] = view
        await view.start()

    def _message(self, channel: str, message: bus.Message) -> None:
        for view in list(self.views.values()):
            view.on_message(channel, message)

    # -- editing -----------------------------------------------------------------------------
    def _current_spec(self) -> dict[str, Any]:
        """The spec as it would be saved: the widgets, and the range and refresh shown."""
        return self.spec | {"time": dict(self.time), "refresh": self.refresh}

    def start_editing(self) -> None:
        """Edit mode: the bar, the handles, the per-widget buttons."""
        if not self.opened.can_edit:
            return
        self.editing = True
        self._show_controls()
        self.edit_bar.set_visibility(True)
        self.view_actions.set_visibility(False)
        self.grid.set_editing(True)
        self._rebuild_heads()

    def _stop_editing(self) -> None:
        self.editing = False
        self._show_controls()
        self.history.clear()
        self._undo_state()
        self.drawer.dialog.close()
        self.edit_bar.set_visibility(False)
        self.view_actions.set_visibility(True)
        self.grid.set_editing(False)

    def _rebuild_heads(self) -> None:
        """Swap the cards' buttons between view and edit mode, keeping the widgets running."""
        for widget in self.spec["widgets"]:
            actions = self.grid.cards[widget["id"]].actions
            actions.clear()
            with actions:
                self._card_actions(widget)
            self.grid.place(widget)

    def _remember(self) -> None:
        self.history.append(copy.deepcopy(self.spec))
        self._undo_state()

    def _undo_state(self) -> None:
        self.undo_button.set_enabled(bool(self.history))

    def _checked(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The spec in normal form; ValidationError naming the JSON path when it is refused."""
        return spec_to_json(parse_spec(spec))

    async def undo(self) -> None:
        """Back to the spec before the last change."""
        if not self.history:
            return
        self.spec = self.history.pop()
        self._undo_state()
        self.drawer.dialog.close()
        await self.render()
        self._rebuild_heads()

    async def discard(self) -> None:
        """Forget every change since the last save."""
        self.spec = copy.deepcopy(self.saved)
        self.time, self.refresh = dict(self.spec["time"]), self.spec["refresh"]
        self._stop_editing()
        await self.render()

    async def save(self) -> None:
        """Store the spec (with the range and refresh shown); back to view mode."""
        spec = self._current_spec()
        try:
            await fetch(_save, user=self.user, dashboard_id=self.opened.id, spec=spec)
        except DomainError as error:
            ui.notify(f"Not saved: {error}", type="negative")
            return
        self.spec = spec
        self.saved = copy.deepcopy(spec)
        self._stop_editing()
        self._rebuild_heads()
        ui.notify("Dashboard saved", type="positive")

    def _moved(self, widget_id: str, rectangle: tuple[int, int, int, int]) -> None:
        if not self.editing or not any(w["id"] == widget_id for w in self.spec["widgets"]):
            return
        before = {w["id"]: (w["w"], w["h"]) for w in self.spec["widgets"]}
        placed = layout.place(self.spec["widgets"], widget_id, rectangle)
        if [(w["x"], w["y"], w["w"], w["h"]) for w in placed] == [
            (w["x"], w["y"], w["w"], w["h"]) for w in self.spec["widgets"]
        ]:
            return
        self._remember()
        self.spec = self.spec | {"widgets": placed}
        for widget in placed:
            self.grid.place(widget)
            if before[widget["id"]] != (widget["w"], widget["h"]):
                asyncio.get_running_loop().create_task(self._restart(widget["id"]))

    async def add_widget(self) -> None:
        """Pick a type; the widget starts valid (first device and metric) and opens its drawer."""
        kind = await pick_kind()
        if kind is None:
            return
        device, metric, device_type = await fetch(_first_source)
        if device is None and kind in ("timeseries", "stat", "gauge", "command", "bar"):
            ui.notify("Register a device first: this widget shows a device's data", type="warning")
            return
        w, h = SIZES.get(kind, DEFAULT_SIZE)
        x, y = layout.free_spot(self.spec["widgets"], w, h)
        widget = {
            "id": layout.new_id(self.spec["widgets"], kind),
            "type": kind,
            "title": KINDS[kind][0],
            "x": x,
            "y": y,
            "w": w,
            "h": h,
            "options": default_options(kind, device, metric, device_type),
        }
        try:
            spec = self._checked(self.spec | {"widgets": [*self.spec["widgets"], widget]})
        except ValidationError as error:
            ui.notify(f"Cannot add it: {error}", type="negative")
            return
        self._remember()
        self.spec = spec
        self.empty.clear()
        view = self._card(spec["widgets"][-1])
        # the drawer opens while the widget loads its data
        await asyncio.gather(view.start(), self.configure(widget["id"]))

    async def remove_widget(self, widget_id: str) -> None:
        """Take a widget off (Undo brings it back)."""
        self._remember()
        self.spec = self.spec | {
            "widgets": [w for w in self.spec["widgets"] if w["id"] != widget_id]
        }
        view = self.views.pop(widget_id, None)
        if view is not None:
            view.close()
        self.grid.remove_card(widget_id)
        if self._drafting == widget_id:
            self.drawer.dialog.close()

    async def configure(self, widget_id: str) -> None:
        """Open the drawer on a widget; its card is outlined while it is edited."""
        if not self.choices.devices:
            await self.choices.load()
        self._select(widget_id)
        self._drafting = widget_id
        self._drafted_once = False
        widget = next(w for w in self.spec["widgets"] if w["id"] == widget_id)
        await self.drawer.open(widget)

    def _select(self, widget_id: str | None) -> None:
        for key, card in self.grid.cards.items():
            if key == widget_id:
                card.element.classes(add="selected")
            else:
                card.element.classes(remove="selected")

    def _drawer_closed(self) -> None:
        self._select(None)
        self._drafting = None

    def _drafted(self, draft: dict[str, Any]) -> None:
        """A change in the drawer: checked whole, then previewed in the grid."""
        widgets = [draft if w["id"] == draft["id"] else w for w in self.spec["widgets"]]
        try:
            spec = self._checked(self.spec | {"widgets": widgets})
        except ValidationError as error:
            self.drawer.show_error(f"{error.field}: {error.reason}")
            return
        self.drawer.show_error(None)
        if not self._drafted_once:  # one undo step per drawer session, however many keystrokes
            self._remember()
            self._drafted_once = True
        self.spec = spec
        self._preview.soon()

    async def _redraw_drafted(self) -> None:
        if self._drafting is None:
            return
        widget = next((w for w in self.spec["widgets"] if w["id"] == self._drafting), None)
        if widget is None:
            return
        self.grid.set_title(widget)
        await self._restart(widget["id"])

    def _apply_json(self, parsed: Any) -> str | None:
        """The JSON view's Apply: refused with the JSON path, or shown at once."""
        try:
            spec = self._checked(parsed)
        except ValidationError as error:
            return f"{error.field}: {error.reason}"
        if spec.get("name") != self.opened.name:
            return "name: rename the dashboard from its list, not in its JSON"
        self._remember()
        self.spec = spec
        self.time, self.refresh = dict(spec["time"]), spec["refresh"]
        asyncio.get_running_loop().create_task(self._rerender_editing())
        return None

    async def _rerender_editing(self) -> None:
        await self.render()
        self._rebuild_heads()

    # -- actions -----------------------------------------------------------------------------
    async def alert_from(self, widget_id: str) -> None:
        """Open the rule editor with this widget's value and threshold filled in."""
        widget = next(w for w in self.spec["widgets"] if w["id"] == widget_id)
        text = alert_rule_text(widget, self.variables.get("device"), self._device_type)
        if text is None:
            ui.notify("This widget has no device value to watch", type="warning")
            return
        ui.navigate.to(f"/rules/new?{urlencode({'text': text})}")

    async def _make_home(self) -> None:
        await fetch(_set_home, user=self.user, dashboard_id=self.opened.id)
        ui.notify(f"{self.opened.name} is now your home dashboard", type="positive")
        ui.navigate.reload()

    async def _share(self, shared: bool) -> None:
        try:
            await fetch(_share, user=self.user, dashboard_id=self.opened.id, shared=shared)
        except DomainError as error:
            ui.notify(str(error), type="negative")
            return
        ui.notify("Shared with everyone signed in" if shared else "Now private", type="info")

    def _export(self) -> None:
        content = orjson.dumps(self.saved, option=orjson.OPT_INDENT_2) + b"\n"
        ui.download.content(content, f"{_file_name(self.opened.name)}.dashboard.json")

    async def _save_copy(self) -> None:
        try:
            new_id = await fetch(_copy, user=self.user, dashboard_id=self.opened.id)
        except DomainError as error:
            ui.notify(str(error), type="negative")
            return
        ui.navigate.to(f"/dashboards/{new_id}?edit=1")

    async def _delete(self) -> None:
        if not await confirm(
            "Delete dashboard",
            f"Delete “{self.opened.name}”? This cannot be undone.",
            action="Delete",
        ):
            return
        try:
            await fetch(_delete, user=self.user, dashboard_id=self.opened.id)
        except DomainError as error:
            ui.notify(str(error), type="negative")
            return
        ui.navigate.to("/dashboards")


def _file_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_" else "-" for c in name.lower()).strip("-")
    return cleaned or "dashboard"


async def _custom_range(current: dict[str, str]) -> dict[str, str] | None:
    """Ask for a from/to pair (relative or ISO 8601 UTC); None when cancelled."""
    with ui.dialog() as dialog, ui.card().classes("w-[28rem] p-5 gap-3"):
        ui.label("Custom range").classes("text-lg font-semibold")
        ui.label("now-2h, now-3d, or a UTC time such as 2026-12-01T08:00").classes(
            "text-sm text-slate-500"
        )
        start = (
            ui.input("From", value=current["from"])
            .props("outlined dense stack-label")
            .classes("w-full")
        )
        end = (
            ui.input("To", value=current["to"])
            .props("outlined dense stack-label")
            .classes("w-full")
        )
        start.mark("range-from")
        end.mark("range-to")
        error = ui.label("").classes("text-sm text-red-700")

        def apply() -> None:
            chosen = {"from": start.value.strip(), "to": end.value.strip()}
            try:
                parse_spec({"version": 1, "name": "range", "time": chosen, "widgets": []})
                TimeRange.model_validate(chosen)
            except ValidationError as refusal:
                error.text = f"{refusal.field.removeprefix('time.')}: {refusal.reason}"
                return
            dialog.submit(chosen)

        with ui.row().classes("w-full justify-end gap-2"):
            ui.button("Cancel", on_click=dialog.close).props("flat no-caps")
            ui.button("Apply", on_click=apply).props("unelevated no-caps").mark("range-apply")
    try:
        return await dialog
    finally:
        dialog.delete()


def _not_found(dashboard_id: str) -> None:
    with ui.card().classes("w-full shadow-none border border-slate-200"):
        with empty_state(
            "search_off",
            "Dashboard not found",
            f"There is no dashboard “{dashboard_id}” that you may open.",
        ):
            ui.button("All dashboards", on_click=lambda: ui.navigate.to("/dashboards")).props(
                "unelevated no-caps"
            )


async def _new_dashboard(user: User) -> None:
    with ui.dialog() as dialog, ui.card().classes("w-[26rem] p-5 gap-3"):
        ui.label("New dashboard").classes("text-lg font-semibold")
        name = ui.input("Name").props("outlined dense stack-label autofocus").classes("w-full")
        name.mark("new-dashboard-name")
        error = ui.label("").classes("text-sm text-red-700")

        async def create() -> None:
            try:
                new_id = await fetch(_create, user=user, name=name.value or "")
            except ValidationError as refusal:
                error.text = f"{refusal.field}: {refusal.reason}"
                return
            dialog.submit(new_id)

        name.on("keydown.enter", create)
        with ui.row().classes("w-full justify-end gap-2"):
            ui.button("Cancel", on_click=dialog.close).props("flat no-caps")
            ui.button("Create", on_click=create).props("unelevated no-caps").mark(
                "create-dashboard"
            )
    try:
        new_id = await dialog
    finally:
        dialog.delete()
    if new_id:
        ui.navigate.to(f"/dashboards/{new_id}?edit=1")


def _list_row(row: Listed, device_type: str | None) -> None:
    target = f"/dashboards/{row.id}"
    if device_type:
        target += f"?{urlencode({'var-type': device_type})}"
    with (
        ui.link(target=target)
        .classes(
            "w-full no-underline text-inherit flex items-center gap-4 px-5 py-4 border-b "
            "border-slate-100 hover:bg-slate-50"
        )
        .mark("dashboard-row")
    ):
        ui.icon("space_dashboard", size="sm").classes("text-primary")
        with ui.column().classes("gap-0 grow min-w-0"):
            with ui.row().classes("items-center gap-2 no-wrap"):
                ui.label(row.name).classes("text-base font-semibold text-slate-900 truncate")
                if row.is_home:
                    ui.icon("home", size="xs").classes("text-primary").tooltip(
                        "Your home dashboard"
                    )
            ui.label(row.description or f"{row.widgets} widgets").classes(
                "text-sm text-slate-500 truncate"
            )
        if row.provisioned:
            ui.label("Read-only").classes("text-xs px-2 py-0.5 rounded bg-slate-100 text-slate-600")
        tone = (
            "bg-green-50 text-green-700"
            if row.visibility == "SHARED"
            else "bg-slate-100 text-slate-600"
        )
        ui.label("Shared" if row.visibility == "SHARED" else "Private").classes(
            f"text-xs px-2 py-0.5 rounded {tone}"
        )
        ui.label(row.owner or ("Built in" if row.built_in else "Provisioned")).classes(
            "text-xs text-slate-500 w-44 truncate text-right"
        )


def create() -> None:
    """Register `/`, `/dashboards` and `/dashboards/{id}`."""

    @ui.page("/")
    async def home_page(request: Request) -> None:
        user = current_user()
        opened = await fetch(_home, user=user)
        await DashboardPage(opened, user, dict(request.query_params), home=True).build()

    @ui.page("/dashboards")
    async def dashboards_page(request: Request) -> None:
        user = current_user()
        device_type = request.query_params.get("type") or None
        rows = await fetch(_listing, user=user, device_type=device_type)
        with frame("Dashboards", user=user):
            subtitle = (
                f"Dashboards for devices of type “{device_type}”"
                if device_type
                else "Live views of the fleet; yours, shared ones and built-in ones."
            )
            with page_heading("Dashboards", subtitle):
                if has_role(user, Role.OPERATOR):
                    ui.button(
                        "New dashboard", icon="add", on_click=lambda: _new_dashboard(user)
                    ).props("unelevated no-caps").mark("new-dashboard")
            with ui.card().classes("w-full p-0 gap-0 shadow-none border border-slate-200"):
                if not rows:
                    message = (
                        "No dashboard has a variable or widget for this type yet."
                        if device_type
                        else "Create one to compose charts, values and controls."
                    )
                    empty_state("dashboard", "No dashboards", message)
                for row in rows:
                    _list_row(row, device_type)

    @ui.page("/dashboards/{dashboard_id}")
    async def dashboard_page(dashboard_id: str, request: Request) -> None:
        user = current_user()
        opened = await fetch(_open, user=user, dashboard_id=dashboard_id)
        if opened is None:
            with frame("Dashboard not found", user=user):
                _not_found(dashboard_id)
            return
        await DashboardPage(opened, user, dict(request.query_params), home=False).build()
