"""NiceGUI pages: thin, they call app services and compose components."""

from app.config import Settings


def create(settings: Settings) -> None:
    """Register every page route."""
    del settings
