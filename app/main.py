"""Wiring only: settings, database, HTTP routers, pages, start-up and shutdown."""

import hashlib
import logging
from pathlib import Path

from fastapi.middleware.cors import CORSMiddleware
from nicegui import app, helpers, ui

import pages
import pages.oidc
from app.core import db, logs, metrics, migrate, presence, tracing
from app.core.config import ConfigError, Settings, get_settings
from app.core.shutdown import Shutdown
from app.graphql.router import create_router
from app.mqtt import emqx
from app.mqtt.embedded import choose_port
from app.services import dashboards
from app.services.seed import SeedReport, seed_demo
from app.web import health, http_metrics, https, oidc, request_ids
from app.web.going_away import WebSockets, WebSocketsMiddleware, listen
from app.web.limiter import RateLimitMiddleware
from app.workers.background import Background

logger = logging.getLogger(__name__)

HTTP_DRAIN_SHARE = 0.5  # of IOTDECK_SHUTDOWN_TIMEOUT, for the HTTP requests in flight


def prepare(settings: Settings) -> SeedReport | None:
    """Check settings, open and migrate the database, seed it in demo mode."""
    settings.ensure_secret()
    if settings.oidc_issuer:
        oidc.check_settings(settings)
    if not settings.mqtt_url:
        settings.mqtt_embedded_port = choose_port(settings.mqtt_embedded_port)
    migrate.open_database(settings)
    with db.session_scope() as session:
        dashboards.ensure_fleet_overview(session=session)
    if settings.dashboards_dir:
        provision_dashboards(Path(settings.dashboards_dir))
    if not settings.demo:
        return None
    with db.session_scope() as session:
        return seed_demo(
            session=session,
            admin_password=settings.admin_password,
            operator_password=settings.operator_password,
            viewer_password=settings.viewer_password,
        )


def provision_dashboards(folder: Path) -> None:
    """Load the dashboard files of IOTDECK_DASHBOARDS_DIR; a bad file is logged and skipped."""
    if not folder.is_dir():
        raise ConfigError(f"IOTDECK_DASHBOARDS_DIR: {folder} is not a folder")
    with db.session_scope() as session:
        report = dashboards.provision(session=session, folder=folder)
    logger.info(
        "dashboards provisioned from %s: %d loaded, %d refused, %d removed",
        folder,
        len(report.loaded),
        len(report.refused),
        len(report.removed),
    )


def build(settings: Settings) -> Shutdown:
    """Attach every route, middleware and background service to NiceGUI's FastAPI app.

    Returns the graceful stop that SIGTERM starts (app/web/going_away.py).
    """
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(emqx.create_router(settings))
    # before ui.run: routes added after NiceGUI's catch-all would never be reached
    app.include_router(create_router(settings))
    if settings.oidc_issuer:  # single sign-on (OIDC): /auth/oidc/login and /callback
        app.include_router(pages.oidc.create_router(settings))
    pages.create(settings)
    sockets = WebSockets()  # closed with 1001 Going Away when the server stops
    app.add_middleware(WebSocketsMiddleware, sockets=sockets)
    # outside the routes: a refused request costs no session or database work
    app.add_middleware(RateLimitMiddleware, settings=settings)
    app.add_middleware(http_metrics.HttpMetricsMiddleware)  # outside the limit: 429s counted
    # outermost of all, NiceGUI's too: every line about a request carries its id
    request_ids.around_everything(app)
    shutdown = Shutdown("serve", settings.shutdown_timeout)
    if not helpers.is_user_simulation():  # NiceGUI's simulated browser has no server to stop
        app.on_startup(lambda: listen(shutdown, sockets))  # first: a signal at start-up counts
    background = Background(
        settings, ingest=settings.ingest, shutdown=shutdown, workers=settings.workers
    )
    app.on_startup(background.start)
    app.on_shutdown(background.stop)
    return shutdown


def storage_secret(settings: Settings) -> str:
    """The browser-session signing key, derived from the JWT secret so there is one secret."""
    return hashlib.sha256(b"iotdeck-storage:" + settings.jwt_secret.encode()).hexdigest()


def run(settings: Settings) -> int:
    """Serve the dashboard, GraphQL and health endpoints until stopped; the exit code.

    HTTPS with IOTDECK_TLS_CERT and IOTDECK_TLS_KEY (`serve` checked them); cookies are
    Secure on every HTTPS request, a trusted proxy's included (app/web/https.py).
    """
    tracing.configure("iotdeck-serve")  # spans over OTLP if OTEL_EXPORTER_OTLP_ENDPOINT is set
    shutdown = build(settings)
    https.secure_cookies_over_https(app)
    with presence.announced(settings.redis_url, "serve"):
        _run_web(settings)
    return shutdown.finish() if shutdown.started else 0


def _run_web(settings: Settings) -> None:
    """uvicorn with NiceGUI until SIGTERM (then the shutdown in app/core/shutdown.py)."""
    ui.run(
        host=settings.host,
        port=settings.port,
        title="iotdeck",
        favicon="📡",
        storage_secret=storage_secret(settings),
        session_middleware_kwargs=https.session_cookie_options(settings),
        reload=False,
        show=False,
        show_welcome_message=False,
        **logs.uvicorn_options(settings),
        **https.uvicorn_options(settings),
        # the HTTP requests in flight get half the stop's time, ingest and the workers the rest
        timeout_graceful_shutdown=settings.shutdown_timeout * HTTP_DRAIN_SHARE,
    )


if __name__ in {"__main__", "__mp_main__"}:
    # entry point for NiceGUI's `user` test fixture, which runs this file directly
    _settings = get_settings()
    prepare(_settings)
    run(_settings)
