"""The rule editor under the bounds of issue 12: the text's size, and a replay's devices,
budget and one-at-a-time rule, each shown on the page."""

import uuid
from collections.abc import Callable

import pytest
from nicegui import ui
from nicegui.testing import User

from app import db
from app.models import Device
from app.services import rule_testing, users
from app.services.rules import MAX_EXPRESSION_LENGTH
from tests.pages.conftest import Account

CHECKS = 20  # the inline check waits for a pause in typing
HOT = 'rule "Hot" when temperature > 30'


def _type(user: User, text: str) -> None:
    user.find(ui.codemirror).clear().type(text)


def _user_id(account: Account) -> uuid.UUID:
    with db.session_scope() as session:
        found = users.get_user_by_email(session=session, email=account.email)
        assert found is not None
        return found.id


async def test_a_text_over_the_size_cap_is_refused_unparsed(user: User, operator: Account) -> None:
    del operator
    await user.open("/rules/new")
    _type(user, HOT + " " * (MAX_EXPRESSION_LENGTH + 1 - len(HOT)))
    await user.should_see(
        marker="diagnostic-message", content=f"at most {MAX_EXPRESSION_LENGTH}", retries=CHECKS
    )
    user.find(marker="test-rule").click()
    await user.should_see(marker="replay-error", content="characters long")


async def test_a_replay_over_the_device_cap_says_so(
    user: User,
    add_device: Callable[..., Device],
    operator: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    del operator
    monkeypatch.setattr(rule_testing, "MAX_DEVICES", 1)
    add_device("One")
    add_device("Two")
    await user.open("/rules/new")
    _type(user, HOT)
    user.find(marker="test-rule").click()
    await user.should_see(marker="replay-error", content="more than 1 devices")


async def test_a_replay_out_of_time_is_marked_as_stopped_early(
    user: User,
    add_device: Callable[..., Device],
    operator: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    del operator
    monkeypatch.setattr(rule_testing, "BUDGET_SECONDS", 0.0)
    add_device("Boiler")
    await user.open("/rules/new")
    _type(user, HOT)
    user.find(marker="test-rule").click()
    await user.should_see(marker="replay-truncated", content="Stopped early")


async def test_a_second_replay_of_the_same_account_is_refused_while_one_runs(
    user: User, add_device: Callable[..., Device], operator: Account
) -> None:
    add_device("Boiler")
    await user.open("/rules/new")
    _type(user, HOT)
    # the account's replay slot is taken, as by a test running in another tab
    with rule_testing.one_at_a_time(_user_id(operator)):
        user.find(marker="test-rule").click()
        await user.should_see(marker="replay-error", content="already running")
    user.find(marker="test-rule").click()
    await user.should_see(marker="replay-summary")
