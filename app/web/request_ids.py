"""Request ids: every HTTP request and WebSocket gets one, logged and returned (SPEC 11).

A pure ASGI middleware, so it covers whatever the app serves: GraphQL, NiceGUI's pages and
its socket, health probes. A sane `X-Request-ID` from the client (or the proxy in front)
is kept, anything else replaced by a fresh id; it is bound as `request_id` and as the
`correlation_id` of the work the request causes (a command sent from it stores it), and
returned in the response's `X-Request-ID` header (on a WebSocket, in the handshake's).
"""

import re
from collections.abc import Callable
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import logs

HEADER = "x-request-id"
# kept only when it is a plain token: a client's free text would go into every line
SANE = re.compile(r"[A-Za-z0-9._-]{1,128}")


def request_id(scope: Scope) -> str:
    """The request's own X-Request-ID when it is sane, else a fresh id."""
    given = Headers(scope=scope).get(HEADER, "")
    return given if SANE.fullmatch(given) else logs.new_id()


class RequestIdMiddleware:
    """Binds a request id around each HTTP request and WebSocket and sends it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request with its id bound; add the id to the response's headers."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        identifier = request_id(scope)
        header = (HEADER.encode(), identifier.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        with logs.bind(request_id=identifier, correlation_id=identifier):
            await self.app(scope, receive, send_with_id)


@dataclass(frozen=True)
class _WithRequestIds:
    """Starlette's stack builder, wrapped: RequestIdMiddleware around the stack it builds."""

    build: Callable[[], ASGIApp]

    def __call__(self) -> ASGIApp:
        return RequestIdMiddleware(self.build())


def around_everything(app: Starlette) -> None:
    """Run every request of `app` under its id, outside all its middlewares.

    NiceGUI adds its own middlewares when the server starts, outside those added before,
    and some are `BaseHTTPMiddleware`s, which send the response from a task of their own:
    inside them, uvicorn's access line and its "Exception in ASGI application" would be
    logged without the request's id. (app/web/https.py wraps the stack the same way.)
    """
    if not isinstance(app.build_middleware_stack, _WithRequestIds):  # NiceGUI's tests re-run
        app.build_middleware_stack = _WithRequestIds(app.build_middleware_stack)  # type: ignore[method-assign]
