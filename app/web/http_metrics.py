"""HTTP metrics: each request counted and timed by its route template, never its raw path.

A pure ASGI middleware (BaseHTTPMiddleware would buffer streamed responses). The template
is the route Starlette's router chose, which it leaves in `scope["route"]` (NiceGUI pages
are FastAPI routes too): `/devices/{device_id}`, never the id.

A request answered before routing (the sign-in redirect of a page, a 429 of the rate
limit) is matched here against the app's own routes, as the sign-in middleware does. The
routes of included routers (GraphQL, health, metrics) are not visible that way since
FastAPI 0.165: their early answers, like a path no route matches, are "other". So is a
method outside the standard ones: no client can add series at will. WebSockets are not
counted: they are connections, not requests (GraphQL subscriptions have their own metrics).
"""

import time

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import metrics

OTHER = "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _template(route: BaseRoute | None) -> str | None:
    """A route's path with its parameters named and converters dropped, if it has one."""
    return getattr(route, "path_format", None) or getattr(route, "path", None)


def _would_route(scope: Scope) -> BaseRoute | None:
    """The app's route for a request answered before routing: the first full match, else
    the first partial one (the path exists, not for this method)."""
    partial = None
    for route in getattr(getattr(scope.get("app"), "router", None), "routes", ()):
        if _template(route) is None:
            continue  # an included router (FastAPI): matching it would route into it
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
        if match is Match.PARTIAL and partial is None:
            partial = route
    return partial


def route_template(scope: Scope) -> str:
    """The template of the route that took (or would have taken) the request, or "other".

    `/readings/{reading_id:int}` is `/readings/{reading_id}`, a mount `/static/{path}`.
    """
    return _template(scope.get("route") or _would_route(scope)) or OTHER


class HttpMetricsMiddleware:
    """Counts (http_requests_total) and times (http_request_duration_seconds) each request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, noting its status; record it once the response is done."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            method = scope["method"] if scope["method"] in METHODS else OTHER
            route = route_template(scope)
            metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
            metrics.HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)
