"""paho-mqtt clients configured from an `mqtt://` or `mqtts://` URL."""

import logging
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from paho.mqtt.client import CallbackAPIVersion, Client, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from app.core import retries
from app.core.config import ConfigError
from app.core.redaction import redacted

SESSION_EXPIRY_SECONDS = 7 * 24 * 3600  # a persistent session outlives any restart
RECEIVE_MAXIMUM = 65535  # batches are acked after commit: allow many messages in flight


class _NotConnectedNoise(logging.Filter):
    """Drops paho 2.2's "Client is not connected" ERROR after a clean `disconnect()`.

    Its loop thread runs one more turn on the closed socket and says so at ERROR level,
    on every clean stop (a race in `loop_forever`): no error, and nothing to act on.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """False for that line only."""
        return not str(record.msg).startswith("Client is not connected")


_PAHO_LOG = logging.getLogger("paho.mqtt.client")
_PAHO_LOG.addFilter(_NotConnectedNoise())


@dataclass(frozen=True)
class BrokerAddress:
    """Where a broker listens and how to log in."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    protocol: str = "5"
    # TLS: the CAs to trust (PEM; empty: the system's) and a client certificate and key
    ca_pem: str = ""
    certificate: tuple[str, str] | None = None

    @classmethod
    def parse(cls, url: str, protocol: str = "5") -> "BrokerAddress":
        """Read `mqtt://[user:pass@]host[:port]` (or `mqtts://`, TLS, default port 8883)."""
        parts = urlsplit(url)
        if parts.scheme not in {"mqtt", "mqtts"} or not parts.hostname:
            shown = redacted(url)
            raise ConfigError(
                f"IOTDECK_MQTT_URL '{shown}' is not mqtt://host[:port] or mqtts://..."
            )
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            protocol=protocol,
        )

    @property
    def url(self) -> str:
        """The address as a URL, without the password."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def make_client(
    address: BrokerAddress,
    client_id: str,
    *,
    persistent: bool,
    client_class: type[Client] = Client,
) -> Client:
    """A paho client for `address`; `persistent` keeps the session (and QoS 1 backlog)."""
    v5 = address.protocol == "5"
    client = client_class(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        clean_session=None if v5 else not persistent,
    )
    if address.username:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        client.tls_set_context(tls_context(address))
    # paho doubles its delay between reconnections but adds no jitter: drawing the bounds
    # per client spreads a fleet that lost the broker together
    min_delay, max_delay = retries.broker_reconnect_delays()
    client.reconnect_delay_set(min_delay=min_delay, max_delay=max_delay)  # type: ignore[arg-type]
    # paho's own lines (an exception in a callback above all) through the one log pipeline
    client.enable_logger(_PAHO_LOG)
    return client


def tls_context(address: BrokerAddress) -> ssl.SSLContext:
    """Verify the broker against `ca_pem` (or the system CAs); present the certificate, if any."""
    context = ssl.create_default_context(cadata=address.ca_pem or None)
    if address.certificate is not None:
        # the ssl module loads a key pair from files only: a private folder, gone at once
        with tempfile.TemporaryDirectory() as folder:
            certificate, key = Path(folder, "client.pem"), Path(folder, "client.key")
            certificate.write_text(address.certificate[0])
            key.touch(0o600)
            key.write_text(address.certificate[1])
            context.load_cert_chain(certificate, key)
    return context


def connect(client: Client, address: BrokerAddress, *, persistent: bool) -> None:
    """Start connecting in the background (paho's loop thread retries with backoff)."""
    if address.protocol != "5":
        client.connect_async(address.host, address.port, keepalive=30)
        return
    properties = Properties(PacketTypes.CONNECT)
    properties.ReceiveMaximum = RECEIVE_MAXIMUM
    if persistent:
        properties.SessionExpiryInterval = SESSION_EXPIRY_SECONDS
    client.connect_async(
        address.host, address.port, keepalive=30, clean_start=not persistent, properties=properties
    )
