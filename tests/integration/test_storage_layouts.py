"""IOTDECK_TIMESCALEDB: which layout a database gets, and refusals that change nothing.

The plain server (5432) of CI machines has TimescaleDB installed but not preloaded: it
lists the extension in `pg_available_extensions` and cannot create it, which is the case
that broke migrations when availability decided.
"""

import multiprocessing
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text
from sqlmodel import Session

from app.core import db, migrate, storage
from app.core.config import ConfigError
from app.core.intervals import DAY
from app.core.storage import Layout
from app.services import rollups
from app.services.telemetry import Point
from bench.services import iotdeck_environment
from tests.aggregates import aggregated, reference

IOTDECK = str(Path(sys.executable).with_name("iotdeck"))
Blank = Callable[[str], str]


@pytest.fixture
def engines() -> Iterator[Callable[[str], Engine]]:
    """Engines on given URLs, disposed after the test."""
    made: list[Engine] = []

    def make(url: str) -> Engine:
        made.append(db.make_engine(url))
        return made[-1]

    yield make
    for engine in made:
        engine.dispose()


def _scalar(engine: Engine, sql: str) -> object:
    with engine.connect() as connection:
        return connection.execute(text(sql)).scalar()


def _policies(engine: Engine) -> dict[str, str | None]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT proc_name, config->>'compress_after' FROM timescaledb_information.jobs"
                " WHERE hypertable_name IN ('device_telemetry', 'telemetry_hourly')"
                " OR proc_name = 'policy_refresh_continuous_aggregate'"
            )
        ).all()
    return dict(rows)


def test_auto_gives_plain_tables_where_timescaledb_is_installed_but_not_preloaded(
    blank_database: Blank, engines: Callable[[str], Engine]
) -> None:
    engine = engines(blank_database("postgres"))
    assert migrate.upgrade(engine, timescaledb="auto") is Layout.PLAIN
    assert _scalar(engine, "SELECT relkind FROM pg_class WHERE relname = 'telemetry_hourly'") == "r"
    assert _scalar(engine, "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'") == 0


def test_on_without_preloading_names_the_fix_and_migrates_nothing(
    blank_database: Blank, engines: Callable[[str], Engine]
) -> None:
    engine = engines(blank_database("postgres"))
    with pytest.raises(ConfigError, match="shared_preload_libraries"):
        migrate.upgrade(engine, timescaledb="on")
    assert _scalar(engine, "SELECT to_regclass('alembic_version')") is None


def test_auto_and_on_give_timescaledb_where_it_is_preloaded(
    blank_database: Blank, engines: Callable[[str], Engine]
) -> None:
    for mode in ("auto", "on"):
        engine = engines(blank_database("timescaledb"))
        assert migrate.upgrade(engine, timescaledb=mode) is Layout.TIMESCALEDB
        hypertable = _scalar(
            engine,
            "SELECT compression_enabled FROM timescaledb_information.hypertables"
            " WHERE hypertable_name = 'device_telemetry'",
        )
        assert hypertable is True, mode
        # iotdeck's jobs refresh the aggregate and apply retention; the policy compresses
        assert _policies(engine) == {"policy_compression": "7 days"}, mode
        segments = _scalar(
            engine,
            "SELECT string_agg(attname, ',' ORDER BY segmentby_column_index)"
            " FROM timescaledb_information.compression_settings"
            " WHERE hypertable_name = 'device_telemetry' AND segmentby_column_index IS NOT NULL",
        )
        assert segments == "device_id,metric_name"


def test_off_gives_plain_tables_on_a_timescaledb_server(
    blank_database: Blank, engines: Callable[[str], Engine]
) -> None:
    engine = engines(blank_database("timescaledb"))
    assert migrate.upgrade(engine, timescaledb="off") is Layout.PLAIN
    assert _scalar(engine, "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'") == 0


def test_a_setting_that_contradicts_the_recorded_layout_is_refused(
    blank_database: Blank, engines: Callable[[str], Engine]
) -> None:
    timescale = engines(blank_database("timescaledb"))
    migrate.upgrade(timescale, timescaledb="on")
    with pytest.raises(ConfigError, match="migrated with TimescaleDB"):
        migrate.upgrade(timescale, timescaledb="off")
    assert migrate.upgrade(timescale, timescaledb="auto") is Layout.TIMESCALEDB
    plain = engines(blank_database("timescaledb"))
    migrate.upgrade(plain, timescaledb="off")
    with pytest.raises(ConfigError, match="migrated without TimescaleDB"):
        migrate.upgrade(plain, timescaledb="on")
    with pytest.raises(ConfigError, match="migrated without TimescaleDB"):
        storage.verify(plain, "on")  # what `iotdeck ingest` checks before it consumes
    assert migrate.upgrade(plain, timescaledb="auto") is Layout.PLAIN


def test_sqlite_with_on_is_refused(tmp_path: Path, engines: Callable[[str], Engine]) -> None:
    engine = engines(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(ConfigError, match="not PostgreSQL"):
        migrate.upgrade(engine, timescaledb="on")
    assert migrate.upgrade(engine, timescaledb="auto") is Layout.PLAIN


def test_the_compression_policy_follows_iotdeck_compress_after(
    blank_database: Blank, engines: Callable[[str], Engine]
) -> None:
    engine = engines(blank_database("timescaledb"))
    migrate.upgrade(engine, timescaledb="on", compress_after_seconds=2 * DAY)
    assert _policies(engine) == {"policy_compression": "2 days"}
    migrate.upgrade(engine, timescaledb="on", compress_after_seconds=12 * 3600)
    assert _policies(engine) == {"policy_compression": "12:00:00"}


def _migrate(url: str, tmp_path: Path, **variables: str) -> subprocess.CompletedProcess:
    env = iotdeck_environment(
        IOTDECK_DATABASE_URL=url, IOTDECK_DATA_DIR=str(tmp_path / "data"), **variables
    )
    return subprocess.run(
        [IOTDECK, "migrate"], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_iotdeck_migrate_says_which_layout_and_why_it_refuses(
    blank_database: Blank, tmp_path: Path
) -> None:
    plain = blank_database("postgres")
    refused = _migrate(plain, tmp_path, IOTDECK_TIMESCALEDB="on")
    assert refused.returncode == 2
    assert "shared_preload_libraries" in refused.stderr and "Traceback" not in refused.stderr
    done = _migrate(plain, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "(plain telemetry storage)" in done.stdout
    timescale = blank_database("timescaledb")
    done = _migrate(timescale, tmp_path, IOTDECK_COMPRESS_AFTER="3d")
    assert done.returncode == 0, done.stderr
    assert "(timescaledb telemetry storage)" in done.stdout
    bad = _migrate(timescale, tmp_path, IOTDECK_COMPRESS_AFTER="soon")
    assert bad.returncode != 0 and "IOTDECK_COMPRESS_AFTER" in bad.stderr


def _migrate_at_once(url: str, start: Barrier, layouts: "Queue[str]") -> None:
    """One process of a first install: migrate the moment every other one does."""
    engine = db.make_engine(url)
    start.wait(timeout=30)
    layouts.put(migrate.upgrade(engine).value)


def test_processes_starting_together_on_a_new_database_migrate_one_after_the_other(
    blank_database: Blank,
) -> None:
    # every pod of a first install migrates at start, at the same moment; without the
    # lock most of them die on the tables another one is creating
    url = blank_database("postgres")
    forking = multiprocessing.get_context("fork")
    start, layouts = forking.Barrier(6), forking.Queue()
    starting = [
        forking.Process(target=_migrate_at_once, args=(url, start, layouts)) for _ in range(6)
    ]
    for process in starting:
        process.start()
    for process in starting:
        process.join(timeout=120)
    assert [process.exitcode for process in starting] == [0] * 6
    assert {layouts.get(timeout=5) for _ in starting} == {Layout.PLAIN.value}


def test_a_database_migrated_before_005a_heals_the_hours_its_policy_missed(
    blank_database: Blank, engines: Callable[[str], Engine]
) -> None:
    engine = engines(blank_database("timescaledb"))
    config = Config()
    config.set_main_option("script_location", str(migrate.SCRIPT_LOCATION))
    with engine.connect() as connection:  # what earlier releases left: the seed's 003
        config.attributes["connection"] = connection
        config.attributes["layout"] = Layout.TIMESCALEDB
        command.upgrade(config, "005")
        connection.commit()
    now = datetime.now(UTC)
    with Session(engine) as session:
        # the devices table as revision 005 left it (today's model has later columns)
        device_id = uuid.uuid4()
        session.connection().execute(
            text(
                "INSERT INTO devices (id, name, type, status, metadata, created_at, updated_at)"
                " VALUES (:id, 'd', 't', 'UNKNOWN', '{}', now(), now())"
            ),
            {"id": device_id},
        )
        session.commit()
        # a day backfilled at once, written as the old ingest did: no marks
        day = [
            Point(device_id, "t", now - timedelta(minutes=5 * i + 1), float(i)) for i in range(288)
        ]
        session.connection().execute(
            text(
                "INSERT INTO device_telemetry (time, device_id, metric_name, value)"
                " VALUES (:time, :device_id, :metric_name, :value)"
            ),
            [
                {
                    "time": p.time,
                    "device_id": p.device_id,
                    "metric_name": p.metric_name,
                    "value": p.value,
                }
                for p in day
            ],
        )
        session.commit()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        # the seed's policy window: the only hours it ever materialised
        connection.execute(
            text(
                "CALL refresh_continuous_aggregate('telemetry_hourly',"
                " now() - interval '3 hours', now() - interval '1 hour')"
            )
        )
    assert _scalar(engine, "SELECT coalesce(sum(sample_count), 0) FROM telemetry_hourly") < 48

    assert migrate.upgrade(engine, timescaledb="auto") is Layout.TIMESCALEDB
    assert _policies(engine) == {"policy_compression": "7 days"}
    start = now - timedelta(hours=24)

    def hourly() -> list[tuple]:
        with Session(engine) as session:
            return aggregated(session, device_id, "t", start, now, width=3600)

    assert hourly() == reference(day, start, now, 3600)  # marked hours read raw at once
    rollups.refresh(engine=engine)
    assert hourly() == reference(day, start, now, 3600)
    in_progress = sum(1 for p in day if p.time >= rollups.hour_of(now))
    assert _scalar(engine, "SELECT sum(sample_count) FROM telemetry_hourly") == 288 - in_progress
