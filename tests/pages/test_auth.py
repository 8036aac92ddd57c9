"""Signing in and out, and what a signed-out visitor may reach."""

import time
from collections.abc import Callable

import httpx
import pytest
from nicegui import app
from nicegui.testing import User

from app.core import db
from app.core.config import get_settings
from app.core.models import Role, UserUpdate
from app.services import users
from pages import auth
from tests.pages.conftest import Account, sign_in
from tests.waiting import wait_for


async def test_signed_out_visitor_is_sent_to_login(user: User) -> None:
    await user.open("/devices")
    await user.should_see("Sign in to the operator dashboard")
    await user.should_not_see(marker="logout")


async def test_sign_in_lands_on_devices_with_name_and_role(
    user: User, add_account: Callable[..., Account]
) -> None:
    account = add_account(Role.OPERATOR, name="Otto Operator")
    await sign_in(user, account)
    await user.should_see("Every device registered on this platform")
    await user.should_see("Otto Operator")
    await user.should_see(account.email)
    await user.should_see("OPERATOR")


async def test_sign_in_returns_to_the_page_asked_for(
    user: User, add_account: Callable[..., Account]
) -> None:
    account = add_account(Role.ADMIN)
    await sign_in(user, account, path="/users")
    await user.should_see("Who can sign in, and what they may do")


async def test_wrong_password_gets_the_generic_message(
    user: User, add_account: Callable[..., Account]
) -> None:
    account = add_account(Role.ADMIN)
    await user.open("/login")
    user.find("Email").type(account.email)
    user.find("Password").type("not the password").trigger("keydown.enter")
    await user.should_see("Invalid email or password")
    await user.should_not_see(marker="logout")


async def test_unknown_email_gets_the_same_generic_message(user: User) -> None:
    await user.open("/login")
    user.find("Email").type("nobody@example.com")
    user.find("Password").type("whatever-password").trigger("keydown.enter")
    await user.should_see("Invalid email or password")
    await user.should_not_see("nobody@example.com does not exist")


async def test_sign_out_is_a_post_that_ends_the_session(user: User, admin: Account) -> None:
    del admin
    await user.should_see("Sign out")
    # a GET (a link, an image) only asks
    await user.open("/logout")
    await user.should_see("Sign out of iotdeck?")
    await user.open("/devices")
    await user.should_see(marker="logout")
    response = await user.http_client.post("/logout")
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
    await user.open("/devices")
    await user.should_see("Sign in to the operator dashboard")


async def test_sign_in_gives_the_browser_a_new_session(
    user: User, add_account: Callable[..., Account]
) -> None:
    account = add_account(Role.ADMIN)
    await user.open("/login")
    before = user.http_client.cookies["session"]
    await sign_in(user, account)
    after = user.http_client.cookies["session"]
    assert after != before
    # the cookie planted before sign-in (session fixation) is still signed out
    transport = user.http_client._transport
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as planted:
        planted.cookies.set("session", before)
        response = await planted.get("/devices")
    assert response.status_code == 307
    assert response.headers["location"].startswith("/login")


async def test_an_idle_session_ends(user: User, admin: Account) -> None:
    del admin
    storage = next(found for found in app.storage._users.values() if found.get(auth.USER_ID_KEY))
    storage[auth.SEEN_KEY] = time.time() - get_settings().session_idle_minutes * 60 - 1
    await user.open("/devices")
    await user.should_see("Sign in to the operator dashboard")
    await user.should_see("60 minutes without activity")


async def test_repeated_failures_lock_the_account_and_say_when_to_retry(
    user: User, add_account: Callable[..., Account]
) -> None:
    account = add_account(Role.ADMIN)
    await user.open("/login")
    user.find("Email").type(account.email)
    password = user.find("Password")
    for _ in range(5):
        password.type("not the password").trigger("keydown.enter")
        # a failed attempt empties the field: wait for it, so the attempts come one by one
        await user.should_see("Invalid email or password")
        await wait_for(lambda: not next(iter(password.elements)).value)
    # the right password does not get through while the lock lasts
    user.find("Password").type(account.password).trigger("keydown.enter")
    await user.should_see("Too many failed sign-in attempts: try again in")
    await user.should_not_see(marker="logout")


@pytest.mark.parametrize(
    "change",
    [UserUpdate(is_active=False), UserUpdate(password="another password")],
    ids=["disabled", "password changed"],
)
async def test_the_session_ends_when_the_account_is_disabled_or_its_password_changes(
    user: User, add_account: Callable[..., Account], change: UserUpdate
) -> None:
    add_account(Role.ADMIN)
    account = add_account(Role.OPERATOR)
    await sign_in(user, account)
    with db.session_scope() as session:
        found = users.get_user_by_email(session=session, email=account.email)
        assert found is not None
        users.update_user(session=session, user_id=found.id, data=change)
    await user.open("/devices")
    await user.should_see("Sign in to the operator dashboard")


async def test_api_routes_are_not_redirected(user: User) -> None:
    response = await user.http_client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    response = await user.http_client.post("/graphql", json={"query": "{ __typename }"})
    assert response.status_code != 307
    assert "location" not in response.headers


@pytest.mark.parametrize(
    "target",
    ["//evil.example/phish", "/%09/evil.example", "/%0a/evil.example", "/%5C/evil.example"],
)
async def test_redirect_to_another_site_is_ignored(
    user: User, add_account: Callable[..., Account], target: str
) -> None:
    account = add_account(Role.VIEWER)
    await user.open(f"/login?redirect_to={target}")
    user.find("Email").type(account.email)
    user.find("Password").type(account.password).trigger("keydown.enter")
    await user.should_see("Fleet overview", retries=30)  # sent home, not away


async def test_signed_in_user_skips_the_login_page(user: User, admin: Account) -> None:
    del admin
    await user.open("/login")
    await user.should_see("Fleet overview", retries=30)  # the home dashboard
