"""`iotdeck mqtt-broker`: the system's Mosquitto 2.0, configured and kept in step with the database.

Mosquitto gets a password listener and a TLS listener that requires a certificate from the
platform CA (its CN becomes the username), no anonymous access, and an ACL that lets each
device publish only to its own `telemetry`, `status` and `commands/ack` and read only its
own `commands` and `config`; service accounts (ingest, the command dispatcher) may use
every device topic. Every `IOTDECK_BROKER_SYNC_SECONDS` the manager reads the credentials,
rewrites what changed (password file, ACL, CA bundle, revocation list) and sends SIGHUP:
Mosquitto reloads them and disconnects a password client whose password is gone. It never
re-checks a connected certificate against the revocation list, so when a live certificate
is revoked the manager restarts Mosquitto (sessions and queued messages persist; clients
reconnect, and the revoked one is refused).
"""

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import threading
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from app.core import db
from app.core.config import ConfigError, Settings
from app.core.models import utcnow
from app.core.shutdown import Shutdown
from app.mqtt import access
from app.services import credentials
from app.services.credentials import Authority, BrokerState

logger = logging.getLogger(__name__)

# Debian puts it in /usr/sbin, which is not on every PATH
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
SERVER_CERTIFICATE_DAYS = 397
RENEW_BEFORE = timedelta(days=30)
# ingest acknowledges only after its batch is committed: no in-flight cap (v5 clients still
# bound it with their Receive Maximum); a stopped or slow ingest's backlog waits here
QUEUE_SETTINGS = ("max_inflight_messages 0", "max_queued_messages 10000000", "max_queued_bytes 0")
CRL_DAYS = 7  # OpenSSL refuses every certificate once the list is past its next update
CRL_REISSUE = timedelta(days=1)


def acl_text(state: BrokerState) -> str:
    """Mosquitto's acl_file: service accounts on every device topic, each device its own."""
    lines = ["# written by iotdeck mqtt-broker; changes here are overwritten"]
    for username in state.services:
        lines += ["", f"user {username}", "topic readwrite devices/#"]
    for device in state.devices:
        lines += ["", f"user {device}"]
        lines += [f"topic write devices/{device}/{leaf}" for leaf in access.PUBLISH_LEAVES]
        lines += [f"topic read devices/{device}/{leaf}" for leaf in access.SUBSCRIBE_LEAVES]
    return "\n".join(lines) + "\n"


def password_text(state: BrokerState) -> str:
    """Mosquitto's password_file: `username:$7$...` per line."""
    return "".join(f"{user}:{hashed}\n" for user, hashed in sorted(state.passwords.items()))


def crl_text(state: BrokerState) -> str:
    """One signed revocation list per trusted CA (OpenSSL wants one for each issuer)."""
    now = utcnow()
    parts = []
    for row in state.authorities:
        ca = credentials.load_authority(row)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca.certificate.subject)
            .last_update(now - timedelta(minutes=5))
            .next_update(now + timedelta(days=CRL_DAYS))
        )
        for serial, revoked_at in state.revoked.get(ca.id, []):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(revoked_at)
                .build()
            )
        crl = builder.sign(ca.key, hashes.SHA256())
        parts.append(crl.public_bytes(serialization.Encoding.PEM).decode())
    return "".join(parts)


class BrokerFiles:
    """Where the broker's files live: IOTDECK_DATA_DIR/broker."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.config = folder / "mosquitto.conf"
        self.passwords = folder / "passwords"
        self.acl = folder / "acl"
        self.ca = folder / "ca.pem"
        self.crl = folder / "crl.pem"
        self.certificate = folder / "server.pem"
        self.key = folder / "server.key"
        self.persistence = folder / "persistence"


def _write(path: Path, content: str, *, private: bool = False) -> bool:
    """Replace `path` atomically when its content differs; True if it changed."""
    if path.exists() and path.read_text() == content:
        return False
    temporary = path.with_suffix(path.suffix + ".new")
    temporary.write_text(content)
    temporary.chmod(0o600 if private else 0o644)
    temporary.replace(path)
    return True


def _die_with_parent() -> None:
    """In the child: SIGTERM when the spawning thread dies, however it dies (Linux)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ManagedBroker:
    """One Mosquitto process whose users, ACLs and CRL follow the database."""

    def __init__(self, settings: Settings, *, log_file: Path | None = None) -> None:
        self.settings = settings
        self.files = BrokerFiles(settings.data_dir / "broker")
        self._log_file = log_file
        self._process: subprocess.Popen | None = None
        self._live_serials: set[str] | None = None
        self._revoked_key: object = None
        self._crl_made = utcnow()
        self._lock = threading.Lock()

    # files -------------------------------------------------------------------------------

    def _config(self) -> str:
        host = self.settings.broker_host
        lines = [
            "# written by iotdeck mqtt-broker at each start; edit IOTDECK_BROKER_* instead",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {self.files.passwords}",
            f"acl_file {self.files.acl}",
            "persistence true",
            f"persistence_location {self.files.persistence}/",
            "autosave_interval 60",
            *QUEUE_SETTINGS,
            f"log_dest {'file ' + str(self._log_file) if self._log_file else 'stdout'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "connection_messages true",
            f"listener {self.settings.broker_port} {host}",
        ]
        if self.settings.broker_tls_port:
            lines += [
                f"listener {self.settings.broker_tls_port} {host}",
                f"cafile {self.files.ca}",
                f"certfile {self.files.certificate}",
                f"keyfile {self.files.key}",
                f"crlfile {self.files.crl}",
                "require_certificate true",
                "use_identity_as_username true",
            ]
        if os.geteuid() == 0:
            lines.append("user root")  # Mosquitto drops to user 'mosquitto' otherwise
        return "\n".join(lines) + "\n"

    def _server_certificate(self, ca: Authority) -> None:
        """A server certificate from the current CA naming IOTDECK_BROKER_HOSTNAMES."""
        names = tuple(self.settings.broker_hostnames) or ("localhost",)
        path = self.files.certificate
        if path.exists() and self.files.key.exists():
            current = x509.load_pem_x509_certificate(path.read_bytes())
            try:
                alternative = current.extensions.get_extension_for_class(
                    x509.SubjectAlternativeName
                ).value
                named = {str(getattr(n, "value", n)) for n in alternative}
            except x509.ExtensionNotFound:
                named = set()
            fresh = current.not_valid_after_utc - utcnow() > RENEW_BEFORE
            if current.issuer == ca.certificate.subject and fresh and named == set(names):
                return
        pair = credentials.sign(ca, names[0], days=SERVER_CERTIFICATE_DAYS, server_names=names)
        _write(self.files.key, pair.private_key_pem, private=True)
        _write(path, pair.certificate_pem)
        logger.info("broker certificate issued for %s", ", ".join(names))

    def prepare(self) -> None:
        """Create the folder, the CA (first start), the server certificate and every file."""
        self.files.folder.mkdir(parents=True, exist_ok=True)
        self.files.persistence.mkdir(exist_ok=True)
        with db.session_scope() as session:
            ca = credentials.authority(session)
            for username in credentials.SERVICE_ACCOUNTS:
                credentials.service_login(session=session, username=username)
        self._server_certificate(ca)
        self.sync(signal_broker=False)
        _write(self.files.config, self._config())

    def sync(self, *, signal_broker: bool = True) -> bool:
        """Bring the files in line with the database; reload or restart Mosquitto if needed.

        True when something changed.
        """
        with self._lock:
            with db.session_scope() as session:
                state = credentials.broker_state(session=session)
            revoked_key = (
                tuple(sorted((k, tuple(v)) for k, v in state.revoked.items())),
                tuple(row.id for row in state.authorities),
            )
            crl_due = revoked_key != self._revoked_key or utcnow() - self._crl_made > CRL_REISSUE
            changed = _write(self.files.passwords, password_text(state), private=True)
            changed |= _write(self.files.acl, acl_text(state))
            changed |= _write(self.files.ca, "".join(r.certificate_pem for r in state.authorities))
            if crl_due or not self.files.crl.exists():
                changed |= _write(self.files.crl, crl_text(state))
                self._revoked_key, self._crl_made = revoked_key, utcnow()
            cut_off = self._live_serials is not None and bool(
                self._live_serials - state.live_serials
            )
            self._live_serials = state.live_serials
            if not (changed and signal_broker and self._process is not None):
                return changed
            if cut_off:
                logger.info("a connected certificate may be revoked: restarting Mosquitto")
                self._restart()
            else:
                self._process.send_signal(signal.SIGHUP)
            return True

    # the process ------------------------------------------------------------------------

    def start(self) -> None:
        """Prepare the files and start Mosquitto (it dies with this process)."""
        mosquitto = Path(MOSQUITTO)
        if not mosquitto.exists():
            raise ConfigError(
                f"{MOSQUITTO} not found: `iotdeck mqtt-broker` runs the system's Mosquitto 2.0 "
                "(apt-get install mosquitto)"
            )
        self.prepare()
        self._spawn()

    def _spawn(self) -> None:
        self._process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.files.config)],
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, async-signal-safe
        )

    def _restart(self) -> None:
        self._terminate()
        self._spawn()

    def _terminate(self, timeout: float = 10.0) -> bool:
        """SIGTERM Mosquitto (it saves its sessions and queued messages, then exits); True
        when it exited cleanly within `timeout`, False when it had to be killed."""
        if self._process is None:
            return True
        self._process.terminate()
        try:
            clean = self._process.wait(timeout) == 0
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
            clean = False
        self._process = None
        return clean

    @property
    def running(self) -> bool:
        """True while Mosquitto runs."""
        return self._process is not None and self._process.poll() is None

    def run(self, stop: threading.Event) -> None:
        """Sync every IOTDECK_BROKER_SYNC_SECONDS until `stop`; restart Mosquitto if it dies."""
        while not stop.wait(self.settings.broker_sync_seconds):
            if not self.running:
                code = self._process.returncode if self._process else None
                logger.error("Mosquitto exited (code %s); starting it again", code)
                with self._lock:
                    self._spawn()
            try:
                self.sync()
            except Exception:  # the database may be away for a while: keep the broker up
                logger.exception("could not bring the broker in step with the database")

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop Mosquitto; it saves sessions and queued messages first. False when it did
        not exit cleanly within `timeout` (killed: what it received since its last autosave
        is lost)."""
        with self._lock:
            return self._terminate(timeout)


def run_broker(settings: Settings) -> int:
    """`iotdeck mqtt-broker` until SIGTERM or SIGINT; the exit code (app/core/shutdown.py).

    The stop: no more syncing, then Mosquitto gets SIGTERM, saves its sessions and queued
    messages to its persistence file and exits (0), within IOTDECK_SHUTDOWN_TIMEOUT.
    """
    broker = ManagedBroker(settings)
    broker.start()
    shutdown = Shutdown("mqtt-broker", settings.shutdown_timeout)
    stop = shutdown.listen()
    tls = settings.broker_tls_port
    logger.info(
        "Mosquitto for iotdeck on %s: passwords on %d%s; files in %s",
        settings.broker_host,
        settings.broker_port,
        f", certificates (TLS) on {tls}" if tls else "",
        broker.files.folder,
    )
    broker.run(stop)
    shutdown.begin()
    if not broker.stop(shutdown.remaining()):
        shutdown.left_undone("Mosquitto did not exit cleanly: killed before it saved its state")
    return shutdown.finish()
