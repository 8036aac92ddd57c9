"""Devices' last contact, kept in memory by ingest and written every few seconds.

Writing `last_seen_at` in every ingest batch updated every device of the batch, about five
times a second: one new row version (a dead tuple) per device per batch, so the cost of a
batch grew with the fleet. Ingest now notes the newest contact of each device (`LastSeen`)
and writes them all every IOTDECK_LAST_SEEN_FLUSH seconds and when it stops: one statement
per flush (per `_CHUNK` devices), which only moves `last_seen_at` forward, since several
ingest workers may have seen the same device. A real status change (a device coming
ONLINE) is still written by its batch at once (app/services/telemetry.py).

So `last_seen_at` in the database is at most one flush interval (plus one batch) behind
the device's last message; the offline job allows for that (app/workers/jobs.py).
"""

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from itertools import islice

from sqlalchemy import Connection, Engine, bindparam, or_, text, update

from app.core.models import Device

logger = logging.getLogger(__name__)

_DEVICES = Device.__table__
_CHUNK = 10_000  # devices per statement and transaction: bounds how long rows stay locked


def store_last_seen(connection: Connection, seen: Mapping[uuid.UUID, datetime]) -> int:
    """Move devices' last_seen_at forward to these times, never back; how many rows moved."""
    if not seen:
        return 0
    # the same lock order in every worker flushing overlapping devices, compared in C (a
    # flush sorts tens of thousands of ids; UUID's own comparison is Python code)
    ordered = sorted(seen.items(), key=lambda item: item[0].int)
    if connection.dialect.name == "postgresql":
        # two array parameters whatever the number of devices (the protocol caps a
        # statement at 65,535 parameters)
        statement = text(
            "UPDATE devices AS d SET last_seen_at = v.at"
            " FROM unnest(CAST(:ids AS uuid[]), CAST(:ats AS timestamptz[])) AS v(id, at)"
            " WHERE d.id = v.id AND (d.last_seen_at IS NULL OR d.last_seen_at < v.at)"
        )
        values = {"ids": [i for i, _ in ordered], "ats": [at for _, at in ordered]}
        return connection.execute(statement, values).rowcount
    at = bindparam("seen_at", type_=_DEVICES.c.last_seen_at.type)
    statement = (
        update(_DEVICES)
        .where(
            _DEVICES.c.id == bindparam("device_id"),
            or_(_DEVICES.c.last_seen_at.is_(None), _DEVICES.c.last_seen_at < at),
        )
        .values(last_seen_at=at)
    )
    rows = [{"device_id": i, "seen_at": seen_at} for i, seen_at in ordered]
    return connection.execute(statement, rows).rowcount


class LastSeen:
    """The newest contact of each device seen since the last flush; one per ingest worker."""

    def __init__(self, interval: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[uuid.UUID, datetime] = {}
        self._flushed = clock()

    def saw(self, device_ids: Iterable[uuid.UUID], at: datetime) -> None:
        """Note that these devices were heard from at `at` (a later time wins)."""
        with self._lock:
            self._merge(dict.fromkeys(device_ids, at))

    def _merge(self, seen: Mapping[uuid.UUID, datetime]) -> None:
        mine = self._seen
        for device_id, at in seen.items():
            known = mine.get(device_id)
            if known is None or known < at:
                mine[device_id] = at

    def due_in(self) -> float:
        """Seconds until the next flush is due (0: now)."""
        return max(0.0, self._flushed + self.interval - self._clock())

    def flush(self, engine: Engine, *, force: bool = False) -> int:
        """Write the contacts noted since the last flush, if one is due (or `force`).

        Returns how many rows moved. On failure (the database away) the contacts are kept
        for the next flush and the error is raised.
        """
        with self._lock:
            if not force and self.due_in() > 0:
                return 0
            seen, self._seen = self._seen, {}
            self._flushed = self._clock()
        moved = 0
        try:
            pending = iter(seen.items())
            while chunk := dict(islice(pending, _CHUNK)):
                with engine.begin() as connection:
                    moved += store_last_seen(connection, chunk)
        except BaseException:
            with self._lock:
                self._merge(seen)  # the rows already written stay: moving forward is idempotent
            raise
        logger.debug("last contact of %d device(s) written, %d moved", len(seen), moved)
        return moved
