"""Sign-in: one middleware guarding the dashboard pages, the login and logout pages."""

import logging
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import RedirectResponse
from nicegui import Client, app, run, ui
from starlette.concurrency import run_in_threadpool
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.routing import Match, Route

from app import db
from app.auth import has_role
from app.errors import AuthenticationError, ValidationError
from app.models import Role, User
from app.services import users
from components.frame import FLASH_KEY
from components.theme import apply_theme

logger = logging.getLogger(__name__)

USER_ID_KEY = "user_id"

HOME = "/devices"
PUBLIC_PAGES = frozenset({"/login", "/logout"})
INVALID_CREDENTIALS = "Invalid email or password"


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
        user_id = app.storage.user.get(USER_ID_KEY)
        user = await run_in_threadpool(_load_active_user, user_id)
        if user is None:
            app.storage.user.clear()  # deleted or disabled since sign-in: the session ends
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?redirect_to={quote(target, safe='')}")
        request.state.user = user
        return await call_next(request)


def current_user() -> User:
    """The signed-in user, as the middleware loaded it for this page."""
    return ui.context.client.request.state.user


def acting_user(role: Role) -> User | None:
    """The signed-in user re-read before a change, when still active and at least `role`."""
    user = _load_active_user(app.storage.user.get(USER_ID_KEY))
    if user is None or not has_role(user, role):
        ui.notify("You are not allowed to do this any more; reload the page", type="negative")
        return None
    return user


def flash(message: str) -> None:
    """Keep a message to show as a notification on the next page this browser opens."""
    app.storage.user[FLASH_KEY] = message


def _safe_target(redirect_to: str) -> str:
    # only same-site paths: "//evil.example" or "https://..." would make this an open redirect
    if redirect_to.startswith("/") and not redirect_to.startswith("//") and "\\" not in redirect_to:
        return redirect_to
    return HOME


def _authenticate(email: str, password: str) -> User | None:
    with db.session_scope() as session:
        try:
            return users.authenticate(session=session, email=email, password=password)
        except AuthenticationError:
            return None


def _login_form(target: str) -> None:
    async def try_login() -> None:
        error_row.set_visibility(False)
        if not (email.value or "").strip() or not password.value:
            error.text = "Enter your email and password"
            error_row.set_visibility(True)
            return
        button.props("loading")
        user = await run.io_bound(_authenticate, email.value.strip(), password.value)
        button.props(remove="loading")
        if user is None:
            logger.info("failed sign-in attempt")
            error.text = INVALID_CREDENTIALS
            error_row.set_visibility(True)
            password.value = ""
            return
        app.storage.user[USER_ID_KEY] = str(user.id)
        ui.navigate.to(target)

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
        button = ui.button("Sign in", on_click=try_login).props("unelevated no-caps size=md")
        button.classes("w-full").mark("login-submit")


def create() -> None:
    """Register the middleware and the /login and /logout pages."""
    app.add_middleware(AuthMiddleware)

    @ui.page("/login", title="Sign in · iotdeck")
    def login_page(redirect_to: str = HOME) -> RedirectResponse | None:
        target = _safe_target(redirect_to)
        if _load_active_user(app.storage.user.get(USER_ID_KEY)) is not None:
            return RedirectResponse(target)
        apply_theme()
        with ui.column().classes("w-full min-h-screen items-center justify-center bg-slate-50"):
            _login_form(target)
            ui.label("Access is managed by your iotdeck administrator.").classes(
                "text-xs text-slate-400"
            )
        return None

    @ui.page("/logout")
    def logout_page() -> RedirectResponse:
        app.storage.user.clear()
        return RedirectResponse("/login")
