"""The `IOTDECK_*` variables a deployment file sets, checked against the one Settings object
and read the way an iotdeck process reads its environment."""

import os
from collections.abc import Iterable, Mapping

import pytest

from app.core.config import Settings

PREFIX = "IOTDECK_"
SETTING_NAMES = frozenset(PREFIX + name.upper() for name in Settings.model_fields)


def unknown_settings(names: Iterable[str]) -> list[str]:
    """The `IOTDECK_*` names among `names` that no setting reads (a typo is silently ignored)."""
    return sorted({name for name in names if name.startswith(PREFIX)} - SETTING_NAMES)


def read_settings(environment: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as a process whose only `IOTDECK_*` variables are `environment` reads them."""
    for name in list(os.environ):
        if name.startswith(PREFIX):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]  # pydantic-settings' own option
