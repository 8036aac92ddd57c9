"""`iotdeck worker`: what `serve` runs beside its pages, in a process of its own.

The rule evaluator (reading the partitioned streams), the notification dispatcher, the
command dispatcher and the periodic jobs, for a deployment that scales them apart from
the web app: `serve --no-workers` keeps the pages, GraphQL and the live updates, and any
number of workers share the rest (the rules and commands by partition, app/workers/leases.py; the
notifications row by row; the periodic jobs run in each, as in every `serve`). Both need
Redis (the bus, the streams and the leases) and an external broker (commands go out
through it). SIGTERM or SIGINT stops it as `serve` stops them: each
job ends what it took, within IOTDECK_SHUTDOWN_TIMEOUT.
"""

import asyncio
import logging
import threading

from app.core import db, storage
from app.core.config import ConfigError, Settings
from app.core.shutdown import Shutdown
from app.workers.background import Background

logger = logging.getLogger(__name__)


def run_worker(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT; the exit code (0, or 1 when work was left undone)."""
    if not settings.redis_url:
        raise ConfigError(
            "IOTDECK_REDIS_URL is not set: `iotdeck worker` reads the streams and the bus in "
            "Redis (without Redis, `iotdeck serve` runs the workers in-process)"
        )
    if not settings.mqtt_url:
        raise ConfigError(
            "IOTDECK_MQTT_URL is not set: `iotdeck worker` sends commands through an external "
            "broker (the embedded one lives inside `iotdeck serve`)"
        )
    storage.verify(db.init_engine(settings.database_url), settings.timescaledb)
    shutdown = Shutdown("worker", settings.shutdown_timeout)
    return asyncio.run(_run(settings, shutdown, shutdown.listen()))


async def _run(settings: Settings, shutdown: Shutdown, requested: threading.Event) -> int:
    background = Background(settings, ingest=False, shutdown=shutdown)
    await background.start()
    logger.info("worker running: rules, notifications, commands and jobs; SIGTERM stops it")
    await asyncio.to_thread(requested.wait)
    await background.stop()
    return shutdown.finish()
