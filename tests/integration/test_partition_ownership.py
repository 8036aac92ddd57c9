"""Rule evaluation shared by partition among `iotdeck worker` processes (app/workers/leases.py).

A real deployment's processes: `iotdeck ingest`, N `iotdeck worker`, PostgreSQL, a private
Redis and `iotdeck mqtt-broker`; 24 devices publish a scripted minute of telemetry.
- Killed mid-stream (SIGKILL), a worker's partitions go to the other, and the alerts are
  those of a reference run with one worker on the same script: each threshold episode once
  at the same point, a running `for` fired once and on time, nothing duplicated.
- A worker joining and one leaving rebalance the partitions evenly, and a probe reading
  every member's record every few milliseconds never sees a partition used by two.
"""

import json
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import redis
from sqlalchemy import Engine
from sqlmodel import Session, select

from app.core.models import AlertRule
from app.core.streams import partition_of
from app.workers import leases
from app.workers.evaluation import GROUP, TICK_SECONDS
from bench.services import IotdeckBroker, RedisServer, free_port, iotdeck_environment
from tests.firmware import connected_device
from tests.integration.test_evaluation_burst import _alerts, _devices
from tests.serving import IOTDECK, running
from tests.waiting import wait_until

pytestmark = [
    pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server"),
    pytest.mark.parametrize("database_url", ["postgres"], indirect=True),
]
HOT = 'rule "Hot"\n  when temperature > 30\n  clear when temperature < 25\n  cooldown 1s\n'
HOLD = 20  # seconds: "Long" fires after 20 s above 40
LONG = f'rule "Long"\n  when temperature > 40 for {HOLD}s\n'
DEVICES = 24
STEP = 1.0  # seconds between two points of a device
# a device's script, one value a step: "Hot" at steps 3 and 9 (cleared at 6 and 35),
# "Long" held from step 9, so due at step 9 + HOLD
SCRIPT = [20.0] * 3 + [35.0] * 3 + [20.0] * 3 + [45.0] * 26 + [20.0] * 3
KILL_AT = 14  # the step after which a worker is killed: "Long" is running everywhere
PARTITIONS = 16
REBALANCE_SECONDS = 10  # the bound; rounds of 1 s make it about 3 s


class Cluster:
    """Ingest and workers on one Redis; workers start and stop at will."""

    def __init__(self, stack: ExitStack, env: dict[str, str], folder: Path) -> None:
        self._stack = stack
        self._env = env
        self._folder = folder
        self.workers: dict[int, subprocess.Popen] = {}  # by pid
        self.redis = redis.Redis.from_url(env["IOTDECK_REDIS_URL"])

    def start_worker(self) -> subprocess.Popen:
        log = self._folder / f"worker-{len(self.workers)}.log"
        env = {**self._env, "IOTDECK_METRICS_PORT": str(free_port())}
        ready = lambda: "worker running" in log.read_text()  # noqa: E731
        process = self._stack.enter_context(running([IOTDECK, "worker"], env, log, ready))
        self.workers[process.pid] = process
        return process

    def kept_state(self, worker: int) -> int:
        """How many times worker number `worker` went on after a change without rebuilding
        any partition from storage (it only gave some away)."""
        return (self._folder / f"worker-{worker}.log").read_text().count("(0 rebuilt from storage)")

    def members(self) -> dict[int, frozenset[int]]:
        """Each live member's pid and the partitions it evaluates, as its record says."""
        seconds, micros = self.redis.time()
        now_ms = seconds * 1000 + micros // 1000
        using = {}
        for _name, raw in self.redis.hgetall(leases.MEMBERS.format(group=GROUP)).items():
            record = orjson.loads(raw)
            if record["expires"] > now_ms:
                using[record["pid"]] = frozenset(record["using"])
        return using

    def owner_pids(self) -> dict[int, int | None]:
        """Each partition's lease holder, by pid (None: free)."""
        keys = [leases.LEASE.format(group=GROUP, partition=p) for p in range(PARTITIONS)]
        names = self.redis.mget(keys)
        return {
            p: None if name is None else int(name.decode().rsplit("-", 2)[1])
            for p, name in enumerate(names)
        }


@pytest.fixture
def cluster(database_url: str, mosquitto: IotdeckBroker, tmp_path: Path) -> Iterator[Cluster]:
    redis_server = RedisServer(tmp_path / "redis", persistent=True).start()
    env = iotdeck_environment(
        IOTDECK_DATABASE_URL=database_url,
        IOTDECK_REDIS_URL=redis_server.url,
        IOTDECK_MQTT_URL=mosquitto.url,
        IOTDECK_PARTITIONS=str(PARTITIONS),
        IOTDECK_JWT_SECRET="ownership-tests-" + "o" * 40,
        IOTDECK_DATA_DIR=str(tmp_path / "data"),
        IOTDECK_BCRYPT_ROUNDS="4",
    )
    try:
        with ExitStack() as stack:
            ingest_log = tmp_path / "ingest.log"
            stack.enter_context(
                running(
                    [IOTDECK, "ingest"],
                    {**env, "IOTDECK_METRICS_PORT": str(free_port())},
                    ingest_log,
                    lambda: "ingest subscribed on" in ingest_log.read_text(),
                )
            )
            yield Cluster(stack, env, tmp_path)
    finally:
        redis_server.stop()


def _balanced(cluster: Cluster, count: int) -> bool:
    """`count` live members use every partition between them, evenly."""
    using = cluster.members()
    sizes = sorted(len(partitions) for partitions in using.values())
    even = [PARTITIONS // count + (n >= count - PARTITIONS % count) for n in range(count)]
    every = frozenset().union(*using.values()) == frozenset(range(PARTITIONS))
    return len(using) == count and sizes == even and every


def _play(mosquitto: IotdeckBroker, devices: list[str], midway: Callable[[], None]) -> datetime:
    """Publish every device's SCRIPT, a step every STEP seconds (the points carry their
    time); `midway` runs after step KILL_AT. The script's start time."""
    clients = {device: connected_device(mosquitto, device) for device in devices}
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    try:
        for step, value in enumerate(SCRIPT):
            at = start + timedelta(seconds=step * STEP)
            time.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()))  # the script's pace
            sent = [
                client.publish(
                    f"devices/{device}/telemetry",
                    json.dumps({"timestamp": at.isoformat(), "temperature": value}),
                    qos=1,
                )
                for device, client in clients.items()
            ]
            for message in sent:
                message.wait_for_publish(5)
            if step == KILL_AT:
                midway()
    finally:
        for client in clients.values():
            client.loop_stop()
            client.disconnect()
    return start


def _outcome(engine: Engine, devices: list[str], start: datetime) -> Counter:
    """The alerts of `devices` as (device's rank, rule, when after the start): exact for
    threshold alerts (a point's time); "Long" as whether it fired within a tick of due (its
    last point's time, or the tick that found it held)."""
    rank = {device: n for n, device in enumerate(devices)}
    with Session(engine) as session:
        names = {rule.id: rule.name for rule in session.exec(select(AlertRule))}
    seen: Counter = Counter()
    due = timedelta(seconds=(SCRIPT.index(45.0) * STEP) + HOLD)
    for alert in _alerts(engine):
        device = str(alert.device_id)
        if device not in rank:
            continue
        after = alert.triggered_at.astimezone(UTC) - start
        if names[alert.rule_id] == "Long":
            on_time = due <= after <= due + timedelta(seconds=TICK_SECONDS)
            seen[(rank[device], "Long", "on time" if on_time else str(after))] += 1
        else:
            seen[(rank[device], names[alert.rule_id], str(after))] += 1
    return seen


def _settled(engine: Engine, devices: list[str]) -> bool:
    """Every device has its alerts: two "Hot", one "Long"."""
    count = Counter(str(alert.device_id) for alert in _alerts(engine))
    return all(count[device] >= 3 for device in devices)


def test_a_killed_workers_partitions_are_taken_over_and_alerts_match_one_worker(
    engine: Engine, mosquitto: IotdeckBroker, cluster: Cluster
) -> None:
    reference = _devices(engine, DEVICES, HOT, LONG)
    scaled = _devices(engine, DEVICES)
    alone = cluster.start_worker()
    wait_until(lambda: _balanced(cluster, 1), timeout=30)
    start = _play(mosquitto, reference, lambda: None)
    wait_until(lambda: _settled(engine, reference), timeout=60)
    alone.terminate()
    alone.wait(30)
    expected = _outcome(engine, reference, start)
    assert len(expected) == DEVICES * 3 and set(expected.values()) == {1}, expected

    pair = {cluster.start_worker().pid for _ in range(2)}
    wait_until(lambda: _balanced(cluster, 2), timeout=30)
    owners = cluster.owner_pids()
    busiest, _ = Counter(owners[partition_of(d, PARTITIONS)] for d in scaled).most_common(1)[0]
    assert busiest is not None

    def kill() -> None:
        cluster.workers[busiest].send_signal(signal.SIGKILL)  # no goodbye: its leases expire

    start = _play(mosquitto, scaled, kill)
    wait_until(lambda: _settled(engine, scaled), timeout=60)
    assert set(cluster.owner_pids().values()) == pair - {busiest}  # all the survivor's
    assert _outcome(engine, scaled, start) == expected  # same alerts, none twice


def test_workers_joining_and_leaving_rebalance_with_never_two_owners(
    cluster: Cluster,
) -> None:
    for _ in range(2):
        cluster.start_worker()
    wait_until(lambda: _balanced(cluster, 2), timeout=30)
    samples = 0
    doubles: list[dict[int, frozenset[int]]] = []
    probing = threading.Event()
    probing.set()

    def probe() -> None:
        nonlocal samples
        while probing.is_set():
            using = cluster.members()
            claimed = Counter(p for partitions in using.values() for p in partitions)
            if any(count > 1 for count in claimed.values()):
                doubles.append(using)
            samples += 1
            time.sleep(0.005)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    kept_before = [cluster.kept_state(worker) for worker in (0, 1)]
    try:
        third = cluster.start_worker()
        wait_until(lambda: _balanced(cluster, 3), timeout=REBALANCE_SECONDS)
        # the first two only gave partitions away: each went on with the state it held
        wait_until(
            lambda: all(cluster.kept_state(w) > kept_before[w] for w in (0, 1)),
            timeout=REBALANCE_SECONDS,
        )
        third.terminate()  # leaves: gives its leases back
        third.wait(30)
        wait_until(lambda: _balanced(cluster, 2), timeout=REBALANCE_SECONDS)
    finally:
        probing.clear()
        prober.join(5)
    assert samples > 100
    assert not doubles, doubles[:3]
