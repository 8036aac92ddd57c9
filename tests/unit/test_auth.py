"""Passwords and tokens."""

import uuid

import pytest

from app.auth import create_token, has_role, hash_password, user_id_from_token, verify_password
from app.errors import AuthenticationError
from app.models import Role, User

SECRET = "k" * 40


def _user(role: Role = Role.VIEWER) -> User:
    return User(id=uuid.uuid4(), email="a@example.com", password_hash="", role=role)


def test_password_round_trip() -> None:
    hashed = hash_password("open sesame")
    assert verify_password("open sesame", hashed)
    assert not verify_password("open sesame!", hashed)
    assert not verify_password("open sesame", None)


def test_token_names_the_user() -> None:
    user = _user()
    token = create_token(user, secret=SECRET, expire_hours=1)
    assert user_id_from_token(token, secret=SECRET) == user.id


@pytest.mark.parametrize(
    "token",
    [
        create_token(_user(), secret=SECRET, expire_hours=-1),  # expired
        create_token(_user(), secret="other" * 10, expire_hours=1),  # forged
        "not.a.token",
        "",
    ],
    ids=["expired", "forged", "garbage", "empty"],
)
def test_bad_tokens_are_refused(token: str) -> None:
    with pytest.raises(AuthenticationError):
        user_id_from_token(token, secret=SECRET)


def test_roles_are_ordered() -> None:
    assert has_role(_user(Role.ADMIN), Role.OPERATOR)
    assert has_role(_user(Role.OPERATOR), Role.OPERATOR)
    assert not has_role(_user(Role.VIEWER), Role.OPERATOR)
