"""The rule editor under the bounds of issue 12: the text's size, and a replay's devices,
budget and one-at-a-time rule, each shown on the page."""

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from nicegui import ui
from nicegui.testing import User

from app.core import db
from app.core.models import Device
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


@dataclass(frozen=True)
class Bound:
    """A replay bound set to `value`, the devices that cross it, and what the page shows."""

    name: str
    value: float
    devices: tuple[str, ...]
    marker: str
    says: str


@pytest.mark.parametrize(
    "bound",
    [
        Bound("MAX_DEVICES", 1, ("One", "Two"), "replay-error", "more than 1 devices"),
        Bound("BUDGET_SECONDS", 0.0, ("Boiler",), "replay-truncated", "Stopped early"),
    ],
    ids=["over the device cap: refused", "out of time: marked as stopped early"],
)
async def test_a_replay_past_a_bound_says_so(
    user: User,
    add_device: Callable[..., Device],
    operator: Account,
    monkeypatch: pytest.MonkeyPatch,
    bound: Bound,
) -> None:
    del operator
    monkeypatch.setattr(rule_testing, bound.name, bound.value)
    for name in bound.devices:
        add_device(name)
    await user.open("/rules/new")
    _type(user, HOT)
    user.find(marker="test-rule").click()
    await user.should_see(marker=bound.marker, content=bound.says)


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
