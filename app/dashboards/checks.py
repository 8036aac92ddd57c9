"""What a dashboard spec must satisfy across fields, and pydantic's errors as JSON paths.

Pydantic checks each field on its own; the rules here need several at once (the grid, the
variables a widget uses, a value given as metric or expression) and know the path of every
field they look at, so each refusal names the exact place, `widgets[3].id` or
`widgets[0].options.series[1].expression`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pydantic

from app.core.errors import ValidationError
from app.core.models import as_utc
from app.dashboards.expressions import check_expression
from app.services import validation

if TYPE_CHECKING:
    from app.dashboards.spec import DashboardSpec, Threshold, TimeRange

_MAX_SEGMENT = 60  # a pasted megabyte as a key must not come back whole in the error
_WIDGET_TYPES = "timeseries, stat, gauge, bar, device_table, alerts, command, markdown, fleet"
_RELATIVE = re.compile(r"now-([1-9][0-9]{0,5})([mhd])")
_UNIT_MINUTES = {"m": 1, "h": 60, "d": 1440}


def relative_minutes(text: str) -> int | None:
    """How far back `now-<n>m`, `now-<n>h` or `now-<n>d` reaches, None for any other text."""
    match = _RELATIVE.fullmatch(text)
    return int(match.group(1)) * _UNIT_MINUTES[match.group(2)] if match else None


def instant(text: str) -> datetime | None:
    """An absolute ISO 8601 time, aware (no zone means UTC); None if it is not one."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return as_utc(moment)


# -- pydantic's first error, as a path and a reason ----------------------------------------------
def first_error(exc: pydantic.ValidationError) -> ValidationError:
    """The first of pydantic's errors as our ValidationError, its field a JSON path."""
    error = exc.errors(include_url=False, include_input=False, include_context=True)[0]
    loc = list(error["loc"])
    # a widget's loc holds the type its options were read as (`widgets, 0, stat, options`)
    if len(loc) > 2 and loc[0] == "widgets" and error["type"] not in _TAG_ERRORS:
        del loc[2]
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _TAG_ERRORS:
        loc.append("type")
    return ValidationError(path(loc), _REASONS.get(kind, _fallback)(ctx, error["msg"]))


def path(loc: list[Any]) -> str:
    """`["widgets", 2, "options", "metric"]` as `widgets[2].options.metric`."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)[:_MAX_SEGMENT]
    return text or "spec"


def _fallback(ctx: dict[str, Any], msg: str) -> str:
    msg = msg.removeprefix("Value error, ")
    return msg[:1].lower() + msg[1:]


def _length(ctx: dict[str, Any], which: str) -> str:
    key = "max_length" if which == "most" else "min_length"
    return f"must have at {which} {ctx.get(key)} item{'' if ctx.get(key) == 1 else 's'}"


_TAG_ERRORS = {"union_tag_invalid", "union_tag_not_found"}
_REASONS = {
    "missing": lambda ctx, msg: "is required",
    "extra_forbidden": lambda ctx, msg: "is not a known key",
    "union_tag_not_found": lambda ctx, msg: f"is required: one of {_WIDGET_TYPES}",
    "union_tag_invalid": lambda ctx, msg: (
        f"'{str(ctx.get('tag'))[:40]}' is not a widget type; use one of {_WIDGET_TYPES}"
    ),
    "model_type": lambda ctx, msg: "must be a JSON object",
    "model_attributes_type": lambda ctx, msg: "must be a JSON object",
    "dict_type": lambda ctx, msg: "must be a JSON object",
    "list_type": lambda ctx, msg: "must be a list",
    "string_type": lambda ctx, msg: "must be a string",
    "int_type": lambda ctx, msg: "must be a whole number",
    "bool_type": lambda ctx, msg: "must be true or false",
    "literal_error": lambda ctx, msg: f"must be one of {ctx.get('expected')}",
    "too_long": lambda ctx, msg: _length(ctx, "most"),
    "too_short": lambda ctx, msg: _length(ctx, "least"),
    "string_too_long": lambda ctx, msg: f"must be at most {ctx.get('max_length')} characters",
    "greater_than_equal": lambda ctx, msg: f"must be at least {ctx.get('ge')}",
    "less_than_equal": lambda ctx, msg: f"must be at most {ctx.get('le')}",
}


# -- checks across fields -------------------------------------------------------------------
def check(spec: DashboardSpec) -> None:
    """Refuse what no single field shows wrong; the first problem found, in document order."""
    _time(spec.time, "time")
    variables = _variables(spec)
    ids: dict[str, int] = {}
    for index, widget in enumerate(spec.widgets):
        here = f"widgets[{index}]"
        if widget.id in ids:
            raise ValidationError(f"{here}.id", f"duplicate id '{widget.id}'")
        ids[widget.id] = index
        if widget.x + widget.w > 12:
            reason = f"x + w is {widget.x + widget.w}; the grid has 12 columns (x + w <= 12)"
            raise ValidationError(f"{here}.w", reason)
        _overlap(spec, index)
        _options(widget.type, widget.options, f"{here}.options")
        for field, value in _references(widget.options, f"{here}.options"):
            _defined(field, value, variables)


def _variables(spec: DashboardSpec) -> set[str]:
    names: set[str] = set()
    for index, variable in enumerate(spec.variables):
        here = f"variables[{index}]"
        if variable.name in names:
            raise ValidationError(f"{here}.name", f"duplicate variable '{variable.name}'")
        names.add(variable.name)
        if variable.name == "type" and variable.device_type is not None:
            raise ValidationError(f"{here}.deviceType", "only a device variable has a type")
        if variable.default is not None:
            check_default = _DEFAULTS[variable.name]
            check_default(variable.default, f"{here}.default")
    for index, variable in enumerate(spec.variables):
        if variable.device_type == "$type" and "type" not in names:
            _defined(f"variables[{index}].deviceType", "$type", names)
    return names


def _device_default(value: str, field: str) -> None:
    validation.parse_id(value, field)


_DEFAULTS = {"device": _device_default, "type": validation.device_type}


def _overlap(spec: DashboardSpec, index: int) -> None:
    """A widget may not cover an earlier one: the grid packs, it does not stack."""
    widget = spec.widgets[index]
    for before, other in enumerate(spec.widgets[:index]):
        apart_x = widget.x >= other.x + other.w or other.x >= widget.x + widget.w
        apart_y = widget.y >= other.y + other.h or other.y >= widget.y + widget.h
        if not (apart_x or apart_y):
            reason = f"overlaps widgets[{before}] ('{other.id}'); move it or make it smaller"
            raise ValidationError(f"widgets[{index}]", reason)


def _options(kind: str, options: Any, here: str) -> None:
    if kind == "timeseries":
        for index, series in enumerate(options.series):
            _source(series, f"{here}.series[{index}]")
        _range(options.min, options.max, here, required=False)
    elif kind in ("stat", "gauge"):
        _source(options, here)
        if kind == "gauge":
            _range(options.min, options.max, here, required=True)
    elif kind == "command":
        _command(options, here)
    if getattr(options, "thresholds", None):
        _thresholds(options.thresholds, f"{here}.thresholds")
    if getattr(options, "time", None) is not None:
        _time(options.time, f"{here}.time")


def _source(source: Any, here: str) -> None:
    """Exactly one of `metric` and `expression`; an expression the rule language reads."""
    if source.metric is not None and source.expression is not None:
        raise ValidationError(f"{here}.expression", "give a metric or an expression, not both")
    if source.metric is None and source.expression is None:
        raise ValidationError(f"{here}.metric", "is required (or an expression instead)")
    if source.expression is not None and (reason := check_expression(source.expression)):
        raise ValidationError(f"{here}.expression", reason)


def _range(low: Any, high: Any, here: str, *, required: bool) -> None:
    if (required or (low is not None and high is not None)) and not low < high:
        raise ValidationError(f"{here}.max", f"must be greater than min ({low})")


def _thresholds(thresholds: list[Threshold], here: str) -> None:
    for index in range(1, len(thresholds)):
        previous = thresholds[index - 1].value
        if not thresholds[index].value > previous:
            reason = f"must be greater than the threshold before it ({previous})"
            raise ValidationError(f"{here}[{index}].value", reason)


def _command(options: Any, here: str) -> None:
    """A button sends `params`; a switch or slider also sets `params[param]` to its value."""
    if options.control == "button" and options.param is not None:
        raise ValidationError(f"{here}.param", "only a switch or a slider sets a parameter")
    if options.control != "button" and options.param is None:
        raise ValidationError(f"{here}.param", f"is required for a {options.control}")
    for name in ("min", "max", "step"):
        if options.control != "slider" and getattr(options, name) is not None:
            raise ValidationError(f"{here}.{name}", "only a slider has min, max and step")
    if options.control == "slider":
        for name in ("min", "max"):
            if getattr(options, name) is None:
                raise ValidationError(f"{here}.{name}", "is required for a slider")
        _range(options.min, options.max, here, required=True)
        if options.step is not None and not options.step > 0:
            raise ValidationError(f"{here}.step", "must be greater than 0")


def _time(time: TimeRange, here: str) -> None:
    """`from` before `to`; a relative `from` cannot be compared with an absolute `to`."""
    start, end = instant(time.start), instant(time.end)
    back_from, back_to = relative_minutes(time.start), relative_minutes(time.end)
    if start is None and end is not None:
        raise ValidationError(f"{here}.from", "must be absolute too when `to` is absolute")
    if start is not None and end is not None and not start < end:
        raise ValidationError(f"{here}.from", "must be before `to`")
    if back_from is not None and back_to is not None and not back_from > back_to:
        raise ValidationError(f"{here}.from", "must reach further back than `to`")


def _references(options: Any, here: str) -> Iterator[tuple[str, str]]:
    """Every `device` and `deviceType` field of the options, with its path."""
    for name, alias in (("device", "device"), ("device_type", "deviceType")):
        value = getattr(options, name, None)
        if isinstance(value, str):
            yield f"{here}.{alias}", value
    for index, series in enumerate(getattr(options, "series", None) or ()):
        yield f"{here}.series[{index}].device", series.device


def _defined(field: str, value: str, variables: set[str]) -> None:
    if value.startswith("$") and value[1:] not in variables:
        reason = f"uses {value}, but the dashboard has no '{value[1:]}' variable"
        raise ValidationError(field, reason)
