"""The embedded MQTT broker (amqtt, MQTT 3.1.1) used when no IOTDECK_MQTT_URL is set.

Outside demo mode it holds the same line as `iotdeck mqtt-broker` (SPEC 8.1): no anonymous
client; service accounts and device password credentials log in (app/services/
credentials.py), and a device uses only its own topics (app/mqtt/access.py) while a
service account uses any. In demo mode anyone on 127.0.0.1 may connect and do anything.
"""

import asyncio
import errno
import logging
import socket
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session
from sqlalchemy.exc import SQLAlchemyError

from app.core import db
from app.mqtt import access
from app.services import credentials

logger = logging.getLogger(__name__)
HOST = "127.0.0.1"
ROLE = "iotdeck.role"  # session attribute: what the client logged in as
STOP_TIMEOUT = 5.0  # seconds the broker has to close its sessions when it stops
SERVICE = "service"
DEVICE = "device"


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


def login_role(username: str, password: str) -> str | None:
    """SERVICE or DEVICE for a service account's or a device's password, else None.

    Blocking: it reads the database.
    """
    with db.session_scope() as session:
        if credentials.is_service_login(session=session, username=username, password=password):
            return SERVICE
        if credentials.password_credential(session=session, username=username, password=password):
            return DEVICE
    return None


def may_use(role: str | None, username: str | None, topic: str, action: Action) -> bool:
    """True when a client logged in as `role` may publish, subscribe or receive on `topic`."""
    if role == SERVICE:
        return True
    if role != DEVICE or not username:
        return False
    if action == Action.PUBLISH:
        return access.device_may_publish(username, topic)
    # a subscription, or a message matching one (checked again: a persistent session's
    # subscriptions stay with its client id, whoever logs in with that id next)
    return access.device_may_subscribe(username, topic)


class PasswordLoginPlugin(BaseAuthPlugin):
    """amqtt authentication: service accounts and device passwords; never anonymous."""

    async def authenticate(self, *, session: Session) -> bool:
        """Let the client in when its login is good and its will goes to a topic of its own."""
        session.attributes.pop(ROLE, None)  # a persistent session may come back as another
        if not session.username or not session.password:
            return False
        try:
            role = await asyncio.to_thread(login_role, session.username, session.password)
        except SQLAlchemyError as exc:
            logger.warning("embedded broker: cannot check a login, database unreachable: %s", exc)
            return False
        # amqtt publishes a will without asking the topic plugins: ask here
        will_ok = not session.will_flag or may_use(
            role, session.username, session.will_topic or "", Action.PUBLISH
        )
        if role is None or not will_ok:
            logger.info(
                "embedded broker refused client '%s' (username '%s')",
                session.client_id,
                session.username,
            )
            return False
        session.attributes[ROLE] = role
        return True


class TopicRulesPlugin(BaseTopicPlugin):
    """amqtt topic checks: app/mqtt/access.py for devices, anything for service accounts."""

    async def topic_filtering(
        self,
        *,
        session: Session | None = None,
        topic: str | None = None,
        action: Action | None = None,
    ) -> bool:
        """True when the session's client may do `action` on `topic`."""
        if session is None or topic is None or action is None:
            return False
        return may_use(session.attributes.get(ROLE), session.username, topic, action)


class EmbeddedBroker:
    """An in-process broker on the running asyncio loop, for the laptop default."""

    def __init__(self, port: int, *, open_access: bool = False) -> None:
        self.port = port
        self.open_access = open_access
        self._broker: Broker | None = None

    def _plugins(self) -> dict[str, dict[str, Any]]:
        if self.open_access:
            return {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}
        return {
            f"{__name__}.{PasswordLoginPlugin.__name__}": {},
            f"{__name__}.{TopicRulesPlugin.__name__}": {},
        }

    async def start(self) -> None:
        """Listen on 127.0.0.1:`port`; open to anyone only with `open_access` (demo)."""
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{self.port}"}},
            "plugins": self._plugins(),
        }
        self._broker = Broker(config)
        await self._broker.start()
        if self.open_access:
            logger.warning(
                "embedded MQTT broker: demo mode, anonymous clients allowed on %s:%d (MQTT 3.1.1)",
                HOST,
                self.port,
            )
        else:
            logger.info(
                "embedded MQTT broker listening on %s:%d (MQTT 3.1.1), credentials required",
                HOST,
                self.port,
            )

    async def stop(self) -> None:
        """Close every session and the listener, within STOP_TIMEOUT."""
        if self._broker is None:
            return
        broker, self._broker = self._broker, None
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await broker.shutdown()
        except TimeoutError:
            # amqtt waits forever for a session stopped while it was starting (its reader
            # task cancelled before it ran, the event it waits for is never set)
            logger.warning(
                "embedded MQTT broker: sessions not closed within %g s; closing the listener",
                STOP_TIMEOUT,
            )
            for server in broker._servers.values():  # amqtt has no public way to do it
                await server.close_instance()
