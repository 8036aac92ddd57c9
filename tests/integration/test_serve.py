"""`iotdeck serve --demo` as a user runs it: the embedded broker takes a device's data."""

import re
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.services import free_port, iotdeck_environment
from tests.waiting import wait_until

IOTDECK = str(Path(sys.executable).with_name("iotdeck"))
BOILER = "6f1c2a8e-0c1b-4a51-9d1e-1a0000000001"  # a seeded demo device


class Server:
    """`iotdeck serve` in a subprocess, its output collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [IOTDECK, "serve", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        self.lines.extend(self.process.stdout)

    def line(self, pattern: str) -> re.Match:
        """The first output line matching `pattern`, waiting for it."""
        found = wait_until(
            lambda: next((m for line in self.lines if (m := re.search(pattern, line))), None),
            timeout=60,
        )
        assert isinstance(found, re.Match)
        return found

    def stop(self) -> None:
        """SIGTERM and wait."""
        self.process.terminate()
        self.process.wait(30)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else already listens on, like a system Mosquitto on 1883."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_demo_falls_back_to_a_free_broker_port_and_stores_what_a_device_publishes(
    tmp_path: Path, busy_port: int
) -> None:
    web_port = free_port()
    env = iotdeck_environment(
        IOTDECK_DATA_DIR=str(tmp_path / "data"),
        IOTDECK_MQTT_EMBEDDED_PORT=str(busy_port),
        IOTDECK_ADMIN_PASSWORD="demo password 1",
    )
    server = Server(["--demo", "--port", str(web_port)], env)
    try:
        server.line(rf"MQTT port {busy_port} is taken")
        broker_port = int(
            server.line(r"embedded MQTT broker \(3\.1\.1\): mqtt://127\.0\.0\.1:(\d+)")[1]
        )
        assert broker_port != busy_port
        server.line(r"admin login: admin@example.com / the password in IOTDECK_ADMIN_PASSWORD")

        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{web_port}/health/ready").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=60)
        subprocess.run(
            [
                "mosquitto_pub",
                "-p",
                str(broker_port),
                "-V",
                "mqttv311",
                "-q",
                "1",
                "-t",
                f"devices/{BOILER}/telemetry",
                "-m",
                '{"probe": 21.5}',
            ],
            check=True,
            timeout=10,
        )
        database = tmp_path / "data" / "iotdeck.db"

        def stored() -> list:
            with sqlite3.connect(database) as connection:
                return connection.execute(
                    "SELECT metric_name, value FROM device_telemetry"
                    " WHERE device_id = ? AND metric_name = 'probe'",
                    (BOILER.replace("-", ""),),
                ).fetchall()

        assert wait_until(stored) == [("probe", 21.5)]
        with sqlite3.connect(database) as connection:
            status = connection.execute(
                "SELECT status FROM devices WHERE id = ?", (BOILER.replace("-", ""),)
            ).fetchone()
        assert status == ("ONLINE",)
    finally:
        server.stop()


def test_serve_started_from_inside_a_pytest_run_serves(tmp_path: Path) -> None:
    # an integrator's suite starts `iotdeck serve` as we do: with pytest's and NiceGUI's own
    # test variables in its environment, which NiceGUI alone would take for its own test
    web_port = free_port()
    env = iotdeck_environment(
        IOTDECK_DATA_DIR=str(tmp_path / "data"),
        IOTDECK_MQTT_EMBEDDED_PORT="0",
        PYTEST_CURRENT_TEST="tests/test_integrator.py::test_it (call)",
        NICEGUI_USER_SIMULATION="true",
    )
    assert "NICEGUI_SCREEN_TEST_PORT" not in env  # what NiceGUI would then demand
    server = Server(["--demo", "--port", str(web_port)], env)
    try:

        def ready() -> bool:
            assert server.process.poll() is None, "".join(server.lines)  # it must not exit
            try:
                return httpx.get(f"http://127.0.0.1:{web_port}/health/ready").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=60)
        page = httpx.get(f"http://127.0.0.1:{web_port}/login")
        assert page.status_code == 200 and "iotdeck" in page.text
    finally:
        server.stop()
