"""Sign-in: one middleware guarding the dashboard pages, the login and logout routes.

A browser session is NiceGUI's user storage, found by the id in the signed session cookie.
Signing in gives the browser a new id (a session fixed before sign-in is worth nothing
after it), and the session ends after IOTDECK_SESSION_IDLE_MINUTES without a page load or
an action, or when the user's password or role changes (SPEC 8.2).
"""

import hmac
import logging
import secrets
import time
import uuid
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import RedirectResponse
from nicegui import Client, app, ui
from starlette.concurrency import run_in_threadpool
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.routing import Match, Route

from app.core import db
from app.core.auth import credentials_fingerprint, has_role
from app.core.config import get_settings
from app.core.errors import AuthenticationError, RateLimitedError, ValidationError
from app.core.models import Role, User
from app.services import users
from app.web import oidc
from app.web.limiter import client_of
from app.web.sign_in import sign_in
from components.frame import FLASH_KEY, sign_out_button
from components.theme import apply_theme

logger = logging.getLogger(__name__)

USER_ID_KEY = "user_id"
FINGERPRINT_KEY = "credentials"  # app.core.auth.credentials_fingerprint at sign-in
SEEN_KEY = "seen_at"  # wall-clock time of the session's last page load or action
TICKET_KEY = "sign_in_ticket"

HOME = "/"  # the home dashboard
PUBLIC_PAGES = frozenset({"/login", "/logout"})
SESSION_ROUTE = "/auth/session"
TICKET_SECONDS = 30
INVALID_CREDENTIALS = "Invalid email or password"
EXPIRED = "Your session ended after {minutes} minutes without activity: sign in again"


def _load_active_user(user_id: object) -> User | None:
    """The user with this id when it exists and is active (a fresh read, every page load)."""
    if not user_id:
        return None
    try:
        with db.session_scope() as session:
            user = users.get_user(session=session, user_id=str(user_id))
    except ValidationError:
        return None  # a tampered or stale session value
    return user if user is not None and user.is_active else None


async def _session_user(storage: dict) -> User | None:
    """The session's user, unless it went idle, or its password or role changed since.

    Only the database read leaves the event loop: the session storage is written on it.
    """
    seen = storage.get(SEEN_KEY)
    idle_seconds = get_settings().session_idle_minutes * 60
    if not isinstance(seen, (int, float)) or time.time() - seen > idle_seconds:
        return None
    # not run.io_bound: its None while the app stops would read as "signed out" and end
    # the session
    user = await run_in_threadpool(_load_active_user, storage.get(USER_ID_KEY))
    if user is None or storage.get(FINGERPRINT_KEY) != credentials_fingerprint(user):
        return None
    storage[SEEN_KEY] = time.time()
    return user


async def start_session(request: Request, user: User) -> None:
    """Sign the browser of `request` in as `user`, under a new session id.

    Call from an HTTP route (the new id goes out in the response's session cookie).
    """
    app.storage.user.clear()  # what the old id held is gone with it
    request.session["id"] = session_id = str(uuid.uuid4())
    # NiceGUI makes a session's storage when a request arrives with a new id; this request
    # came with the old one, so make it now (no public API for it in NiceGUI 3)
    await app.storage._create_user_storage(session_id)
    app.storage.user.update(
        {
            USER_ID_KEY: str(user.id),
            FINGERPRINT_KEY: credentials_fingerprint(user),
            SEEN_KEY: time.time(),
        }
    )


def _is_dashboard_page(request: Request) -> bool:
    """True for NiceGUI page routes; API, GraphQL, health and static routes are not pages."""
    page_paths = set(Client.page_routes.values())
    for route in app.routes:
        if isinstance(route, Route) and route.path in page_paths:
            match, _ = route.matches(request.scope)
            if match != Match.NONE:
                return True
    return False


class AuthMiddleware(BaseHTTPMiddleware):
    """Send signed-out visitors of dashboard pages to /login; load the signed-in user."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        """Reload the session's user from the database or redirect to the login page."""
        if request.url.path in PUBLIC_PAGES or not _is_dashboard_page(request):
            return await call_next(request)
        storage = app.storage.user
        user = await _session_user(storage)
        if user is None:
            # idle, disabled, deleted, or its password or role changed: the session ends
            expired = USER_ID_KEY in storage
            storage.clear()
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            reason = "&expired=1" if expired else ""
            return RedirectResponse(f"/login?redirect_to={quote(target, safe='')}{reason}")
        request.state.user = user
        return await call_next(request)


def current_user() -> User:
    """The signed-in user, as the middleware loaded it for this page."""
    return ui.context.client.request.state.user


async def load_acting_user(role: Role) -> User | None:
    """The signed-in user re-read (off the event loop) before a change, when still active and
    at least `role`; None, with a notification, otherwise."""
    user = await _session_user(app.storage.user)
    if user is None or not has_role(user, role):
        ui.notify("You are not allowed to do this any more; reload the page", type="negative")
        return None
    return user


def flash(message: str) -> None:
    """Keep a message to show as a notification on the next page this browser opens."""
    app.storage.user[FLASH_KEY] = message


def _safe_target(redirect_to: str) -> str:
    """`redirect_to` when it is a path on this site, else the home page.

    "//evil.example", "https://..." and "/\\evil.example" leave the site; so do "/\t/evil"
    and "/\n/evil", because browsers drop tabs and newlines from URLs before reading them.
    """
    local = (
        redirect_to.startswith("/")
        and not redirect_to.startswith("//")
        and "\\" not in redirect_to
        and all(ch.isprintable() and ch != " " for ch in redirect_to)
    )
    return redirect_to if local else HOME


def _client_address() -> str:
    return client_of(ui.context.client.request, get_settings())


def _login_form(target: str, sso_error: str = "") -> None:
    async def try_login() -> None:
        error_row.set_visibility(False)
        if not (email.value or "").strip() or not password.value:
            error.text = "Enter your email and password"
            error_row.set_visibility(True)
            return
        button.props("loading")
        try:
            user = await sign_in(
                email.value.strip(),
                password.value,
                client=_client_address(),
                redis_url=get_settings().redis_url,
            )
        except (AuthenticationError, RateLimitedError) as exc:
            logger.info("failed sign-in attempt")
            error.text = str(exc) if isinstance(exc, RateLimitedError) else INVALID_CREDENTIALS
            error.text = error.text[0].upper() + error.text[1:]
            error_row.set_visibility(True)
            password.value = ""
            return
        finally:
            button.props(remove="loading")
        # the session itself starts in an HTTP request, which can give the browser a new id
        ticket = secrets.token_urlsafe(32)
        app.storage.user[TICKET_KEY] = {
            "ticket": ticket,
            "user_id": str(user.id),
            "target": target,
            "expires": time.time() + TICKET_SECONDS,
        }
        ui.navigate.to(f"{SESSION_ROUTE}?ticket={ticket}")

    with ui.card().classes("w-96 max-w-full p-8 gap-4 shadow-md").mark("login-card"):
        with ui.row().classes("items-center gap-2 no-wrap"):
            ui.icon("sensors", size="md").classes("text-primary")
            ui.label("iotdeck").classes("text-2xl font-bold tracking-tight text-slate-900")
        ui.label("Sign in to the operator dashboard").classes("text-sm text-slate-500 -mt-2")
        email = ui.input("Email").props("outlined autofocus autocomplete=username type=email")
        email.classes("w-full").on("keydown.enter", try_login)
        password = ui.input("Password", password=True, password_toggle_button=True)
        password.props("outlined autocomplete=current-password").classes("w-full")
        password.on("keydown.enter", try_login)
        with ui.row().classes(
            "w-full items-center gap-2 no-wrap rounded bg-red-50 text-red-800 px-3 py-2"
        ) as error_row:
            ui.icon("error_outline", size="xs")
            error = ui.label("").classes("text-sm").mark("login-error")
        error_row.set_visibility(False)
        # --- single sign-on (OIDC): a failed attempt comes back with a code, never with text ---
        if sso_message := oidc.failure_message(sso_error):
            error.text = sso_message
            error_row.set_visibility(True)
        # --- end single sign-on ---
        button = ui.button("Sign in", on_click=try_login).props("unelevated no-caps size=md")
        button.classes("w-full").mark("login-submit")
        # --- single sign-on (OIDC): the provider's button under an "or" divider ---
        settings = get_settings()
        if settings.oidc_issuer:
            with ui.row().classes("w-full items-center gap-3 no-wrap"):
                ui.separator().classes("flex-1 w-auto")
                ui.label("or").classes("text-xs text-slate-400")
                ui.separator().classes("flex-1 w-auto")
            sso_url = f"/auth/oidc/login?redirect_to={quote(target, safe='')}"
            sso = ui.button(f"Sign in with {settings.oidc_name}", icon="login")
            sso.props(f'outline no-caps size=md href="{sso_url}"').classes("w-full")
            sso.mark("login-sso")
        # --- end single sign-on ---


async def _ticket_user(ticket: str) -> tuple[User, str] | None:
    """The user and target of this browser's pending sign-in, when `ticket` is its ticket."""
    pending = app.storage.user.pop(TICKET_KEY, None)
    if not isinstance(pending, dict) or not hmac.compare_digest(
        str(pending.get("ticket", "")), ticket
    ):
        return None
    if time.time() > pending.get("expires", 0):
        return None
    user = await run_in_threadpool(_load_active_user, pending.get("user_id"))
    return (user, _safe_target(str(pending.get("target", HOME)))) if user else None


async def _open_session(request: Request, ticket: str = "") -> RedirectResponse:
    """Finish a password sign-in: a new session for the ticket's user, then its target."""
    found = await _ticket_user(ticket)
    if found is None:
        return RedirectResponse("/login", status_code=303)
    user, target = found
    await start_session(request, user)
    return RedirectResponse(target, status_code=303)


async def _sign_out(request: Request) -> RedirectResponse:
    """End the session: its storage is emptied and the browser gets a fresh id."""
    app.storage.user.clear()
    request.session["id"] = str(uuid.uuid4())
    return RedirectResponse("/login", status_code=303)


def create() -> None:
    """Register the middleware, the login page and the session routes."""
    app.add_middleware(AuthMiddleware)

    @ui.page("/login", title="Sign in · iotdeck")
    async def login_page(
        redirect_to: str = HOME, sso_error: str = "", expired: str = ""
    ) -> RedirectResponse | None:
        target = _safe_target(redirect_to)
        if await _session_user(app.storage.user) is not None:
            return RedirectResponse(target)
        apply_theme()
        with ui.column().classes("w-full min-h-screen items-center justify-center bg-slate-50"):
            if expired:
                minutes = f"{get_settings().session_idle_minutes:g}"
                ui.label(EXPIRED.format(minutes=minutes)).classes(
                    "text-sm text-amber-800 bg-amber-50 rounded px-3 py-2"
                ).mark("session-expired")
            _login_form(target, sso_error)
            ui.label("Access is managed by your iotdeck administrator.").classes(
                "text-xs text-slate-400"
            )
        return None

    @ui.page("/logout", title="Sign out · iotdeck")
    def logout_page() -> None:
        # a GET must not change anything (a link or an image could trigger it): ask
        apply_theme()
        with ui.column().classes("w-full min-h-screen items-center justify-center bg-slate-50"):
            with ui.card().classes("w-96 max-w-full p-8 gap-4 shadow-md items-center"):
                ui.label("Sign out of iotdeck?").classes("text-lg font-semibold")
                sign_out_button(primary=True).classes("w-full")
                ui.link("Stay signed in", HOME).classes("text-sm text-primary")

    # after the pages: `ui.page` removes every route already on its path, POST included
    app.add_api_route(SESSION_ROUTE, _open_session, methods=["GET"], include_in_schema=False)
    app.add_api_route("/logout", _sign_out, methods=["POST"], include_in_schema=False)
