"""The shared page frame: header with product, navigation, signed-in user; a centred body."""

from collections.abc import Iterator
from contextlib import contextmanager

from nicegui import app, run, ui

from app.core import db
from app.core.auth import has_role
from app.core.models import Role, User
from app.services import alerts
from components.alert_badge import AlertBadge
from components.chips import role_chip
from components.live import LiveFeed
from components.theme import apply_theme

FLASH_KEY = "flash"
PAGE_WIDTH = "w-full max-w-screen-xl mx-auto px-8"  # header and body share it, so they align


def _nav_link(label: str, path: str, icon: str, *, active: bool) -> None:
    tone = "bg-blue-50 text-primary" if active else "text-slate-600 hover:bg-slate-100"
    link = ui.link(target=path).classes(
        f"flex items-center gap-2 px-3 py-1.5 rounded-md text-sm font-medium no-underline {tone}"
    )
    with link.mark(f"nav-{label.lower()}"):
        ui.icon(icon, size="xs")
        ui.label(label)


def _count_open_alerts() -> int:
    with db.session_scope() as session:
        return alerts.count_open_alerts(session=session)


async def _open_alerts() -> int | None:
    """How many alerts are open, read off the event loop (None while the app shuts down)."""
    return await run.io_bound(_count_open_alerts)


def _header(user: User, live: LiveFeed) -> None:
    path = ui.context.client.request.url.path
    with ui.header().classes("bg-white text-slate-900 border-b border-slate-200 p-0"):
        with ui.row().classes(f"{PAGE_WIDTH} items-center h-14 gap-6 no-wrap"):
            with ui.link(target="/").classes("flex items-center gap-2 no-underline"):
                ui.icon("sensors", size="sm").classes("text-primary")
                ui.label("iotdeck").classes("text-lg font-bold tracking-tight text-slate-900")
            with ui.row().classes("items-center gap-1 no-wrap"):
                home = path == "/" or path.startswith("/dashboards")
                _nav_link("Dashboards", "/dashboards", "dashboard", active=home)
                _nav_link("Devices", "/devices", "memory", active=path.startswith("/devices"))
                _nav_link("Alerts", "/alerts", "notifications_active", active=path == "/alerts")
                _nav_link("Rules", "/rules", "rule", active=path.startswith("/rules"))
                if has_role(user, Role.ADMIN):
                    _nav_link("Users", "/users", "group", active=path.startswith("/users"))
                    _nav_link("System", "/system", "hub", active=path.startswith("/system"))
            ui.space()
            # the live connection indicator and the open-alert badge, both pushed
            with ui.row().classes("items-center gap-3 no-wrap").mark("header-status"):
                live.indicator()
                AlertBadge(load=_open_alerts, live=live)
            with ui.row().classes("items-center gap-3 no-wrap pl-4 border-l border-slate-200"):
                with ui.column().classes("gap-0 items-end leading-tight"):
                    ui.label(user.name or user.email).classes("text-sm font-medium")
                    if user.name:
                        ui.label(user.email).classes("text-xs text-slate-500")
                role_chip(user.role).mark("user-role")
                sign_out_button()


def sign_out_button(*, primary: bool = False) -> ui.button:
    """The sign-out button: a POST, so no link or image can sign anyone out."""
    script = (
        "const form = document.createElement('form');"
        "form.method = 'post'; form.action = '/logout';"
        "document.body.appendChild(form); form.submit();"
    )
    style = "unelevated no-caps" if primary else "flat dense no-caps color=secondary"
    button = ui.button("Sign out", icon="logout", on_click=lambda: ui.run_javascript(script))
    return button.props(style).mark("logout")


@contextmanager
def frame(title: str, *, user: User, live: LiveFeed | None = None) -> Iterator[ui.column]:
    """Theme, header (with `live`'s indicator) and a centred content column for a page."""
    # a page without pushes of its own still gets a feed: the header's badge is live
    live = live or LiveFeed()
    apply_theme()
    ui.page_title(f"{title} · iotdeck")
    _header(user, live)
    if message := app.storage.user.pop(FLASH_KEY, None):
        ui.notify(message, type="positive")
    with ui.column().classes(f"{PAGE_WIDTH} py-8 gap-5") as body:
        yield body


def page_heading(title: str, subtitle: str | None = None) -> ui.row:
    """The page's title row; enter the returned row to add action buttons on its right."""
    with ui.row().classes("w-full items-center gap-3 no-wrap") as heading:
        with ui.column().classes("gap-0"):
            ui.label(title).classes("text-2xl font-semibold text-slate-900 tracking-tight")
            if subtitle:
                ui.label(subtitle).classes("text-sm text-slate-500")
        ui.space()
    return heading
