"""`iotdeck ingest`: the worker and its periodic jobs until SIGTERM or SIGINT."""

import asyncio
import logging

from apscheduler.schedulers.background import BackgroundScheduler

from app.core import bus, db, storage
from app.core.config import ConfigError, Settings
from app.core.shutdown import Shutdown
from app.mqtt import logins
from app.mqtt.connection import BrokerAddress
from app.mqtt.ingest import IngestWorker
from app.services import credentials
from app.workers import jobs

logger = logging.getLogger(__name__)


def build_worker(settings: Settings, address: BrokerAddress) -> IngestWorker:
    """An ingest worker configured from settings (its group and id get a secret suffix)."""
    return IngestWorker(
        address,
        client_id=logins.session_client_id(settings.ingest_client_id),
        shared_group=logins.shared_group(settings.ingest_shared_group),
        batch_messages=settings.ingest_batch_messages,
        batch_ms=settings.ingest_batch_ms,
        rate_limit=settings.device_rate_limit,
        rate_burst=settings.device_rate_burst,
        retention_days=settings.retention_days,
        last_seen_flush=settings.last_seen_flush,
    )


def ingest_address(settings: Settings) -> BrokerAddress:
    """IOTDECK_MQTT_URL, logged in as the ingest service account unless it has credentials."""
    return logins.service_address(
        BrokerAddress.parse(settings.mqtt_url, settings.mqtt_protocol),
        credentials.INGEST_ACCOUNT,
        ca_file=settings.mqtt_ca_file,
    )


def run_ingest(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT, then commit and acknowledge what it took; the exit code.

    0 when all of it was committed and acknowledged within IOTDECK_SHUTDOWN_TIMEOUT; 1
    when some could not be (the database is down): it stays unacknowledged, and the broker
    redelivers it to the next session with this client id, so nothing is lost.
    """
    if not settings.mqtt_url:
        raise ConfigError(
            "IOTDECK_MQTT_URL is not set: `iotdeck ingest` consumes an external broker "
            "(the embedded one lives inside `iotdeck serve`)"
        )
    storage.verify(db.init_engine(settings.database_url), settings.timescaledb)
    address = ingest_address(settings)
    if settings.redis_url:  # publish only: web processes listen, workers read the streams
        bus.set_bus(bus.make_bus(settings.redis_url, settings.partitions))
    else:
        logger.warning(
            "IOTDECK_REDIS_URL is not set: this ingest's points reach no dashboard and no "
            "rule (they are stored; an evaluator replays recent history only at its start)"
        )
    shutdown = Shutdown("ingest", settings.shutdown_timeout)
    stop = shutdown.listen()
    worker = build_worker(settings, address)
    scheduler = BackgroundScheduler(timezone="UTC")
    jobs.add_jobs(scheduler, settings)
    worker.start()
    scheduler.start()
    logger.info("ingest running against %s; SIGTERM stops it cleanly", address.url)
    stop.wait()
    shutdown.begin()
    scheduler.shutdown(wait=False)  # no new job starts; one running ends on its own
    if unacknowledged := worker.stop(shutdown.remaining()):
        shutdown.left_undone(
            f"{unacknowledged} message(s) not committed, left unacknowledged in the broker"
        )
    asyncio.run(bus.get_bus().stop())
    return shutdown.finish()
