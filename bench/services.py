"""Private servers for tests and benchmarks: Mosquitto from the project's config, ports."""

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
from sqlalchemy import Engine, text

# the servers tests and benchmarks create their databases on: plain PostgreSQL, and a
# cluster that preloads TimescaleDB (`../shared/tools/timescaledb cluster` starts one)
PG_ADMIN_URL = os.environ.get(
    "IOTDECK_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TIMESCALEDB_ADMIN_URL = os.environ.get(
    "IOTDECK_TEST_TIMESCALEDB_ADMIN_URL", "postgresql://postgres@127.0.0.1:5433/postgres"
)
PROJECT_CONFIG = Path(__file__).parent.parent / "deploy" / "mosquitto" / "mosquitto.conf"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def iotdeck_environment(**settings: str) -> dict[str, str]:
    """This environment for an `iotdeck` subprocess: no inherited IOTDECK_*, plus `settings`.

    PYTEST_* and NICEGUI_* go too: NiceGUI takes a process that has PYTEST_CURRENT_TEST for
    one of its own screen tests and refuses to serve.
    """
    dropped = ("IOTDECK_", "PYTEST_", "NICEGUI_")
    clean = {key: value for key, value in os.environ.items() if not key.startswith(dropped)}
    return clean | settings


def wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    """Return once `iotdeck serve` at `url` answers /health/ready; fail with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"iotdeck serve exited with {process.returncode}:\n{log.read_text()}"
            )
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)  # polling a port: there is no event to wait on
    raise RuntimeError(f"iotdeck serve not ready after {timeout:g} s:\n{log.read_text()}")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    """Return once something accepts connections on 127.0.0.1:`port`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class LocalServer:
    """A private server process (broker, Redis) on its own port, with its own folder."""

    scheme = ""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def stop(self) -> None:
        """Stop it (Mosquitto saves its persistent sessions first)."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    @property
    def url(self) -> str:
        """Where it listens, as an IOTDECK_*_URL."""
        return f"{self.scheme}://127.0.0.1:{self.port}"


class Mosquitto(LocalServer):
    """One Mosquitto process with the project's settings, its own port and data folder."""

    scheme = "mqtt"

    def write_config(self) -> Path:
        """The project's config with this instance's listener, data folder and user."""
        lines = [
            line
            for line in PROJECT_CONFIG.read_text().splitlines()
            if not line.startswith(("listener", "persistence_location", "log_dest"))
        ]
        lines += [
            f"listener {self.port} 127.0.0.1",
            f"persistence_location {self.folder}/",
            f"log_dest file {self.folder / 'mosquitto.log'}",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # Mosquitto drops to user 'mosquitto' otherwise
        config = self.folder / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        return config

    def start(self) -> "Mosquitto":
        """Start (or restart) the broker and wait until it accepts connections."""
        config = self.write_config()
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(config)])
        wait_for_port(self.port)
        return self


def pg_admin(admin_url: str, statement: str) -> None:
    """Run one statement (CREATE DATABASE and the like) outside any transaction."""
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(statement)


def pg_url(admin_url: str, database: str) -> str:
    """The SQLAlchemy URL of `database` on the server of `admin_url`."""
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{database}"


@contextmanager
def fresh_database(
    admin_url: str, *, template: str | None = None, prefix: str = "iotdeck_bench"
) -> Iterator[str]:
    """A new PostgreSQL database (a SQLAlchemy URL), empty or a copy of `template`; dropped."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    cloned = f' TEMPLATE "{template}"' if template else ""
    pg_admin(admin_url, f'CREATE DATABASE "{name}"{cloned}')
    try:
        yield pg_url(admin_url, name)
    finally:
        pg_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_compression_policy(engine: Engine) -> None:
    """Run TimescaleDB's compression policy job now, as its schedule would."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        job = connection.execute(
            text(
                "SELECT job_id FROM timescaledb_information.jobs"
                " WHERE proc_name = 'policy_compression'"
            )
        ).scalar_one()
        connection.execute(text("CALL run_job(:job)"), {"job": job})
