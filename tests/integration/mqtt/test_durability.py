"""Nothing accepted is lost: ingest killed mid-stream, PostgreSQL restarted mid-stream."""

import signal
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from sqlalchemy import Engine
from sqlmodel import Session, func, select

from app.core import db, migrate
from app.core.models import DeviceCreate, TelemetryPoint
from app.services import devices
from bench.services import IotdeckBroker, iotdeck_environment
from tests.firmware import connected_device
from tests.postgres_server import PostgresServer
from tests.waiting import wait_until

IOTDECK = str(Path(sys.executable).with_name("iotdeck"))
MESSAGES = 3000
START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


def _stamp(index: int) -> datetime:
    return START + timedelta(milliseconds=index)


class Stream:
    """A device publishing MESSAGES seed-format messages of two metrics at QoS 1."""

    def __init__(self, broker: IotdeckBroker, device_id: uuid.UUID) -> None:
        self.device_id = device_id
        self.client = connected_device(broker, device_id)
        self.thread = threading.Thread(target=self._publish_all, daemon=True)

    def _publish_all(self) -> None:
        topic = f"devices/{self.device_id}/telemetry"
        for index in range(MESSAGES):
            payload = {
                "timestamp": _stamp(index).isoformat(),
                "metrics": [{"name": "a", "value": index}, {"name": "b", "value": -index}],
            }
            self.client.publish(topic, orjson.dumps(payload), qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.thread.join(60)
        self.client.disconnect()
        self.client.loop_stop()


def _stored(engine: Engine) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(TelemetryPoint)).one()


def _assert_exactly_once(engine: Engine) -> None:
    with Session(engine) as session:
        rows = session.exec(
            select(TelemetryPoint.metric_name, TelemetryPoint.time, TelemetryPoint.value)
        ).all()
    expected = {("a", _stamp(i), float(i)) for i in range(MESSAGES)}
    expected |= {("b", _stamp(i), float(-i)) for i in range(MESSAGES)}
    assert len(rows) == 2 * MESSAGES
    assert set(rows) == expected


class Ingest:
    """`iotdeck ingest` in a subprocess, its log kept for the assertions."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [IOTDECK, "ingest"], env=env, stderr=subprocess.PIPE, text=True
        )
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_until(lambda: any("ingest subscribed" in line for line in self.log), timeout=30)

    def _read(self) -> None:
        assert self.process.stderr is not None
        self.log.extend(self.process.stderr)

    def kill(self) -> None:
        """SIGKILL: no flush, no acknowledgement."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def terminate(self) -> int:
        """SIGTERM: flush, commit, acknowledge, exit; the exit code."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(30)
        self._reader.join(10)
        return code


def _env(database_url: str, mosquitto: IotdeckBroker) -> dict[str, str]:
    return iotdeck_environment(
        IOTDECK_DATABASE_URL=database_url,
        IOTDECK_MQTT_URL=mosquitto.url,
        IOTDECK_INGEST_CLIENT_ID=f"ingest-{uuid.uuid4().hex[:8]}",
        IOTDECK_INGEST_BATCH_MS="50",
        IOTDECK_INGEST_BATCH_MESSAGES="200",
        # one device streams as fast as it can: far above a device's normal rate limit
        IOTDECK_DEVICE_RATE_LIMIT="100000/second",
        IOTDECK_DEVICE_RATE_BURST="100000",
    )


def _device(engine: Engine) -> uuid.UUID:
    with Session(engine) as session:
        device = devices.create_device(session=session, data=DeviceCreate(name="d", type="t"))
        session.commit()
        return device.id


def test_sigkill_mid_stream_loses_and_duplicates_nothing(
    engine: Engine, database_url: str, mosquitto: IotdeckBroker
) -> None:
    env = _env(database_url, mosquitto)
    stream = Stream(mosquitto, _device(engine))
    worker = Ingest(env)
    stream.thread.start()
    wait_until(lambda: _stored(engine) >= MESSAGES // 2, timeout=60)
    worker.kill()
    assert _stored(engine) < 2 * MESSAGES, "the kill came too late to test anything"
    worker = Ingest(env)
    stream.close()
    wait_until(lambda: _stored(engine) >= 2 * MESSAGES, timeout=60)
    assert worker.terminate() == 0, worker.log
    assert any("ingest stopped" in line for line in worker.log)
    _assert_exactly_once(engine)


def test_postgres_restart_mid_stream_loses_and_duplicates_nothing(
    private_postgres: PostgresServer, mosquitto: IotdeckBroker
) -> None:
    url = private_postgres.url()
    engine = db.init_engine(url)
    migrate.upgrade(engine)
    stream = Stream(mosquitto, _device(engine))
    worker = Ingest(_env(url, mosquitto))
    try:
        stream.thread.start()
        wait_until(lambda: _stored(engine) >= MESSAGES // 3, timeout=60)
        private_postgres.stop("immediate")  # a crash, with batches in flight
        engine.dispose()
        private_postgres.start()
        stream.close()
        wait_until(lambda: _stored(engine) >= 2 * MESSAGES, timeout=90)
        _assert_exactly_once(engine)
        assert any("storage failed" in line for line in worker.log)
    finally:
        worker.terminate()
        engine.dispose()
