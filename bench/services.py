"""Private servers for tests and benchmarks: Mosquitto from the project's config, ports."""

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import httpx
import psycopg
from sqlalchemy import Engine, text
from sqlalchemy.exc import DataError

from app.core import storage
from app.core.config import Settings
from app.core.models import DeviceStatus
from app.mqtt import logins
from app.mqtt.broker import MOSQUITTO, QUEUE_SETTINGS, ManagedBroker
from app.mqtt.connection import BrokerAddress
from app.mqtt.link import connection_answer
from app.services.credentials import INGEST_ACCOUNT

# the servers tests and benchmarks create their databases on: plain PostgreSQL, and a
# cluster that preloads TimescaleDB (`../shared/tools/timescaledb cluster` starts one)
PG_ADMIN_URL = os.environ.get(
    "IOTDECK_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TIMESCALEDB_ADMIN_URL = os.environ.get(
    "IOTDECK_TEST_TIMESCALEDB_ADMIN_URL", "postgresql://postgres@127.0.0.1:5433/postgres"
)


UNLIMITED_REQUESTS = "1000000/second"


def iotdeck_environment(**settings: str) -> dict[str, str]:
    """This environment for an `iotdeck` subprocess: no inherited IOTDECK_*, plus `settings`.

    The test runner's own variables (PYTEST_CURRENT_TEST...) stay, as in an integrator's
    suite: `iotdeck serve` must not care who started it. The per-address request limit is
    lifted unless `settings` sets one: tests and benchmarks send from one address far
    faster than people do (the security tests set their own).
    """
    clean = {key: value for key, value in os.environ.items() if not key.startswith("IOTDECK_")}
    return clean | {"IOTDECK_RATE_LIMIT": UNLIMITED_REQUESTS} | settings


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


class RedisServer(LocalServer):
    """A private redis-server for the bus: its own port; nothing saved, unless `persistent`
    (an append-only file, as production runs it: a restart keeps the streams)."""

    def __init__(self, folder: Path, *, persistent: bool = False) -> None:
        super().__init__(folder)
        self.persistent = persistent

    def start(self) -> "RedisServer":
        """Start it (again: on the same port) and wait until it accepts connections."""
        self.folder.mkdir(parents=True, exist_ok=True)
        appendonly = "yes" if self.persistent else "no"
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", appendonly, "--dir", str(self.folder)]
        self.process = subprocess.Popen([*command, "--logfile", str(self.folder / "redis.log")])
        wait_for_port(self.port)
        return self

    @property
    def url(self) -> str:
        """The server as an IOTDECK_REDIS_URL (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"


class Mosquitto(LocalServer):
    """A Mosquitto someone else runs, open to anyone: the baseline of benchmarks, and the
    external broker of tests about ingest's own checks. iotdeck's is `IotdeckBroker`."""

    scheme = "mqtt"

    def write_config(self) -> Path:
        """Open to anonymous clients on 127.0.0.1, with iotdeck's queue settings."""
        lines = [
            "allow_anonymous true",
            *QUEUE_SETTINGS,
            "persistence true",
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


class OnServer:
    """A run's options that choose its server: plain PostgreSQL, or TimescaleDB."""

    timescaledb: bool

    @property
    def pg_admin_url(self) -> str:
        """The server the run creates its database on."""
        return TIMESCALEDB_ADMIN_URL if self.timescaledb else PG_ADMIN_URL

    @property
    def layout(self) -> storage.Mode:
        """IOTDECK_TIMESCALEDB for the run."""
        return "on" if self.timescaledb else "off"


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


def run_compression_policy(engine: Engine, attempts: int = 5) -> None:
    """Run TimescaleDB's compression policy job now, as its schedule would.

    The job's schedule is paused first: TimescaleDB's scheduler would otherwise run the same
    job beside this call, and each run then fails on the chunks the other is converting. A
    run the scheduler began before the pause may still hold chunks: try again after it.
    """
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        job = connection.execute(
            text(
                "SELECT job_id FROM timescaledb_information.jobs"
                " WHERE proc_name = 'policy_compression'"
            )
        ).scalar_one()
        connection.execute(text("SELECT alter_job(:job, scheduled => false)"), {"job": job})
        for attempt in range(attempts):
            try:
                connection.execute(text("CALL run_job(:job)"), {"job": job})
                return
            except DataError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.5)  # the scheduler's own run finishing: no event to wait on


class IotdeckBroker:
    """`iotdeck mqtt-broker` in this process: Mosquitto on private ports, synced on a thread.

    It serves the process-wide database (`app.core.db`), like the command does. Devices log in
    with real credentials issued through the credentials service (`device_address`).
    """

    def __init__(self, folder: Path, *, sync_seconds: float = 0.5) -> None:
        self.folder = folder
        self.port, self.tls_port = free_port(), free_port()
        self.settings = Settings(
            data_dir=folder,
            broker_port=self.port,
            broker_tls_port=self.tls_port,
            broker_sync_seconds=sync_seconds,
        )
        self.log = folder / "mosquitto.log"
        self.manager = ManagedBroker(self.settings, log_file=self.log)
        self._stop = threading.Event()
        self._syncing: threading.Thread | None = None
        self._devices: dict[tuple[uuid.UUID, bool, str], BrokerAddress] = {}

    @property
    def url(self) -> str:
        """The password listener, as IOTDECK_MQTT_URL (no credentials: services find theirs)."""
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        """The certificate listener, as IOTDECK_MQTT_URL."""
        return f"mqtts://127.0.0.1:{self.tls_port}"

    def start(self) -> "IotdeckBroker":
        """Write the files, start Mosquitto, wait for both listeners, keep syncing."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.manager.start()
        wait_for_port(self.port)
        wait_for_port(self.tls_port)
        self._stop.clear()
        self._syncing = threading.Thread(target=self.manager.run, args=(self._stop,), daemon=True)
        self._syncing.start()
        return self

    def stop(self) -> None:
        """Stop syncing, then Mosquitto (it saves its sessions)."""
        self._stop.set()
        if self._syncing is not None:
            self._syncing.join(10)
        self.manager.stop()

    def service_address(
        self, account: str = INGEST_ACCOUNT, *, protocol: str = "5"
    ) -> BrokerAddress:
        """A platform process's login (default: ingest's) on the password listener."""
        address = BrokerAddress("127.0.0.1", self.port, protocol=protocol)
        return logins.service_address(address, account)

    def device_address(
        self, device_id: uuid.UUID, *, tls: bool = False, protocol: str = "5"
    ) -> BrokerAddress:
        """The device's own login (a password, or a certificate with `tls`), issued once."""
        return self.device_addresses([device_id], tls=tls, protocol=protocol)[device_id]

    def device_addresses(
        self, device_ids: list[uuid.UUID], *, tls: bool = False, protocol: str = "5"
    ) -> dict[uuid.UUID, BrokerAddress]:
        """Each device's own login, issued on first use; returns once the broker takes them."""
        missing = [i for i in device_ids if (i, tls, protocol) not in self._devices]
        if missing:
            port = self.tls_port if tls else self.port
            address = BrokerAddress("127.0.0.1", port, tls=tls, protocol=protocol)
            issued = logins.device_addresses(address, missing)
            self.manager.sync()
            wait_accepted(issued[missing[-1]])
            self._devices |= {(i, tls, protocol): login for i, login in issued.items()}
        return {i: self._devices[(i, tls, protocol)] for i in device_ids}


def connection_result(address: BrokerAddress, timeout: float = 5.0) -> str:
    """How the broker answers a connection with this login: 'Success', 'Not authorized'..."""
    return connection_answer(address, timeout)


def wait_accepted(address: BrokerAddress, timeout: float = 10.0) -> None:
    """Return once the broker accepts this login (after a reload); fail otherwise."""
    deadline = time.monotonic() + timeout
    while (answer := connection_result(address)) != "Success":
        if time.monotonic() > deadline:
            raise RuntimeError(f"the broker still answers {answer!r} for {address.username}")
        time.sleep(0.1)  # polling the broker's reload: there is no event to wait on


@contextmanager
def broker_and_database(pg_admin_url: str, prefix: str) -> Iterator[tuple[Path, "Mosquitto", str]]:
    """A scratch folder, a private Mosquitto in it and a fresh database; all gone after."""
    with (
        tempfile.TemporaryDirectory(prefix=prefix) as tmp,
        fresh_database(pg_admin_url) as url,
    ):
        folder = Path(tmp)
        (folder / "mosquitto").mkdir()
        broker = Mosquitto(folder / "mosquitto").start()
        try:
            yield folder, broker, url
        finally:
            broker.stop()


@contextmanager
def serving(folder: Path, env: dict[str, str]) -> Iterator[tuple[subprocess.Popen, str]]:
    """`iotdeck serve` on a free port with `env`, logging to folder/serve.log, once ready:
    the process and its URL; stopped afterwards."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with (folder / "serve.log").open("wb") as log:
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("iotdeck")), "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_ready(base, server, folder / "serve.log")
            yield server, base
        finally:
            server.terminate()
            server.wait(30)


def rss_kb(pid: int) -> int:
    """A process's resident memory, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class BulkDevice(NamedTuple):
    """A device row as `register_devices` writes it."""

    id: uuid.UUID
    name: str
    type: str
    status: DeviceStatus = DeviceStatus.UNKNOWN
    last_seen_at: datetime | None = None


def register_devices(engine: Engine, rows: Iterable[BulkDevice]) -> int:
    """Write many devices with one COPY into `devices` (PostgreSQL), then ANALYZE; how many.

    Benchmarks of large fleets register 100,000 devices in seconds this way; the service
    (one INSERT and one CREATED event per device) is not what they measure. No events go out.
    """
    now = datetime.now(UTC)
    count = 0
    raw = engine.raw_connection()
    try:
        cursor = raw.driver_connection.cursor()
        columns = "id, name, type, status, metadata, last_seen_at, created_at, updated_at"
        with cursor.copy(f"COPY devices ({columns}) FROM STDIN") as copy:
            for row in rows:
                status = str(row.status)
                copy.write_row(
                    (row.id, row.name, row.type, status, "{}", row.last_seen_at, now, now)
                )
                count += 1
        raw.driver_connection.commit()
        cursor.execute("ANALYZE devices")
        raw.driver_connection.commit()
    finally:
        raw.close()
    return count
