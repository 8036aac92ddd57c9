"""Shared fixtures: a fresh database per test on SQLite and on PostgreSQL."""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from app import db, migrate
from bench.services import Mosquitto

# NiceGUI's simulated browser (`user` fixture) for tests/pages; plugins load only from here
pytest_plugins = ["nicegui.testing.user_plugin"]

# bcrypt at its lowest cost: tests create many users, and the cost is not what they test
os.environ.setdefault("IOTDECK_BCRYPT_ROUNDS", "4")

# the server CI starts; override to point the suite at another one
PG_ADMIN_URL = os.environ.get(
    "IOTDECK_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ["sqlite", "postgres"]


def _pg_url(database: str) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{database}"


def _pg_admin(statement: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(statement)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A PostgreSQL database migrated once, cloned by each test (CREATE DATABASE ... TEMPLATE)."""
    name = f"iotdeck_tpl_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    engine = db.make_engine(_pg_url(name))
    migrate.upgrade(engine)
    engine.dispose()
    yield name
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def new_database(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new, migrated, empty database on `backend` ("sqlite" or "postgres"); dropped after."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / f'iotdeck-{uuid.uuid4().hex[:8]}.db'}"
        engine = db.make_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
        yield url
        return
    template = request.getfixturevalue("pg_template")
    name = f"iotdeck_test_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield _pg_url(name)
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database per test, once on SQLite and once on PostgreSQL."""
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
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private Mosquitto with the project's configuration, stopped after the test."""
    folder = tmp_path / "mosquitto"
    folder.mkdir()
    broker = Mosquitto(folder).start()
    yield broker
    broker.stop()
