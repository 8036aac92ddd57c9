"""Processes announce themselves in Redis (app/core/presence.py) for the System page."""

import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from app.core import presence
from bench.services import RedisServer
from tests.waiting import wait_until

pytestmark = pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    server = RedisServer(tmp_path / "redis").start()
    yield server.url
    server.stop()


def test_a_process_is_alive_while_announced_and_gone_after(redis_url: str) -> None:
    assert presence.alive(redis_url) == []
    with presence.announced(redis_url, "ingest"):
        [process] = wait_until(lambda: presence.alive(redis_url))
        here = ("ingest", socket.gethostname(), os.getpid())
        assert (process.kind, process.host, process.pid) == here
        assert process.seen_seconds < presence.BEAT_SECONDS + 1
        assert process.started <= time.time()
    assert presence.alive(redis_url) == []  # removed on the way out


def test_a_killed_process_disappears_once_its_heartbeat_expires(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    seconds, _ = client.time()
    dead = {"kind": "worker", "host": "gone", "pid": 1, "started": 0, "expires": seconds * 1000}
    client.hset(presence.PROCESSES, "worker-gone-1", orjson.dumps(dead))
    assert presence.alive(redis_url) == []
    assert not client.hexists(presence.PROCESSES, "worker-gone-1")  # cleaned up
