"""`iotdeck mqtt-broker`, `iotdeck ingest` and `iotdeck device credentials` as subprocesses,
with Debian's C client (`mosquitto_pub`) as the device, as docs/mqtt.md shows it."""

import re
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, func, select

from app.core import db
from app.core.models import DeviceCreate, TelemetryPoint
from app.services import devices
from bench.services import free_port, iotdeck_environment, wait_for_port
from tests.waiting import wait_until

IOTDECK = str(Path(sys.executable).with_name("iotdeck"))
pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


def _stored(engine: Engine, device_id: uuid.UUID) -> int:
    with Session(engine) as session:
        query = select(func.count()).where(TelemetryPoint.device_id == device_id)
        return session.exec(query).one()


def _closed(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment every iotdeck process of this test shares."""
    return iotdeck_environment(
        IOTDECK_DATABASE_URL=database_url,
        IOTDECK_DATA_DIR=str(tmp_path / "data"),
        IOTDECK_BROKER_PORT=str(free_port()),
        IOTDECK_BROKER_TLS_PORT=str(free_port()),
        IOTDECK_BROKER_SYNC_SECONDS="1",
        IOTDECK_INGEST_CLIENT_ID=f"ingest-{uuid.uuid4().hex[:8]}",
        IOTDECK_INGEST_BATCH_MS="20",
    )


@pytest.fixture
def broker(env: dict[str, str], engine: Engine) -> Iterator[subprocess.Popen]:
    """`iotdeck mqtt-broker`, up on both listeners."""
    del engine  # the database exists and is migrated
    process = subprocess.Popen([IOTDECK, "mqtt-broker"], env=env)
    wait_for_port(int(env["IOTDECK_BROKER_PORT"]), timeout=30)
    wait_for_port(int(env["IOTDECK_BROKER_TLS_PORT"]), timeout=30)
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()


def _credentials(env: dict[str, str], device_id: uuid.UUID, kind: str, out: Path) -> str:
    done = subprocess.run(
        [IOTDECK, "device", "credentials", "--device", str(device_id), "--kind", kind],
        env=env,
        cwd=out,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def _mosquitto_pub(*options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-q", "1", *options],
        check=False,
        capture_output=True,
        text=True,
        timeout=20,
    )


def test_devices_publish_with_a_password_and_with_a_certificate_through_the_cli_broker(
    env: dict[str, str], broker: subprocess.Popen, engine: Engine, tmp_path: Path
) -> None:
    with db.session_scope() as session:
        device_id = devices.create_device(
            session=session, data=DeviceCreate(name="boiler", type="t")
        ).id
    ingest_env = env | {"IOTDECK_MQTT_URL": f"mqtts://127.0.0.1:{env['IOTDECK_BROKER_TLS_PORT']}"}
    ingest = subprocess.Popen([IOTDECK, "ingest"], env=ingest_env)
    try:
        password = re.search(
            r"password: (\S+)", _credentials(env, device_id, "password", tmp_path)
        ).group(1)
        _credentials(env, device_id, "certificate", tmp_path)
        port, tls_port = env["IOTDECK_BROKER_PORT"], env["IOTDECK_BROKER_TLS_PORT"]
        topic = f"devices/{device_id}/telemetry"
        anonymous = _mosquitto_pub("-p", port, "-t", topic, "-m", '{"t": 0}')
        assert anonymous.returncode != 0
        assert "not authori" in anonymous.stderr.lower()
        # the broker picks the new credentials up within its sync interval
        with_password = ["-p", port, "-i", str(device_id), "-u", str(device_id), "-P", password]
        wait_until(
            lambda: _mosquitto_pub(*with_password, "-t", topic, "-m", '{"t": 1}').returncode == 0,
            timeout=10,
        )
        with_certificate = [
            "-p",
            tls_port,
            "--cafile",
            str(tmp_path / "ca.crt"),
            "--cert",
            str(tmp_path / f"{device_id}.crt"),
            "--key",
            str(tmp_path / f"{device_id}.key"),
            "-i",
            str(device_id),
        ]
        sent = _mosquitto_pub(*with_certificate, "-t", topic, "-m", '{"t": 2}')
        assert sent.returncode == 0, sent.stderr
        wait_until(lambda: _stored(engine, device_id) >= 2)
    finally:
        ingest.send_signal(signal.SIGTERM)
        assert ingest.wait(30) == 0
    broker.send_signal(signal.SIGTERM)
    assert broker.wait(30) == 0
    assert _closed(int(env["IOTDECK_BROKER_PORT"])), "Mosquitto outlived iotdeck mqtt-broker"


def test_mosquitto_dies_with_a_killed_manager(
    env: dict[str, str], broker: subprocess.Popen
) -> None:
    broker.kill()
    broker.wait()
    wait_until(lambda: _closed(int(env["IOTDECK_BROKER_PORT"])), timeout=10)
