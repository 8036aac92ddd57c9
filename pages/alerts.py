"""Alerts: the open ones and the history, filtered; acknowledge and resolve; pushed live."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from nicegui import run, ui
from sqlmodel import Session

from app.core import bus, db
from app.core.auth import has_role
from app.core.errors import NotFoundError
from app.core.models import AlertSeverity, AlertStatus, NotificationDelivery, Role
from app.services import alert_views, alerts, notifications
from app.services.alert_views import AlertFilter, AlertView
from components.alert_table import AlertActions, AlertTable
from components.deferred import Deferred
from components.empty_state import empty_state
from components.frame import frame, page_heading
from components.live import LiveFeed
from components.section import section
from pages.auth import current_user, load_acting_user

ALL = ""  # the select value meaning "no constraint"
ACTIVE, HISTORY = "active", "history"
REFRESH_DELAY = 0.2  # a burst of pushed changes redraws the list once
RANGES = {
    ALL: "Any time",
    "24h": "Last 24 hours",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
}
_SPANS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
SEVERITIES = {ALL: "All severities", **{s.value: s.value.capitalize() for s in AlertSeverity}}
STATUSES = {ALL: "All statuses", **{s.value: s.value.capitalize() for s in AlertStatus}}


def _acknowledge_alert(alert_id: uuid.UUID, user_id: uuid.UUID) -> None:
    with db.session_scope() as session:
        alerts.acknowledge_alert(session=session, alert_id=alert_id, user_id=user_id)


def _resolve_alert(alert_id: uuid.UUID, user_id: uuid.UUID, note: str | None) -> None:
    with db.session_scope() as session:
        alerts.resolve_alert(session=session, alert_id=alert_id, user_id=user_id, message=note)


async def acknowledge(alert_id: uuid.UUID) -> None:
    """Acknowledge as the signed-in operator; a refused change raises ValidationError."""
    if (user := await load_acting_user(Role.OPERATOR)) is None:
        return
    try:
        await run.io_bound(_acknowledge_alert, alert_id, user.id)
    except NotFoundError:
        ui.notify("This alert no longer exists", type="warning")
        return
    ui.notify("Alert acknowledged", type="positive")


async def resolve(alert_id: uuid.UUID, note: str | None) -> None:
    """Resolve as the signed-in operator, with an optional note."""
    if (user := await load_acting_user(Role.OPERATOR)) is None:
        return
    try:
        await run.io_bound(_resolve_alert, alert_id, user.id, note)
    except NotFoundError:
        ui.notify("This alert no longer exists", type="warning")
        return
    ui.notify("Alert resolved", type="positive")


Deliveries = dict[uuid.UUID, list[NotificationDelivery]]


def _deliveries(session: Session, views: list[AlertView], expanded: set[uuid.UUID]) -> Deliveries:
    """The notifications, newest first, of the shown alerts whose detail is open."""
    shown = {view.alert.id for view in views} & expanded
    return {alert_id: notifications.deliveries_for_alert(session, alert_id) for alert_id in shown}


def _list_alerts(
    where: AlertFilter, tab: str, expanded: set[uuid.UUID]
) -> tuple[list[AlertView], Deliveries]:
    with db.session_scope() as session:
        if tab == ACTIVE:
            found = alert_views.open_alerts(session=session, where=where)
        else:
            found = alert_views.history(session=session, where=where)
        views = alert_views.describe(session=session, shown=found)
        return views, _deliveries(session, views, expanded)


def _device_alerts(
    device_id: uuid.UUID, expanded: set[uuid.UUID]
) -> tuple[list[AlertView], Deliveries]:
    with db.session_scope() as session:
        found = alerts.active_alerts(session=session, device_id=device_id)
        views = alert_views.describe(session=session, shown=found)
        return views, _deliveries(session, views, expanded)


class _LoadedAlerts:
    """The alerts a table shows, with the notifications of the open details, read off the loop.

    Subclasses read in `_read` and draw the loaded alerts in a refreshable `rows`. Pushes
    reload after REFRESH_DELAY (a burst costs one read); an operator's action or an opened
    detail reloads at once.
    """

    def __init__(self, *, can_act: bool, show_device: bool) -> None:
        self.views: list[AlertView] = []
        self.deliveries: Deliveries = {}
        actions = AlertActions(
            acknowledge=acknowledge,
            resolve=resolve,
            deliveries=lambda alert_id: self.deliveries.get(alert_id, []),
        )
        self.table = AlertTable(actions, can_act=can_act, show_device=show_device)
        self.table.on_change = Deferred(self.reload, 0).soon
        self._later = Deferred(self.reload, REFRESH_DELAY)
        self._loads = 0  # numbers the loads: a slower, older one must not win

    async def _read(self) -> tuple[list[AlertView], Deliveries] | None:
        raise NotImplementedError

    async def load(self) -> bool:
        """Read the alerts (off the event loop); False when a newer load started meanwhile."""
        self._loads += 1
        ticket = self._loads
        found = await self._read()
        if found is None or ticket != self._loads:  # None: the app is shutting down
            return False
        self.views, self.deliveries = found
        return True

    async def reload(self) -> None:
        """Read the alerts again and redraw them."""
        if await self.load():
            self.rows.refresh()


class AlertList(_LoadedAlerts):
    """Tabs (open / history), the filter bar and the table, redrawn on every alert change."""

    def __init__(self, *, can_act: bool) -> None:
        """Start on the open alerts, unfiltered."""
        self.tab = ACTIVE
        self.severity = ALL
        self.status = ALL
        self.device = ALL
        self.range = ALL
        super().__init__(can_act=can_act, show_device=True)

    def receive(self, channel: str, message: bus.Message) -> None:
        """An alert was triggered, acknowledged or resolved somewhere: reload soon."""
        del channel, message
        self._later.soon()

    async def _read(self) -> tuple[list[AlertView], Deliveries] | None:
        return await run.io_bound(_list_alerts, self.where(), self.tab, set(self.table.expanded))

    def where(self) -> AlertFilter:
        """The filter the controls describe."""
        start = None
        if self.range:
            start = datetime.now(UTC) - _SPANS[self.range]
        return AlertFilter(
            severity=AlertSeverity(self.severity) if self.severity else None,
            status=AlertStatus(self.status) if self.status else None,
            device_id=uuid.UUID(self.device) if self.device else None,
            start=start,
        )

    @property
    def filtered(self) -> bool:
        """True when any filter narrows the list."""
        return bool(self.severity or self.status or self.device or self.range)

    async def set_filter(self, **values: str) -> None:
        """Change filters and reload."""
        for name, value in values.items():
            setattr(self, name, value or ALL)
        await self.reload()

    def toolbar(self, devices: dict[uuid.UUID, str]) -> None:
        """Tabs on the left, filters on the right."""
        with ui.row().classes(
            "w-full items-center gap-3 px-4 py-2 border-b border-slate-200 no-wrap"
        ):
            with (
                ui.tabs(value=self.tab, on_change=lambda e: self.set_filter(tab=e.value))
                .props("dense no-caps inline-label active-color=primary indicator-color=primary")
                .classes("text-slate-600") as tabs
            ):
                ui.tab(ACTIVE, "Open", icon="notifications_active").mark("tab-active")
                ui.tab(HISTORY, "History", icon="history").mark("tab-history")
            tabs.mark("alert-tabs")
            ui.space()
            props = "outlined dense options-dense"
            ui.select(
                SEVERITIES,
                value=self.severity,
                on_change=lambda e: self.set_filter(severity=e.value),
            ).props(props).classes("w-40").mark("severity-filter")
            ui.select(
                STATUSES, value=self.status, on_change=lambda e: self.set_filter(status=e.value)
            ).props(props).classes("w-40").mark("status-filter")
            options = {ALL: "All devices", **{str(k): name for k, name in devices.items()}}
            ui.select(
                options, value=self.device, on_change=lambda e: self.set_filter(device=e.value)
            ).props(f"{props} use-input input-debounce=0").classes("w-52").mark("device-filter")
            ui.select(
                RANGES, value=self.range, on_change=lambda e: self.set_filter(range=e.value)
            ).props(props).classes("w-40").mark("range-filter")

    @ui.refreshable_method
    def rows(self) -> None:
        """The table of matching alerts, or why there is none."""
        views = self.views
        if views:
            self.table.show(views)
            if self.tab == HISTORY and len(views) >= alert_views.DEFAULT_LIMIT:
                ui.label(
                    f"Showing the newest {alert_views.DEFAULT_LIMIT}; narrow the filters for older."
                ).classes("w-full px-4 py-2 text-xs text-slate-500 border-t border-slate-200")
            return
        if self.filtered:
            with empty_state("search_off", "No alerts match", "Try other filters."):
                ui.button("Clear filters", on_click=lambda: ui.navigate.to("/alerts")).props(
                    "flat no-caps color=primary"
                )
        elif self.tab == ACTIVE:
            empty_state(
                "check_circle",
                "No open alerts",
                "All clear. New alerts appear here the moment a rule fires.",
            )
        else:
            empty_state("history", "No alerts yet", "Alerts appear here once a rule has fired.")


class DeviceAlerts(_LoadedAlerts):
    """A device's open alerts, for its page; acknowledge and resolve by role, pushed live."""

    def __init__(self, device_id: uuid.UUID, *, can_act: bool) -> None:
        """Show the open alerts of `device_id` (once loaded)."""
        self.device_id = device_id
        super().__init__(can_act=can_act, show_device=False)

    def receive(self, message: bus.Message) -> None:
        """An `iot:alerts` message: reload soon when it is about this device."""
        if message.get("device_id") == str(self.device_id):
            self._later.soon()

    async def _read(self) -> tuple[list[AlertView], Deliveries] | None:
        return await run.io_bound(_device_alerts, self.device_id, set(self.table.expanded))

    def create(self) -> None:
        """The section with its table."""
        with section("Open alerts", icon="notifications_active") as body:
            self.table.host = body
            self.rows()

    @ui.refreshable_method
    def rows(self) -> None:
        """The open alerts, newest first, or a quiet line saying there are none."""
        views = self.views
        if not views:
            with ui.row().classes("items-center gap-2 py-1 text-sm text-slate-500"):
                ui.icon("check_circle", size="xs").classes("text-green-600")
                ui.label("No open alerts on this device.").mark("no-device-alerts")
            return
        with ui.element("div").classes("w-full -mx-4 -my-3").style("width: calc(100% + 2rem)"):
            self.table.show(views)


def _device_names() -> dict[uuid.UUID, str]:
    with db.session_scope() as session:
        return alert_views.device_names(session=session)


def create() -> None:
    """Register /alerts."""

    @ui.page("/alerts")
    async def alerts_page() -> None:
        user = current_user()
        listing = AlertList(can_act=has_role(user, Role.OPERATOR))
        feed = LiveFeed(listing.receive, channels=[bus.ALERTS])
        names, _ = await asyncio.gather(run.io_bound(_device_names), listing.load())
        with frame("Alerts", user=user, live=feed):
            with page_heading("Alerts", "What the rules found, and what was done about it"):
                ui.button("Rules", icon="rule", on_click=lambda: ui.navigate.to("/rules")).props(
                    "outline no-caps color=secondary"
                )
            with ui.card().classes("w-full p-0 gap-0 shadow-none border border-slate-200") as card:
                listing.table.host = card
                listing.toolbar(names or {})
                listing.rows()
