"""One rule: write it with inline diagnostics, fill a simple threshold from a form, test it
against the last 24 hours of telemetry, save or delete it."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from nicegui import run, ui

from app.core import db
from app.core.auth import has_role
from app.core.config import Settings
from app.core.errors import NotFoundError, RateLimitedError, ValidationError
from app.core.models import AlertRule, Role, User
from app.services import alert_views, charts, devices, rule_testing, rules
from app.services.rule_testing import DeviceReplay
from app.services.rules import RuleInput
from components.chips import severity_chip
from components.confirm_dialog import confirm
from components.deferred import Deferred
from components.empty_state import empty_state
from components.frame import frame
from components.relative_time import absolute_time
from components.replay_view import ReplayView
from components.rule_editor import (
    CHECK_DELAY,
    DiagnosticList,
    RuleCodeEditor,
    check_text,
    marks,
)
from components.section import section
from components.threshold_form import ThresholdForm
from pages.auth import current_user, flash, load_acting_user

REPLAY_SPAN = timedelta(hours=24)
NEW_RULE = """# A rule opens an alert when its condition becomes true on a device.
rule "New rule"
  when temperature > 30
"""
CHEAT_SHEET = (
    ('on type "thermostat"', 'which devices (or on device "id"; none: all)'),
    ("when avg(t, 5m) > 30 for 2m", "the condition, held for 2 minutes"),
    ("severity critical", "info, warning (default) or critical"),
    ("cooldown 10m", "no new alert within 10 minutes (default 5m)"),
    ('message "{device.name}: {value}"', "the alert's text"),
    ('notify email "ops@example.com"', 'or webhook "https://…"'),
    ('command set_fan {"speed": 3}', "sent to the device on firing"),
    ("clear when t < 25", "resolves the alert by itself"),
    ("avg min max sum count last", "window functions: f(metric, 5m)"),
    ("delta rate stddev nodata", "rate is per second; nodata(m, 10m)"),
)


def _load_rule(rule_id: str) -> AlertRule | None:
    try:
        with db.session_scope() as session:
            return rules.get_rule(session=session, rule_id=rule_id)
    except ValidationError:
        return None  # not a UUID: as unknown as any other id


Choices = tuple[set[str], list[str], dict[uuid.UUID, str]]


def _choices() -> Choices:
    """The known metrics, device types and device names the quick form offers."""
    with db.session_scope() as session:
        return (
            alert_views.known_metrics(session=session),
            devices.device_types(session=session),
            alert_views.device_names(session=session),
        )


def _replay(text: str, start: datetime, end: datetime, user_id: uuid.UUID) -> list[DeviceReplay]:
    with db.session_scope() as session:
        return rule_testing.replay(
            session=session, expression=text, start=start, end=end, user_id=user_id
        )


def _chart(device_id: uuid.UUID, metric: str, start: datetime, end: datetime) -> charts.ChartData:
    with db.session_scope() as session:
        return charts.chart_data(
            session=session, device_id=device_id, metric_name=metric, start=start, end=end
        )


def _delete_rule(rule_id: uuid.UUID) -> None:
    with db.session_scope() as session:
        rules.delete_rule(session=session, rule_id=rule_id)


def _store(data: RuleInput, rule_id: uuid.UUID | None, author: uuid.UUID) -> tuple[uuid.UUID, str]:
    """Create the rule (no `rule_id`) or update it; its id and name as stored."""
    with db.session_scope() as session:
        if rule_id is None:
            stored = rules.create_rule(session=session, data=data, created_by=author)
        else:
            stored = rules.update_rule(session=session, rule_id=rule_id, data=data)
        return stored.id, stored.name


class RuleEditorPage:
    """The editor, its diagnostics, the quick form and the replay for one rule (or a new one)."""

    def __init__(
        self,
        rule: AlertRule | None,
        user: User,
        *,
        choices: Choices,
        retention_days: int,
        draft: str = NEW_RULE,
    ) -> None:
        """Edit `rule`, or a new rule starting from `draft` when None; `choices` as `_choices`
        reads them."""
        self.rule = rule
        self.draft = draft
        self.user = user
        self.can_edit = has_role(user, Role.OPERATOR)
        self.retention_days = retention_days
        self.metrics, self.types, self.devices = choices
        self.checker = Deferred(self.check, CHECK_DELAY, restart=True)
        self.form: ThresholdForm | None = None

    @property
    def text(self) -> str:
        """What the editor holds."""
        return self.editor.value or ""

    def build(self) -> None:
        """Breadcrumb, heading with the actions, editor and side cards."""
        name = self.rule.name if self.rule else "New rule"
        with ui.row().classes("items-center gap-1 text-sm text-slate-500"):
            ui.link("Rules", "/rules").classes("text-slate-500 no-underline hover:underline")
            ui.icon("chevron_right", size="xs")
            ui.label(name).classes("text-slate-700 truncate max-w-md")
        self._heading(name)
        with ui.row().classes(
            "w-full items-start gap-2 no-wrap rounded border border-red-200 bg-red-50 "
            "text-red-800 px-3 py-2"
        ) as self.error_banner:
            ui.icon("error_outline", size="xs").classes("mt-0.5")
            self.error_text = ui.label().classes("text-sm break-words").mark("save-error")
        self.error_banner.set_visibility(False)
        with ui.element("div").classes(
            "w-full grid grid-cols-1 lg:grid-cols-[minmax(0,1fr)_24rem] gap-5 items-start"
        ):
            with ui.column().classes("gap-5 min-w-0"):
                self._editor_section()
                self._replay_section()
            with ui.column().classes("gap-5 min-w-0"):
                with section("Quick threshold", icon="tune"):
                    self.form = ThresholdForm(
                        text=lambda: self.text,
                        write=self.write,
                        metrics=sorted(self.metrics),
                        types=self.types,
                        devices=self.devices,
                        enabled=self.can_edit,
                    )
                self._cheat_sheet()
        self.check()

    def _heading(self, name: str) -> None:
        with ui.row().classes("w-full items-center gap-3 no-wrap"):
            self.title = ui.label(name).classes(
                "text-2xl font-semibold text-slate-900 tracking-tight truncate"
            )
            self.title.mark("rule-title")
            if self.rule is not None:
                severity_chip(self.rule.severity)
                if not self.rule.enabled:
                    ui.label("Disabled").classes(
                        "text-xs font-medium text-slate-600 bg-slate-100 rounded px-2 py-0.5"
                    ).mark("rule-disabled")
            ui.space()
            if not self.can_edit:
                ui.label("Read only: operators and admins edit rules").classes(
                    "text-sm text-slate-500"
                ).mark("read-only")
                return
            if self.rule is not None:
                ui.button("Delete", icon="delete", on_click=self.delete).props(
                    "flat no-caps color=negative"
                ).mark("delete-rule")
            ui.button(
                "Create rule" if self.rule is None else "Save rule", icon="save", on_click=self.save
            ).props("unelevated no-caps").mark("save-rule")

    def _editor_section(self) -> None:
        with section("Rule", icon="code"):
            self.editor = RuleCodeEditor(
                self.rule.expression if self.rule else self.draft, on_text=self.changed
            )
            if not self.can_edit:
                self.editor.disable()
            ui.element("div").classes("h-3")
            self.diagnostics = DiagnosticList(self.editor)

    def _replay_section(self) -> None:
        with section("Test against history", icon="history"):
            with ui.row().classes("w-full items-center gap-3 no-wrap"):
                ui.label(
                    "Replays the rule as written over the stored telemetry; nothing is saved "
                    "and no alert is opened."
                ).classes("text-sm text-slate-500 flex-1")
                self.test_button = ui.button(
                    "Test against the last 24 h", icon="play_arrow", on_click=self.test
                ).props("outline no-caps color=primary")
                self.test_button.mark("test-rule")
            self.results = ui.column().classes("w-full gap-2 pt-3 min-w-0").mark("replay-area")

    def _cheat_sheet(self) -> None:
        with section("Syntax", icon="menu_book"), ui.column().classes("w-full gap-2 py-1"):
            for code, meaning in CHEAT_SHEET:
                with ui.column().classes("gap-0"):
                    ui.label(code).classes("font-mono text-xs text-slate-800")
                    ui.label(meaning).classes("text-xs text-slate-500")

    def changed(self, text: str) -> None:
        """The text changed: check it once typing pauses."""
        del text
        self.checker.soon()

    def check(self) -> None:
        """Check the text and show the findings in the editor and under it."""
        text = self.text
        known = self.metrics or None  # before any telemetry, every metric would be "unknown"
        found = check_text(text, retention_days=self.retention_days, known_metrics=known)
        if not text.strip():
            found = []
        self.editor.show_marks(marks(text, found))
        self.diagnostics.show(found, empty_text=not text.strip())
        if self.form is not None and not any(d.severity == "ERROR" for d in found):
            self.form.fill(text)  # the form follows the editor while the text is a rule

    def write(self, text: str) -> None:
        """Replace the editor's text (the quick form) and check it at once."""
        self.editor.value = text
        self.checker.cancel()
        self.check()

    def _show_error(self, message: str | None) -> None:
        self.error_banner.set_visibility(message is not None)
        self.error_text.text = message or ""

    async def save(self) -> None:
        """Create or update the rule from the editor's text; a refusal names field and reason."""
        if (user := await load_acting_user(Role.OPERATOR)) is None:
            return
        self._show_error(None)
        data = RuleInput(expression=self.text)
        existing = self.rule.id if self.rule is not None else None
        try:
            # off the event loop: saving resolves webhook hosts (app/core/outbound.py)
            rule_id, name = await run.io_bound(_store, data, existing, user.id)
        except ValidationError as error:
            self._show_error(f"Not saved. {error.field}: {error.reason}")
            return
        except NotFoundError:
            self._show_error("Not saved: this rule was deleted in the meantime.")
            return
        if self.rule is None:
            flash(f"Rule “{name}” created")
            ui.navigate.to(f"/rules/{rule_id}")
            return
        self.rule.name = name  # the delete confirmation names it as saved
        self.title.text = name
        ui.notify(f"Rule “{name}” saved", type="positive")

    async def delete(self) -> None:
        """Ask, delete, and go back to the rules."""
        assert self.rule is not None
        question = f"“{self.rule.name}” stops watching devices. Its past alerts stay."
        if not await confirm("Delete this rule?", question, action="Delete rule"):
            return
        if await load_acting_user(Role.OPERATOR) is None:
            return
        try:
            await run.io_bound(_delete_rule, self.rule.id)
        except NotFoundError:
            pass  # already gone: the outcome the operator asked for
        flash(f"Rule “{self.rule.name}” deleted")
        ui.navigate.to("/rules")

    async def test(self) -> None:
        """Replay the text over the last 24 hours and show where it would have fired."""
        end = datetime.now(UTC)
        start = end - REPLAY_SPAN
        text = self.text
        self.test_button.props("loading")
        try:
            replays = await run.io_bound(_replay, text, start, end, self.user.id)
        except (ValidationError, RateLimitedError) as error:
            self.results.clear()
            with self.results:
                ui.label(_refusal(error)).classes("text-sm text-red-700").mark("replay-error")
            return
        finally:
            self.test_button.props(remove="loading")
        self.results.clear()
        with self.results:
            if replays and replays[0].truncated:
                ui.label(
                    f"Stopped early (time budget or {rule_testing.MAX_FIRINGS} firings): "
                    f"replayed up to {absolute_time(replays[0].replayed_until)} only."
                ).classes("text-sm text-amber-700").mark("replay-truncated")
            if not replays:
                ui.label("No device is in this rule's scope.").classes(
                    "text-sm text-slate-500"
                ).mark("replay-summary")
                return
            view = ReplayView(
                replays,
                end=end,
                chart=lambda device_id, metric: run.io_bound(_chart, device_id, metric, start, end),
            )
        await view.draw()


def _refusal(error: ValidationError | RateLimitedError) -> str:
    """Why a test did not run, in the page's words."""
    if isinstance(error, ValidationError):
        return f"Cannot test this text. {error.field}: {error.reason}"
    return f"Cannot test now ({error})."


def _not_found(rule_id: str) -> None:
    with ui.card().classes("w-full shadow-none border border-slate-200"):
        with empty_state(
            "search_off",
            "Rule not found",
            f"There is no rule with id “{rule_id}”. It may have been deleted.",
        ):
            ui.button("Back to rules", on_click=lambda: ui.navigate.to("/rules")).props(
                "unelevated no-caps"
            )


def create(settings: Settings) -> None:
    """Register /rules/new and /rules/{rule_id}."""

    @ui.page("/rules/new")
    async def new_rule_page(text: str = "") -> None:
        # `text`: a draft to start from (a dashboard widget's "Create alert" fills one in)
        user = current_user()
        choices = await run.io_bound(_choices)
        with frame("New rule", user=user):
            if choices is not None:  # None: the app is shutting down
                page = RuleEditorPage(
                    None,
                    user,
                    choices=choices,
                    retention_days=settings.retention_days,
                    draft=text or NEW_RULE,
                )
                page.build()

    @ui.page("/rules/{rule_id}")
    async def rule_page(rule_id: str) -> None:
        user = current_user()
        rule, choices = await asyncio.gather(
            run.io_bound(_load_rule, rule_id), run.io_bound(_choices)
        )
        with frame(rule.name if rule else "Rule not found", user=user):
            if rule is None:
                _not_found(rule_id)
                return
            if choices is not None:
                page = RuleEditorPage(
                    rule, user, choices=choices, retention_days=settings.retention_days
                )
                page.build()
