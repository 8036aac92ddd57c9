"""Health endpoints answer JSON and tell when the database is away."""

import httpx
from fastapi import FastAPI
from sqlalchemy import Engine

from app import db, health


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
    assert ready.json() == {"status": "not ready", "checks": {"database": "unreachable"}}
