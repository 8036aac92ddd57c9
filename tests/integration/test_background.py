"""What runs beside the pages (app/workers/background.py) starts and stops in order."""

import asyncio
import socket

import pytest
from sqlalchemy import Engine

from app.core.config import Settings
from app.core.shutdown import Shutdown
from app.workers.background import Background
from bench.services import free_port


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_stop_during_the_start_lets_the_start_finish_then_stops_it(
    engine: Engine, database_url: str
) -> None:
    """A page test that ends at once, or a SIGTERM at start-up: the embedded broker, still
    starting when the stop came, used to refuse to stop ("Can't trigger event shutdown
    from state starting")."""
    del engine  # migrated: the start logs its service accounts in
    port = free_port()
    settings = Settings(database_url=database_url, mqtt_embedded_port=port, jwt_secret="b" * 40)
    shutdown = Shutdown("serve", timeout=20)
    background = Background(settings, ingest=False, shutdown=shutdown)
    starting = asyncio.create_task(background.start())
    await asyncio.sleep(0)  # the start is under way, its broker not listening yet

    await background.stop()

    assert starting.done() and starting.exception() is None
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass
    assert shutdown.finish() == 0  # nothing left undone
