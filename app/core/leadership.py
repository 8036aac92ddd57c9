"""One process at a time: PostgreSQL advisory locks elect who runs a singleton job.

Some jobs must run in exactly one process of a deployment: the rule evaluator without
Redis (app/workers/leases.py), the rollups refresh, migrations at start. Whoever holds the job's
advisory lock runs it; the lock lives on a dedicated autocommit connection, so it goes
when that process dies (or loses the database) and another takes over. On SQLite there is
only one process: it always leads.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from sqlalchemy import Connection, Engine, text

from app.core import db

logger = logging.getLogger(__name__)

# one number per singleton job, shared by every iotdeck process
EVALUATOR = 0x10DEC0DE
ROLLUPS = 0x10DEC0E0  # TimescaleDB: one process refreshes the continuous aggregate
MIGRATIONS = 0x10DEC0E1  # processes starting together migrate one after the other
RETRY_SECONDS = 5.0


def try_lead(connection: Connection, key: int) -> bool:
    """Take the advisory lock `key` on `connection` (always True on SQLite)."""
    if connection.dialect.name != "postgresql":
        return True
    return bool(
        connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar()
    )


def release(connection: Connection, key: int) -> None:
    """Give back the advisory lock `key` that `try_lead` took on `connection`."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})


@asynccontextmanager
async def leading(key: int, job: str) -> AsyncIterator[None]:
    """Wait until this process holds the lock `key`; hold it for the block."""
    # autocommit: holding the lock must not hold a transaction open (and vacuum back)
    connection = await asyncio.to_thread(
        lambda: db.get_engine().connect().execution_options(isolation_level="AUTOCOMMIT")
    )
    try:
        while not await asyncio.to_thread(try_lead, connection, key):
            await asyncio.sleep(RETRY_SECONDS)
        logger.info("this process runs the %s", job)
        yield
    finally:
        await asyncio.to_thread(connection.close)  # releases the lock: another process leads


@contextmanager
def exclusively(engine: Engine, key: int) -> Iterator[None]:
    """Wait (blocking) until no other process holds the lock `key`; hold it for the block.

    For start-up work every process does but only one may do at a time: the second waits,
    then finds the work done. A no-op on SQLite.
    """
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        try:
            yield
        finally:
            release(connection, key)
