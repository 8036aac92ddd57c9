"""NiceGUI pages: thin, they call app services and compose components."""

from app.core.config import Settings
from pages import (
    alerts,
    auth,
    dashboards,
    device_detail,
    devices,
    rule_editor,
    rules,
    system,
    users,
)


def create(settings: Settings) -> None:
    """Register the sign-in middleware and every page route."""
    auth.create()
    devices.create()
    dashboards.create()
    device_detail.create()
    users.create()
    system.create()
    alerts.create()
    rules.create()
    rule_editor.create(settings)
