"""The devices list: search, filters, paging, registration for admins; status pushed live."""

import asyncio
from datetime import UTC, datetime

from nicegui import background_tasks, run, ui

from app.core import bus, db
from app.core.auth import has_role
from app.core.models import Device, DeviceCreate, DeviceStatus, Role
from app.services import devices
from app.services.devices import DeviceFilter
from components.chips import type_chip
from components.data_table import cell, data_table, row
from components.deferred import Deferred
from components.device_form import DeviceForm, DeviceFormData
from components.empty_state import empty_state
from components.frame import frame, page_heading
from components.live import LiveFeed
from components.relative_time import set_time, time_label
from components.status_badge import StatusBadge, status_badge, status_label
from pages.auth import current_user, load_acting_user

PAGE_SIZE = 25
REFRESH_DELAY = 0.2  # a burst of device events reloads the list once
EN_DASH = "\u2013"  # typeset ranges read "1 to 25" with an en dash, not a hyphen
ALL = ""  # the select value meaning "no constraint"
COLUMNS = ["Name", "Type", "Status", "Last seen", "Created"]


def _device_types() -> list[str]:
    with db.session_scope() as session:
        return devices.device_types(session=session)


def _device_page(where: DeviceFilter, offset: int) -> tuple[int, int, list[Device]]:
    """How many devices match, the offset (moved back onto the last page), that page's rows."""
    with db.session_scope() as session:
        total = devices.count_devices(session=session, where=where)
        if offset >= total > 0:
            offset = (total - 1) // PAGE_SIZE * PAGE_SIZE
        rows = devices.list_devices(session=session, where=where, limit=PAGE_SIZE, offset=offset)
    return total, offset, rows


class DeviceList:
    """The filter bar, the table of one page of devices and the pager."""

    def __init__(self) -> None:
        """Start on the first page with no filter."""
        self.search = ""
        self.type = ALL
        self.status = ALL
        self.offset = 0
        self.total = 0
        self.found: list[Device] = []  # the page of devices last loaded
        self.rows: dict[str, tuple[StatusBadge, ui.label]] = {}  # shown devices, by id
        self._watched: frozenset[str] = frozenset()  # their telemetry channels
        self._loads = 0  # numbers the loads: a slower, older one must not win
        self._later = Deferred(self.reload, REFRESH_DELAY)

    async def load(self) -> bool:
        """Read the page of devices the filters describe (off the event loop).

        False when a newer load started meanwhile or the app is shutting down.
        """
        self._loads += 1
        ticket = self._loads
        found = await run.io_bound(_device_page, self._where(), self.offset)
        if found is None or ticket != self._loads:
            return False
        self.total, self.offset, self.found = found
        self._watched = frozenset(bus.telemetry_channel(device.id) for device in self.found)
        return True

    async def reload(self) -> None:
        """Read the page again and redraw the table."""
        if await self.load():
            self.table.refresh()

    def accepts(self, channel: str) -> bool:
        """Device events, and telemetry of the devices shown (for "last seen")."""
        return channel == bus.DEVICE_EVENTS or channel in self._watched

    def receive(self, channel: str, message: bus.Message) -> None:
        """Apply one pushed message to the rows shown, or reload the page of rows."""
        if channel != bus.DEVICE_EVENTS:
            shown = self.rows.get(message.get("device_id", ""))
            if shown is not None:
                set_time(shown[1], datetime.now(UTC))  # stored as the arrival time too
            return
        device = message.get("device", {})
        shown = self.rows.get(device.get("id", ""))
        kind = message.get("type")
        if kind == "STATUS_CHANGED" and not self.status:
            if shown is not None:
                badge, last_seen = shown
                badge.set_status(device["status"])
                if device.get("last_seen_at"):
                    set_time(last_seen, datetime.fromisoformat(device["last_seen_at"]))
            return
        if kind == "UPDATED" and shown is None:
            return  # a change to a device this page does not show
        self._later.soon()  # rows come, go, or stop matching the status filter

    def _where(self) -> DeviceFilter:
        status = DeviceStatus(self.status) if self.status else None
        return DeviceFilter(type=self.type or None, status=status, search=self.search or None)

    @property
    def filtered(self) -> bool:
        """True when any filter narrows the list."""
        return bool(self.search.strip() or self.type or self.status)

    async def set_filter(self, **values: str) -> None:
        """Change filters and go back to the first page."""
        for name, value in values.items():
            setattr(self, name, value or ALL)
        self.offset = 0
        await self.reload()

    async def move(self, pages: int) -> None:
        """Go `pages` pages forward (or back when negative)."""
        self.offset = max(0, self.offset + pages * PAGE_SIZE)
        await self.reload()

    def toolbar(self, types: list[str]) -> ui.select:
        """Search box and type and status filters; returns the type select to update later."""
        with ui.row().classes("w-full items-center gap-3 px-4 py-3 border-b border-slate-200"):
            search = ui.input(placeholder="Search by name or type", value=self.search)
            search.props("outlined dense clearable debounce=300").classes("w-72")
            search.on_value_change(lambda event: self.set_filter(search=event.value or ""))
            search.mark("device-search")
            with search.add_slot("prepend"):
                ui.icon("search", size="xs").classes("text-slate-400")
            type_select = ui.select(
                {ALL: "All types", **{name: name for name in types}},
                value=self.type,
                on_change=lambda event: self.set_filter(type=event.value),
            )
            type_select.props("outlined dense options-dense").classes("w-48")
            type_select.mark("type-filter")
            statuses = {ALL: "All statuses", **{s.value: status_label(s) for s in DeviceStatus}}
            status_select = ui.select(
                statuses, value=self.status, on_change=lambda e: self.set_filter(status=e.value)
            )
            status_select.props("outlined dense options-dense").classes("w-40")
            status_select.mark("status-filter")
        return type_select

    @ui.refreshable_method
    def table(self) -> None:
        """The page of matching devices last loaded, or an empty state, and the pager."""
        self.rows = {}
        if self.total == 0:
            self._empty()
            return
        with data_table(COLUMNS):
            for device in self.found:
                with row().mark("device-row"):
                    with cell():
                        ui.link(device.name, f"/devices/{device.id}").classes(
                            "font-medium text-primary no-underline hover:underline"
                        )
                    with cell():
                        type_chip(device.type)
                    with cell():
                        badge = status_badge(device.status)
                    with cell(classes="text-slate-600"):
                        last_seen = time_label(device.last_seen_at).mark("last-seen")
                    self.rows[str(device.id)] = (badge, last_seen)
                    with cell(classes="text-slate-600"):
                        time_label(device.created_at, relative=False)
        self._pager(self.total)

    def _pager(self, total: int) -> None:
        last = min(self.offset + PAGE_SIZE, total)
        with ui.row().classes(
            "w-full items-center justify-end gap-2 px-4 py-2 border-t border-slate-200"
        ):
            ui.label(f"{self.offset + 1}{EN_DASH}{last} of {total}").classes(
                "text-sm text-slate-500 pr-2"
            ).mark("page-range")
            previous = ui.button(icon="chevron_left", on_click=lambda: self.move(-1))
            previous.props("flat round dense color=secondary").tooltip("Previous page").mark(
                "page-previous"
            )
            previous.set_enabled(self.offset > 0)
            following = ui.button(icon="chevron_right", on_click=lambda: self.move(1))
            following.props("flat round dense color=secondary").tooltip("Next page").mark(
                "page-next"
            )
            following.set_enabled(last < total)

    def _empty(self) -> None:
        if self.filtered:
            with empty_state("search_off", "No devices match", "Try another search or filter."):
                ui.button("Clear filters", on_click=self.clear_filters).props(
                    "flat no-caps color=primary"
                )
        else:
            empty_state(
                "sensors_off",
                "No devices yet",
                "Devices appear here once an administrator registers them.",
            )

    def clear_filters(self) -> None:
        """Reset every filter (the page is rebuilt so the inputs show it)."""
        ui.navigate.to("/devices")


def _create_device(data: DeviceFormData) -> str:
    with db.session_scope() as session:
        create = DeviceCreate(name=data.name, type=data.type, metadata=data.metadata)
        return devices.create_device(session=session, data=create).name


def create() -> None:
    """Register /devices."""

    @ui.page("/devices")
    async def devices_page() -> None:
        user = current_user()
        listing = DeviceList()
        feed = LiveFeed(listing.receive, accepts=listing.accepts)
        types, _ = await asyncio.gather(run.io_bound(_device_types), listing.load())
        with frame("Devices", user=user, live=feed):
            heading = page_heading("Devices", "Every device registered on this platform")
            if has_role(user, Role.ADMIN):

                async def show_created() -> None:
                    known = await run.io_bound(_device_types)
                    if known is not None:
                        options = {ALL: "All types", **{t: t for t in known}}
                        type_select.set_options(options, value=listing.type)
                    await listing.reload()

                async def saved(data: DeviceFormData) -> None:
                    if await load_acting_user(Role.ADMIN) is None:
                        return
                    name = await run.io_bound(_create_device, data)
                    if name is None:  # the app is shutting down
                        return
                    ui.notify(f"Device “{name}” created", type="positive")
                    background_tasks.create(show_created(), name="show the new device")

                async def open_form() -> None:
                    # suggestions include types added since load
                    known = await run.io_bound(_device_types)
                    if known is None:
                        return
                    DeviceForm(
                        title="New device", action="Create device", on_save=saved, types=known
                    ).open()

                with heading:
                    ui.button("New device", icon="add", on_click=open_form).props(
                        "unelevated no-caps"
                    ).mark("new-device")
            with ui.card().classes("w-full p-0 gap-0 shadow-none border border-slate-200"):
                type_select = listing.toolbar(types or [])
                listing.table()
