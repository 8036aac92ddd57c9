"""Request rate limits per client address (SPEC 8.2), on every HTTP route and WebSocket.

The counting is the `limits` library's: a moving window in Redis when `IOTDECK_REDIS_URL`
is set, so every process of a deployment shares one count per address, and in memory
otherwise. Health probes, `/metrics` and EMQX's `/mqtt/*` hooks are not counted: an
orchestrator, a scraper or a broker calling for every device would be refused first.

Behind a reverse proxy every request comes from the proxy's address; the client is then
read from `X-Forwarded-For`, but only when the direct peer is one of
`IOTDECK_TRUSTED_PROXIES` (anyone can write that header otherwise).
"""

import functools
import ipaddress
import logging
import math
import time
from collections.abc import Iterable
from typing import Any

import limits
import orjson
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core import metrics
from app.core.config import Settings
from app.core.errors import RateLimitedError

logger = logging.getLogger(__name__)

KEY_PREFIX = "iotdeck-limits"
EXEMPT_PREFIXES = ("/health/", "/metrics", "/mqtt/")
GRAPHQL_PATH = "/graphql"
WEBSOCKET_TRY_AGAIN_LATER = 1013  # RFC 6455: the server is overloaded, try again later
STORAGE_ERROR_LOG_SECONDS = 60.0


def make_storage(redis_url: str) -> Storage:
    """Where counters live: Redis (shared by every process) when configured, else memory."""
    if not redis_url:
        return MemoryStorage()
    return RedisStorage(f"async+{redis_url}", implementation="redispy", key_prefix=KEY_PREFIX)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


class ClientAddresses:
    """Which address a request comes from, seen through the trusted proxies."""

    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        # Settings checked every entry
        self._trusted = tuple(
            ipaddress.ip_network(entry, strict=False) for entry in trusted_proxies
        )

    def _is_trusted(self, text: str) -> bool:
        address = _address(text)
        return address is not None and any(address in network for network in self._trusted)

    def resolve(self, peer: str | None, forwarded_for: str | None) -> str:
        """The client: the peer, or the nearest untrusted hop of X-Forwarded-For behind it."""
        client = peer or "unknown"
        if not self._trusted or not self._is_trusted(client) or not forwarded_for:
            return client
        # each proxy appends the address it saw: walk back from ours to the first stranger
        for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
            if not hop:
                break
            client = hop
            if not self._is_trusted(hop):
                break
        return client

    def of_scope(self, scope: Scope) -> str:
        """The client of an ASGI HTTP or WebSocket scope."""
        peer = scope.get("client")
        forwarded = None
        for name, value in scope.get("headers", ()):
            if name == b"x-forwarded-for":
                forwarded = value.decode("latin-1")
        return self.resolve(peer[0] if peer else None, forwarded)


@functools.cache
def client_addresses(trusted_proxies: tuple[str, ...]) -> ClientAddresses:
    """The process's reader of client addresses for these proxies (parsed once)."""
    return ClientAddresses(trusted_proxies)


def client_of(request: HTTPConnection, settings: Settings) -> str:
    """The client address of a request or WebSocket, through the trusted proxies."""
    peer = request.client.host if request.client else None
    forwarded = request.headers.get("x-forwarded-for")
    return client_addresses(tuple(settings.trusted_proxies)).resolve(peer, forwarded)


class StorageTrouble:
    """Says, at most once a minute, that the shared counters failed and what happens now."""

    def __init__(self, consequence: str) -> None:
        self.consequence = consequence
        self._said_at = -math.inf

    def report(self, exc: Exception) -> None:
        """Log the failure (its kind only: a message could carry the URL) unless just did."""
        now = time.monotonic()
        if now - self._said_at > STORAGE_ERROR_LOG_SECONDS:
            self._said_at = now
            logger.warning("counters unavailable, %s (%s)", self.consequence, type(exc).__name__)


class RequestLimiter:
    """One moving window per client address over `IOTDECK_RATE_LIMIT`."""

    def __init__(self, notation: str, storage: Storage) -> None:
        self.limit = limits.parse(notation)
        self._limiter = MovingWindowRateLimiter(storage)
        self._trouble = StorageTrouble("not limiting requests")

    async def retry_after(self, client: str) -> float | None:
        """Count a request from `client`: None when allowed, else seconds until it may retry."""
        try:
            if await self._limiter.hit(self.limit, "requests", client):
                return None
            stats = await self._limiter.get_window_stats(self.limit, "requests", client)
        except Exception as exc:  # any storage failure
            # an unreachable Redis must not take the whole API down with it
            self._trouble.report(exc)
            return None
        return max(1.0, stats.reset_time - time.time())


@functools.cache
def request_limiter(notation: str, redis_url: str) -> RequestLimiter:
    """The process's limiter: the middleware and GraphQL's WebSocket operations share it."""
    return RequestLimiter(notation, make_storage(redis_url))


def whole_seconds(seconds: float) -> int:
    """A wait in whole seconds, rounded up and at least 1: an early retry is refused again."""
    return max(1, math.ceil(seconds))


def rate_limited_error(seconds: float) -> dict[str, Any]:
    """The GraphQL error for a client over its limit: `message` and `extensions`."""
    after = whole_seconds(seconds)
    return {
        "message": f"too many requests: retry in {after} s",
        "extensions": {"code": RateLimitedError.code, "retryAfter": after},
    }


def refusal_body(path: str, seconds: float) -> bytes:
    """A GraphQL error for /graphql, else a plain JSON detail."""
    error = rate_limited_error(seconds)
    if path == GRAPHQL_PATH:
        return orjson.dumps({"errors": [error]})
    return orjson.dumps({"detail": error["message"]})


class RateLimitMiddleware:
    """ASGI middleware refusing requests over the limit: 429 with Retry-After, or a close."""

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.addresses = client_addresses(tuple(settings.trusted_proxies))
        self.limiter = request_limiter(settings.rate_limit, settings.redis_url)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count the request of an HTTP or WebSocket scope and refuse it when over."""
        path = scope.get("path", "")
        if scope["type"] not in ("http", "websocket") or path.startswith(EXEMPT_PREFIXES):
            await self.app(scope, receive, send)
            return
        seconds = await self.limiter.retry_after(self.addresses.of_scope(scope))
        if seconds is None:
            await self.app(scope, receive, send)
            return
        metrics.RATE_LIMIT_REFUSALS.labels("graphql" if path == GRAPHQL_PATH else "http").inc()
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": WEBSOCKET_TRY_AGAIN_LATER})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"retry-after", str(whole_seconds(seconds)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": refusal_body(path, seconds)})
