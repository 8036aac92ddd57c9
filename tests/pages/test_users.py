"""User management: admins create accounts and change roles; nobody else gets in."""

from collections.abc import Callable

from nicegui import ui
from nicegui.testing import User

from app.core import db
from app.core.models import Role
from app.services import users
from tests.pages.conftest import Account, sign_in


def _stored_role(email: str) -> Role | None:
    with db.session_scope() as session:
        found = users.get_user_by_email(session=session, email=email)
        return Role(found.role) if found else None


async def test_admin_sees_every_account(
    user: User, add_account: Callable[..., Account], admin: Account
) -> None:
    other = add_account(Role.OPERATOR, name="Otto Operator")
    await user.open("/users")
    await user.should_see(admin.email)
    await user.should_see(other.email)
    await user.should_see("Otto Operator")
    assert len(user.find(marker="user-row").elements) == 2


async def test_admin_creates_a_user(user: User, admin: Account) -> None:
    del admin
    await user.open("/users")
    user.find(marker="new-user").click()
    await user.should_see(marker="user-form")
    with user.scope(marker="user-form"):
        user.find("Email").type("new.person@example.com")
        user.find("Name").type("New Person")
        user.find(marker="user-form-role").click()
        user.find("Operator").click()
        user.find("Password").type("a good long password")
        user.find(marker="user-form-save").click()
    await user.should_see("User new.person@example.com created")
    await user.should_see("New Person")
    assert _stored_role("new.person@example.com") == Role.OPERATOR


async def test_create_user_error_names_the_field(user: User, admin: Account) -> None:
    del admin
    await user.open("/users")
    user.find(marker="new-user").click()
    with user.scope(marker="user-form"):
        user.find("Email").type("short@example.com")
        user.find("Password").type("short")
        user.find(marker="user-form-save").click()
        await user.should_see("Password must be at least 8 characters")
    assert _stored_role("short@example.com") is None


async def test_admin_changes_a_role(
    user: User, add_account: Callable[..., Account], admin: Account
) -> None:
    del admin
    other = add_account(Role.VIEWER)
    await user.open("/users")
    role_select = user.find(kind=ui.select, marker=f"role-{other.email}").elements.pop()
    with user:
        role_select.set_value(Role.OPERATOR.value)
    await user.should_see(f"{other.email} is now OPERATOR")
    assert _stored_role(other.email) == Role.OPERATOR


async def test_last_admin_cannot_be_demoted(user: User, admin: Account) -> None:
    await user.open("/users")
    role_select = user.find(kind=ui.select, marker=f"role-{admin.email}").elements.pop()
    with user:
        role_select.set_value(Role.VIEWER.value)
    await user.should_see("the last active admin cannot be demoted or disabled")
    assert _stored_role(admin.email) == Role.ADMIN
    # the table is rebuilt from what is stored, so the select shows the role again
    await user.should_not_see(kind=ui.select, marker=f"role-{admin.email}", content="Viewer")
    await user.should_see(kind=ui.select, marker=f"role-{admin.email}", content="Admin")


async def test_admin_disables_and_enables_a_user(
    user: User, add_account: Callable[..., Account], admin: Account
) -> None:
    del admin
    other = add_account(Role.OPERATOR)
    await user.open("/users")
    user.find(marker=f"active-{other.email}").click()
    await user.should_see(f"{other.email} disabled")
    with db.session_scope() as session:
        found = users.get_user_by_email(session=session, email=other.email)
        assert found is not None
        assert not found.is_active
    user.find(marker=f"active-{other.email}").click()
    await user.should_see(f"{other.email} enabled")


async def test_non_admin_cannot_open_users(user: User, viewer: Account) -> None:
    del viewer
    await user.open("/users")
    await user.should_see("Only administrators can manage users")
    await user.should_not_see(marker="user-row")
    await user.should_not_see(marker="new-user")


async def test_operator_cannot_open_users(user: User, add_account: Callable[..., Account]) -> None:
    add_account(Role.ADMIN)
    await sign_in(user, add_account(Role.OPERATOR))
    await user.open("/users")
    await user.should_see("Only administrators can manage users")
    await user.should_not_see(marker="nav-users")
