"""Health endpoints answer JSON and tell when the database is away."""

import httpx
from fastapi import FastAPI
from sqlalchemy import Engine

from app.core import db
from app.web import health


def _client() -> httpx.AsyncClient:
    api = FastAPI()
    api.include_router(health.router)
    return httpx.AsyncClient(transport=httpx.ASGITransport(api), base_url="http://test")


async def test_live_and_ready_with_a_reachable_database(engine: Engine) -> None:
    async with _client() as client:
        live = await client.get("/health/live")
        ready = await client.get("/health/ready")
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok"}}


async def test_ready_is_503_when_the_database_is_unreachable() -> None:
    # nothing listens on port 1
    db.init_engine("postgresql+psycopg://postgres@127.0.0.1:1/iotdeck?connect_timeout=1")
    async with _client() as client:
        live = await client.get("/health/live")
        ready = await client.get("/health/ready")
    assert live.status_code == 200
    assert ready.status_code == 503
    body = {"status": "not ready", "checks": {"database": "unreachable (Connection refused)"}}
    assert ready.json() == body


async def test_ready_says_since_when_the_database_circuit_is_open() -> None:
    db.init_engine("postgresql+psycopg://postgres@127.0.0.1:1/iotdeck")
    try:
        async with _client() as client:
            for _ in range(db.database_breaker.threshold):  # refused: the circuit opens
                await client.get("/health/ready")
            ready = await client.get("/health/ready")  # refused at once, without a connection
    finally:
        db.database_breaker.success()
    assert ready.status_code == 503
    reason = ready.json()["checks"]["database"]
    assert reason.startswith("circuit open since "), reason
    failures = db.database_breaker.threshold
    assert f", {failures} failures in a row, last error: Connection refused; next try at " in reason
