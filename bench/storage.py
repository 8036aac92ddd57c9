"""`iotdeck bench storage`: plain PostgreSQL against TimescaleDB, measured in one run.

1. Ingest: the phases of `iotdeck bench ingest` on each server, one after the other, with
   the same devices and backlog: the drain rate and the sustained live rate in committed
   points/s, and their ratios (TimescaleDB / plain).
2. Charts: a month of one-minute points from each of N devices (default 1,000: 43.2
   million rows) loaded into each server as a fleet leaves it after a month: hourly
   rollups up to date (plain: the rollup table; TimescaleDB: the continuous aggregate
   refreshed), and on TimescaleDB every chunk older than IOTDECK_COMPRESS_AFTER
   compressed by the policy. Then the device page's queries for one device, through the
   service functions the page calls: the 30-day hourly chart and the raw last hour, first
   run and warm (median and p95 of the repeats).
3. Compression: a month of the simulator's readings (one a minute) from devices of each
   demo type, on TimescaleDB, every whole chunk compressed: bytes before and after.
"""

import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text
from sqlmodel import Session

from app.core import db, migrate
from app.core.models import DeviceCreate
from app.services import devices, rollups, telemetry
from app.sim.signals import DEFAULT_TYPES, make_signals
from bench import ingest
from bench.services import (
    PG_ADMIN_URL,
    TIMESCALEDB_ADMIN_URL,
    fresh_database,
    run_compression_policy,
)

SERVERS = {"postgresql": (PG_ADMIN_URL, "off"), "timescaledb": (TIMESCALEDB_ADMIN_URL, "on")}
LOAD_DEVICES_PER_STATEMENT = 20


@dataclass(frozen=True)
class Options:
    """What to run."""

    devices: int = 1000  # chart phase: devices with a month of points each
    days: int = 30
    repeats: int = 50  # warm runs of each query
    ingest_seconds: float = 15.0  # length of each live ingest attempt
    ingest_backlog: int = 60_000
    simulated_devices: int = 30  # compression phase
    skip_ingest: bool = False
    skip_charts: bool = False  # and the compression phase


def _timed(query: Callable[[], object], repeats: int) -> dict:
    """Milliseconds of the first call, then median and p95 of `repeats` more."""
    started = time.perf_counter()
    query()
    first = (time.perf_counter() - started) * 1000
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        query()
        runs.append((time.perf_counter() - started) * 1000)
    runs.sort()
    return {
        "first_ms": round(first, 2),
        "warm_median_ms": round(statistics.median(runs), 2),
        "warm_p95_ms": round(runs[int(0.95 * (len(runs) - 1))], 2),
    }


def _autocommit(engine: Engine, sql: str, **parameters: object) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(sql), parameters)


def _register(engine: Engine, count: int, kinds: tuple[str, ...] = ("thermostat",)) -> list:
    with Session(engine) as session:
        made = [
            devices.create_device(
                session=session, data=DeviceCreate(name=f"bench {i}", type=kinds[i % len(kinds)])
            )
            for i in range(count)
        ]
        session.commit()
        return [(device.id, device.type) for device in made]


def _load_month(engine: Engine, ids: list[uuid.UUID], start: datetime, end: datetime) -> float:
    """One point a minute per device over [start, end); returns rows/s of the load."""
    began = time.perf_counter()
    for first in range(0, len(ids), LOAD_DEVICES_PER_STATEMENT):
        chunk = [str(i) for i in ids[first : first + LOAD_DEVICES_PER_STATEMENT]]
        _autocommit(
            engine,
            "INSERT INTO device_telemetry (time, device_id, metric_name, value, unit)"
            " SELECT t, d::uuid, 'temperature',"
            "  20 + 5 * sin(extract(epoch from t) / 13751) + random(), '°C'"
            " FROM unnest(CAST(:ids AS text[])) AS d,"
            "  generate_series(CAST(:start AS timestamptz), CAST(:end AS timestamptz)"
            "   - interval '1 minute', interval '1 minute') AS t",
            ids=chunk,
            start=start,
            end=end,
        )
    rows = len(ids) * int((end - start).total_seconds() // 60)
    return rows / (time.perf_counter() - began)


def _settle(engine: Engine, layout: str, now: datetime) -> None:
    """Rollups up to date and old chunks compressed, as the jobs leave a month of data."""
    current_hour = rollups.hour_of(now)
    if layout == "on":
        _autocommit(
            engine,
            "CALL refresh_continuous_aggregate('telemetry_hourly', NULL,"
            " CAST(:end AS timestamptz))",
            end=current_hour,
        )
        run_compression_policy(engine)
    else:
        _autocommit(
            engine,
            "INSERT INTO telemetry_hourly (bucket, device_id, metric_name, avg_value,"
            " min_value, max_value, sample_count)"
            " SELECT to_timestamp(floor(extract(epoch from time) / 3600) * 3600) AS hour,"
            "  device_id, metric_name, avg(value), min(value), max(value), count(*)"
            " FROM device_telemetry WHERE time < CAST(:end AS timestamptz)"
            " GROUP BY hour, device_id, metric_name",
            end=current_hour,
        )
    _autocommit(engine, "VACUUM ANALYZE")


def _chart_queries(engine: Engine, device_id: uuid.UUID, now: datetime, repeats: int) -> dict:
    with Session(engine) as session:

        def month_hourly() -> object:
            return telemetry.aggregate(
                session=session,
                device_id=device_id,
                metric_name="temperature",
                start=now - timedelta(days=30),
                end=now,
                bucket_seconds=3600,
            )

        def last_hour_raw() -> object:
            return telemetry.series(
                session=session,
                device_id=device_id,
                metric_name="temperature",
                start=now - timedelta(hours=1),
                end=now,
            )

        buckets = len(month_hourly())
        points = len(last_hour_raw())
        return {
            "month_hourly": {"buckets": buckets, **_timed(month_hourly, repeats)},
            "last_hour_raw": {"points": points, **_timed(last_hour_raw, repeats)},
        }


def _table_bytes(engine: Engine, layout: str) -> int:
    size = (
        "SELECT hypertable_size('device_telemetry')"
        if layout == "on"
        else "SELECT pg_total_relation_size('device_telemetry')"
    )
    with engine.connect() as connection:
        return connection.execute(text(size)).scalar_one()


def charts(options: Options, server: str) -> dict:
    """Load a month for `options.devices` devices on `server`, then time the chart queries."""
    admin_url, layout = SERVERS[server]
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(days=options.days)
    with fresh_database(admin_url) as url:
        engine = db.make_engine(url)
        try:
            migrate.upgrade(engine, timescaledb=layout)
            ids = [device_id for device_id, _ in _register(engine, options.devices)]
            load_rate = _load_month(engine, ids, start, now)
            began = time.perf_counter()
            _settle(engine, layout, now)
            settle_s = time.perf_counter() - began
            return {
                "rows": options.devices * options.days * 1440,
                "load_rows_per_s": round(load_rate),
                "rollups_and_compression_s": round(settle_s, 1),
                "table_bytes": _table_bytes(engine, layout),
                **_chart_queries(engine, ids[len(ids) // 2], now, options.repeats),
            }
        finally:
            engine.dispose()


def compression(options: Options) -> dict:
    """A month of simulator readings on TimescaleDB, compressed: sizes and ratio."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    with fresh_database(TIMESCALEDB_ADMIN_URL) as url:
        engine = db.make_engine(url)
        try:
            migrate.upgrade(engine, timescaledb="on")
            registered = _register(engine, options.simulated_devices, tuple(DEFAULT_TYPES))
            rows = 0
            for device_id, kind in registered:
                signals = make_signals(kind, str(device_id))
                points = [
                    telemetry.Point(device_id, reading.name, at, reading.value, reading.unit)
                    for minute in range(options.days * 1440, 0, -1)
                    for at in [now - timedelta(minutes=minute)]
                    for reading in signals.sample(at)
                ]
                with Session(engine) as session:
                    telemetry.write_points(session=session, points=points, seen_at=None)
                    session.commit()
                rows += len(points)
            before = _table_bytes(engine, "on")
            _autocommit(
                engine,
                "SELECT compress_chunk(c) FROM show_chunks('device_telemetry',"
                " older_than => now() - interval '1 day') AS c",
            )
            after = _table_bytes(engine, "on")
            with engine.connect() as connection:
                stats = connection.execute(
                    text(
                        "SELECT before_compression_total_bytes, after_compression_total_bytes"
                        " FROM hypertable_compression_stats('device_telemetry')"
                    )
                ).one()
            return {
                "devices": options.simulated_devices,
                "rows": rows,
                "bytes_before": before,
                "bytes_after": after,
                "ratio_whole_table": round(before / after, 1),
                "ratio_compressed_chunks": round(stats[0] / stats[1], 1),
            }
        finally:
            engine.dispose()


def run(options: Options) -> dict:
    """Every phase on both servers; ratios are TimescaleDB over plain PostgreSQL."""
    result: dict = {}
    if not options.skip_ingest:
        runs = {
            name: ingest.run(
                ingest.Options(
                    seconds=options.ingest_seconds,
                    backlog=options.ingest_backlog,
                    timescaledb=name == "timescaledb",
                )
            )
            for name in SERVERS
        }
        plain, timescale = runs["postgresql"], runs["timescaledb"]
        result["ingest"] = {
            **runs,
            "drain_ratio": round(timescale["drain_msgs_per_s"] / plain["drain_msgs_per_s"], 3),
            "live_ratio": round(
                timescale["committed_points_per_s"] / plain["committed_points_per_s"], 3
            ),
        }
    if not options.skip_charts:
        result["charts"] = {name: charts(options, name) for name in SERVERS}
        result["compression"] = compression(options)
    return result
