"""Shared fixtures: a fresh database per test on SQLite and on PostgreSQL."""

import functools
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from app.core import db, migrate
from bench.services import (
    PG_ADMIN_URL,
    TIMESCALEDB_ADMIN_URL,
    IotdeckBroker,
    Mosquitto,
    fresh_database,
    pg_admin,
    pg_url,
)

# NiceGUI's simulated browser (`user` fixture) for tests/pages; plugins load only from here
pytest_plugins = ["nicegui.testing.user_plugin"]

# bcrypt at its lowest cost: tests create many users, and the cost is not what they test
os.environ.setdefault("IOTDECK_BCRYPT_ROUNDS", "4")

ADMIN_URLS = {"postgres": PG_ADMIN_URL, "timescaledb": TIMESCALEDB_ADMIN_URL}
LAYOUTS = {"postgres": "off", "timescaledb": "on"}  # IOTDECK_TIMESCALEDB for each server
# every test that takes `database_url` runs on these; the storage contract tests (marked
# `all_backends`) on TimescaleDB too
BACKENDS = ["sqlite", "postgres"]
ALL_BACKENDS = [*BACKENDS, "timescaledb"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test taking `database_url` once per backend, unless it names its own."""
    if "database_url" not in metafunc.fixturenames:
        return
    for marker in metafunc.definition.iter_markers("parametrize"):
        if marker.args and marker.args[0] == "database_url":
            return
    marked = metafunc.definition.get_closest_marker("all_backends") is not None
    metafunc.parametrize("database_url", ALL_BACKENDS if marked else BACKENDS, indirect=True)


@functools.cache
def _timescaledb_missing() -> str | None:
    """Why the TimescaleDB leg cannot run here, or None when it can."""
    try:
        with psycopg.connect(TIMESCALEDB_ADMIN_URL, connect_timeout=3) as connection:
            loaded = connection.execute("SHOW shared_preload_libraries").fetchone()[0]
    except psycopg.OperationalError:
        return (
            f"no TimescaleDB server answers at {TIMESCALEDB_ADMIN_URL}: "
            "run ../shared/tools/timescaledb cluster, or set IOTDECK_TEST_TIMESCALEDB_ADMIN_URL"
        )
    if "timescaledb" not in loaded:
        return f"the server at {TIMESCALEDB_ADMIN_URL} does not preload timescaledb"
    return None


@pytest.fixture(scope="session")
def pg_templates() -> Iterator[dict[str, str]]:
    """Per PostgreSQL server, a database migrated once and cloned by each test."""
    made: dict[str, str] = {}
    yield made
    for backend, name in made.items():
        pg_admin(ADMIN_URLS[backend], f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _template(backend: str, templates: dict[str, str]) -> str:
    if backend not in templates:
        if backend == "timescaledb" and (reason := _timescaledb_missing()):
            pytest.skip(reason)
        name = f"iotdeck_tpl_{uuid.uuid4().hex[:12]}"
        pg_admin(ADMIN_URLS[backend], f'CREATE DATABASE "{name}"')
        templates[backend] = name
        engine = db.make_engine(pg_url(ADMIN_URLS[backend], name))
        migrate.upgrade(engine, timescaledb=LAYOUTS[backend])
        engine.dispose()
        # TimescaleDB's job scheduler connects to every database that has the extension,
        # and a template in use cannot be cloned: keep it (and everyone else) out
        pg_admin(ADMIN_URLS[backend], f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        pg_admin(
            ADMIN_URLS[backend],
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
        )
    return templates[backend]


@contextmanager
def new_database(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new, migrated, empty database on `backend` (sqlite, postgres, timescaledb); dropped."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / f'iotdeck-{uuid.uuid4().hex[:8]}.db'}"
        engine = db.make_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
        yield url
        return
    template = _template(backend, request.getfixturevalue("pg_templates"))
    with fresh_database(ADMIN_URLS[backend], template=template, prefix="iotdeck_test") as url:
        yield url


@pytest.fixture
def blank_database() -> Iterator[Callable[[str], str]]:
    """Make empty, unmigrated databases on "postgres" or "timescaledb"; dropped after."""
    with ExitStack() as made:

        def make(backend: str) -> str:
            if backend == "timescaledb" and (reason := _timescaledb_missing()):
                pytest.skip(reason)
            return made.enter_context(fresh_database(ADMIN_URLS[backend], prefix="iotdeck_blank"))

        yield make


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database per test on the backend this test is parametrized with."""
    with new_database(request.param, tmp_path, request) as url:
        yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """The process-wide engine, pointed at this test's database."""
    engine = db.init_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session on this test's database; rolled back at the end."""
    with Session(engine, expire_on_commit=False) as session:
        yield session


@pytest.fixture
def mosquitto(engine: Engine, tmp_path: Path) -> Iterator[IotdeckBroker]:
    """`iotdeck mqtt-broker` on private ports for this test's database, stopped after it.

    Authentication is on, as in production: devices log in with credentials issued
    through the service (`mosquitto.device_address`), platform code with service accounts.
    """
    del engine  # the broker reads credentials through the process-wide engine it points
    broker = IotdeckBroker(tmp_path / "broker").start()
    yield broker
    broker.stop()


@pytest.fixture
def open_mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto someone else runs, open to anonymous clients (an external broker)."""
    folder = tmp_path / "mosquitto"
    folder.mkdir()
    broker = Mosquitto(folder).start()
    yield broker
    broker.stop()
