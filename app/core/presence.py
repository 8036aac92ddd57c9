"""Which iotdeck processes are alive: each announces itself in Redis while it runs.

Every `serve`, `ingest` and `worker` process with IOTDECK_REDIS_URL writes a heartbeat
into one hash (`iot:processes`, a field per process: its kind, host, pid, start time and
when the record expires, by Redis's clock) every BEAT_SECONDS from a thread of its own, and
removes it when it stops; a record not renewed for EXPIRE_SECONDS counts as dead (the
process was killed) and goes. The System page lists them (app/services/system.py).
"""

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import orjson
import redis

logger = logging.getLogger(__name__)

PROCESSES = "iot:processes"
BEAT_SECONDS = 5.0
EXPIRE_SECONDS = 15.0  # three heartbeats missed: gone
STARTED = time.time()  # about when this process started (its first import of this module)


@dataclass(frozen=True)
class Process:
    """A live process as its last heartbeat described it."""

    name: str
    kind: str  # serve, ingest, worker
    host: str
    pid: int
    started: float  # Unix time
    seen_seconds: float  # since its last heartbeat


def milliseconds(time_answer: tuple[int, int]) -> int:
    """Redis's TIME answer (seconds, microseconds) in milliseconds."""
    seconds, micros = time_answer
    return seconds * 1000 + micros // 1000


def live_records(
    records: Mapping[bytes, bytes], now_ms: int, lifetime_seconds: float
) -> tuple[list[tuple[str, dict, float]], list[bytes]]:
    """A hash of heartbeat records (field: a name; value: JSON with `expires`, in ms by
    Redis's clock, set `lifetime_seconds` after it was written): the live ones as (name,
    record, seconds since written), and the fields of the expired ones."""
    live, expired = [], []
    for name, raw in records.items():
        record = orjson.loads(raw)
        if record["expires"] <= now_ms:
            expired.append(name)
            continue
        seen_ms = now_ms - (record["expires"] - int(lifetime_seconds * 1000))
        live.append((name.decode(), record, max(0.0, seen_ms / 1000)))
    return live, expired


@contextmanager
def announced(redis_url: str, kind: str) -> Iterator[None]:
    """Keep this process's heartbeat in Redis for the block (nothing without Redis)."""
    if not redis_url:
        yield
        return
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2.0, socket_timeout=2.0)
    host, pid = socket.gethostname(), os.getpid()
    name = f"{kind}-{host}-{pid}"
    record = {"kind": kind, "host": host, "pid": pid, "started": STARTED}
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                expires = milliseconds(client.time()) + int(EXPIRE_SECONDS * 1000)
                client.hset(PROCESSES, name, orjson.dumps({**record, "expires": expires}))
            except redis.RedisError as exc:  # shown as missing meanwhile; tried again
                logger.debug("heartbeat not written: %s", exc)
            if stop.wait(BEAT_SECONDS):
                return

    beating = threading.Thread(target=beat, name="presence", daemon=True)
    beating.start()
    try:
        yield
    finally:
        stop.set()
        beating.join(5)
        try:
            client.hdel(PROCESSES, name)
        except redis.RedisError:  # it expires by itself
            pass
        client.close()


def alive(redis_url: str) -> list[Process]:
    """The processes whose heartbeat has not expired, by kind and name; expired ones go."""
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2.0, socket_timeout=2.0)
    try:
        now_ms = milliseconds(client.time())
        live, expired = live_records(client.hgetall(PROCESSES), now_ms, EXPIRE_SECONDS)
        found = [
            Process(
                name=name,
                kind=record["kind"],
                host=record["host"],
                pid=record["pid"],
                started=record["started"],
                seen_seconds=seen,
            )
            for name, record, seen in live
        ]
        if expired:
            client.hdel(PROCESSES, *expired)
    finally:
        client.close()
    return sorted(found, key=lambda process: (process.kind, process.name))
