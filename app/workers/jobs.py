"""Periodic jobs: rollup refresh, retention, marking silent devices OFFLINE."""

import logging
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.base import BaseScheduler

from app.core import db
from app.core.config import Settings
from app.services import devices, rollups

logger = logging.getLogger(__name__)

ROLLUP_EVERY_SECONDS = 60
OFFLINE_CHECK_EVERY_SECONDS = 15
RETENTION_EVERY_HOURS = 1


def refresh_rollups() -> int:
    """Bring the hourly rollups of hours that received points up to date."""
    return rollups.refresh(engine=db.get_engine())


def apply_retention(retention_days: int) -> int:
    """Forget points (and their hourly rollups) older than the retention period."""
    deleted = rollups.apply_retention(engine=db.get_engine(), retention_days=retention_days)
    if deleted:
        logger.info("retention: deleted %d points older than %d days", deleted, retention_days)
    return deleted


def mark_silent_devices(offline_after: int, last_seen_lag: float = 0.0) -> list:
    """Mark OFFLINE the ONLINE devices silent for `offline_after` seconds.

    `last_seen_lag`: how far behind a device's last message its stored last_seen_at may be
    (ingest writes it every IOTDECK_LAST_SEEN_FLUSH seconds, app/services/last_seen.py); a
    device is given that much longer, so one that did speak is never marked OFFLINE.
    """
    since = datetime.now(UTC) - timedelta(seconds=offline_after + last_seen_lag)
    with db.session_scope() as session:
        silent = devices.mark_silent_offline(session=session, silent_since=since)
    if silent:
        logger.info("%d device(s) silent for %d s marked OFFLINE", len(silent), offline_after)
    return silent


def add_jobs(scheduler: BaseScheduler, settings: Settings) -> None:
    """Schedule every periodic job on `scheduler`; none overlaps a run of itself."""
    common = {"max_instances": 1, "coalesce": True}
    scheduler.add_job(refresh_rollups, "interval", seconds=ROLLUP_EVERY_SECONDS, **common)
    scheduler.add_job(
        mark_silent_devices,
        "interval",
        seconds=OFFLINE_CHECK_EVERY_SECONDS,
        args=[settings.offline_after, settings.last_seen_flush],
        **common,
    )
    scheduler.add_job(
        apply_retention,
        "interval",
        hours=RETENTION_EVERY_HOURS,
        args=[settings.retention_days],
        next_run_time=datetime.now(UTC) + timedelta(minutes=1),
        **common,
    )
