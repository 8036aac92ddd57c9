"""Signing in and out, and what a signed-out visitor may reach."""

from collections.abc import Callable

from nicegui.testing import User

from app import db
from app.models import Role, UserUpdate
from app.services import users
from tests.pages.conftest import Account, sign_in


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


async def test_sign_out_ends_the_session(user: User, admin: Account) -> None:
    del admin
    user.find(marker="logout").click()
    await user.should_see("Sign in to the operator dashboard")
    await user.open("/devices")
    await user.should_see("Sign in to the operator dashboard")


async def test_disabled_user_is_signed_out_on_next_page_load(
    user: User, add_account: Callable[..., Account]
) -> None:
    add_account(Role.ADMIN)
    account = add_account(Role.OPERATOR)
    await sign_in(user, account)
    with db.session_scope() as session:
        found = users.get_user_by_email(session=session, email=account.email)
        assert found is not None
        users.update_user(session=session, user_id=found.id, data=UserUpdate(is_active=False))
    await user.open("/devices")
    await user.should_see("Sign in to the operator dashboard")


async def test_api_routes_are_not_redirected(user: User) -> None:
    response = await user.http_client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    response = await user.http_client.post("/graphql", json={"query": "{ __typename }"})
    assert response.status_code != 307
    assert "location" not in response.headers


async def test_redirect_to_another_site_is_ignored(
    user: User, add_account: Callable[..., Account]
) -> None:
    account = add_account(Role.VIEWER)
    await user.open("/login?redirect_to=//evil.example/phish")
    user.find("Email").type(account.email)
    user.find("Password").type(account.password).trigger("keydown.enter")
    await user.should_see("Every device registered on this platform")


async def test_signed_in_user_skips_the_login_page(user: User, admin: Account) -> None:
    del admin
    await user.open("/login")
    await user.should_see("Every device registered on this platform")
