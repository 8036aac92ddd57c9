"""`WebSocketsMiddleware`: every open WebSocket closed with 1001 under its application, new
ones refused, what the application still sends dropped (a real server: test_graceful_shutdown)."""

import asyncio
from typing import Any

from app.web.going_away import WebSockets, WebSocketsMiddleware

Message = dict[str, Any]


class Application:
    """A WebSocket application that accepts, then sends whenever told to."""

    def __init__(self) -> None:
        self.accepted = asyncio.Event()
        self.outbox: asyncio.Queue[Message] = asyncio.Queue()

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        """Accept, then send what `outbox` hands over until it hands over None."""
        del scope, receive
        await send({"type": "websocket.accept"})
        self.accepted.set()
        while (message := await self.outbox.get()) is not None:
            await send(message)


async def _serve(sockets: WebSockets, app: Application) -> tuple[list[Message], asyncio.Task]:
    """One WebSocket through the middleware; what reached the server, and its task."""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    middleware = WebSocketsMiddleware(app, sockets=sockets)
    task = asyncio.create_task(middleware({"type": "websocket"}, receive, send))
    return sent, task


async def test_open_sockets_close_with_1001_and_later_sends_go_nowhere() -> None:
    sockets, app = WebSockets(), Application()
    sent, task = await _serve(sockets, app)
    await app.accepted.wait()
    assert await sockets.close_all() == 1
    await app.outbox.put({"type": "websocket.send", "text": "too late"})
    await app.outbox.put(None)
    await task
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.close"]
    assert sent[-1]["code"] == 1001


async def test_a_handshake_after_the_close_is_refused_with_1001() -> None:
    sockets = WebSockets()
    assert await sockets.close_all() == 0
    app = Application()
    sent, task = await _serve(sockets, app)
    await app.accepted.wait()
    await app.outbox.put(None)
    await task
    assert sent == [{"type": "websocket.close", "code": 1001, "reason": "server shutting down"}]


async def test_http_passes_through_untouched() -> None:
    seen: list[Message] = []

    async def app(scope: Message, receive: Any, send: Any) -> None:
        del receive
        seen.append(scope)
        await send({"type": "http.response.start", "status": 204})

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    middleware = WebSocketsMiddleware(app, sockets=WebSockets())
    await middleware({"type": "http"}, None, send)
    assert seen == [{"type": "http"}]
    assert sent == [{"type": "http.response.start", "status": 204}]
