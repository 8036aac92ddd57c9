"""GraphQL fixtures: the app on this test's database, one user per role, their tokens."""

import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass

import bcrypt
import httpx
import pytest
from sqlalchemy import Engine

from app.core import db
from app.core.auth import create_token
from app.core.config import Settings
from app.core.models import Role, User, UserCreate
from app.services import users
from tests.integration.graphql.client import GraphQLClient, build_app, make_settings

PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def cheap_bcrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash with bcrypt's lowest cost: real hashes and checks, milliseconds instead of 0.25 s."""
    # the cost factor travels inside each hash, so verification follows it automatically
    monkeypatch.setattr(bcrypt, "gensalt", functools.partial(bcrypt.gensalt, rounds=4))


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Settings for this test's database; a small page size makes the limit easy to hit."""
    return make_settings(database_url)


@dataclass(frozen=True)
class Account:
    """A stored user and a valid token for it."""

    user: User
    token: str


@pytest.fixture
def accounts(engine: Engine, settings: Settings) -> dict[Role, Account]:
    """One active user per role, created through the users service."""
    del engine  # only needed so the process-wide engine points at this test's database
    created: dict[Role, Account] = {}
    with db.session_scope() as session:
        for role in Role:
            data = UserCreate(
                email=f"{role.lower()}@example.com", password=PASSWORD, role=role, name=role.title()
            )
            user = users.create_user(session=session, data=data)
            token = create_token(
                user, secret=settings.jwt_secret, expire_hours=settings.jwt_expire_hours
            )
            created[role] = Account(user=user, token=token)
    return created


@pytest.fixture
def admin(accounts: dict[Role, Account]) -> str:
    """The ADMIN's token."""
    return accounts[Role.ADMIN].token


@pytest.fixture
def viewer(accounts: dict[Role, Account]) -> str:
    """The VIEWER's token."""
    return accounts[Role.VIEWER].token


@pytest.fixture
async def api(engine: Engine, settings: Settings) -> AsyncIterator[GraphQLClient]:
    """A client of /graphql on this test's database."""
    del engine
    transport = httpx.ASGITransport(build_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield GraphQLClient(http)
