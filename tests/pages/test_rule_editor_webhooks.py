"""The rule editor shows why a webhook to a non-public address is not saved (SPEC 8.2)."""

import pytest
from nicegui import ui
from nicegui.testing import User
from sqlmodel import select

from app.core import db
from app.core.config import get_settings
from app.core.models import AlertRule
from tests.pages.conftest import Account


async def test_a_metadata_webhook_is_refused_on_save_with_field_and_reason(
    user: User, operator: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    del operator
    monkeypatch.setenv("IOTDECK_WEBHOOK_ALLOW_PRIVATE", "false")  # as shipped
    get_settings.cache_clear()
    await user.open("/rules/new")
    text = 'rule "Leak"\n  when humidity > 90\n  notify webhook "http://169.254.169.254/latest/"\n'
    user.find(ui.codemirror).clear().type(text)
    user.find(marker="save-rule").click()
    await user.should_see(
        marker="save-error",
        content="expression: webhook http://169.254.169.254/... is a cloud metadata address",
        retries=20,
    )
    with db.session_scope() as session:
        assert list(session.exec(select(AlertRule))) == []
