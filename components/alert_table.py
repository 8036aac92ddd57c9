"""The alert table: one row per alert, an expandable detail with its notifications.

It shows what a page loaded and awaits the page's callbacks for changes (they run their
service off the event loop); it never reads storage itself (`deliveries` hands it the
notifications the page loaded for an expanded row).
"""

import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from nicegui import ui

from app.core.errors import ValidationError
from app.core.models import Alert, AlertStatus, NotificationDelivery
from app.services.alert_views import AlertView
from components.chips import alert_status_chip, severity_chip
from components.data_table import cell, data_table, row
from components.forms import clear_errors, show_error
from components.metric_tiles import format_value
from components.relative_time import absolute_time, time_label

EM_DASH = "\u2014"
MAX_NOTE = 2000
_DELIVERY_TONE = {
    "SENT": "text-green-700",
    "DELIVERED": "text-green-700",
    "PENDING": "text-slate-600",
    "RETRYING": "text-amber-700",
    "FAILED": "text-red-700",
}


@dataclass(frozen=True)
class AlertActions:
    """What the page does when an operator acts; each may raise ValidationError."""

    acknowledge: Callable[[uuid.UUID], Awaitable[None]]
    resolve: Callable[[uuid.UUID, str | None], Awaitable[None]]
    deliveries: Callable[[uuid.UUID], list[NotificationDelivery]]


class ResolveDialog(ui.dialog):
    """Asks for an optional resolution note, then resolves; errors stay under the note."""

    def __init__(
        self, alert: Alert, resolve: Callable[[uuid.UUID, str | None], Awaitable[None]]
    ) -> None:
        """Build the dialog for `alert`."""
        super().__init__()
        self._alert_id = alert.id
        self._resolve = resolve
        self.on_value_change(lambda event: None if event.value else self.delete())
        with self, ui.card().classes("w-[30rem] max-w-full p-6 gap-3").mark("resolve-dialog"):
            with ui.row().classes("items-center gap-3 no-wrap"):
                ui.icon("task_alt", size="sm").classes("text-positive")
                ui.label("Resolve alert").classes("text-lg font-semibold text-slate-900")
            ui.label(alert.title).classes("text-sm text-slate-600")
            self.note = ui.textarea("Resolution note (optional)")
            self.note.props(
                f"outlined stack-label rows=4 maxlength={MAX_NOTE + 1} counter "
                'hint="What was done, for whoever reads this alert later"'
            ).classes("w-full").mark("resolve-note")
            with ui.row().classes("w-full justify-end gap-2 pt-2"):
                ui.button("Cancel", on_click=self.close).props("flat no-caps color=secondary")
                self.button = ui.button("Resolve", icon="check", on_click=self.save)
                self.button.props("unelevated no-caps color=positive").mark("resolve-confirm")

    async def save(self) -> None:
        """Resolve with the note; close on success, show the reason under the note otherwise."""
        if not self.button.enabled:  # a second press while the first one is resolving
            return
        fields = {"message": self.note}
        clear_errors(fields)
        note = (self.note.value or "").strip() or None
        self.button.disable()
        try:
            await self._resolve(self._alert_id, note)
        except ValidationError as error:
            show_error(fields, error)
            return
        finally:
            self.button.enable()
        self.close()


def _who(name: str | None, moment: datetime | None, verb: str) -> None:
    if moment is None:
        return
    with ui.row().classes("items-center gap-x-1 gap-y-0 text-xs text-slate-500"):
        ui.label(f"{verb} by {name or 'the rule'}").classes("whitespace-nowrap")
        ui.label("·")
        time_label(moment)


class AlertTable:
    """Rows of alerts with Acknowledge and Resolve for operators, and an expandable detail."""

    COLUMNS = ("", "Severity", "Alert", "Device", "Value", "Triggered", "Status", "")

    def __init__(self, actions: AlertActions, *, can_act: bool, show_device: bool = True) -> None:
        """`can_act`: the viewer may acknowledge and resolve (OPERATOR and above)."""
        self.actions = actions
        self.can_act = can_act
        self.show_device = show_device
        self.expanded: set[uuid.UUID] = set()  # kept across refreshes of the rows
        self.on_change: Callable[[], None] = lambda: None
        # where dialogs are made: outside the redrawn rows, or a push would close them
        self.host: ui.element | None = None

    @property
    def columns(self) -> list[str]:
        """The header row; one device's page (narrower) folds Device and Value away."""
        return [c for c in self.COLUMNS if self.show_device or c not in {"Device", "Value"}]

    def show(self, views: list[AlertView]) -> None:
        """Draw the table for these alerts (in the current container)."""
        with data_table(self.columns):
            for view in views:
                self._row(view)
                if view.alert.id in self.expanded:
                    self._detail(view)

    def toggle(self, alert_id: uuid.UUID) -> None:
        """Open or close an alert's detail."""
        self.expanded ^= {alert_id}
        self.on_change()

    def _row(self, view: AlertView) -> None:
        alert = view.alert
        opened = alert.id in self.expanded
        with row().mark("alert-row").props(f"data-alert-id={alert.id}"):
            with cell(classes="w-10 !pr-0"):
                ui.button(
                    icon="expand_more" if opened else "chevron_right",
                    on_click=lambda _, alert_id=alert.id: self.toggle(alert_id),
                ).props("flat round dense size=sm color=secondary").tooltip(
                    "Hide details" if opened else "Show details and notifications"
                ).mark("expand-alert")
            with cell():
                severity_chip(alert.severity)
            with cell(classes="min-w-[14rem]"), ui.column().classes("gap-0.5"):
                ui.label(alert.title).classes("font-medium text-slate-900").mark("alert-title")
                if alert.message:
                    ui.label(alert.message).classes("text-xs text-slate-600 break-words").mark(
                        "alert-message"
                    )
                if not self.show_device and alert.metric_value is not None:
                    reading = f"{alert.metric_name or 'value'} = {format_value(alert.metric_value)}"
                    ui.label(reading).classes("font-mono text-xs text-slate-500").mark(
                        "alert-value"
                    )
            if self.show_device:
                with cell():
                    if alert.device_id and view.device_name:
                        ui.link(view.device_name, f"/devices/{alert.device_id}").classes(
                            "text-primary no-underline hover:underline whitespace-nowrap"
                        ).mark("alert-device")
                    else:
                        ui.label(EM_DASH).classes("text-slate-400")
                self._value(alert)
            with cell(classes="text-slate-600"):
                time_label(alert.triggered_at).mark("alert-triggered")
            with cell(), ui.column().classes("gap-1 items-start"):
                alert_status_chip(alert.status)
                if alert.status == AlertStatus.RESOLVED:
                    _who(view.resolved_by, alert.resolved_at, "Resolved")
                elif alert.status == AlertStatus.ACKNOWLEDGED:
                    _who(view.acknowledged_by, alert.acknowledged_at, "Acked")
            with cell(right=True, classes="whitespace-nowrap"):
                self._buttons(alert)

    @staticmethod
    def _value(alert: Alert) -> None:
        with cell(), ui.column().classes("gap-0"):
            value = EM_DASH if alert.metric_value is None else format_value(alert.metric_value)
            ui.label(value).classes("tabular-nums font-medium text-slate-900").mark("alert-value")
            if alert.metric_name:
                ui.label(alert.metric_name).classes("font-mono text-xs text-slate-500")

    def _buttons(self, alert: Alert) -> None:
        if not self.can_act or alert.status == AlertStatus.RESOLVED:
            return
        with ui.row().classes("gap-1 no-wrap justify-end"):
            if alert.status == AlertStatus.ACTIVE:
                ui.button(
                    "Acknowledge", on_click=lambda _, alert_id=alert.id: self._acknowledge(alert_id)
                ).props("outline dense no-caps size=sm color=secondary padding='3px 12px'").mark(
                    "acknowledge"
                )
            ui.button("Resolve", on_click=lambda _, shown=alert: self._open_resolve(shown)).props(
                "unelevated dense no-caps size=sm color=positive padding='3px 12px'"
            ).mark("resolve")

    async def _acknowledge(self, alert_id: uuid.UUID) -> None:
        try:
            await self.actions.acknowledge(alert_id)
        except ValidationError as error:
            ui.notify(error.reason, type="warning")
        self.on_change()

    def _open_resolve(self, alert: Alert) -> None:
        async def resolve(alert_id: uuid.UUID, note: str | None) -> None:
            await self.actions.resolve(alert_id, note)
            self.on_change()

        with self.host if self.host is not None else contextlib.nullcontext():
            ResolveDialog(alert, resolve).open()

    def _detail(self, view: AlertView) -> None:
        alert = view.alert
        with row().classes("bg-slate-50/70").mark("alert-detail"):
            detail = cell(classes="!pt-2 !pb-4 !pl-14").props(f"colspan={len(self.columns)}")
            with (
                detail,
                ui.element("div").classes("grid grid-cols-1 md:grid-cols-[18rem_1fr] gap-6"),
            ):
                with ui.column().classes("gap-2"):
                    ui.label("Timeline").classes("text-xs font-semibold uppercase text-slate-500")
                    _moment("Triggered", alert.triggered_at, None)
                    _moment("Acknowledged", alert.acknowledged_at, view.acknowledged_by)
                    resolver = view.resolved_by or ("the rule" if alert.resolved_at else None)
                    _moment("Resolved", alert.resolved_at, resolver)
                    if alert.resolution:
                        ui.label(f"“{alert.resolution}”").classes(
                            "text-sm text-slate-700 italic break-words"
                        ).mark("alert-resolution")
                    if alert.rule_id:
                        ui.link("Open the rule", f"/rules/{alert.rule_id}").classes(
                            "text-sm text-primary no-underline hover:underline"
                        )
                with ui.column().classes("gap-2 min-w-0"):
                    ui.label("Notifications").classes(
                        "text-xs font-semibold uppercase text-slate-500"
                    )
                    _deliveries(self.actions.deliveries(alert.id))


def _moment(label: str, moment: datetime | None, who: str | None) -> None:
    with ui.row().classes("items-baseline gap-2 no-wrap text-sm"):
        ui.label(label).classes("w-28 shrink-0 text-slate-500")
        if moment is None:
            ui.label(EM_DASH).classes("text-slate-400")
            return
        ui.label(absolute_time(moment)).classes("text-slate-800 whitespace-nowrap")
        if who:
            ui.label(f"by {who}").classes("text-slate-600 whitespace-nowrap")


def _deliveries(deliveries: list[NotificationDelivery]) -> None:
    if not deliveries:
        ui.label("This alert notified no one (its rule has no notify clause).").classes(
            "text-sm text-slate-500"
        ).mark("no-deliveries")
        return
    with (
        ui.element("div").classes("w-full rounded border border-slate-200 bg-white"),
        data_table(["Channel", "Target", "Status", "Attempts", "Last error", "Updated"]),
    ):
        for delivery in deliveries:
            with row().mark("delivery-row"):
                with cell():
                    icon = "mail" if delivery.channel.lower() == "email" else "webhook"
                    with ui.row().classes("items-center gap-1.5 no-wrap"):
                        ui.icon(icon, size="xs").classes("text-slate-400")
                        ui.label(delivery.channel.lower())
                with cell(classes="font-mono text-xs break-all"):
                    ui.label(delivery.target)
                with cell():
                    tone = _DELIVERY_TONE.get(delivery.status, "text-slate-700")
                    ui.label(delivery.status.capitalize()).classes(f"font-medium {tone}")
                with cell(right=True, classes="tabular-nums"):
                    ui.label(str(delivery.attempts))
                with cell(classes="text-xs text-red-700 break-words max-w-xs"):
                    ui.label(delivery.last_error or EM_DASH)
                with cell(classes="text-slate-600"):
                    time_label(delivery.updated_at)
