"""Telemetry: batch writes (COPY on PostgreSQL), series, latest values, aggregates."""

import re
import uuid
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlmodel import Session, col

from app import bus
from app.errors import ValidationError
from app.models import (
    Device,
    DeviceStatus,
    TelemetryHourly,
    TelemetryPoint,
    TelemetryRollupPending,
)
from app.services import events
from app.services.validation import parse_id

HOUR = 3600
MAX_BUCKETS = 10_000
_POINTS = TelemetryPoint.__table__
_HOURLY = TelemetryHourly.__table__
_PENDING = TelemetryRollupPending.__table__


@dataclass(frozen=True, slots=True)
class Point:
    """A validated value on its way to storage."""

    device_id: uuid.UUID
    metric_name: str
    time: datetime
    value: float
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class Sample:
    """A stored value as queries return it."""

    time: datetime
    value: float
    unit: str | None


@dataclass(frozen=True, slots=True)
class Aggregate:
    """Statistics of one time bucket."""

    bucket: datetime
    avg: float
    min: float
    max: float
    count: int


@dataclass(frozen=True)
class WriteResult:
    """What a batch write did."""

    stored: int
    dropped_devices: frozenset[uuid.UUID]  # ids with no device (deleted since validation)
    came_online: frozenset[uuid.UUID]  # devices whose status just became ONLINE


def _hour(moment: datetime) -> datetime:
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


def rollups_are_continuous_aggregate(connection: Connection) -> bool:
    """True when `telemetry_hourly` is TimescaleDB's view rather than our own table."""
    if connection.dialect.name != "postgresql":
        return False
    # remembered per pooled connection: the answer only changes with a migration
    if "continuous_rollups" not in connection.info:
        kind = connection.execute(
            text("SELECT relkind FROM pg_class WHERE oid = to_regclass('telemetry_hourly')")
        ).scalar()
        connection.info["continuous_rollups"] = kind != "r"
    return connection.info["continuous_rollups"]


def write_points(
    *, session: Session, points: Sequence[Point], seen_at: datetime | None
) -> WriteResult:
    """Store points, skipping any already stored; mark their devices ONLINE and seen.

    `seen_at=None` imports history: the devices' status and last contact stay as they are
    (a device is not online because its past readings were loaded).
    """
    device_ids = {point.device_id for point in points}
    statuses = dict(
        session.exec(select(Device.id, Device.status).where(col(Device.id).in_(device_ids))).all()
    )
    kept = [point for point in points if point.device_id in statuses]
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        stored = _copy_points(connection, kept)
    else:
        stored = _insert_points(connection, kept)
    if not rollups_are_continuous_aggregate(connection):
        _mark_pending(connection, kept)
    came_online = frozenset(
        i for i, s in statuses.items() if s != DeviceStatus.ONLINE and seen_at is not None
    )
    if statuses and seen_at is not None:
        session.exec(
            update(Device)
            .where(col(Device.id).in_(statuses))
            .values(status=DeviceStatus.ONLINE, last_seen_at=seen_at)
        )
    _announce(session, kept, came_online, seen_at)
    return WriteResult(
        stored=stored,
        dropped_devices=frozenset(device_ids - statuses.keys()),
        came_online=came_online,
    )


def _announce(
    session: Session,
    points: Sequence[Point],
    came_online: frozenset[uuid.UUID],
    at: datetime | None,
) -> None:
    """Queue the batch's points (one message per device) and status changes for the bus."""
    by_device: dict[uuid.UUID, list[dict]] = {}
    for p in points:
        by_device.setdefault(p.device_id, []).append(
            {"metric": p.metric_name, "time": p.time.isoformat(), "value": p.value, "unit": p.unit}
        )
    for device_id, payload in by_device.items():
        message = {"device_id": str(device_id), "points": payload}
        events.emit(session, bus.telemetry_channel(device_id), message)
    if came_online and at is not None:
        query = select(Device).where(col(Device.id).in_(came_online))
        for device in session.scalars(query.execution_options(populate_existing=True)):
            events.device_event(session, "STATUS_CHANGED", device, at.isoformat())


def _copy(cursor: psycopg.Cursor, table: str, points: Sequence[Point]) -> None:
    copy_sql = (
        f"COPY {table} (time, device_id, metric_name, value, unit) FROM STDIN (FORMAT BINARY)"
    )
    with cursor.copy(copy_sql) as copy:
        copy.set_types(["timestamptz", "uuid", "text", "float8", "text"])
        for point in points:
            copy.write_row(
                (point.time, point.device_id, point.metric_name, point.value, point.unit)
            )


def _copy_points(connection: Connection, points: Sequence[Point]) -> int:
    if not points:
        return 0
    raw = connection.connection.driver_connection
    with raw.cursor() as cursor:
        # fast path: COPY straight into the table, inside a savepoint; a duplicate (a
        # redelivered message) undoes just this attempt and the batch takes the slow path
        try:
            with raw.transaction():
                _copy(cursor, "device_telemetry", points)
            return len(points)
        except psycopg.errors.UniqueViolation:
            pass
        # duplicate-safe path: COPY into a staging table, then one INSERT skipping conflicts
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS telemetry_staging ("
            " time timestamptz, device_id uuid, metric_name text, value float8, unit text"
            ") ON COMMIT DELETE ROWS"
        )
        _copy(cursor, "telemetry_staging", points)
        cursor.execute(
            "INSERT INTO device_telemetry (time, device_id, metric_name, value, unit)"
            " SELECT time, device_id, metric_name, value, unit FROM telemetry_staging"
            " ON CONFLICT DO NOTHING"
        )
        stored = cursor.rowcount
        cursor.execute("DELETE FROM telemetry_staging")
    return stored


def _insert_points(connection: Connection, points: Sequence[Point]) -> int:
    if not points:
        return 0
    rows = [
        {
            "time": p.time,
            "device_id": p.device_id,
            "metric_name": p.metric_name,
            "value": p.value,
            "unit": p.unit,
            "metadata": {},
        }
        for p in points
    ]
    before = connection.execute(select(func.total_changes())).scalar_one()
    connection.execute(insert(_POINTS).prefix_with("OR IGNORE"), rows)
    return connection.execute(select(func.total_changes())).scalar_one() - before


def _mark_pending(connection: Connection, points: Iterable[Point]) -> None:
    hours = set()
    last_time = last_hour = None
    for point in points:
        if point.time is not last_time:  # a message's points share one time object
            last_time, last_hour = point.time, _hour(point.time)
        hours.add((point.device_id, point.metric_name, last_hour))
    if not hours:
        return
    rows = [{"device_id": d, "metric_name": m, "bucket": h} for d, m, h in sorted(hours)]
    if connection.dialect.name == "postgresql":
        # a no-op update rather than DO NOTHING: it locks the row, so the rollup job cannot
        # claim this hour and recompute it before this batch's points are committed
        statement = pg_insert(_PENDING)
        statement = statement.on_conflict_do_update(
            index_elements=["device_id", "metric_name", "bucket"],
            set_={"bucket": statement.excluded.bucket},
        )
    else:
        # SQLite runs one writer at a time, so there is no such race
        statement = insert(_PENDING).prefix_with("OR IGNORE")
    connection.execute(statement, rows)


def _check_range(start: datetime, end: datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise ValidationError("from", "times need a time zone")
    if start >= end:
        raise ValidationError("from", "must be before 'to'")


def series(
    *,
    session: Session,
    device_id: uuid.UUID | str,
    metric_name: str,
    start: datetime,
    end: datetime,
    limit: int = 1000,
) -> list[Sample]:
    """Stored values of one metric with start <= time < end, oldest first, at most `limit`."""
    _check_range(start, end)
    query = (
        select(TelemetryPoint.time, TelemetryPoint.value, TelemetryPoint.unit)
        .where(
            TelemetryPoint.device_id == parse_id(device_id, "deviceId"),
            TelemetryPoint.metric_name == metric_name,
            TelemetryPoint.time >= start,
            TelemetryPoint.time < end,
        )
        .order_by(col(TelemetryPoint.time))
        .limit(limit)
    )
    return [Sample(t, v, u) for t, v, u in session.exec(query)]


def history(
    *,
    session: Session,
    metrics: Collection[str],
    start: datetime,
    end: datetime,
    device_ids: Collection[uuid.UUID] | None = None,
) -> Iterator[Point]:
    """Stored points of `metrics` with start <= time < end, oldest first, streamed.

    For the rule engine: re-priming its windows after a restart, and replaying a draft
    rule over history. Streamed in chunks, so a long range never sits in memory at once.
    """
    _check_range(start, end)
    if not metrics or (device_ids is not None and not device_ids):
        return
    query = (
        select(
            TelemetryPoint.device_id,
            TelemetryPoint.metric_name,
            TelemetryPoint.time,
            TelemetryPoint.value,
        )
        .where(
            col(TelemetryPoint.metric_name).in_(list(metrics)),
            TelemetryPoint.time >= start,
            TelemetryPoint.time < end,
        )
        .order_by(col(TelemetryPoint.time))
        .execution_options(yield_per=5000)
    )
    if device_ids is not None:
        query = query.where(col(TelemetryPoint.device_id).in_(list(device_ids)))
    for device_id, metric, at, value in session.exec(query):
        yield Point(device_id, metric, at, value)


def latest(*, session: Session, device_id: uuid.UUID | str, metric_name: str) -> Sample | None:
    """The newest value of one metric, or None."""
    query = (
        select(TelemetryPoint.time, TelemetryPoint.value, TelemetryPoint.unit)
        .where(
            TelemetryPoint.device_id == parse_id(device_id, "deviceId"),
            TelemetryPoint.metric_name == metric_name,
        )
        .order_by(col(TelemetryPoint.time).desc())
        .limit(1)
    )
    row = session.exec(query).first()
    return Sample(*row) if row else None


def metric_names(*, session: Session, device_id: uuid.UUID | str) -> list[str]:
    """The metrics a device has reported, sorted."""
    # a skip scan over the primary key: one index probe per metric, however many points
    statement = text(
        "WITH RECURSIVE names(name) AS ("
        " SELECT min(metric_name) FROM device_telemetry WHERE device_id = :device"
        " UNION ALL"
        " SELECT (SELECT min(metric_name) FROM device_telemetry"
        "  WHERE device_id = :device AND metric_name > names.name)"
        " FROM names WHERE names.name IS NOT NULL"
        ") SELECT name FROM names WHERE name IS NOT NULL"
    ).bindparams(bindparam("device", type_=_POINTS.c.device_id.type))
    return list(
        session.connection()
        .execute(statement, {"device": parse_id(device_id, "deviceId")})
        .scalars()
    )


def latest_values(*, session: Session, device_id: uuid.UUID | str) -> dict[str, Sample]:
    """The newest value of every metric of a device."""
    found = {}
    for name in metric_names(session=session, device_id=device_id):
        sample = latest(session=session, device_id=device_id, metric_name=name)
        if sample is not None:
            found[name] = sample
    return found


def _bucket_column(connection: Connection, width: int) -> ColumnElement[int]:
    # epoch seconds floored to a multiple of `width`: buckets align on UTC midnight
    if connection.dialect.name == "postgresql":
        expression = f"floor(extract(epoch from time) / {width:d})::bigint * {width:d}"
    else:
        expression = f"(CAST(strftime('%s', time) AS INTEGER) / {width:d}) * {width:d}"
    return literal_column(expression, Integer)


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def _raw_partials(
    connection: Connection,
    device_id: uuid.UUID,
    metric_name: str,
    ranges: Sequence[tuple[datetime, datetime]],
    width: int,
) -> dict[int, tuple[float, float, float, int]]:
    """Sum, min, max and count per bucket of raw points within `ranges`."""
    if not ranges:
        return {}
    bucket = _bucket_column(connection, width).label("bucket")
    value = _POINTS.c.value
    time = _POINTS.c.time
    query = (
        select(bucket, func.sum(value), func.min(value), func.max(value), func.count())
        .where(
            _POINTS.c.device_id == device_id,
            _POINTS.c.metric_name == metric_name,
            or_(*(and_(time >= start, time < end) for start, end in ranges)),
        )
        .group_by(bucket)
    )
    return {int(b): (s, lo, hi, n) for b, s, lo, hi, n in connection.execute(query)}


def _rollup_partials(
    connection: Connection,
    device_id: uuid.UUID,
    metric_name: str,
    start: datetime,
    end: datetime,
    *,
    exclude: set[datetime],
) -> dict[int, tuple[float, float, float, int]]:
    """Sum, min, max and count per hour from the rollups for whole hours in [start, end)."""
    query = select(
        _HOURLY.c.bucket,
        _HOURLY.c.avg_value,
        _HOURLY.c.min_value,
        _HOURLY.c.max_value,
        _HOURLY.c.sample_count,
    ).where(
        _HOURLY.c.device_id == device_id,
        _HOURLY.c.metric_name == metric_name,
        _HOURLY.c.bucket >= start,
        _HOURLY.c.bucket < end,
    )
    return {
        _epoch(bucket): (avg * count, lo, hi, count)
        for bucket, avg, lo, hi, count in connection.execute(query)
        if bucket not in exclude
    }


def _hourly_partials(
    connection: Connection, device_id: uuid.UUID, metric_name: str, start: datetime, end: datetime
) -> dict[int, tuple[float, float, float, int]]:
    """Per-hour partials from rollups where they are current, raw points elsewhere."""
    first_hour = _hour(start) if start == _hour(start) else _hour(start) + timedelta(hours=1)
    last_hour = _hour(end)
    if first_hour >= last_hour:
        return _raw_partials(connection, device_id, metric_name, [(start, end)], HOUR)
    if rollups_are_continuous_aggregate(connection):
        # TimescaleDB materialises hours older than the refresh policy's end offset
        settled = min(last_hour, _hour(datetime.now(UTC)) - timedelta(hours=3))
        stale: set[datetime] = set()
    else:
        settled = last_hour
        stale = set(
            connection.execute(
                select(_PENDING.c.bucket).where(
                    _PENDING.c.device_id == device_id,
                    _PENDING.c.metric_name == metric_name,
                    _PENDING.c.bucket >= first_hour,
                    _PENDING.c.bucket < settled,
                )
            ).scalars()
        )
    ranges = [(start, first_hour), (max(settled, first_hour), end)]
    ranges += [(hour, hour + timedelta(hours=1)) for hour in sorted(stale)]
    partials = _rollup_partials(
        connection, device_id, metric_name, first_hour, settled, exclude=stale
    )
    partials.update(
        _raw_partials(connection, device_id, metric_name, [r for r in ranges if r[0] < r[1]], HOUR)
    )
    return partials


# "15 minutes", "1 hour", "30s", "5m": a whole number, then a unit, long or short
_INTERVAL = re.compile(r"([0-9]{1,9})\s*([a-z]+)", re.ASCII)
_INTERVAL_UNITS = {
    **dict.fromkeys(("s", "second", "seconds"), 1),
    **dict.fromkeys(("m", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hour", "hours"), HOUR),
    **dict.fromkeys(("d", "day", "days"), 24 * HOUR),
}
MAX_INTERVAL = 366 * 24 * HOUR
_INTERVAL_FORMS = (
    "'30 seconds', '1 minute', '15 minutes', '1 hour', '1 day' or '30s', '5m', '1h', '1d'"
)


def parse_interval(text: str) -> int:
    """Seconds in an interval such as "15 minutes" or "1h"; ValidationError("interval") else."""
    match = _INTERVAL.fullmatch(text.strip().lower()) if isinstance(text, str) else None
    if match is None or match.group(2) not in _INTERVAL_UNITS:
        shown = str(text)[:40]
        raise ValidationError("interval", f"'{shown}' is not an interval; use {_INTERVAL_FORMS}")
    seconds = int(match.group(1)) * _INTERVAL_UNITS[match.group(2)]
    if not 0 < seconds <= MAX_INTERVAL:
        raise ValidationError("interval", "must be more than 0 and at most 366 days")
    return seconds


def aggregate(
    *,
    session: Session,
    device_id: uuid.UUID | str,
    metric_name: str,
    start: datetime,
    end: datetime,
    bucket_seconds: int,
) -> list[Aggregate]:
    """Avg, min, max and count per bucket (aligned on the epoch) with start <= time < end."""
    _check_range(start, end)
    if bucket_seconds <= 0:
        raise ValidationError("interval", "must be positive")
    if (end - start).total_seconds() / bucket_seconds > MAX_BUCKETS:
        raise ValidationError("interval", f"gives more than {MAX_BUCKETS} buckets for this range")
    device = parse_id(device_id, "deviceId")
    connection = session.connection()
    if bucket_seconds % HOUR == 0:
        hourly = _hourly_partials(connection, device, metric_name, start, end)
        partials: dict[int, tuple[float, float, float, int]] = {}
        for hour, (total, low, high, count) in hourly.items():
            key = hour // bucket_seconds * bucket_seconds
            if key in partials:
                s, lo, hi, n = partials[key]
                partials[key] = (s + total, min(lo, low), max(hi, high), n + count)
            else:
                partials[key] = (total, low, high, count)
    else:
        ranges = [(start, end)]
        partials = _raw_partials(connection, device, metric_name, ranges, bucket_seconds)
    return [
        Aggregate(datetime.fromtimestamp(key, UTC), total / count, low, high, count)
        for key, (total, low, high, count) in sorted(partials.items())
        if count
    ]


def refresh_rollups(*, session: Session, max_hours: int = 5000) -> int:
    """Recompute the rollups of hours that received points since the last run."""
    connection = session.connection()
    if rollups_are_continuous_aggregate(connection):
        return 0
    keys = connection.execute(
        select(_PENDING.c.device_id, _PENDING.c.metric_name, _PENDING.c.bucket)
        .order_by(_PENDING.c.device_id, _PENDING.c.metric_name, _PENDING.c.bucket)
        .limit(max_hours)
    ).all()
    if not keys:
        return 0
    triples = [tuple(key) for key in keys]
    # claim the hours first: a batch that lands during the recompute marks them again
    pending_key = tuple_(_PENDING.c.device_id, _PENDING.c.metric_name, _PENDING.c.bucket)
    connection.execute(delete(_PENDING).where(pending_key.in_(triples)))
    hourly_key = tuple_(_HOURLY.c.device_id, _HOURLY.c.metric_name, _HOURLY.c.bucket)
    connection.execute(delete(_HOURLY).where(hourly_key.in_(triples)))
    by_series: dict[tuple[uuid.UUID, str], list[datetime]] = {}
    for device_id, metric_name, bucket in triples:
        by_series.setdefault((device_id, metric_name), []).append(bucket)
    rows = []
    for (device_id, metric_name), hours in by_series.items():
        ranges = [(hour, hour + timedelta(hours=1)) for hour in hours]
        partials = _raw_partials(connection, device_id, metric_name, ranges, HOUR)
        rows += [
            {
                "device_id": device_id,
                "metric_name": metric_name,
                "bucket": datetime.fromtimestamp(hour, UTC),
                "avg_value": total / count,
                "min_value": low,
                "max_value": high,
                "sample_count": count,
            }
            for hour, (total, low, high, count) in partials.items()
        ]
    if rows:
        connection.execute(insert(_HOURLY), rows)
    return len(triples)


def delete_older_than(*, session: Session, cutoff: datetime) -> int:
    """Delete raw points older than `cutoff` (the retention job); returns how many."""
    result = session.connection().execute(delete(_POINTS).where(_POINTS.c.time < cutoff))
    return result.rowcount
