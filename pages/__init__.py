"""NiceGUI pages: thin, they call app services and compose components."""

from app.config import Settings
from pages import auth, device_detail, devices, users


def create(settings: Settings) -> None:
    """Register the sign-in middleware and every page route."""
    del settings  # nothing page-specific to configure yet
    auth.create()
    devices.create()
    device_detail.create()
    users.create()
