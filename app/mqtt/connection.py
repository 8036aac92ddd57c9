"""paho-mqtt clients configured from an `mqtt://` or `mqtts://` URL."""

import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from paho.mqtt.client import CallbackAPIVersion, Client, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from app.config import ConfigError

SESSION_EXPIRY_SECONDS = 7 * 24 * 3600  # a persistent session outlives any restart
RECEIVE_MAXIMUM = 65535  # batches are acked after commit: allow many messages in flight


@dataclass(frozen=True)
class BrokerAddress:
    """Where a broker listens and how to log in."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    protocol: str = "5"

    @classmethod
    def parse(cls, url: str, protocol: str = "5") -> "BrokerAddress":
        """Read `mqtt://[user:pass@]host[:port]` (or `mqtts://`, TLS, default port 8883)."""
        parts = urlsplit(url)
        if parts.scheme not in {"mqtt", "mqtts"} or not parts.hostname:
            raise ConfigError(f"IOTDECK_MQTT_URL '{url}' is not mqtt://host[:port] or mqtts://...")
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
        client.tls_set_context(ssl.create_default_context())
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


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
