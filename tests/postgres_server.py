"""A private PostgreSQL server for tests that stop and restart the database."""

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.services import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else name


class PostgresServer:
    """initdb into a folder, then start, stop (as a crash or cleanly) and restart."""

    def __init__(self) -> None:
        # outside pytest's tmp_path: that folder is private to root, and the server runs
        # as the postgres user
        self.folder = Path(tempfile.mkdtemp(prefix="iotdeck-pg-"))
        self.data = self.folder / "pgdata"
        self.port = free_port()

    def _run(self, *args: str) -> None:
        command = list(args)
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def init(self) -> "PostgresServer":
        """Create the cluster (trust auth, user postgres) and start it."""
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        self._run(_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust")
        return self.start()

    def start(self) -> "PostgresServer":
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            _bin("pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-w",
            "-l",
            str(self.folder / "server.log"),
            "start",
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; mode 'immediate' is a crash, 'fast' a clean shutdown."""
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        """Stop the server if it runs and delete its files."""
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL for `database` on this server."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"
