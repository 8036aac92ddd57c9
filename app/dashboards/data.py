"""What dashboard widgets show: lines, latest values, bars, device tables, alerts, counts.

Plain functions taking a session, for the pages to run off the event loop
(`run.io_bound`); nothing here knows the UI. Metrics are read through the chart and
telemetry services; an expression is compiled once by the rule language and evaluated over
its window buffers, so a widget shows what a rule watching that value would see. Latest
values of many devices come from one query (one index probe per device and metric), never
one query per device.
"""

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, String, and_, func, literal, select, text, true, union_all
from sqlmodel import Session, col

from app.core.errors import ValidationError
from app.core.models import Alert, AlertSeverity, Device, DeviceStatus, TelemetryPoint, as_utc
from app.dashboards import checks, spec
from app.dashboards.expressions import parse_expression
from app.services import alert_views, charts, devices, telemetry, validation
from app.services.alerts import OPEN
from rules.compiler import CompiledValue, compile_value
from rules.windows import Series, from_us, seconds_to_us, to_us

MAX_POINTS = 500
MAX_ROWS = 1000  # a bar chart, a table page, an alert list or a picker: never more
MAX_METRICS = 10  # columns of a device table
MAX_TYPE_DEVICES = 1000  # devices of a type probed for its metrics, or for a bar chart
_TICK = timedelta(microseconds=1)  # stored ranges are [start, end): one tick more takes `end`
_SORTS = ("desc", "asc", "name")


@dataclass(frozen=True)
class Line:
    """One series over a range: raw samples, bucket averages, or an expression's values."""

    label: str
    unit: str | None
    times: list[datetime]
    values: list[float | None]  # None: unknown there (an expression with no data yet)
    bucket_seconds: int | None  # None: one value per stored sample


@dataclass(frozen=True)
class BarRow:
    """One device's bar: its latest value of the metric."""

    device_id: str
    name: str
    value: float
    time: datetime


@dataclass(frozen=True)
class DeviceRow:
    """One device of a table page, with its latest value of each chosen metric."""

    device_id: str
    name: str
    type: str
    status: str  # a DeviceStatus value: ONLINE, OFFLINE, UNKNOWN
    last_seen: datetime | None
    values: dict[str, float]  # metric -> latest value; absent when the device never sent it


@dataclass(frozen=True)
class DeviceTable:
    """One page of devices and how many match in all."""

    rows: list[DeviceRow]
    total: int


@dataclass(frozen=True)
class AlertRow:
    """An open alert as the alerts widget lists it."""

    alert_id: str
    rule_name: str  # the rule's name when it fired
    device_id: str | None
    device_name: str | None
    severity: str  # INFO, WARNING, CRITICAL
    state: str  # ACTIVE or ACKNOWLEDGED
    message: str | None
    fired_at: datetime


@dataclass(frozen=True)
class Fleet:
    """Device counts by status and open alerts by severity."""

    online: int
    offline: int
    total: int
    open_by_severity: dict[str, int]


# -- ranges and values -----------------------------------------------------------------------
def resolve_range(time: spec.TimeRange, now: datetime) -> tuple[datetime, datetime]:
    """The absolute [start, end] of a spec's range (`now-6h` .. `now`, or ISO 8601 times)."""
    return _moment(time.start, now, "time.from"), _moment(time.end, now, "time.to")


def _moment(value: str, now: datetime, field: str) -> datetime:
    if value == "now":
        return now
    if (minutes := checks.relative_minutes(value)) is not None:
        return now - timedelta(minutes=minutes)
    if (moment := checks.instant(value)) is not None:
        return moment
    raise ValidationError(field, f"'{value[:60]}' is not now, now-<n>m/h/d or an ISO 8601 time")


def _metric(name: str) -> str:
    if not isinstance(name, str) or not validation.METRIC_NAME.fullmatch(name):
        raise ValidationError("metric", f"must be {validation.METRIC_NAME_RULE}")
    return name


def _source(metric: str | None, expression: str | None) -> str | CompiledValue:
    """The metric's name (checked), or the expression compiled."""
    if (metric is None) == (expression is None):
        raise ValidationError("metric", "give a metric or an expression, one of them")
    if metric is not None:
        return _metric(metric)
    return compile_value(parse_expression(expression or ""))


def _newest_at_or_before(
    session: Session, device: uuid.UUID, metric: str, at: datetime
) -> tuple[datetime, float] | None:
    """The newest point with time <= `at`: a bare metric's value when a range opens."""
    query = (
        select(TelemetryPoint.time, TelemetryPoint.value)
        .where(
            TelemetryPoint.device_id == device,
            TelemetryPoint.metric_name == metric,
            TelemetryPoint.time <= at,
        )
        .order_by(col(TelemetryPoint.time).desc())
        .limit(1)
    )
    row = session.exec(query).first()
    return (as_utc(row[0]), row[1]) if row else None


def recent_series(
    *, session: Session, device_id: str, metrics: Mapping[str, float], now: datetime
) -> dict[str, Series]:
    """Window buffers of `metrics` (metric -> window, s) as they stand at `now`.

    They hold the stored points of the longest window and the newest point before it (so a
    bare metric has its latest value however long ago it came). Windows are read whole, as
    the rule engine reads them after a restart; each buffer keeps at most its own bound.
    """
    device = validation.parse_id(device_id, "device")
    found = {name: Series(seconds_to_us(seconds)) for name, seconds in metrics.items()}
    opens = now - timedelta(seconds=max(metrics.values(), default=0.0))
    for name in metrics:
        before = _newest_at_or_before(session, device, name, opens)
        if before is not None:
            found[name].add(to_us(before[0]), before[1])
    windowed = [name for name, seconds in metrics.items() if seconds > 0]
    if windowed:
        points = telemetry.history(
            session=session,
            metrics=windowed,
            start=opens + _TICK,
            end=now + _TICK,
            device_ids=[device],
        )
        for point in points:
            found[point.metric_name].add(to_us(as_utc(point.time)), point.value)
    return found


# -- one device: a line over a range, the latest value -------------------------------------------
def series(
    *,
    session: Session,
    device_id: str,
    metric: str | None,
    expression: str | None,
    start: datetime,
    end: datetime,
    max_points: int = MAX_POINTS,
) -> Line:
    """A metric or an expression of one device over [start, end], at most `max_points` values.

    A metric: its stored samples, or bucket averages when there are more than `max_points`
    (bucketed on the server, as the device charts are). An expression: each metric it reads
    is loaded over [start - its window, end] the same way, bounded by `max_points`, plus the
    newest point before that; a metric that had to be bucketed feeds its bucket averages
    into the windows (placed at each bucket's start), so `count`, `sum` and `rate` over it
    count buckets, not samples. The value is evaluated at each sample time when there are
    at most `max_points` and nothing was bucketed, otherwise at evenly spaced round times.
    """
    device = validation.parse_id(device_id, "device")
    validation.page(max_points, 0, max_limit=charts.MAX_POINTS)
    compiled = _source(metric, expression)
    if isinstance(compiled, str):
        data = charts.chart_data(
            session=session,
            device_id=device,
            metric_name=compiled,
            start=start,
            end=end,
            max_points=max_points,
        )
        if data.bucketed:
            times = [as_utc(bucket.bucket) for bucket in data.aggregates]
            values: list[float | None] = [bucket.avg for bucket in data.aggregates]
        else:
            times = [as_utc(sample.time) for sample in data.samples]
            values = [sample.value for sample in data.samples]
        return Line(compiled, data.unit, times, values, data.bucket_seconds)
    points, bucketed = _expression_points(
        session, device, compiled, start=start, end=end, max_points=max_points
    )
    label = expression or ""
    if not points and compiled.metrics:
        return Line(label, None, [], [], None)
    low, high = to_us(start), to_us(end)
    sampled = sorted({time for time, _, _ in points if low <= time <= high})
    if not bucketed and 0 < len(sampled) <= max_points:
        at, width = sampled, None
    else:
        width = charts.bucket_width(end - start, max_points)
        step = seconds_to_us(width)
        at = list(range(math.ceil(low / step) * step, high + 1, step))
    values = _evaluate(compiled, points, at)
    return Line(label, None, [from_us(time) for time in at], values, width)


def _expression_points(
    session: Session,
    device: uuid.UUID,
    compiled: CompiledValue,
    *,
    start: datetime,
    end: datetime,
    max_points: int,
) -> tuple[list[tuple[int, str, float]], bool]:
    """Every point the expression reads for [start, end], by time; True if any is bucketed."""
    points: list[tuple[int, str, float]] = []
    bucketed = False
    for name, seconds in compiled.metrics.items():
        opens = start - timedelta(seconds=seconds)
        before = _newest_at_or_before(session, device, name, opens - _TICK)
        if before is not None:
            points.append((to_us(before[0]), name, before[1]))
        data = charts.chart_data(
            session=session,
            device_id=device,
            metric_name=name,
            start=opens,
            end=end + _TICK,
            max_points=max_points,
        )
        bucketed |= data.bucketed
        points += [(to_us(as_utc(a.bucket)), name, a.avg) for a in data.aggregates]
        points += [(to_us(as_utc(s.time)), name, s.value) for s in data.samples]
    points.sort()
    return points, bucketed


def _evaluate(
    compiled: CompiledValue, points: list[tuple[int, str, float]], at: list[int]
) -> list[float | None]:
    """The value at each time of `at` (ascending), feeding the points in time order."""
    buffers = {name: Series(seconds_to_us(s)) for name, s in compiled.metrics.items()}
    values: list[float | None] = []
    index = 0
    for now in at:
        while index < len(points) and points[index][0] <= now:
            time, name, value = points[index]
            buffers[name].add(time, value)
            index += 1
        values.append(compiled.fn(buffers, now))
    return values


def latest(
    *,
    session: Session,
    device_id: str,
    metric: str | None,
    expression: str | None,
    now: datetime,
) -> tuple[datetime, float] | None:
    """The newest value of a metric, or an expression's value at `now`; None when unknown."""
    device = validation.parse_id(device_id, "device")
    compiled = _source(metric, expression)
    if isinstance(compiled, str):
        sample = telemetry.latest(session=session, device_id=device, metric_name=compiled)
        return None if sample is None else (as_utc(sample.time), sample.value)
    buffers = recent_series(
        session=session, device_id=str(device), metrics=compiled.metrics, now=now
    )
    value = compiled.fn(buffers, to_us(now))
    return None if value is None else (now, value)


# -- many devices: bars, table pages ------------------------------------------------------------
def _newest_values(device_ids: Select, metrics: list[str]) -> Select:
    """(device id, metric, value, time) of the newest point of each device and metric.

    One query: for each (device, metric) pair the newest time is one probe of the primary
    key (device_id, metric_name, time), and its row a second one.
    """
    names = union_all(*(select(literal(name, String).label("metric")) for name in metrics))
    wanted = names.subquery("wanted")
    chosen = device_ids.subquery("chosen")
    newest = (
        select(func.max(TelemetryPoint.time))
        .where(
            TelemetryPoint.device_id == chosen.c.id, TelemetryPoint.metric_name == wanted.c.metric
        )
        .scalar_subquery()
    )
    pairs = (
        select(chosen.c.id, wanted.c.metric, newest.label("newest"))
        .select_from(chosen.join(wanted, true()))
        .subquery("pairs")
    )
    return select(pairs.c.id, pairs.c.metric, TelemetryPoint.value, TelemetryPoint.time).join(
        TelemetryPoint,
        and_(
            TelemetryPoint.device_id == pairs.c.id,
            TelemetryPoint.metric_name == pairs.c.metric,
            TelemetryPoint.time == pairs.c.newest,
        ),
    )


def bar(
    *,
    session: Session,
    device_type: str,
    metric: str,
    sort: str,
    limit: int,
    max_devices: int = MAX_TYPE_DEVICES,
) -> list[BarRow]:
    """The latest value of `metric` for each device of a type, sorted, at most `limit`.

    At most `max_devices` devices of the type are read, so that a type of 100,000 devices
    costs what one of 1,000 does (over 10,000, every device's value took about 100 ms):
    sorted by name, the first of them by name; sorted by value, the ones heard from most
    recently (a device silent for longer than a thousand others holds a stale value).
    """
    validation.device_type(device_type, "deviceType")
    _metric(metric)
    if sort not in _SORTS:
        raise ValidationError("sort", f"must be one of {', '.join(_SORTS)}")
    validation.page(limit, 0, max_limit=MAX_ROWS)
    of_type = select(Device.id).where(Device.type == device_type)
    if sort == "name":
        of_type = of_type.order_by(col(Device.name), col(Device.id))
    else:
        recent = col(Device.last_seen_at).desc().nulls_last()
        of_type = of_type.order_by(recent, col(Device.name), col(Device.id))
    newest = _newest_values(of_type.limit(max_devices), [metric]).subquery("newest")
    order = {
        "desc": (newest.c.value.desc(), Device.name),
        "asc": (newest.c.value.asc(), Device.name),
        "name": (Device.name,),
    }[sort]
    query = (
        select(Device.id, Device.name, newest.c.value, newest.c.time)
        .join(newest, newest.c.id == Device.id)
        .order_by(*order, Device.id)
        .limit(limit)
    )
    return [
        BarRow(str(device), name, value, as_utc(time))
        for device, name, value, time in session.exec(query)
    ]


def device_table(
    *,
    session: Session,
    device_type: str | None,
    metrics: list[str],
    status: str | None,
    offset: int,
    limit: int,
) -> DeviceTable:
    """One page of devices with their latest values of `metrics`.

    By name; OFFLINE devices oldest contact first (never seen before all), the ones silent
    longest on top.
    """
    where = devices.DeviceFilter(
        type=validation.device_type(device_type, "deviceType") if device_type else None,
        status=validation.any_of(status, "status", DeviceStatus) if status else None,
    )
    if len(metrics) > MAX_METRICS:
        raise ValidationError("metrics", f"must have at most {MAX_METRICS} items")
    wanted = [_metric(name) for name in dict.fromkeys(metrics)]
    limit, offset = validation.page(limit, offset, max_limit=MAX_ROWS)
    query = select(Device)
    if where.type:
        query = query.where(Device.type == where.type)
    if where.status:
        query = query.where(Device.status == where.status)
    if where.status == DeviceStatus.OFFLINE:
        query = query.order_by(col(Device.last_seen_at).asc().nulls_first())
    ordered = query.order_by(col(Device.name), col(Device.id)).offset(offset).limit(limit)
    page = list(session.scalars(ordered))
    values: dict[uuid.UUID, dict[str, float]] = {device.id: {} for device in page}
    if page and wanted:
        shown = select(Device.id).where(col(Device.id).in_(list(values)))
        for device_id, name, value, _ in session.exec(_newest_values(shown, wanted)):
            values[device_id][name] = value
    rows = [
        DeviceRow(
            device_id=str(device.id),
            name=device.name,
            type=device.type,
            status=str(device.status),
            last_seen=as_utc(device.last_seen_at) if device.last_seen_at else None,
            values=values[device.id],
        )
        for device in page
    ]
    return DeviceTable(rows, devices.count_devices(session=session, where=where))


# -- alerts and the fleet ----------------------------------------------------------------------
def alerts(
    *,
    session: Session,
    severities: list[str],
    device_id: str | None,
    device_type: str | None,
    limit: int,
) -> list[AlertRow]:
    """Open (ACTIVE or ACKNOWLEDGED) alerts, newest first; empty `severities` means all."""
    wanted = [validation.any_of(s, "severities", AlertSeverity) for s in severities]
    limit, _ = validation.page(limit, 0, max_limit=MAX_ROWS)
    query = (
        select(Alert, Device.name)
        .outerjoin(Device, col(Device.id) == Alert.device_id)
        .where(col(Alert.status).in_(OPEN))
    )
    if wanted:
        query = query.where(col(Alert.severity).in_(wanted))
    if device_id is not None:
        query = query.where(Alert.device_id == validation.parse_id(device_id, "device"))
    if device_type is not None:
        query = query.where(Device.type == validation.device_type(device_type, "deviceType"))
    query = query.order_by(col(Alert.triggered_at).desc(), col(Alert.id)).limit(limit)
    return [
        AlertRow(
            alert_id=str(alert.id),
            rule_name=alert.title,
            device_id=str(alert.device_id) if alert.device_id else None,
            device_name=name,
            severity=str(alert.severity),
            state=str(alert.status),
            message=alert.message,
            fired_at=as_utc(alert.triggered_at),
        )
        for alert, name in session.exec(query)
    ]


def fleet(*, session: Session) -> Fleet:
    """How many devices are online and offline, and open alerts by severity (two queries)."""
    by_status = dict(
        session.exec(select(Device.status, func.count()).group_by(Device.status)).all()
    )
    open_query = (
        select(Alert.severity, func.count())
        .where(col(Alert.status).in_(OPEN))
        .group_by(Alert.severity)
    )
    by_severity = dict(session.exec(open_query).all())
    return Fleet(
        online=by_status.get(DeviceStatus.ONLINE, 0),
        offline=by_status.get(DeviceStatus.OFFLINE, 0),
        total=sum(by_status.values()),
        open_by_severity={str(s): by_severity.get(s, 0) for s in AlertSeverity},
    )


# -- pickers ------------------------------------------------------------------------------------
def device_choices(
    *, session: Session, device_type: str | None, limit: int = 500
) -> list[tuple[str, str]]:
    """(id, name) of the devices (of a type), by name: the device pickers and `$device`."""
    where = devices.DeviceFilter(
        type=validation.device_type(device_type, "deviceType") if device_type else None
    )
    found = devices.list_devices(session=session, where=where, limit=limit, max_limit=MAX_ROWS)
    return [(str(device.id), device.name) for device in found]


def type_choices(*, session: Session) -> list[str]:
    """The device types in use, sorted: the type pickers and `$type`."""
    return devices.device_types(session=session)


# a skip scan like telemetry.metric_names, over every device of the type at once
_TYPE_METRICS = text(
    "WITH RECURSIVE names(device_id, name) AS ("
    " SELECT d.id, (SELECT min(t.metric_name) FROM device_telemetry t WHERE t.device_id = d.id)"
    "  FROM (SELECT id FROM devices WHERE type = :type ORDER BY id LIMIT :devices) d"
    " UNION ALL"
    " SELECT n.device_id, (SELECT min(t.metric_name) FROM device_telemetry t"
    "  WHERE t.device_id = n.device_id AND t.metric_name > n.name)"
    " FROM names n WHERE n.name IS NOT NULL"
    ") SELECT DISTINCT name FROM names WHERE name IS NOT NULL ORDER BY name LIMIT :limit"
)


def metric_choices(
    *, session: Session, device_id: str | None, device_type: str | None
) -> list[str]:
    """The metrics a device, or the devices of a type, have sent, sorted (all known if neither).

    For a type, the first MAX_TYPE_DEVICES devices of it are asked.
    """
    if device_id is not None:
        device = validation.parse_id(device_id, "device")
        return telemetry.metric_names(
            session=session, device_id=device, limit=MAX_ROWS, max_limit=MAX_ROWS
        )
    if device_type is not None:
        values = {
            "type": validation.device_type(device_type, "deviceType"),
            "devices": MAX_TYPE_DEVICES,
            "limit": MAX_ROWS,
        }
        return list(session.connection().execute(_TYPE_METRICS, values).scalars())
    return sorted(alert_views.known_metrics(session=session))[:MAX_ROWS]
