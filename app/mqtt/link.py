"""The one owner of paho's network threads, and the one hop from them into asyncio.

A `Link` is one paho client with its network thread (paho's `loop_start`): it connects,
subscribes again after every reconnection, knows whether it is ready (connected, and
subscribed when it subscribes), keeps the `mqtt_connected{client}` gauge, says in the log
when the broker refuses or drops it, and stops cleanly. Ingest, the command dispatcher
and the simulator's connection probe each hold one. Callbacks that must run on an event
loop go through `on_ready_in_loop`, the one place where paho's thread hands work to
asyncio.

Thousands of clients cannot have a thread each: the simulator's devices share one thread,
`app/mqtt/selector_loop.py`. Nothing outside `app/mqtt/` drives a paho client
(tests/unit/test_layout.py).
"""

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable, Sequence

from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags
from paho.mqtt.reasoncodes import ReasonCode

from app.core import metrics
from app.mqtt import connection
from app.mqtt.connection import BrokerAddress

logger = logging.getLogger(__name__)


class Link:
    """One paho client and its network thread: connect, (re)subscribe, ready, stop."""

    def __init__(
        self,
        address: BrokerAddress,
        client_id: str,
        *,
        name: str,
        persistent: bool,
        subscriptions: Sequence[str] = (),
        gauge: str | None = None,
        client_class: type[Client] = Client,
    ) -> None:
        """`name` says who it is in log lines; `subscriptions` are subscribed at QoS 1 on
        every connection; `gauge` is its `mqtt_connected{client}` label (None: no series)."""
        self.address = address
        self.name = name
        self.client = connection.make_client(
            address, client_id, persistent=persistent, client_class=client_class
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self._persistent = persistent
        self._subscriptions = list(subscriptions)
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._on_ready: list[Callable[[], None]] = []
        self._gauge = gauge
        self._set_gauge(0)  # this process has this client: 0 until it is ready

    @property
    def ready(self) -> bool:
        """True while connected (and subscribed, when it subscribes)."""
        return self._ready.is_set()

    def wait_ready(self, timeout: float) -> bool:
        """Block until ready, or `timeout` seconds pass."""
        return self._ready.wait(timeout)

    def on_ready_in_loop(self, callback: Callable[[], None]) -> None:
        """Call `callback` on the running event loop each time the link becomes ready."""
        loop = asyncio.get_running_loop()
        self._on_ready.append(lambda: loop.call_soon_threadsafe(callback))

    def start(self) -> None:
        """Connect in the background; paho's thread reconnects with backoff."""
        connection.connect(self.client, self.address, persistent=self._persistent)
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect and end the network thread; the gauge series goes with the client."""
        self._stopping.set()
        self.client.disconnect()
        self.client.loop_stop()
        if self._gauge is not None:
            metrics.MQTT_CONNECTED.remove(self._gauge)

    # paho's network thread ---------------------------------------------------------------

    def _set_gauge(self, value: int) -> None:
        if self._gauge is not None:
            metrics.MQTT_CONNECTED.labels(self._gauge).set(value)

    def _on_connect(
        self,
        client: Client,
        _userdata: object,
        _flags: ConnectFlags,
        reason: ReasonCode,
        _properties: object,
    ) -> None:
        if reason.is_failure:
            logger.error(
                "broker %s refused the connection of the %s: %s",
                self.address.url,
                self.name,
                reason,
            )
            return
        if self._subscriptions:
            client.subscribe([(topic, 1) for topic in self._subscriptions])
        else:
            self._became_ready()

    def _on_subscribe(
        self,
        _client: Client,
        _userdata: object,
        _mid: int,
        reasons: list[ReasonCode],
        _properties: object,
    ) -> None:
        if any(reason.is_failure for reason in reasons):
            logger.error("broker %s refused the subscriptions: %s", self.address.url, reasons)
            return
        logger.info(
            "%s subscribed on %s as %s",
            self.name,
            self.address.url,
            self.client._client_id.decode(),
        )
        self._became_ready()

    def _became_ready(self) -> None:
        self._ready.set()
        self._set_gauge(1)
        for callback in self._on_ready:
            callback()

    def _on_disconnect(
        self,
        _client: Client,
        _userdata: object,
        _flags: DisconnectFlags,
        reason: ReasonCode,
        _properties: object,
    ) -> None:
        self._ready.clear()
        self._set_gauge(0)
        if not self._stopping.is_set():
            logger.warning("%s lost the broker (%s); reconnecting", self.name, reason)


def connection_answer(address: BrokerAddress, timeout: float) -> str:
    """How the broker answers a connection with `address`'s login: 'Success', 'Not authorized'...

    'no answer' when it says nothing within `timeout`.
    """
    answered = threading.Event()
    outcome: list[str] = []

    def on_connect(*args: object) -> None:
        outcome.append(str(args[3]))
        answered.set()

    def on_disconnect(*args: object) -> None:
        outcome.append(f"disconnected: {args[3]}")
        answered.set()

    client = connection.make_client(address, f"probe-{uuid.uuid4().hex[:8]}", persistent=False)
    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.reconnect_delay_set(60, 60)  # one attempt: the answer is what we want
    connection.connect(client, address, persistent=False)
    client.loop_start()
    try:
        return outcome[0] if answered.wait(timeout) else "no answer"
    finally:
        client.disconnect()
        client.loop_stop()
