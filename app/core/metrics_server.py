"""/metrics and /health/live for a process without the web app (`iotdeck ingest`).

Prometheus scrapes it and an orchestrator probes it; nothing else is served. The standard
library's WSGI server with prometheus_client's WSGI app, one daemon thread per request,
so a slow scraper holds up no probe.
"""

import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from app.core.config import ConfigError

logger = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """A scrape or a probe every few seconds is not worth a log line."""


def probes_and_metrics(metrics_app: WsgiApp) -> WsgiApp:
    """/metrics answered by `metrics_app`, /health/live with 200; anything else 404."""

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/health/live":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"status":"ok"}']
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: this port serves /metrics and /health/live\n"]

    return application


def _server_class(host: str, port: int) -> type[WSGIServer]:
    """A threading WSGI server of the address family `host` resolves to (IPv4 or IPv6)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    attributes = {"address_family": family, "daemon_threads": True}
    return type("MetricsWSGIServer", (ThreadingMixIn, WSGIServer), attributes)


@contextmanager
def serving(host: str, port: int) -> Iterator[WSGIServer | None]:
    """Serve /metrics and /health/live on host:port for the block; nothing when port is 0.

    ConfigError, naming IOTDECK_METRICS_PORT, when the address cannot be bound.
    """
    if port == 0:
        yield None
        return
    try:
        server = make_server(
            host,
            port,
            probes_and_metrics(make_wsgi_app()),
            server_class=_server_class(host, port),
            handler_class=_QuietHandler,
        )
    except OSError as exc:
        raise ConfigError(
            f"IOTDECK_METRICS_PORT: cannot serve metrics on {host}:{port} ({exc.strerror or exc}); "
            "choose another port, or 0 for none"
        ) from exc
    thread = threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True)
    thread.start()
    logger.info("metrics on http://%s:%d/metrics", host, server.server_port)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
