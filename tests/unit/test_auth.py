"""Passwords and tokens."""

import uuid

import pytest

from app.core.auth import (
    create_token,
    credentials_fingerprint,
    has_role,
    hash_password,
    read_token,
    verify_password,
)
from app.core.errors import AuthenticationError
from app.core.models import Role, User

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
    claims = read_token(token, secrets=[SECRET])
    assert claims.user_id == user.id
    assert claims.fingerprint == credentials_fingerprint(user)


def test_tokens_of_a_previous_key_stay_valid_until_they_expire() -> None:
    user = _user()
    old = create_token(user, secret=SECRET, expire_hours=1)
    new_secret = "n" * 40
    assert read_token(old, secrets=[new_secret, SECRET]).user_id == user.id
    with pytest.raises(AuthenticationError):
        read_token(old, secrets=[new_secret])
    expired = create_token(user, secret=SECRET, expire_hours=-1)
    with pytest.raises(AuthenticationError):
        read_token(expired, secrets=[new_secret, SECRET])


def test_the_fingerprint_changes_with_the_password_or_the_role() -> None:
    user = User(id=uuid.uuid4(), email="a@example.com", password_hash="h1", role=Role.ADMIN)
    before = credentials_fingerprint(user)
    user.password_hash = "h2"
    assert credentials_fingerprint(user) != before
    changed_password = credentials_fingerprint(user)
    user.role = Role.VIEWER
    assert credentials_fingerprint(user) not in {before, changed_password}


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
        read_token(token, secrets=[SECRET])


def test_roles_are_ordered() -> None:
    assert has_role(_user(Role.ADMIN), Role.OPERATOR)
    assert has_role(_user(Role.OPERATOR), Role.OPERATOR)
    assert not has_role(_user(Role.VIEWER), Role.OPERATOR)
