"""One device: fields, metadata, live telemetry, status and commands; admins edit and delete."""

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from nicegui import background_tasks, run, ui
from sqlmodel import Session

from app.core import bus, db
from app.core.auth import has_role
from app.core.errors import NotFoundError, ValidationError
from app.core.models import Device, DeviceStatus, DeviceUpdate, Role, User, as_utc
from app.mqtt.topics import TELEMETRY, device_topic
from app.services import charts, devices
from app.services.telemetry import Sample
from components.chips import type_chip
from components.confirm_dialog import confirm
from components.deferred import Deferred
from components.device_form import DeviceForm, DeviceFormData
from components.empty_state import empty_state
from components.frame import frame
from components.json_viewer import metadata_view
from components.live import SAFETY_SECONDS, LiveFeed
from components.metric_tiles import MetricTiles
from components.relative_time import set_time, time_label
from components.section import section
from components.status_badge import StatusBadge, status_badge
from components.telemetry_chart import CUSTOM, RangePicker, TelemetryChart, series_colour
from pages.alerts import DeviceAlerts
from pages.auth import current_user, flash, load_acting_user
from pages.device_commands import DeviceCommands
from pages.device_credentials import DeviceCredentials

DEFAULT_RANGE = "1 h"
RELAYOUT_DELAY = 0.2  # first points of several metrics lay the page out once


def _load_device(device_id: str) -> Device | None:
    try:
        with db.session_scope() as session:
            return devices.get_device(session=session, device_id=device_id)
    except ValidationError:
        return None  # not a UUID: as unknown as any other id


def _types() -> list[str]:
    with db.session_scope() as session:
        return devices.device_types(session=session)


def _update_device(device_id: uuid.UUID, data: DeviceFormData) -> None:
    with db.session_scope() as session:
        update = DeviceUpdate(name=data.name, type=data.type, metadata=data.metadata)
        devices.update_device(session=session, device_id=device_id, data=update)


def _delete_device(device_id: uuid.UUID) -> None:
    with db.session_scope() as session:
        devices.delete_device(session=session, device_id=device_id)


def _telemetry(
    device_id: uuid.UUID, start: datetime, end: datetime
) -> tuple[list[charts.Tile], list[charts.ChartData]]:
    """The latest value of every metric, and each metric's chart over [start, end]."""
    with db.session_scope() as session:
        latest = charts.tiles(session=session, device_id=device_id)
        names = [tile.metric_name for tile in latest]
        return latest, _charts_in(session, device_id, names, start, end)


def _charts(
    device_id: uuid.UUID, names: list[str], start: datetime, end: datetime
) -> list[charts.ChartData]:
    with db.session_scope() as session:
        return _charts_in(session, device_id, names, start, end)


def _charts_in(
    session: Session, device_id: uuid.UUID, names: list[str], start: datetime, end: datetime
) -> list[charts.ChartData]:
    return [
        charts.chart_data(
            session=session, device_id=device_id, metric_name=name, start=start, end=end
        )
        for name in names
    ]


def _tiles(device_id: uuid.UUID) -> list[charts.Tile]:
    with db.session_scope() as session:
        return charts.tiles(session=session, device_id=device_id)


def _samples_after(device_id: uuid.UUID, name: str, after: datetime, end: datetime) -> list[Sample]:
    with db.session_scope() as session:
        return charts.samples_after(
            session=session, device_id=device_id, metric_name=name, after=after, end=end
        )


def _field(label: str) -> ui.row:
    with ui.row().classes(
        "w-full items-center gap-3 py-2 border-b border-slate-100 last:border-b-0 no-wrap "
        "min-h-[2.75rem]"
    ) as line:
        ui.label(label).classes("w-20 shrink-0 text-sm text-slate-500")
    return line


def _copy_id(device_id: uuid.UUID) -> None:
    ui.clipboard.write(str(device_id))
    ui.notify("Device id copied", type="info")


def _pushed(points: list[dict[str, Any]]) -> dict[str, list[tuple[Sample, str | None]]]:
    """A bus telemetry message's points by metric, oldest first."""
    by_metric: dict[str, list[tuple[Sample, str | None]]] = {}
    for point in points:
        at = as_utc(datetime.fromisoformat(point["time"]))
        sample = Sample(at, float(point["value"]), point.get("unit"))
        by_metric.setdefault(point["metric"], []).append((sample, point.get("unit")))
    for samples in by_metric.values():
        samples.sort(key=lambda item: item[0].time)
    return by_metric


def _details(device: Device, badges: list[StatusBadge]) -> ui.label:
    """The details card; returns the "last seen" label so pushes can move it."""
    with section("Details", icon="info"):
        with _field("ID"):
            ui.label(str(device.id)).classes("font-mono text-xs text-slate-700 whitespace-nowrap")
            ui.button(icon="content_copy", on_click=lambda: _copy_id(device.id)).props(
                "flat round dense size=sm color=secondary"
            ).tooltip("Copy id").mark("copy-id")
        with _field("Type"):
            type_chip(device.type)
            ui.link(
                "Dashboards for this type", f"/dashboards?type={quote(device.type, safe='')}"
            ).classes("text-xs text-primary no-underline hover:underline").mark(
                "device-type-dashboards"
            )
        with _field("Status"):
            badges.append(status_badge(device.status))
        with _field("Last seen"):
            last_seen = time_label(device.last_seen_at).classes("text-sm").mark("last-seen")
        if device.rate_limited_at is not None:
            _rate_limited(device.rate_limited_at)
        with _field("Created"):
            time_label(device.created_at, relative=False).classes("text-sm")
        with _field("Updated"):
            time_label(device.updated_at, relative=False).classes("text-sm")
    return last_seen


def _rate_limited(moment: datetime) -> None:
    """A warning: ingest refused messages of this device for its rate limit, last at `moment`."""
    with _field("Rate limit"):
        chip = ui.chip("rate limited", icon="speed", color="amber-1", text_color="amber-10")
        chip.props("dense").classes("text-xs m-0").mark("rate-limited")
        chip.tooltip("Messages over this device's rate limit were acknowledged but not stored")
        time_label(moment).classes("text-sm").mark("rate-limited-at")


class DeviceTelemetry:
    """Latest-value tiles and one chart per metric, kept current by `push` and `update`.

    What changes the charts (a push, the safety-net update, a new range) runs one at a time,
    in the order it came, so a redraw never loses the points pushed while it loaded.
    """

    def __init__(self, device_id: uuid.UUID) -> None:
        """Start on the default range."""
        self.device_id = device_id
        self.range = DEFAULT_RANGE
        self.custom: tuple[datetime, datetime] | None = None
        self.metric_names: list[str] = []
        self.tiles: MetricTiles | None = None
        self.latest: dict[str, charts.Tile] = {}
        self.shown: list[charts.ChartData] = []  # the charts as last loaded
        self.charts: dict[str, TelemetryChart] = {}
        self._moving = asyncio.Lock()
        self._relayout = Deferred(self.reload, RELAYOUT_DELAY)
        self._redraw = Deferred(self._reload_charts, 0)  # the range picker calls synchronously

    async def load(self) -> None:
        """Read the latest values and every metric's chart over the range (off the event loop)."""
        start, end = self._window()
        found = await run.io_bound(_telemetry, self.device_id, start, end)
        if found is not None:  # None: the app is shutting down
            latest, self.shown = found
            self.metric_names = [tile.metric_name for tile in latest]
            self.latest = {tile.metric_name: tile for tile in latest}

    async def reload(self) -> None:
        """Read everything again and lay the sections out anew (first point, new metric)."""
        async with self._moving:
            await self.load()
            self.content.refresh()

    def create(self) -> None:
        """The sections, and the slow safety-net refresh beside the live pushes."""
        self.content()
        ui.timer(SAFETY_SECONDS, self.update, immediate=False).mark("telemetry-timer")

    @ui.refreshable_method
    def content(self) -> None:
        """Tiles and charts, or how to send the first point."""
        self.charts = {}
        if not self.latest:
            self.tiles = None
            _no_telemetry(self.device_id)
            return
        with section("Latest values", icon="speed"):
            self.tiles = MetricTiles(list(self.latest.values()))
        with section("Telemetry", icon="show_chart"):
            RangePicker(list(charts.RANGES), self.range, on_change=self.set_range)
            self.chart_list()

    def _window(self) -> tuple[datetime, datetime]:
        if self.custom is not None:
            return self.custom
        now = datetime.now(UTC)
        return now - charts.RANGES[self.range], now

    @ui.refreshable_method
    def chart_list(self) -> None:
        """One chart per metric over the chosen range."""
        self.charts = {}
        with ui.column().classes("w-full gap-0 pt-3 divide-y divide-slate-100"):
            for index, data in enumerate(self.shown):
                with ui.element("div").classes("w-full py-3"):
                    chart = TelemetryChart(data, colour=series_colour(index))
                self.charts[data.metric_name] = chart

    def set_range(self, name: str, custom: tuple[datetime, datetime] | None) -> None:
        """Show every chart over a preset (`custom` None) or the custom range."""
        self.range = name if name != CUSTOM else self.range
        self.custom = custom
        self._redraw.soon()

    async def _reload_charts(self) -> None:
        async with self._moving:
            start, end = self._window()
            shown = await run.io_bound(_charts, self.device_id, self.metric_names, start, end)
            if shown is not None:
                self.shown = shown
                self.chart_list.refresh()

    async def update(self) -> None:
        """Bring tiles and charts up to date from storage (the safety net behind `push`)."""
        async with self._moving:
            latest = await run.io_bound(_tiles, self.device_id)
            if latest is None:
                return
            if [tile.metric_name for tile in latest] == self.metric_names:
                self.latest = {tile.metric_name: tile for tile in latest}
                await self._advance_all(None)
                return
        await self.reload()  # first point, or a new metric: lay the page out again

    def push(self, points: list[dict[str, Any]]) -> None:
        """Show points the bus pushed: tiles at once, raw charts by sending only the new points."""
        pushed = _pushed(points)
        if not pushed:
            return
        if any(name not in self.latest for name in pushed):
            self._relayout.soon()  # first point, or a new metric: lay the page out again
            return
        for name, samples in pushed.items():
            newest, unit = samples[-1]
            if newest.time >= self.latest[name].time:
                self.latest[name] = charts.Tile(name, newest.value, unit, newest.time)
        tails = {name: [sample for sample, _ in items] for name, items in pushed.items()}
        background_tasks.create(self._advance_pushed(tails), name="telemetry push")

    async def _advance_pushed(self, tails: dict[str, list[Sample]]) -> None:
        async with self._moving:
            await self._advance_all(tails)

    async def _advance_all(self, pushed: dict[str, list[Sample]] | None) -> None:
        """Redraw the tiles and move every chart on; `pushed` holds new raw points, if known."""
        if self.tiles is not None:
            self.tiles.show(list(self.latest.values()))
        if self.custom is not None:
            return  # a custom range is history: it does not move
        start, end = self._window()
        for name, chart in list(self.charts.items()):
            tail = None if pushed is None else pushed.get(name, [])
            await self._advance(name, chart, start, end, tail)

    async def _advance(
        self,
        name: str,
        chart: TelemetryChart,
        start: datetime,
        end: datetime,
        tail: list[Sample] | None,
    ) -> None:
        width = chart.data.bucket_seconds
        if width is not None:
            # bucket averages change only as buckets fill: redraw once a new bucket begins
            if end.timestamp() // width > chart.data.end.timestamp() // width:
                await self._redraw_chart(name, chart, start, end)
            return
        after = as_utc(chart.last_time) if chart.last_time else start
        if tail is None:
            tail = await run.io_bound(_samples_after, self.device_id, name, after, end)
            if tail is None:
                return
        else:
            tail = [sample for sample in tail if sample.time > after]  # late points wait
        if chart.point_count + len(tail) > charts.MAX_POINTS:
            await self._redraw_chart(name, chart, start, end)  # too dense now: bucket it
        else:
            chart.append(tail, start, end)

    async def _redraw_chart(
        self, name: str, chart: TelemetryChart, start: datetime, end: datetime
    ) -> None:
        found = await run.io_bound(_charts, self.device_id, [name], start, end)
        if found is not None:
            chart.show(found[0])


def _no_telemetry(device_id: uuid.UUID) -> None:
    topic = device_topic(device_id, TELEMETRY)
    with section("Telemetry", icon="show_chart"):
        with empty_state(
            "sensors",
            "No telemetry yet",
            "Values and charts appear here once the device publishes to its topic:",
        ):
            # a read-only field, not text: easy to select, and the id appears once as text
            field = ui.input("MQTT topic", value=topic).props(
                "readonly outlined dense stack-label input-class='font-mono text-xs'"
            )
            with field.classes("w-[30rem] max-w-full").mark("telemetry-topic"):
                with field.add_slot("append"):
                    ui.button(icon="content_copy", on_click=lambda: _copy_topic(topic)).props(
                        "flat round dense size=sm color=secondary"
                    ).tooltip("Copy topic").mark("copy-topic")
            ui.label(
                "It logs in to the broker with its own password or certificate (Credentials)."
            ).classes("text-xs text-slate-500").mark("telemetry-login-hint")


def _copy_topic(topic: str) -> None:
    ui.clipboard.write(topic)
    ui.notify("Topic copied", type="info")


class DeviceDetail:
    """The page body for one device, rebuilt after an edit."""

    def __init__(self, device_id: str, user: User) -> None:
        """Remember which device and who is looking."""
        self.device_id = device_id
        self.is_admin = has_role(user, Role.ADMIN)
        self.can_act = has_role(user, Role.OPERATOR)
        self.alerts: DeviceAlerts | None = None
        self.commands: DeviceCommands | None = None
        self.telemetry: DeviceTelemetry | None = None  # kept across rebuilds: keeps the range
        self.badges: list[StatusBadge] = []
        self.last_seen: ui.label | None = None
        self.device: Device | None = None
        self._reload_now = Deferred(self.reload, 0)  # after a save, which closes its dialog

    async def load(self) -> bool:
        """Read the device (off the event loop); False when there is none with this id."""
        self.device = await run.io_bound(_load_device, self.device_id)
        if self.device is None:
            return False
        self.device_id = str(self.device.id)  # as the bus spells it
        return True

    async def load_sections(self) -> None:
        """Read what the device's sections show (off the event loop)."""
        assert self.device is not None  # loaded by `load`
        self.alerts = DeviceAlerts(self.device.id, can_act=self.can_act)
        self.commands = DeviceCommands(self.device, can_act=self.can_act)
        self.telemetry = self.telemetry or DeviceTelemetry(self.device.id)
        await asyncio.gather(self.alerts.load(), self.commands.load(), self.telemetry.load())

    async def reload(self) -> None:
        """Read everything again and rebuild the page body."""
        if await self.load():
            await self.load_sections()
        self.content.refresh()

    @property
    def channels(self) -> tuple[str, ...]:
        """The bus channels this page shows: the device's telemetry, status, alerts, commands."""
        return bus.telemetry_channel(self.device_id), bus.DEVICE_STATUS, bus.ALERTS, bus.COMMANDS

    def receive(self, channel: str, message: bus.Message) -> None:
        """Apply one pushed message: a status, alert or command change, or new points."""
        if channel == bus.ALERTS:
            if self.alerts is not None:
                self.alerts.receive(message)
            return
        if channel == bus.COMMANDS:
            if self.commands is not None:
                self.commands.receive(message)
            return
        if channel == bus.DEVICE_STATUS:
            if message.get("device_id") == self.device_id:
                for badge in self.badges:
                    badge.set_status(DeviceStatus(message["status"]))
                if self.commands is not None:
                    self.commands.set_status(DeviceStatus(message["status"]))
            return
        if self.last_seen is not None:
            set_time(self.last_seen, datetime.now(UTC))  # stored as the arrival time too
        if self.telemetry is not None:
            self.telemetry.push(message.get("points", []))

    @ui.refreshable_method
    def content(self) -> None:
        """Heading, then the main and side columns of cards."""
        device = self.device
        self.badges = []
        if device is None:
            self._not_found()
            return
        with ui.row().classes("items-center gap-1 text-sm text-slate-500"):
            ui.link("Devices", "/devices").classes("text-slate-500 no-underline hover:underline")
            ui.icon("chevron_right", size="xs")
            ui.label(device.name).classes("text-slate-700 truncate max-w-md")
        with ui.row().classes("w-full items-center gap-3 no-wrap"):
            ui.label(device.name).classes(
                "text-2xl font-semibold text-slate-900 tracking-tight truncate"
            ).mark("device-name")
            self.badges.append(status_badge(device.status))
            ui.space()
            if self.is_admin:
                ui.button("Edit", icon="edit", on_click=lambda: self.edit(device)).props(
                    "outline no-caps color=secondary"
                ).mark("edit-device")
                ui.button("Delete", icon="delete", on_click=lambda: self.delete(device)).props(
                    "flat no-caps color=negative"
                ).mark("delete-device")
        # the wide column takes charts and tables, the narrow one compact cards; later
        # features add their cards to these two columns
        with ui.element("div").classes(
            "w-full grid grid-cols-1 lg:grid-cols-[minmax(0,1fr)_27rem] gap-5 items-start"
        ):
            assert self.alerts and self.commands and self.telemetry  # by `load_sections`
            with ui.column().classes("gap-5 min-w-0").mark("device-main"):
                self.alerts.create()
                self.commands.create_history()
                self.telemetry.create()
                with section("Metadata", icon="data_object"):
                    metadata_view(device.metadata_)
            with ui.column().classes("gap-5 min-w-0").mark("device-side"):
                self.last_seen = _details(device, self.badges)
                if self.is_admin:
                    DeviceCredentials(device.id).create()
                self.commands.create_side()

    def _not_found(self) -> None:
        with ui.card().classes("w-full shadow-none border border-slate-200"):
            with empty_state(
                "search_off",
                "Device not found",
                f"There is no device with id “{self.device_id}”. It may have been deleted.",
            ):
                ui.button("Back to devices", on_click=lambda: ui.navigate.to("/devices")).props(
                    "unelevated no-caps"
                )

    async def edit(self, device: Device) -> None:
        """Open the edit dialog; saving updates the device and rebuilds the page."""

        async def save(data: DeviceFormData) -> None:
            if await load_acting_user(Role.ADMIN) is None:
                return
            try:
                await run.io_bound(_update_device, device.id, data)
            except NotFoundError:
                ui.notify("This device was deleted in the meantime", type="warning")
                self._reload_now.soon()
                return
            ui.notify("Device saved", type="positive")
            self._reload_now.soon()

        initial = DeviceFormData(name=device.name, type=device.type, metadata=device.metadata_)
        types = await run.io_bound(_types)
        if types is None:  # the app is shutting down
            return
        DeviceForm(
            title="Edit device", action="Save changes", on_save=save, types=types, initial=initial
        ).open()

    async def delete(self, device: Device) -> None:
        """Ask for confirmation, delete, and go back to the list."""
        question = f"“{device.name}” and its history will be removed. This cannot be undone."
        if not await confirm("Delete this device?", question, action="Delete device"):
            return
        if await load_acting_user(Role.ADMIN) is None:
            return
        try:
            await run.io_bound(_delete_device, device.id)
        except NotFoundError:
            pass  # already gone: the outcome the operator asked for
        flash(f"Device “{device.name}” deleted")
        ui.navigate.to("/devices")


def create() -> None:
    """Register /devices/{device_id}."""

    @ui.page("/devices/{device_id}")
    async def device_page(device_id: str) -> None:
        user = current_user()
        detail = DeviceDetail(device_id, user)
        feed = None
        if await detail.load():
            # subscribed before the sections load: nothing pushed meanwhile is missed
            feed = LiveFeed(detail.receive, channels=detail.channels)
            await detail.load_sections()
        title = detail.device.name if detail.device else "Device not found"
        with frame(title, user=user, live=feed):
            detail.content()
