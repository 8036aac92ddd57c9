"""The embedded MQTT broker (amqtt, MQTT 3.1.1) used when no IOTDECK_MQTT_URL is set."""

import errno
import logging
import socket

from amqtt.broker import Broker

logger = logging.getLogger(__name__)
HOST = "127.0.0.1"


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:`port`."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def choose_port(wanted: int) -> int:
    """`wanted` if it is free (0 means any), else a free port picked by the system."""
    if wanted and port_is_free(wanted):
        return wanted
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class EmbeddedBroker:
    """An in-process broker on the running asyncio loop, for the laptop default."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._broker: Broker | None = None

    async def start(self) -> None:
        """Listen on 127.0.0.1:`port` with anonymous access."""
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        self._broker = Broker(config)
        await self._broker.start()
        logger.info("embedded MQTT broker listening on %s:%d (MQTT 3.1.1)", HOST, self.port)

    async def stop(self) -> None:
        """Close the listener and every session."""
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
