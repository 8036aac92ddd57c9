"""Hourly rollups that always agree with the raw points, on every storage layout.

Each batch of points marks the (device, metric, hour) triples it touched in
`telemetry_rollup_pending` (ingest leaves out those it marked already in an hour still
open: `MarkedHours`). Queries read marked hours from the raw points and every other
whole hour from `telemetry_hourly`, so an answer is exact at once, whatever the order in
which points arrive (live, backfilled, late by days). The rollup job brings marked hours
up to date and clears their marks:
- plain tables (PostgreSQL, SQLite): it recomputes the rows of `telemetry_hourly`;
- TimescaleDB: it calls `refresh_continuous_aggregate` over the marked hours; a mark is
  cleared only if no batch touched it again while the refresh ran (its row version,
  `xmin`, is unchanged), so a point committed during a refresh is never forgotten.
The hour in progress is left to the raw points until it is over: recomputing it on every
run would cost far more than reading one hour of raw points per chart.

Retention forgets whole hours, raw points and rollups together, at the same cutoff on
every layout (TimescaleDB: DELETE, which records an invalidation, then a refresh below
the cutoff, then `drop_chunks` to give the emptied chunks back).
"""

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta

import psycopg
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Integer,
    and_,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.exc import OperationalError

from app.core import leadership, storage
from app.core.intervals import HOUR
from app.core.models import TelemetryHourly, TelemetryPoint, TelemetryRollupPending

logger = logging.getLogger(__name__)

_POINTS = TelemetryPoint.__table__
_HOURLY = TelemetryHourly.__table__
_PENDING = TelemetryRollupPending.__table__
ONE_HOUR = timedelta(hours=1)
MAX_HOURS_PER_ROUND = 5000  # plain: marks recomputed per transaction
MAX_REFRESH_ROUNDS = 20  # TimescaleDB: rounds per job run when batches keep re-marking
# a mark of an hour ending sooner than this is written with every batch (MarkedHours):
# wider than any clock difference between processes plus the time a batch takes to commit
MARK_AGAIN_BEFORE_END = timedelta(minutes=2)

Partials = dict[int, tuple[float, float, float, int]]  # bucket -> sum, min, max, count


def hour_of(moment: datetime) -> datetime:
    """The start of the UTC hour holding `moment`."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


Mark = tuple[uuid.UUID, str, datetime]  # device, metric, hour


class MarkedHours:
    """The marks this process committed for hours still open: no need to write them again.

    The rollup job only takes hours that are over, so the mark of an open hour stays in
    `telemetry_rollup_pending` until the hour ends; marking it again with every batch (a
    device reporting every 5 s would upsert its hour 720 times) changes nothing. A mark is
    written again, with every batch, once its hour ends within MARK_AGAIN_BEFORE_END: from
    then on the job (on another process's clock) may take it, and only the upsert's row
    lock keeps the job from recomputing the hour before the batch commits (mark_pending).
    The previous hour is therefore not remembered at all. Marks are remembered once their
    transaction commits (`remember`), never before: a batch retried after a failure writes
    its marks again. One per ingest worker, used by its committer thread only.
    """

    def __init__(self, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._clock = clock
        self._open: dict[datetime, dict[str, set[uuid.UUID]]] = {}  # hour -> metric -> devices

    def _closing_before(self) -> datetime:
        """Hours ending before this time may be taken by the job: always marked."""
        return self._clock() + MARK_AGAIN_BEFORE_END

    def unmarked(self, marks: set[Mark]) -> set[Mark]:
        """The marks among `marks` to write: all but those committed already for open hours."""
        if not self._open:
            return marks
        closing = self._closing_before()
        return {
            mark
            for mark in marks
            if mark[2] + ONE_HOUR <= closing
            or mark[0] not in self._open.get(mark[2], {}).get(mark[1], ())
        }

    def remember(self, marks: set[Mark]) -> None:
        """Note marks now committed; forget the hours that are closing."""
        closing = self._closing_before()
        for hour in [hour for hour in self._open if hour + ONE_HOUR <= closing]:
            del self._open[hour]
        for device_id, metric, hour in marks:
            if hour + ONE_HOUR > closing:
                self._open.setdefault(hour, {}).setdefault(metric, set()).add(device_id)


def mark_pending(connection: Connection, hours: set[Mark]) -> None:
    """Mark (device, metric, hour) triples whose rollup no longer matches the raw points."""
    if not hours:
        return
    # one order in every worker (rows locked in the same order: no deadlock), compared in C
    ordered = sorted(hours, key=lambda mark: (mark[0].int, mark[1], mark[2]))
    if connection.dialect.name == "postgresql":
        # one statement over three arrays whatever the number of marks: as rows, the first
        # message of each of 100,000 devices in an hour (300,000 marks) took half of
        # ingest's time (docs/performance.md, "Fleet shape"). A no-op update rather than
        # DO NOTHING: it locks the row, so the rollup job cannot claim this hour and
        # recompute it before this batch's points are committed, and it gives the row a
        # new version, which tells the TimescaleDB refresh to keep the mark
        statement = text(
            "INSERT INTO telemetry_rollup_pending (device_id, metric_name, bucket)"
            " SELECT * FROM unnest(CAST(:devices AS uuid[]), CAST(:metrics AS text[]),"
            " CAST(:buckets AS timestamptz[]))"
            " ON CONFLICT (device_id, metric_name, bucket) DO UPDATE SET bucket = excluded.bucket"
        )
        devices, metrics, buckets = zip(*ordered, strict=True)
        values = {"devices": list(devices), "metrics": list(metrics), "buckets": list(buckets)}
        connection.execute(statement, values)
        return
    # SQLite runs one writer at a time, so there is no such race
    rows = [{"device_id": d, "metric_name": m, "bucket": h} for d, m, h in ordered]
    connection.execute(insert(_PENDING).prefix_with("OR IGNORE"), rows)


def _bucket_column(connection: Connection, width: int) -> ColumnElement[int]:
    """Epoch seconds of a point's time floored to a multiple of `width` (UTC-aligned)."""
    if connection.dialect.name == "postgresql":
        expression = f"floor(extract(epoch from time) / {width:d})::bigint * {width:d}"
    else:
        expression = f"(CAST(strftime('%s', time) AS INTEGER) / {width:d}) * {width:d}"
    return literal_column(expression, Integer)


def raw_partials(
    connection: Connection,
    device_id: uuid.UUID,
    metric_name: str,
    ranges: Sequence[tuple[datetime, datetime]],
    width: int,
) -> Partials:
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
) -> Partials:
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
        int(bucket.timestamp()): (avg * count, lo, hi, count)
        for bucket, avg, lo, hi, count in connection.execute(query)
        if bucket not in exclude
    }


def hourly_partials(
    connection: Connection, device_id: uuid.UUID, metric_name: str, start: datetime, end: datetime
) -> Partials:
    """Per-hour partials of [start, end): rollups where they are current, raw points elsewhere."""
    first_hour = hour_of(start) if start == hour_of(start) else hour_of(start) + ONE_HOUR
    last_hour = hour_of(end)
    if first_hour >= last_hour:
        return raw_partials(connection, device_id, metric_name, [(start, end)], HOUR)
    stale = set(
        connection.execute(
            select(_PENDING.c.bucket).where(
                _PENDING.c.device_id == device_id,
                _PENDING.c.metric_name == metric_name,
                _PENDING.c.bucket >= first_hour,
                _PENDING.c.bucket < last_hour,
            )
        ).scalars()
    )
    ranges = [(start, first_hour), (last_hour, end)]
    ranges += [(hour, hour + ONE_HOUR) for hour in sorted(stale)]
    partials = _rollup_partials(
        connection, device_id, metric_name, first_hour, last_hour, exclude=stale
    )
    partials.update(
        raw_partials(connection, device_id, metric_name, [r for r in ranges if r[0] < r[1]], HOUR)
    )
    return partials


def refresh(*, engine: Engine, now: datetime | None = None) -> int:
    """Bring every marked hour that is over up to date; returns how many marks it cleared."""
    current_hour = hour_of(now or datetime.now(UTC))
    with engine.connect() as connection:
        if _on_timescaledb(connection):
            return _refresh_continuous(connection, current_hour)
    total = 0
    while True:
        with engine.begin() as connection:
            done = _recompute_round(connection, current_hour)
        total += done
        if not done:
            return total


def _on_timescaledb(connection: Connection) -> bool:
    found = storage.recorded_layout(connection) is storage.Layout.TIMESCALEDB
    connection.rollback()  # out of the lookup's transaction: the caller may go autocommit
    return found


def _recompute_round(connection: Connection, current_hour: datetime) -> int:
    """Plain tables: recompute up to MAX_HOURS_PER_ROUND marked hours in this transaction."""
    keys = connection.execute(
        select(_PENDING.c.device_id, _PENDING.c.metric_name, _PENDING.c.bucket)
        .where(_PENDING.c.bucket < current_hour)
        .order_by(_PENDING.c.device_id, _PENDING.c.metric_name, _PENDING.c.bucket)
        .limit(MAX_HOURS_PER_ROUND)
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
        ranges = [(hour, hour + ONE_HOUR) for hour in hours]
        partials = raw_partials(connection, device_id, metric_name, ranges, HOUR)
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


def _runs(hours: Iterable[datetime]) -> Iterator[tuple[datetime, datetime]]:
    """Sorted hours grouped into [start, end) windows of consecutive hours."""
    start = end = None
    for hour in sorted(hours):
        if end is not None and hour == end:
            end = hour + ONE_HOUR
            continue
        if start is not None:
            yield start, end
        start, end = hour, hour + ONE_HOUR
    if start is not None:
        yield start, end


def _refresh_window(connection: Connection, start: datetime | None, end: datetime) -> None:
    connection.execute(
        text(
            "CALL refresh_continuous_aggregate('telemetry_hourly',"
            " CAST(:start AS timestamptz), CAST(:end AS timestamptz))"
        ),
        {"start": start, "end": end},
    )


def _refresh_continuous(connection: Connection, current_hour: datetime) -> int:
    """TimescaleDB: refresh the aggregate over marked hours, then clear untouched marks."""
    # a refresh cannot run inside a transaction; one process refreshes at a time
    connection = connection.execution_options(isolation_level="AUTOCOMMIT")
    if not leadership.try_lead(connection, leadership.ROLLUPS):
        return 0
    try:
        connection.execute(
            text(
                "CREATE TEMP TABLE IF NOT EXISTS rollup_claims"
                " (device_id uuid, metric_name text, bucket timestamptz, marked xid)"
            )
        )
        cleared = 0
        for _ in range(MAX_REFRESH_ROUNDS):
            hours = (
                connection.execute(
                    select(_PENDING.c.bucket)
                    .where(_PENDING.c.bucket < current_hour)
                    .distinct()
                    .order_by(_PENDING.c.bucket)
                    .limit(MAX_HOURS_PER_ROUND)
                )
                .scalars()
                .all()
            )
            if not hours:
                break
            connection.execute(text("TRUNCATE rollup_claims"))
            # each mark with its row version as it is now, before the refresh reads points
            connection.execute(
                text(
                    "INSERT INTO rollup_claims"
                    " SELECT device_id, metric_name, bucket, xmin FROM telemetry_rollup_pending"
                    " WHERE bucket = ANY(:hours)"
                ),
                {"hours": hours},
            )
            for start, end in _runs(hours):
                _refresh_window(connection, start, end)
            cleared += connection.execute(
                text(
                    "DELETE FROM telemetry_rollup_pending p USING rollup_claims c"
                    " WHERE p.device_id = c.device_id AND p.metric_name = c.metric_name"
                    " AND p.bucket = c.bucket AND p.xmin = c.marked"
                )
            ).rowcount
        return cleared
    finally:
        leadership.release(connection, leadership.ROLLUPS)


def apply_retention(*, engine: Engine, retention_days: int, now: datetime | None = None) -> int:
    """Forget the hours older than the retention period (points and rollups); points deleted."""
    cutoff = hour_of((now or datetime.now(UTC)) - timedelta(days=retention_days))
    with engine.connect() as connection:
        if _on_timescaledb(connection):
            return _expire_timescaledb(connection, cutoff)
    with engine.begin() as connection:
        deleted = connection.execute(delete(_POINTS).where(_POINTS.c.time < cutoff)).rowcount
        connection.execute(delete(_HOURLY).where(_HOURLY.c.bucket < cutoff))
        connection.execute(delete(_PENDING).where(_PENDING.c.bucket < cutoff))
    return deleted


def _expire_timescaledb(connection: Connection, cutoff: datetime) -> int:
    connection = connection.execution_options(isolation_level="AUTOCOMMIT")
    deleted = connection.execute(delete(_POINTS).where(_POINTS.c.time < cutoff)).rowcount
    connection.execute(delete(_PENDING).where(_PENDING.c.bucket < cutoff))
    if deleted:
        # the DELETE recorded an invalidation: the refresh drops those hours' rollups
        _refresh_window(connection, None, cutoff)
    # dropping a chunk waits for every reader of it, and everything queues behind that wait:
    # give up quickly instead; the emptied chunks go on a later run
    connection.execute(text("SET lock_timeout = '2s'"))
    try:
        connection.execute(
            text(
                "SELECT drop_chunks('device_telemetry', older_than => CAST(:cutoff AS timestamptz))"
            ),
            {"cutoff": cutoff},
        )
    except OperationalError as exc:
        if not isinstance(exc.orig, psycopg.errors.LockNotAvailable):
            raise
        logger.info("retention: emptied chunks stay until the next run (busy: %s)", exc.orig)
    finally:
        connection.execute(text("RESET lock_timeout"))
    return deleted
