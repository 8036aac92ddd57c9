"""Signing in and bearer tokens: login, expiry, forgery, disabled and deleted accounts."""

import uuid

from app.core.auth import create_token, read_token
from app.core.config import Settings
from app.core.models import Role, User
from tests.integration.graphql.client import GraphQLClient, code_of
from tests.integration.graphql.conftest import PASSWORD, Account

LOGIN = (
    "mutation($email: String!, $password: String!) {"
    " login(email: $email, password: $password) { token user { id email name role } } }"
)
ME = "{ me { email } }"


async def test_login_returns_a_token_that_names_the_user(
    api: GraphQLClient, accounts: dict[Role, Account], settings: Settings
) -> None:
    operator = accounts[Role.OPERATOR].user
    # emails are matched case-insensitively, as the users service stores them lower-case
    data = await api.data(LOGIN, {"email": "OPERATOR@example.com", "password": PASSWORD})
    payload = data["login"]
    assert payload["user"] == {
        "id": str(operator.id),
        "email": "operator@example.com",
        "name": "Operator",
        "role": "OPERATOR",
    }
    assert read_token(payload["token"], secrets=[settings.jwt_secret]).user_id == operator.id
    assert await api.data(ME, token=payload["token"]) == {"me": {"email": "operator@example.com"}}


async def test_login_failures_look_the_same(
    api: GraphQLClient, accounts: dict[Role, Account]
) -> None:
    del accounts
    wrong_password = await api.error(LOGIN, {"email": "admin@example.com", "password": "nope-nope"})
    unknown_email = await api.error(LOGIN, {"email": "ghost@example.com", "password": PASSWORD})
    for error in (wrong_password, unknown_email):
        assert code_of(error) == "UNAUTHENTICATED"
        assert error["message"] == "invalid email or password"
        assert error["path"] == ["login"]


async def test_expired_forged_and_garbage_tokens_are_unauthenticated(
    api: GraphQLClient, accounts: dict[Role, Account], settings: Settings
) -> None:
    viewer = accounts[Role.VIEWER].user
    expired = create_token(viewer, secret=settings.jwt_secret, expire_hours=-1)
    forged = create_token(viewer, secret="another secret of forty characters......", expire_hours=1)
    header, _, _ = accounts[Role.VIEWER].token.partition(".")
    unsigned = f"{header}.eyJzdWIiOiJ4In0."
    for token in (expired, forged, unsigned, "garbage", "a.b.c"):
        error = await api.error(ME, token=token)
        assert code_of(error) == "UNAUTHENTICATED", token
        assert error["message"] == "invalid or expired token"
    for authorization in ("Basic dXNlcjpwYXNz", "Bearer", accounts[Role.VIEWER].token):
        error = await api.error(ME, authorization=authorization)
        assert code_of(error) == "UNAUTHENTICATED", authorization
        assert "Bearer <token>" in error["message"]


async def test_disabled_and_deleted_users_tokens_stop_working(
    api: GraphQLClient, accounts: dict[Role, Account], settings: Settings
) -> None:
    admin, viewer = accounts[Role.ADMIN].token, accounts[Role.VIEWER]
    disable = (
        "mutation($id: ID!, $on: Boolean!) {"
        " updateUser(input: {id: $id, isActive: $on}) { isActive } }"
    )
    await api.data(disable, {"id": str(viewer.user.id), "on": False}, token=admin)
    error = await api.error(ME, token=viewer.token)
    assert code_of(error) == "UNAUTHENTICATED"
    # a disabled account cannot sign in again either, and says nothing more than a typo would
    login = await api.error(LOGIN, {"email": viewer.user.email, "password": PASSWORD})
    assert (code_of(login), login["message"]) == ("UNAUTHENTICATED", "invalid email or password")
    await api.data(disable, {"id": str(viewer.user.id), "on": True}, token=admin)
    assert await api.data(ME, token=viewer.token) == {"me": {"email": viewer.user.email}}
    # a well-signed token for an account that is not (or no longer) in the database
    ghost = User(id=uuid.uuid4(), email="ghost@example.com", role=Role.ADMIN, password_hash="x")
    ghost_token = create_token(ghost, secret=settings.jwt_secret, expire_hours=1)
    assert code_of(await api.error(ME, token=ghost_token)) == "UNAUTHENTICATED"
