"""`iotdeck worker`: rules evaluated apart from the web app, by one worker at a time.

One `iotdeck ingest` and two `iotdeck worker` processes on one PostgreSQL, a private Redis
and `iotdeck mqtt-broker`, as a scaled-out deployment runs them: a device's violation
opens one alert; the worker evaluating is killed (SIGKILL) and the other takes over, the
next violation opening one alert again.
"""

import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from app.models import AlertStatus
from bench.services import IotdeckBroker, RedisServer, free_port, iotdeck_environment
from tests.firmware import connected_device
from tests.integration.test_evaluation_burst import _alerts, _devices
from tests.serving import IOTDECK, running
from tests.waiting import wait_until

pytestmark = pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")
HOT = 'rule "Hot"\n  when temperature > 30\n  clear when temperature < 25\n  cooldown 1s\n'


def _leads(port: int) -> bool:
    """The worker serving /metrics on `port` holds the evaluation lock."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.TransportError:
        return False
    for family in text_string_to_metric_families(text):
        if family.name == "evaluator_leader":
            return any(sample.value == 1 for sample in family.samples)
    return False


@pytest.fixture
def device(engine: Engine) -> str:
    """A device and the rule "Hot", stored before the processes start (this process has no
    bus to tell them of later changes)."""
    (made,) = _devices(engine, 1, HOT)
    return made


@pytest.fixture
def deployment(
    database_url: str, mosquitto: IotdeckBroker, tmp_path: Path, device: str
) -> Iterator[dict[int, subprocess.Popen]]:
    """An ingest process and two workers, by the port of each worker's /metrics."""
    del device
    redis = RedisServer(tmp_path / "redis", persistent=True).start()
    env = iotdeck_environment(
        IOTDECK_DATABASE_URL=database_url,
        IOTDECK_REDIS_URL=redis.url,
        IOTDECK_MQTT_URL=mosquitto.url,
        IOTDECK_JWT_SECRET="worker-tests-" + "w" * 40,
        IOTDECK_DATA_DIR=str(tmp_path / "data"),
        IOTDECK_BCRYPT_ROUNDS="4",
    )
    workers: dict[int, subprocess.Popen] = {}
    try:
        with ExitStack() as stack:
            ingest_log = tmp_path / "ingest.log"
            ingest_env = {**env, "IOTDECK_METRICS_PORT": str(free_port())}
            stack.enter_context(
                running(
                    [IOTDECK, "ingest"],
                    ingest_env,
                    ingest_log,
                    lambda: "ingest subscribed on" in ingest_log.read_text(),
                )
            )
            for name in ("a", "b"):
                port = free_port()
                log = tmp_path / f"worker-{name}.log"
                worker_env = {**env, "IOTDECK_METRICS_PORT": str(port)}
                process = stack.enter_context(
                    running(
                        [IOTDECK, "worker"],
                        worker_env,
                        log,
                        lambda log=log: "worker running" in log.read_text(),
                    )
                )
                workers[port] = process
            yield workers
    finally:
        redis.stop()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_one_worker_evaluates_and_the_other_takes_over_when_it_is_killed(
    engine: Engine, mosquitto: IotdeckBroker, device: str, deployment: dict[int, subprocess.Popen]
) -> None:
    first = wait_until(lambda: next((p for p in deployment if _leads(p)), None), timeout=30)
    assert isinstance(first, int)
    assert not any(_leads(port) for port in deployment if port != first)  # one at a time
    publisher = connected_device(mosquitto, device)
    topic = f"devices/{device}/telemetry"

    def publish(value: float) -> None:
        publisher.publish(topic, json.dumps({"temperature": value}), qos=1).wait_for_publish(5)

    def statuses() -> list[AlertStatus]:
        return sorted(alert.status for alert in _alerts(engine))

    try:
        publish(35.0)
        wait_until(lambda: statuses() == [AlertStatus.ACTIVE], timeout=30)

        deployment[first].send_signal(signal.SIGKILL)  # no goodbye: its lock goes with it
        deployment[first].wait(10)
        (second,) = (port for port in deployment if port != first)
        wait_until(lambda: _leads(second), timeout=30)
        publish(20.0)  # clears: the open alert is resolved by the rule
        wait_until(lambda: statuses() == [AlertStatus.RESOLVED], timeout=30)
        publish(36.0)  # a new episode: one new alert
        wait_until(lambda: statuses() == [AlertStatus.ACTIVE, AlertStatus.RESOLVED], timeout=30)
    finally:
        publisher.loop_stop()
        publisher.disconnect()
    assert len(_alerts(engine)) == 2  # no duplicate


def test_a_worker_without_redis_or_a_broker_says_which_setting_is_missing(
    tmp_path: Path,
) -> None:
    env = iotdeck_environment(
        IOTDECK_DATABASE_URL=f"sqlite:///{tmp_path / 'w.db'}",
        IOTDECK_JWT_SECRET="worker-tests-" + "w" * 40,
        IOTDECK_METRICS_PORT="0",
    )
    env.pop("IOTDECK_REDIS_URL", None)
    env.pop("IOTDECK_MQTT_URL", None)
    answer = subprocess.run(
        [IOTDECK, "worker"], env=env, capture_output=True, text=True, check=False
    )
    assert answer.returncode != 0 and "IOTDECK_REDIS_URL is not set" in answer.stderr
    env["IOTDECK_REDIS_URL"] = "redis://127.0.0.1:6379/0"
    answer = subprocess.run(
        [IOTDECK, "worker"], env=env, capture_output=True, text=True, check=False
    )
    assert answer.returncode != 0 and "IOTDECK_MQTT_URL is not set" in answer.stderr
