"""Users service contract, on SQLite and PostgreSQL alike."""

import pytest
from sqlmodel import Session

from app.core.errors import AuthenticationError, NotFoundError, ValidationError
from app.core.models import Role, UserCreate, UserUpdate
from app.services import users

PASSWORD = "correct horse"


def _make(session: Session, email: str, role: Role = Role.VIEWER):
    data = UserCreate(email=email, password=PASSWORD, role=role, name="Some One")
    return users.create_user(session=session, data=data)


def test_created_user_signs_in_with_a_hashed_password(session: Session) -> None:
    user = _make(session, "  Ops@Example.COM ", Role.OPERATOR)
    session.commit()
    assert user.email == "ops@example.com"
    assert user.password_hash.startswith("$2") and PASSWORD not in user.password_hash
    signed_in = users.authenticate(session=session, email="OPS@example.com", password=PASSWORD)
    assert (signed_in.id, signed_in.role) == (user.id, "OPERATOR")


def test_failed_sign_in_does_not_reveal_whether_the_email_exists(session: Session) -> None:
    _make(session, "known@example.com")
    session.commit()
    with pytest.raises(AuthenticationError) as wrong_password:
        users.authenticate(session=session, email="known@example.com", password="nope nope")
    with pytest.raises(AuthenticationError) as unknown_email:
        users.authenticate(session=session, email="ghost@example.com", password=PASSWORD)
    assert str(wrong_password.value) == str(unknown_email.value) == "invalid email or password"


def test_disabled_user_cannot_sign_in(session: Session) -> None:
    _make(session, "admin@example.com", Role.ADMIN)
    user = _make(session, "gone@example.com")
    users.update_user(session=session, user_id=user.id, data=UserUpdate(is_active=False))
    session.commit()
    with pytest.raises(AuthenticationError):
        users.authenticate(session=session, email="gone@example.com", password=PASSWORD)


@pytest.mark.parametrize(
    ("field", "data"),
    [
        ("email", UserCreate(email="not-an-email", password=PASSWORD)),
        ("email", UserCreate(email="", password=PASSWORD)),
        ("password", UserCreate(email="a@example.com", password="short")),
        ("password", UserCreate(email="a@example.com", password="é" * 40)),
        ("role", UserCreate(email="a@example.com", password=PASSWORD, role="ROOT")),
        ("name", UserCreate(email="a@example.com", password=PASSWORD, name="n" * 256)),
    ],
)
def test_bad_input_names_the_field(session: Session, field: str, data: UserCreate) -> None:
    with pytest.raises(ValidationError) as caught:
        users.create_user(session=session, data=data)
    assert caught.value.field == field
    session.rollback()
    assert users.list_users(session=session) == []


def test_duplicate_email_is_refused(session: Session) -> None:
    _make(session, "twice@example.com")
    session.commit()
    with pytest.raises(ValidationError) as caught:
        _make(session, "TWICE@example.com")
    assert caught.value.field == "email"


def test_role_change_and_the_last_admin_guard(session: Session) -> None:
    admin = _make(session, "admin@example.com", Role.ADMIN)
    viewer = _make(session, "viewer@example.com")
    session.commit()
    promoted = users.update_user(session=session, user_id=viewer.id, data=UserUpdate(role="ADMIN"))
    assert promoted.role == Role.ADMIN
    users.update_user(session=session, user_id=admin.id, data=UserUpdate(role=Role.VIEWER))
    session.commit()
    with pytest.raises(ValidationError) as demoted:
        users.update_user(session=session, user_id=viewer.id, data=UserUpdate(role="OPERATOR"))
    assert demoted.value.field == "role"
    with pytest.raises(ValidationError) as disabled:
        users.update_user(session=session, user_id=viewer.id, data=UserUpdate(is_active=False))
    assert disabled.value.field == "is_active"
    session.rollback()
    stored = users.get_user(session=session, user_id=viewer.id)
    assert stored is not None and (stored.role, stored.is_active) == ("ADMIN", True)


def test_update_of_a_missing_user_is_not_found(session: Session) -> None:
    with pytest.raises(NotFoundError):
        users.update_user(
            session=session,
            user_id="00000000-0000-0000-0000-000000000000",
            data=UserUpdate(name="x"),
        )
