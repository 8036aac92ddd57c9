"""Alert rules: every rule with its scope, severity and last firing; enable and disable."""

import uuid
from dataclasses import dataclass
from datetime import datetime

from nicegui import run, ui
from nicegui.events import ValueChangeEventArguments

from app.core import bus, db
from app.core.auth import has_role
from app.core.errors import NotFoundError, ValidationError
from app.core.models import AlertRule, Role
from app.services import alert_views, alerts, rules
from app.services.rules import RuleInput
from components.chips import severity_chip, type_chip
from components.data_table import cell, data_table, row
from components.deferred import Deferred
from components.empty_state import empty_state
from components.frame import frame, page_heading
from components.live import LiveFeed
from components.relative_time import time_label
from pages.auth import current_user, load_acting_user

COLUMNS = ["Name", "Scope", "Severity", "Open alerts", "Last fired", "Enabled", ""]
REFRESH_DELAY = 0.5


@dataclass(frozen=True)
class RuleRow:
    """A rule with what the list shows beside it."""

    rule: AlertRule
    device_name: str | None
    last_fired: datetime | None
    open_alerts: int


def _rule_rows() -> list[RuleRow]:
    with db.session_scope() as session:
        stored = rules.list_rules(session=session)
        fired = alerts.last_fired(session=session)
        opened = alert_views.open_alerts_by_rule(session=session)
        scoped = {rule.device_id for rule in stored if rule.device_id}
        names = alert_views.device_names(session=session, device_ids=scoped) if scoped else {}
    return [
        RuleRow(
            rule=rule,
            device_name=names.get(rule.device_id) if rule.device_id else None,
            last_fired=fired.get(rule.id),
            open_alerts=opened.get(rule.id, 0),
        )
        for rule in stored
    ]


def _enable_rule(rule_id: uuid.UUID, enabled: bool) -> None:
    with db.session_scope() as session:
        rules.update_rule(session=session, rule_id=rule_id, data=RuleInput(enabled=enabled))


async def set_enabled(rule_id: uuid.UUID, enabled: bool) -> str | None:
    """Switch a rule on or off as the signed-in operator; the reason when refused."""
    if await load_acting_user(Role.OPERATOR) is None:
        return "not allowed"
    try:
        await run.io_bound(_enable_rule, rule_id, enabled)
    except NotFoundError:
        return "this rule was deleted in the meantime"
    except ValidationError as error:
        return error.reason
    return None


def _scope(entry: RuleRow) -> None:
    rule = entry.rule
    if rule.device_id is not None:
        with ui.row().classes("items-center gap-1.5 no-wrap"):
            ui.icon("memory", size="xs").classes("text-slate-400")
            if entry.device_name:
                ui.link(entry.device_name, f"/devices/{rule.device_id}").classes(
                    "text-primary no-underline hover:underline whitespace-nowrap"
                )
            else:
                ui.label("a deleted device").classes("text-slate-500 italic")
    elif rule.device_type is not None:
        with ui.row().classes("items-center gap-1.5 no-wrap"):
            ui.label("type").classes("text-xs text-slate-500")
            type_chip(rule.device_type)
    else:
        ui.label("All devices").classes("text-slate-600 whitespace-nowrap")


class RuleList:
    """The table of rules; the enabled switches for operators."""

    def __init__(self, *, can_edit: bool) -> None:
        """`can_edit`: the viewer may switch rules on and off (OPERATOR and above)."""
        self.can_edit = can_edit
        self.entries: list[RuleRow] = []
        self._later = Deferred(self.reload, REFRESH_DELAY)

    async def load(self) -> None:
        """Read every rule with its counts (off the event loop)."""
        found = await run.io_bound(_rule_rows)
        if found is not None:  # None: the app is shutting down
            self.entries = found

    async def reload(self) -> None:
        """Read the rules again and redraw the table."""
        await self.load()
        self.table.refresh()

    def receive(self, channel: str, message: bus.Message) -> None:
        """A rule fired or an alert closed: the counts and times move."""
        del channel, message
        self._later.soon()

    def _switch(self, rule: AlertRule) -> None:
        async def change(event: ValueChangeEventArguments) -> None:
            refused = await set_enabled(rule.id, bool(event.value))
            if refused:
                ui.notify(f"{rule.name}: {refused}", type="negative")
            else:
                state = "enabled" if event.value else "disabled"
                ui.notify(f"Rule “{rule.name}” {state}", type="positive")
            await self.reload()  # the table always shows what is stored

        switch = ui.switch(value=rule.enabled, on_change=change).props("dense color=positive")
        switch.mark(f"enabled-{rule.id}")
        if not self.can_edit:
            switch.disable()
            switch.tooltip("Operators and admins can switch rules on and off")

    @ui.refreshable_method
    def table(self) -> None:
        """Every rule by name, or how to write the first."""
        entries = self.entries
        if not entries:
            with empty_state(
                "rule",
                "No rules yet",
                "A rule opens an alert when a device's telemetry matches its condition.",
            ):
                if self.can_edit:
                    ui.button(
                        "New rule", icon="add", on_click=lambda: ui.navigate.to("/rules/new")
                    ).props("unelevated no-caps")
            return
        with data_table(COLUMNS, align_right=frozenset({3})):
            for entry in entries:
                self._row(entry)

    def _row(self, entry: RuleRow) -> None:
        rule = entry.rule
        tone = "text-slate-900" if rule.enabled else "text-slate-400"
        with row().mark("rule-row").props(f"data-rule-id={rule.id}"):
            with cell(), ui.column().classes("gap-0"):
                ui.link(rule.name or "(unnamed)", f"/rules/{rule.id}").classes(
                    f"font-medium no-underline hover:underline {tone}"
                ).mark("rule-name")
                if rule.metric_name and rule.condition:
                    ui.label(
                        f"{rule.metric_name} {rules.CONDITIONS[rule.condition]} "
                        f"{_number(rule.threshold)}"
                    ).classes("font-mono text-xs text-slate-500")
            with cell():
                _scope(entry)
            with cell():
                severity_chip(rule.severity)
            with cell(right=True, classes="tabular-nums"):
                if entry.open_alerts:
                    ui.link(str(entry.open_alerts), "/alerts").classes(
                        "font-semibold text-red-700 no-underline hover:underline"
                    ).mark("rule-open-alerts")
                else:
                    ui.label("0").classes("text-slate-400")
            with cell(classes="text-slate-600"):
                time_label(entry.last_fired).mark("rule-last-fired")
            with cell():
                self._switch(rule)
            with cell(right=True):
                label = "Edit" if self.can_edit else "View"
                icon = "edit" if self.can_edit else "visibility"
                ui.button(
                    label, icon=icon, on_click=lambda _, r=rule.id: ui.navigate.to(f"/rules/{r}")
                ).props("flat dense no-caps size=sm color=secondary").mark("edit-rule")


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def create() -> None:
    """Register /rules."""

    @ui.page("/rules")
    async def rules_page() -> None:
        user = current_user()
        listing = RuleList(can_edit=has_role(user, Role.OPERATOR))
        feed = LiveFeed(listing.receive, channels=[bus.ALERTS])
        await listing.load()
        with frame("Rules", user=user, live=feed):
            with page_heading("Rules", "When a device is in trouble, and what happens then"):
                if listing.can_edit:
                    ui.button(
                        "New rule", icon="add", on_click=lambda: ui.navigate.to("/rules/new")
                    ).props("unelevated no-caps").mark("new-rule")
            with ui.card().classes("w-full p-0 gap-0 shadow-none border border-slate-200"):
                listing.table()
