"""`serve`'s side of a graceful stop: every WebSocket closed with 1001 Going Away first.

uvicorn stops on SIGTERM by closing each open WebSocket itself, with 1012 (Service
Restart) and no word to the application. So `serve` takes SIGTERM and SIGINT over once
started: it closes every WebSocket with 1001 through `WebSocketsMiddleware`, GraphQL
subscriptions (graphql-transport-ws and graphql-ws) and NiceGUI's socket.io alike, and
refuses new handshakes (HTTP 403); only then does it ask uvicorn to stop, which stops
listening, lets the HTTP requests in flight finish and runs the shutdown hooks
(`Background.stop`). The application sees a client that went away (code 1001): strawberry
ends the socket's operations, NiceGUI keeps the client for its reconnect time, and what
either still sends goes nowhere. A browser's socket.io client reconnects on its own.
"""

import asyncio
import logging
import signal
from collections.abc import MutableMapping
from typing import Any

from nicegui import app
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.shutdown import Shutdown

logger = logging.getLogger(__name__)

GOING_AWAY = 1001
REASON = "server shutting down"
CLOSE_SECONDS = 2.0  # longest a WebSocket may take to accept its close frame
Message = MutableMapping[str, Any]


class _Socket:
    """One WebSocket's ASGI `send`, through which the server may close it under the app."""

    def __init__(self, send: Send, sockets: "WebSockets") -> None:
        self._send = send
        self._sockets = sockets
        self._lock = asyncio.Lock()  # the app's sends and the close never interleave
        self.accepted = False
        self.closed = False

    async def send(self, message: Message) -> None:
        async with self._lock:
            if self.closed:
                return  # closed under the app: what it still sends goes nowhere
            if message["type"] == "websocket.accept" and self._sockets.closing:
                message = {"type": "websocket.close", "code": GOING_AWAY, "reason": REASON}
            if message["type"] == "websocket.close":
                self.closed = True
            else:
                self.accepted = self.accepted or message["type"] == "websocket.accept"
            await self._send(message)

    async def go_away(self) -> None:
        """Close with 1001 if open; the app's next receive is the disconnect."""
        async with self._lock:
            if self.accepted and not self.closed:
                self.closed = True
                await self._send({"type": "websocket.close", "code": GOING_AWAY, "reason": REASON})


class WebSockets:
    """The open WebSockets of this server, to close with 1001 when it stops."""

    def __init__(self) -> None:
        self._open: set[_Socket] = set()
        self.closing = False

    def track(self, send: Send) -> _Socket:
        """Follow one WebSocket, its `send` wrapped; `forget` it when its app returns."""
        socket = _Socket(send, self)
        self._open.add(socket)
        return socket

    def forget(self, socket: _Socket) -> None:
        """The WebSocket's app returned."""
        self._open.discard(socket)

    async def close_all(self) -> int:
        """Close every open WebSocket with 1001 and refuse new ones; how many it closed.

        A client that stopped reading (its socket full) gets CLOSE_SECONDS; then uvicorn
        closes it, with 1012.
        """
        self.closing = True
        sockets = [socket for socket in self._open if socket.accepted and not socket.closed]
        if not sockets:
            return 0
        closing = [asyncio.ensure_future(socket.go_away()) for socket in sockets]
        done, stuck = await asyncio.wait(closing, timeout=CLOSE_SECONDS)
        for task in stuck:
            task.cancel()
        failed = [error for task in done if (error := task.exception()) is not None]
        for error in failed:
            logger.warning("a WebSocket could not be closed: %s", error)  # it went already
        if stuck:
            logger.warning("%d WebSocket(s) not reading: left to uvicorn to close", len(stuck))
        return len(done) - len(failed)


class WebSocketsMiddleware:
    """ASGI middleware that lets `WebSockets` close every WebSocket under the app."""

    def __init__(self, app: ASGIApp, *, sockets: WebSockets) -> None:
        self.app = app
        self.sockets = sockets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass HTTP through; follow a WebSocket for as long as its app runs."""
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        socket = self.sockets.track(send)
        try:
            await self.app(scope, receive, socket.send)
        finally:
            self.sockets.forget(socket)


def listen(shutdown: Shutdown, sockets: WebSockets) -> None:
    """Take SIGTERM and SIGINT over from uvicorn (a startup hook, on the server's loop)."""
    loop = asyncio.get_running_loop()
    stopping: set[asyncio.Task] = set()  # a reference, or the task may be collected

    def requested(name: str) -> None:
        if shutdown.started:
            return  # a second signal changes nothing: the deadline holds
        shutdown.begin(name)
        task = loop.create_task(_go_away(sockets), name="going-away")
        stopping.add(task)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, requested, signal.Signals(signum).name)


async def _go_away(sockets: WebSockets) -> None:
    closed = await sockets.close_all()
    logger.info("closed %d WebSocket(s) with 1001 Going Away", closed)
    # uvicorn: stop listening, finish the HTTP requests in flight, then the shutdown hooks
    app.shutdown()
