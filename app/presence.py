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
from collections.abc import Iterator
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


def _now_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return seconds * 1000 + micros // 1000


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
                expires = _now_ms(client) + int(EXPIRE_SECONDS * 1000)
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
        now_ms = _now_ms(client)
        found, expired = [], []
        for name, raw in client.hgetall(PROCESSES).items():
            record = orjson.loads(raw)
            if record["expires"] <= now_ms:
                expired.append(name)
                continue
            seen_ms = now_ms - (record["expires"] - int(EXPIRE_SECONDS * 1000))
            found.append(
                Process(
                    name=name.decode(),
                    kind=record["kind"],
                    host=record["host"],
                    pid=record["pid"],
                    started=record["started"],
                    seen_seconds=max(0.0, seen_ms / 1000),
                )
            )
        if expired:
            client.hdel(PROCESSES, *expired)
    finally:
        client.close()
    return sorted(found, key=lambda process: (process.kind, process.name))
