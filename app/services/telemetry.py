"""Telemetry: batch writes (COPY on PostgreSQL), series, latest values, aggregates."""

import uuid
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

import psycopg
from sqlalchemy import (
    ColumnElement,
    Connection,
    any_,
    bindparam,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Session, col

from app.core import bus
from app.core.errors import ValidationError
from app.core.intervals import HOUR
from app.core.models import Device, DeviceStatus, TelemetryPoint
from app.services import events, rollups, validation
from app.services.last_seen import LastSeen, store_last_seen
from app.services.rollups import MarkedHours
from app.services.validation import parse_id

MAX_BUCKETS = 10_000
_POINTS = TelemetryPoint.__table__
_DEVICE_ID = Device.__table__.c.id


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


def write_points(
    *,
    session: Session,
    points: Sequence[Point],
    seen_at: datetime | None,
    last_seen: LastSeen | None = None,
    marked: MarkedHours | None = None,
) -> WriteResult:
    """Store points, skipping any already stored; mark their devices ONLINE and seen.

    `seen_at=None` imports history: the devices' status and last contact stay as they are
    (a device is not online because its past readings were loaded). A device that was not
    ONLINE becomes so in this transaction; only such rows are written. The others' last
    contact is written here too, unless `last_seen` takes it after the commit
    (ingest: written every few seconds, app/services/last_seen.py). `marked` leaves out
    the rollup marks this process committed already for hours still open.
    """
    device_ids = {point.device_id for point in points}
    connection = session.connection()
    found = set(session.scalars(select(Device.id).where(_among(connection, device_ids))))
    kept = [point for point in points if point.device_id in found]
    if connection.dialect.name == "postgresql":
        stored = _copy_points(connection, kept)
    else:
        stored = _insert_points(connection, kept)
    _mark_pending(session, kept, marked)
    came_online: frozenset[uuid.UUID] = frozenset()
    if found and seen_at is not None:
        came_online = _bring_online(session, _among(connection, found), seen_at)
        if last_seen is None:
            store_last_seen(connection, dict.fromkeys(found - came_online, seen_at))
        else:
            events.after_commit(session, partial(last_seen.saw, found, seen_at))
    _announce(session, kept, came_online, seen_at)
    return WriteResult(
        stored=stored, dropped_devices=frozenset(device_ids - found), came_online=came_online
    )


def _among(connection: Connection, device_ids: Collection[uuid.UUID]) -> ColumnElement[bool]:
    """`devices.id` is one of `device_ids`: on PostgreSQL one array parameter, since an IN
    list of a batch's 2,000 devices took 15 ms to bind and plan, twice per batch."""
    if connection.dialect.name == "postgresql":
        return _DEVICE_ID == any_(bindparam("ids", list(device_ids), type_=ARRAY(_DEVICE_ID.type)))
    return _DEVICE_ID.in_(device_ids)


def _bring_online(
    session: Session, devices: ColumnElement[bool], at: datetime
) -> frozenset[uuid.UUID]:
    """Mark ONLINE those of the `devices` that were not; the ids of those it changed.

    An ONLINE device's row is not written at all (no dead tuple per device per batch);
    one the offline job marked OFFLINE meanwhile is brought back, since the statement
    reads the status it changes.
    """
    statement = (
        update(Device)
        .where(devices, col(Device.status) != DeviceStatus.ONLINE)
        .values(status=DeviceStatus.ONLINE, last_seen_at=at)
        .returning(col(Device.id))
    )
    return frozenset(session.exec(statement).scalars())


def _announce(
    session: Session,
    points: Sequence[Point],
    came_online: frozenset[uuid.UUID],
    at: datetime | None,
) -> None:
    """Queue the batch's points (one bus message for all devices) and status changes."""
    by_device: dict[uuid.UUID, list[dict]] = {}
    for p in points:
        by_device.setdefault(p.device_id, []).append(
            {"metric": p.metric_name, "time": p.time.isoformat(), "value": p.value, "unit": p.unit}
        )
    if by_device:
        events.emit(session, bus.TELEMETRY_BATCH, bus.telemetry_batch(by_device))
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


def _mark_pending(session: Session, points: Iterable[Point], marked: MarkedHours | None) -> None:
    hours = set()
    last_time = last_hour = None
    for point in points:
        if point.time is not last_time:  # a message's points share one time object
            last_time, last_hour = point.time, rollups.hour_of(point.time)
        hours.add((point.device_id, point.metric_name, last_hour))
    if marked is not None:
        hours = marked.unmarked(hours)
        events.after_commit(session, partial(marked.remember, hours))
    rollups.mark_pending(session.connection(), hours)


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


def metric_names(
    *,
    session: Session,
    device_id: uuid.UUID | str,
    limit: int | None = None,
    offset: int = 0,
    max_limit: int = 1000,
) -> list[str]:
    """The metrics a device has reported, sorted; a page of them with `limit`."""
    # a skip scan over the primary key: one index probe per metric, however many points;
    # the recursion runs only as far as the rows taken, so LIMIT bounds the probes too
    page = ""
    if limit is not None:
        limit, offset = validation.page(limit, offset, max_limit=max_limit)
        page = f" LIMIT {limit} OFFSET {offset}"  # checked integers
    statement = text(
        "WITH RECURSIVE names(name) AS ("
        " SELECT min(metric_name) FROM device_telemetry WHERE device_id = :device"
        " UNION ALL"
        " SELECT (SELECT min(metric_name) FROM device_telemetry"
        "  WHERE device_id = :device AND metric_name > names.name)"
        " FROM names WHERE names.name IS NOT NULL"
        ") SELECT name FROM names WHERE name IS NOT NULL" + page
    ).bindparams(bindparam("device", type_=_POINTS.c.device_id.type))
    values = {"device": parse_id(device_id, "deviceId")}
    return list(session.connection().execute(statement, values).scalars())


def latest_values(*, session: Session, device_id: uuid.UUID | str) -> dict[str, Sample]:
    """The newest value of every metric of a device."""
    found = {}
    for name in metric_names(session=session, device_id=device_id):
        sample = latest(session=session, device_id=device_id, metric_name=name)
        if sample is not None:
            found[name] = sample
    return found


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
        hourly = rollups.hourly_partials(connection, device, metric_name, start, end)
        partials: rollups.Partials = {}
        for hour, (total, low, high, count) in hourly.items():
            key = hour // bucket_seconds * bucket_seconds
            if key in partials:
                s, lo, hi, n = partials[key]
                partials[key] = (s + total, min(lo, low), max(hi, high), n + count)
            else:
                partials[key] = (total, low, high, count)
    else:
        ranges = [(start, end)]
        partials = rollups.raw_partials(connection, device, metric_name, ranges, bucket_seconds)
    return [
        Aggregate(datetime.fromtimestamp(key, UTC), total / count, low, high, count)
        for key, (total, low, high, count) in sorted(partials.items())
        if count
    ]
