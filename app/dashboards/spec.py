"""The dashboard spec (SPEC section 12): pydantic models, `parse_spec` and `spec_to_json`.

Pure: no database, no UI. Pydantic checks each field's shape; `app.dashboards.checks` then
checks what spans fields (the grid, variables, expressions). Every error is one
`app.core.errors.ValidationError` whose field is the JSON path of the first problem, written
`widgets[2].options.metric`, so an editor, GraphQL and the CLI can point at it.
"""

import json
import re
import uuid
from typing import Annotated, Any, Literal

import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator
from pydantic.alias_generators import to_camel

from app.core.errors import ValidationError
from app.dashboards import checks
from app.services import validation
from rules.ast import COMMAND_ACTION, COMMAND_ACTION_RULE

SPEC_VERSION = 1
GRID_COLUMNS = 12
MAX_WIDGETS = 100
MAX_MARKDOWN_LENGTH = 20_000
REFRESH_INTERVALS = ("off", "5s", "10s", "30s", "1m", "5m", "15m", "1h")
SEVERITIES = ("INFO", "WARNING", "CRITICAL")  # as alerts and GraphQL name them
DEVICE_VARIABLE, TYPE_VARIABLE = "$device", "$type"
NAMED_COLORS = ("green", "yellow", "orange", "red", "blue", "purple", "grey")
MAX_RELATIVE_DAYS = 365
MAX_PARAMS_BYTES = 16 * 1024  # as a command sent any other way (app.services.commands)
_WIDGET_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")
_HEX_COLOR = re.compile(r"#[0-9a-fA-F]{6}")


# -- field types: each refuses with a reason; pydantic places it at the field's path ----------
def _reason(check: Any, value: Any, **kwargs: Any) -> Any:
    """Run a shared `app.services.validation` check, its refusal as a pydantic error."""
    try:
        return check(value, "", **kwargs)
    except ValidationError as error:
        raise ValueError(error.reason) from None


def _device(value: str) -> str:
    if value == DEVICE_VARIABLE:
        return value
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValueError(f"'{value[:60]}' is not a device id (a UUID) or $device") from None


def _device_type(value: str) -> str:
    return value if value == TYPE_VARIABLE else _reason(validation.device_type, value)


def _metric(value: str) -> str:
    if not validation.METRIC_NAME.fullmatch(value):
        raise ValueError(f"must be {validation.METRIC_NAME_RULE}")
    return value


def _action(value: str) -> str:
    if not COMMAND_ACTION.fullmatch(value):
        raise ValueError(f"must be {COMMAND_ACTION_RULE}")
    return value


def _widget_id(value: str) -> str:
    if not _WIDGET_ID.fullmatch(value):
        raise ValueError("must be 1 to 40 characters of A-Z a-z 0-9 _ -")
    return value


def _color(value: str) -> str:
    if value not in NAMED_COLORS and not _HEX_COLOR.fullmatch(value):
        raise ValueError(f"must be one of {', '.join(NAMED_COLORS)} or #rrggbb")
    return value


def _number(value: object) -> int | float:
    # bool is an int to Python, never a number to a JSON author; NaN and infinity are no JSON
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    if isinstance(value, float) and not abs(value) < float("inf"):
        raise ValueError("must be a finite number")
    return value


def _text(max_length: int, min_length: int = 0) -> AfterValidator:
    """Stripped one-field text without control characters, as every other form stores it."""
    return AfterValidator(
        lambda v: _reason(validation.text, v, max_length=max_length, min_length=min_length)
    )


def _plain(value: str) -> str:
    return _reason(validation.plain, value)


def _moment(value: str, *, end: bool) -> str:
    if end and value == "now":
        return value
    minutes = checks.relative_minutes(value)
    if minutes is not None and minutes > MAX_RELATIVE_DAYS * 1440:
        raise ValueError(f"must reach back at most {MAX_RELATIVE_DAYS} days")
    if minutes is None and checks.instant(value) is None:
        shown = "now, " if end else ""
        raise ValueError(f"must be {shown}now-<n>m, now-<n>h, now-<n>d or an ISO 8601 time")
    return value


def _params(value: dict[str, Any]) -> dict[str, Any]:
    """Command parameters as JSON has them (what the command service stores and sends)."""
    try:
        _reason(validation.json_object, value, max_bytes=MAX_PARAMS_BYTES)
    except RecursionError:
        raise ValueError("is nested too deeply") from None
    return json.loads(json.dumps(value))


Text = Annotated[pydantic.StrictStr, _text(200)]
Label = Annotated[pydantic.StrictStr, _text(100)]
Number = Annotated[int | float, PlainValidator(_number)]
DeviceRef = Annotated[pydantic.StrictStr, AfterValidator(_device)]
TypeRef = Annotated[pydantic.StrictStr, AfterValidator(_device_type)]
Metric = Annotated[pydantic.StrictStr, AfterValidator(_metric)]
Color = Annotated[pydantic.StrictStr, AfterValidator(_color)]
Expression = Annotated[pydantic.StrictStr, Field(max_length=2000), AfterValidator(_plain)]
Unit = Annotated[pydantic.StrictStr, _text(20, 1)]
Decimals = Annotated[pydantic.StrictInt, Field(ge=0, le=10)]
Start = Annotated[pydantic.StrictStr, AfterValidator(lambda v: _moment(v, end=False))]
End = Annotated[pydantic.StrictStr, AfterValidator(lambda v: _moment(v, end=True))]


class _Model(BaseModel):
    """JSON keys in camelCase, unknown keys refused, no coercion of "3" to 3."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, frozen=True, strict=True, allow_inf_nan=False
    )


# -- dashboard-wide parts ----------------------------------------------------------------------
class TimeRange(_Model):
    """`from` .. `to`: relative (`now-24h` .. `now`) or absolute ISO 8601 times."""

    start: Start = Field("now-24h", alias="from")
    end: End = Field("now", alias="to")


class Variable(_Model):
    """`$device` or `$type`: a dropdown in the header, `?var-device=<id>` in the URL."""

    name: Literal["device", "type"]
    label: Annotated[pydantic.StrictStr, _text(100, 1)]
    default: Annotated[pydantic.StrictStr, Field(max_length=100)] | None = None
    device_type: TypeRef | None = None  # device variables: offer only devices of this type


class Threshold(_Model):
    """From `value` up (until the next threshold) the widget shows `color`."""

    value: Number
    color: Color


Thresholds = Annotated[list[Threshold], Field(max_length=10)]


class ValueSource(_Model):
    """One device's metric, or a rule-language value expression over that device."""

    device: DeviceRef
    metric: Metric | None = None
    expression: Expression | None = None


# -- widget options, one model per type ---------------------------------------------------------
class Series(ValueSource):
    """One line of a timeseries."""

    label: Label | None = None
    color: Color | None = None


class TimeseriesOptions(_Model):
    """Lines over the range (bucketed on the server as the device charts are)."""

    series: Annotated[list[Series], Field(min_length=1, max_length=10)]
    thresholds: Thresholds = []
    unit: Unit | None = None
    min: Number | None = None
    max: Number | None = None
    time: TimeRange | None = None


class StatOptions(ValueSource):
    """The latest value, large, coloured by threshold, with a sparkline of the range."""

    unit: Unit | None = None
    decimals: Decimals | None = None
    sparkline: pydantic.StrictBool = True
    thresholds: Thresholds = []
    time: TimeRange | None = None


class GaugeOptions(ValueSource):
    """The latest value on a dial from `min` to `max`."""

    unit: Unit | None = None
    decimals: Decimals | None = None
    min: Number = 0
    max: Number = 100
    thresholds: Thresholds = []


class BarOptions(_Model):
    """The latest value of one metric for each device of a type."""

    device_type: TypeRef
    metric: Metric
    unit: Unit | None = None
    thresholds: Thresholds = []
    sort: Literal["desc", "asc", "name"] = "desc"
    limit: Annotated[pydantic.StrictInt, Field(ge=1, le=100)] = 20


class DeviceTableOptions(_Model):
    """Devices with their status and latest values, paged."""

    device_type: TypeRef | None = None
    metrics: Annotated[list[Metric], Field(max_length=10)] = []
    status: Literal["ONLINE", "OFFLINE"] | None = None  # OFFLINE: the longest silent first
    page_size: Annotated[pydantic.StrictInt, Field(ge=5, le=100)] = 20


class AlertsOptions(_Model):
    """Open alerts (active or acknowledged), newest first, filtered."""

    severities: Annotated[list[Literal[SEVERITIES]], Field(max_length=3)] = []  # type: ignore[valid-type]
    device: DeviceRef | None = None
    device_type: TypeRef | None = None
    limit: Annotated[pydantic.StrictInt, Field(ge=1, le=100)] = 10


class CommandOptions(_Model):
    """A button, switch or slider that sends `action` to `device` after a confirmation."""

    device: DeviceRef
    action: Annotated[pydantic.StrictStr, AfterValidator(_action)]
    control: Literal["button", "switch", "slider"] = "button"
    label: Label | None = None
    params: Annotated[dict[str, Any], AfterValidator(_params)] = {}
    param: Metric | None = None  # the key of `params` a switch or slider sets
    min: Number | None = None
    max: Number | None = None
    step: Number | None = None
    confirm: Annotated[pydantic.StrictStr, _text(500, 1)] | None = None


class MarkdownOptions(_Model):
    """Text shown as Markdown; raw HTML in it is escaped, never rendered."""

    content: Annotated[
        pydantic.StrictStr, Field(max_length=MAX_MARKDOWN_LENGTH), AfterValidator(_plain)
    ] = ""


class FleetOptions(_Model):
    """A whole-fleet figure: devices online and offline, points per second, or open alerts."""

    show: Literal["devices", "throughput", "alerts"] = "devices"


# -- widgets -------------------------------------------------------------------------------
class _Widget(_Model):
    """Where a widget sits on the 12-column grid, and what it is called."""

    id: Annotated[pydantic.StrictStr, AfterValidator(_widget_id)]
    type: str  # each widget type narrows it to its name: the discriminator of `Widget`
    title: Text = ""
    x: Annotated[pydantic.StrictInt, Field(ge=0, le=GRID_COLUMNS - 1)]
    y: Annotated[pydantic.StrictInt, Field(ge=0, le=10_000)]
    w: Annotated[pydantic.StrictInt, Field(ge=1, le=GRID_COLUMNS)]
    h: Annotated[pydantic.StrictInt, Field(ge=1, le=100)]


class TimeseriesWidget(_Widget):
    type: Literal["timeseries"]
    options: TimeseriesOptions


class StatWidget(_Widget):
    type: Literal["stat"]
    options: StatOptions


class GaugeWidget(_Widget):
    type: Literal["gauge"]
    options: GaugeOptions


class BarWidget(_Widget):
    type: Literal["bar"]
    options: BarOptions


class DeviceTableWidget(_Widget):
    type: Literal["device_table"]
    options: DeviceTableOptions = DeviceTableOptions()


class AlertsWidget(_Widget):
    type: Literal["alerts"]
    options: AlertsOptions = AlertsOptions()


class CommandWidget(_Widget):
    type: Literal["command"]
    options: CommandOptions


class MarkdownWidget(_Widget):
    type: Literal["markdown"]
    options: MarkdownOptions = MarkdownOptions()


class FleetWidget(_Widget):
    type: Literal["fleet"]
    options: FleetOptions = FleetOptions()


Widget = Annotated[
    TimeseriesWidget
    | StatWidget
    | GaugeWidget
    | BarWidget
    | DeviceTableWidget
    | AlertsWidget
    | CommandWidget
    | MarkdownWidget
    | FleetWidget,
    Field(discriminator="type"),
]
WIDGET_TYPES = (
    "timeseries",
    "stat",
    "gauge",
    "bar",
    "device_table",
    "alerts",
    "command",
    "markdown",
    "fleet",
)


class DashboardSpec(_Model):
    """A whole dashboard: what export writes and import reads."""

    version: Literal[1]
    name: Annotated[pydantic.StrictStr, _text(200, 1)]
    description: Annotated[pydantic.StrictStr, _text(2000)] = ""
    time: TimeRange = TimeRange()
    refresh: Literal[REFRESH_INTERVALS] = "off"  # type: ignore[valid-type]
    variables: Annotated[list[Variable], Field(max_length=2)] = []
    widgets: Annotated[list[Widget], Field(max_length=MAX_WIDGETS)]


# -- the two public calls ------------------------------------------------------------------------
def parse_spec(data: object) -> DashboardSpec:
    """A checked spec from parsed JSON; ValidationError naming the JSON path of the problem."""
    if not isinstance(data, dict):
        raise ValidationError("spec", "must be a JSON object")
    version = data.get("version", SPEC_VERSION)
    if type(version) is not int or version != SPEC_VERSION:  # True == 1 in Python
        shown = repr(version)[:40]
        raise ValidationError("version", f"{shown} is not supported; this server reads 1")
    try:
        spec = DashboardSpec.model_validate(data)
    except pydantic.ValidationError as exc:
        raise checks.first_error(exc) from None
    checks.check(spec)
    return spec


def spec_to_json(spec: DashboardSpec) -> dict[str, Any]:
    """The spec as JSON: every default written out, unset optional fields left out."""
    return spec.model_dump(mode="json", by_alias=True, exclude_none=True)
