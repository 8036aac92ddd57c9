"""PostgreSQL and Redis stopped and started again under load (SPEC 11): `iotdeck serve`
answers GraphQL with UNAVAILABLE at once while the database is away and says why on
/health/ready, works again when it is back, stores every point published meanwhile, and
its bus finds Redis again by itself.

The test stops servers of its own (a private PostgreSQL cluster, a private redis-server),
never the machine's shared ones.
"""

import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core import db, migrate
from app.core.auth import create_token
from app.core.models import Role, UserCreate
from app.services import users
from bench.services import IotdeckBroker, RedisServer, free_port
from tests.integration.load import (
    GraphQLSubscriber,
    Publisher,
    connect_devices,
    everything_stored,
    make_devices,
    process_env,
)
from tests.postgres_server import PostgresServer
from tests.serving import IOTDECK, answers, running
from tests.waiting import wait_until

SECRET = "outages-" + "s" * 40
ANSWER_WITHIN = 5.0  # seconds: an answer while the database is away never waits longer
DEVICES = "{ devices { id } }"
OUTAGE_POINTS = 150  # points the device publishes while the database is away


def _graphql(url: str, token: str) -> tuple[dict[str, Any], float]:
    """A devices query: the answer, and how long it took to come."""
    started = time.monotonic()
    response = httpx.post(
        f"{url}/graphql",
        json={"query": DEVICES},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,  # far above the bound asserted: a hang is measured, not cut short
    )
    return response.json(), time.monotonic() - started


def _codes(answer: dict[str, Any]) -> set[str]:
    return {error["extensions"]["code"] for error in answer.get("errors") or []}


def _readiness(url: str) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{url}/health/ready", timeout=30)
    return response.status_code, response.json()


def _admin_token() -> str:
    with db.session_scope() as session:
        data = UserCreate(email="admin@example.com", password="x" * 12, role=Role.ADMIN)
        admin = users.create_user(session=session, data=data)
        return create_token(admin, secret=SECRET, expire_hours=1)


@pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")
def test_postgres_and_redis_restarts_under_load(
    private_postgres: PostgresServer, tmp_path: Path
) -> None:
    database_url = private_postgres.url()
    engine = db.init_engine(database_url)
    migrate.upgrade(engine, timescaledb="off")
    token = _admin_token()
    [device_id] = make_devices(1)
    (tmp_path / "redis").mkdir()
    redis = RedisServer(tmp_path / "redis").start()
    broker = IotdeckBroker(tmp_path / "broker").start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = process_env(
        database_url,
        broker.url,
        IOTDECK_REDIS_URL=redis.url,
        IOTDECK_JWT_SECRET=SECRET,
        IOTDECK_TIMESCALEDB="off",
        IOTDECK_DATA_DIR=str(tmp_path / "data"),
    )
    log = tmp_path / "serve.log"
    command = [IOTDECK, "serve", "--host", "127.0.0.1", "--port", str(port)]
    publisher: Publisher | None = None
    try:
        with running(command, env, log, lambda: answers(f"{url}/health/ready")):
            subscriber = GraphQLSubscriber(f"ws://127.0.0.1:{port}", token, device_id)
            publisher = Publisher(connect_devices(broker.device_addresses([device_id])))
            publisher.start()
            wait_until(lambda: subscriber.points > 10, timeout=30)
            answer, _ = _graphql(url, token)
            assert answer["data"]["devices"] == [{"id": str(device_id)}]

            # PostgreSQL crashes: every answer is UNAVAILABLE, and quick
            private_postgres.stop("immediate")
            published = len(publisher.confirmed)
            timed: list[tuple[set[str], float]] = []

            def query() -> None:
                answer, took = _graphql(url, token)
                timed.append((_codes(answer), took))

            def circuit_open() -> bool:
                query()
                status, body = _readiness(url)
                return status == 503 and body["checks"]["database"].startswith("circuit open")

            wait_until(circuit_open, timeout=30, every=0.1)
            status, body = _readiness(url)
            assert status == 503
            assert "failures in a row, last error: " in body["checks"]["database"], body
            # queries go on while the devices publish what must wait in the broker
            wait_until(
                lambda: query() or len(publisher.confirmed) > published + OUTAGE_POINTS,
                timeout=60,
                every=0.1,
            )
            assert all(codes == {"UNAVAILABLE"} for codes, _ in timed), timed
            assert max(took for _, took in timed) < ANSWER_WITHIN, timed

            # it comes back: GraphQL works again without a restart of serve
            private_postgres.start()
            wait_until(lambda: not _graphql(url, token)[0].get("errors"), timeout=60, every=0.5)
            assert _readiness(url)[1]["checks"]["database"] == "ok"

            # Redis goes away and comes back: the bus subscribes again by itself
            redis.stop()
            # at least two attempts to subscribe again, the second after a longer wait
            wait_until(lambda: log.read_text().count("bus: cannot subscribe") >= 2, timeout=30)
            redis.start()
            received = subscriber.points
            wait_until(lambda: subscriber.points > received + 10, timeout=60)
            publisher.stop()
            # every point the broker accepted, during the outage too, is stored
            everything_stored(engine, publisher)
    finally:
        if publisher is not None:
            publisher.stop()
        broker.stop()
        redis.stop()
        engine.dispose()
    text = log.read_text()
    assert "circuit open since" in text and "database: circuit closed" in text
    assert "storage failed" in text  # ingest waited for the database, then stored it all
    assert text.index("bus: cannot subscribe") < text.rindex("bus: listening")
