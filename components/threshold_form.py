"""The quick form for a simple threshold rule; it writes canonical rule text into the editor.

The form builds the rule's syntax tree and `rules.format` writes it, so the text is always
the canonical form. Clauses the form does not know (message, notify, command, clear when)
are kept from the editor's current text when it parses.
"""

import math
import re
import uuid
from collections.abc import Callable
from dataclasses import replace

from nicegui import ui

from app.core.errors import ValidationError
from app.services.validation import METRIC_NAME, METRIC_NAME_RULE
from components.forms import clear_errors, show_error
from rules import ast
from rules.errors import RuleSyntaxError
from rules.format import format_rule
from rules.parser import parse_rule

OPERATORS = {
    ">": "> above",
    ">=": "≥ at or above",
    "<": "< below",
    "<=": "≤ at or below",
    "==": "= equal to",
    "!=": "≠ not equal to",
}
SCOPES = {"all": "All devices", "type": "Devices of a type", "device": "One device"}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str | None, field: str, *, optional: bool) -> ast.Duration | None:
    """A duration as the language writes it ("30s", "5m", "1.5h", "1d"); None when empty."""
    value = (text or "").strip()
    if not value:
        if optional:
            return None
        raise ValidationError(field, "is required, e.g. 5m")
    match = _DURATION.fullmatch(value)
    if match is None:
        raise ValidationError(field, "must be a number and a unit: 30s, 5m, 2h or 1d")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValidationError(field, "must be longer than zero")
    return ast.Duration(seconds, value)


def _current(text: str) -> ast.Rule | None:
    try:
        return parse_rule(text)
    except RuleSyntaxError:
        return None


def _number(value: ast.Value) -> float | None:
    """The number a value is (`30`, `-5`), or None for anything else."""
    if isinstance(value, ast.Number):
        return value.value
    if isinstance(value, ast.Negative) and isinstance(value.operand, ast.Number):
        return -value.operand.value
    return None


class ThresholdForm(ui.column):
    """Name, metric, comparison, threshold, severity, scope, `for` and cooldown."""

    def __init__(
        self,
        *,
        text: Callable[[], str],
        write: Callable[[str], None],
        metrics: list[str],
        types: list[str],
        devices: dict[uuid.UUID, str],
        enabled: bool,
    ) -> None:
        """`text()` reads the editor, `write(text)` replaces it; filled from the text if simple."""
        super().__init__()
        self._read_text = text
        self._write_text = write
        self.classes("w-full gap-3").mark("threshold-form")
        props = "outlined dense stack-label"
        with self:
            self.name = ui.input("Name").props(props).classes("w-full").mark("quick-name")
            with ui.row().classes("w-full gap-2 no-wrap"):
                self.metric = ui.input("Metric", autocomplete=metrics).props(
                    f"{props} input-class=font-mono"
                )
                self.metric.classes("flex-1 min-w-0").mark("quick-metric")
                self.operator = ui.select(OPERATORS, label="Is", value=">").props(props)
                self.operator.classes("w-36").mark("quick-operator")
            with ui.row().classes("w-full gap-2 no-wrap"):
                self.threshold = ui.number("Threshold").props(props)
                self.threshold.classes("flex-1 min-w-0").mark("quick-threshold")
                levels = {level: level.capitalize() for level in ast.SEVERITIES}
                self.severity = ui.select(levels, label="Severity", value="warning").props(props)
                self.severity.classes("w-36").mark("quick-severity")
            self.scope = ui.select(SCOPES, label="Watch", value="all", on_change=self._scope_shown)
            self.scope.props(props).classes("w-full").mark("quick-scope")
            self.device_type = ui.select(types, label="Device type", new_value_mode="add-unique")
            self.device_type.props(props).classes("w-full").mark("quick-type")
            self.device = ui.select({str(k): v for k, v in devices.items()}, label="Device")
            self.device.props(f"{props} use-input input-debounce=0").classes("w-full")
            self.device.mark("quick-device")
            with ui.row().classes("w-full gap-2 no-wrap"):
                self.hold = ui.input("For (optional)", placeholder="e.g. 2m").props(
                    f'{props} hint="Must hold this long first"'
                )
                self.hold.classes("flex-1 min-w-0").mark("quick-for")
                self.cooldown = ui.input("Cooldown", value="5m").props(
                    f'{props} hint="No new alert within"'
                )
                self.cooldown.classes("flex-1 min-w-0").mark("quick-cooldown")
            self.fields = {
                "name": self.name,
                "metric": self.metric,
                "threshold": self.threshold,
                "deviceType": self.device_type,
                "deviceId": self.device,
                "for": self.hold,
                "cooldown": self.cooldown,
            }
            self.button = (
                ui.button("Write to editor", icon="keyboard_double_arrow_left", on_click=self.apply)
                .props("outline no-caps color=primary")
                .classes("w-full mt-1")
            )
            self.button.mark("quick-apply")
            ui.label(
                "Writes these fields as rule text; message, notify, command and clear when "
                "stay as they are."
            ).classes("text-xs text-slate-500")
        self.fill(text())
        self._scope_shown()
        if not enabled:
            for field in [*self.fields.values(), self.operator, self.severity, self.scope]:
                field.disable()
            self.button.disable()

    def _scope_shown(self) -> None:
        self.device_type.set_visibility(self.scope.value == "type")
        self.device.set_visibility(self.scope.value == "device")

    def fill(self, text: str) -> None:
        """Take what the form can show from a rule text (a single `metric OP number` rule)."""
        rule = _current(text)
        if rule is None:
            return
        self.name.value = rule.name
        self.severity.value = rule.severity if rule.severity in ast.SEVERITIES else "warning"
        self.cooldown.value = rule.cooldown.text
        self.hold.value = rule.hold.text if rule.hold else ""
        self.scope.value = rule.scope.kind
        if rule.scope.kind == "type":
            if rule.scope.value not in self.device_type.options:
                self.device_type.set_options([*self.device_type.options, rule.scope.value])
            self.device_type.value = rule.scope.value
        elif rule.scope.kind == "device" and rule.scope.value in self.device.options:
            self.device.value = rule.scope.value
        when = rule.when
        if isinstance(when, ast.Comparison) and isinstance(when.left, ast.Metric):
            threshold = _number(when.right)
            if threshold is not None:
                self.metric.value = when.left.name
                self.operator.value = when.op
                self.threshold.value = threshold

    def _scope(self) -> ast.Scope:
        if self.scope.value == "type":
            if not self.device_type.value:
                raise ValidationError("deviceType", "is required: pick or type a device type")
            return ast.Scope("type", self.device_type.value)
        if self.scope.value == "device":
            if not self.device.value:
                raise ValidationError("deviceId", "is required: pick a device")
            return ast.Scope("device", self.device.value)
        return ast.Scope()

    def rule(self) -> ast.Rule:
        """The rule the form describes, with the editor's other clauses; ValidationError else."""
        name = (self.name.value or "").strip()
        if not name:
            raise ValidationError("name", "is required")
        metric = (self.metric.value or "").strip()
        if not METRIC_NAME.fullmatch(metric) or not re.match(r"[A-Za-z_]", metric):
            raise ValidationError("metric", f"must start with a letter and be {METRIC_NAME_RULE}")
        threshold = self.threshold.value
        if threshold is None or not math.isfinite(float(threshold)):
            raise ValidationError("threshold", "must be a number")
        number = float(threshold)
        value: ast.Value = ast.Number(abs(number))
        if number < 0:
            value = ast.Negative(value)  # the language writes a negative number as -5
        when = ast.Comparison(self.operator.value, ast.Metric(metric), value)
        hold = duration(self.hold.value, "for", optional=True)
        cooldown = duration(self.cooldown.value, "cooldown", optional=False)
        assert cooldown is not None
        base = _current(self._read_text()) or ast.Rule(name=name, when=when)
        return replace(
            base,
            name=name,
            when=when,
            scope=self._scope(),
            severity=self.severity.value,
            hold=hold,
            cooldown=cooldown,
        )

    def apply(self) -> None:
        """Write the rule into the editor, or show what is missing under its field."""
        clear_errors(self.fields)
        try:
            text = format_rule(self.rule())
        except ValidationError as error:
            show_error(self.fields, error)
            return
        self._write_text(text)
