"""Single sign-on accounts: made on first sign-in, role kept in step (SQLite and PostgreSQL)."""

import logging

import pytest
from sqlmodel import Session

from app.core.errors import AuthenticationError
from app.core.models import Role, User, UserCreate, UserUpdate
from app.services import users
from app.web.oidc import Identity, SsoError, SsoFailure, sign_in_user

PASSWORD = "correct horse"


def _make(session: Session, email: str, role: Role) -> User:
    data = UserCreate(email=email, password=PASSWORD, role=role)
    return users.create_user(session=session, data=data)


def test_first_sign_in_creates_the_user_with_the_mapped_role(session: Session) -> None:
    identity = Identity(email="new@example.com", name="New Person", role=Role.OPERATOR)
    user = sign_in_user(session=session, identity=identity)
    session.commit()
    found = users.get_user_by_email(session=session, email="new@example.com")
    assert found is not None and found.id == user.id
    assert (found.role, found.name, found.is_active) == (Role.OPERATOR, "New Person", True)
    # no password anyone knows: the password form does not let the SSO account in
    with pytest.raises(AuthenticationError):
        users.authenticate(session=session, email="new@example.com", password="")


def test_existing_user_takes_the_provider_role_each_time(session: Session) -> None:
    _make(session, "boss@example.com", Role.ADMIN)  # another admin, so demotion is allowed
    existing = _make(session, "ops@example.com", Role.VIEWER)
    session.commit()
    up = sign_in_user(session=session, identity=Identity("ops@example.com", None, Role.ADMIN))
    assert (up.id, up.role) == (existing.id, Role.ADMIN)
    down = sign_in_user(session=session, identity=Identity("OPS@example.com", None, Role.VIEWER))
    session.commit()
    assert (down.id, down.role) == (existing.id, Role.VIEWER)
    assert users.authenticate(session=session, email="ops@example.com", password=PASSWORD)


def test_last_active_admin_keeps_the_role(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    admin = _make(session, "only-admin@example.com", Role.ADMIN)
    session.commit()
    identity = Identity(email="only-admin@example.com", name=None, role=Role.VIEWER)
    with caplog.at_level(logging.WARNING, logger="app.web.oidc"):
        user = sign_in_user(session=session, identity=identity)
    session.commit()
    assert (user.id, user.role) == (admin.id, Role.ADMIN)
    assert "last active admin" in caplog.text


def test_disabled_user_is_refused_and_left_unchanged(session: Session) -> None:
    _make(session, "boss@example.com", Role.ADMIN)
    gone = _make(session, "gone@example.com", Role.VIEWER)
    users.update_user(session=session, user_id=gone.id, data=UserUpdate(is_active=False))
    session.commit()
    identity = Identity(email="gone@example.com", name=None, role=Role.ADMIN)
    with pytest.raises(SsoError) as refused:
        sign_in_user(session=session, identity=identity)
    assert refused.value.failure == SsoFailure.DISABLED
    found = users.get_user(session=session, user_id=gone.id)
    assert found is not None and (found.role, found.is_active) == (Role.VIEWER, False)


def test_an_email_our_rules_refuse_is_an_email_failure(session: Session) -> None:
    with pytest.raises(SsoError) as refused:
        sign_in_user(session=session, identity=Identity("not-an-email", None, Role.VIEWER))
    assert refused.value.failure == SsoFailure.EMAIL
