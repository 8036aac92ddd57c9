"""Users: accounts, passwords, roles, sign-in."""

import uuid
from collections.abc import Iterable

from sqlalchemy import func
from sqlmodel import Session, col, select

from app.core.auth import hash_password, verify_password
from app.core.errors import AuthenticationError, NotFoundError, ValidationError
from app.core.models import Role, User, UserCreate, UserUpdate, utcnow
from app.services import validation
from app.services.validation import parse_id

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_BYTES = 72  # bcrypt ignores anything longer


def _email(value: object) -> str:
    return validation.email(value, "email")


def _password(value: object) -> str:
    if not isinstance(value, str) or len(value) < MIN_PASSWORD_LENGTH:
        raise ValidationError("password", f"must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(value.encode()) > MAX_PASSWORD_BYTES:
        raise ValidationError("password", f"must be at most {MAX_PASSWORD_BYTES} bytes")
    return value


def _name(value: object) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return validation.text(value, "name", max_length=255)


def get_user_by_email(*, session: Session, email: str) -> User | None:
    """The user with this email (case-insensitive), if any."""
    return session.exec(select(User).where(User.email == email.strip().lower())).first()


def create_user(*, session: Session, data: UserCreate) -> User:
    """Create a user; the email must be new."""
    email = _email(data.email)
    password = _password(data.password)
    role = validation.any_of(data.role, "role", Role)
    name = _name(data.name)
    if get_user_by_email(session=session, email=email) is not None:
        raise ValidationError("email", f"a user with email {email} already exists")
    user = User(email=email, name=name, role=role, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    return user


def authenticate(*, session: Session, email: str, password: str) -> User:
    """The active user with these credentials; one error for every failure."""
    user = get_user_by_email(session=session, email=email) if isinstance(email, str) else None
    valid = verify_password(password, user.password_hash if user else None)
    if user is None or not valid or not user.is_active:
        raise AuthenticationError("invalid email or password")
    return user


def get_user(*, session: Session, user_id: uuid.UUID | str) -> User | None:
    """The user with this id, or None."""
    return session.get(User, parse_id(user_id))


def users_by_id(*, session: Session, ids: Iterable[uuid.UUID]) -> list[User]:
    """The users with these ids that exist, in no particular order."""
    wanted = list(set(ids))
    return list(session.exec(select(User).where(col(User.id).in_(wanted)))) if wanted else []


def list_users(
    *, session: Session, limit: int | None = None, offset: int = 0, max_limit: int = 1000
) -> list[User]:
    """Every user, by email; a page of them with `limit`."""
    query = select(User).order_by(col(User.email))
    if limit is not None:
        limit, offset = validation.page(limit, offset, max_limit=max_limit)
        query = query.offset(offset).limit(limit)
    return list(session.exec(query))


def _count_active_admins(session: Session) -> int:
    query = select(func.count()).select_from(User).where(User.role == Role.ADMIN, User.is_active)
    return session.exec(query).one()


def update_user(*, session: Session, user_id: uuid.UUID | str, data: UserUpdate) -> User:
    """Change a user's name, role, active flag or password; the last admin stays an admin."""
    user = get_user(session=session, user_id=user_id)
    if user is None:
        raise NotFoundError("user", user_id)
    role = validation.any_of(data.role, "role", Role) if data.role is not None else None
    is_admin_now = user.role == Role.ADMIN and user.is_active
    loses_admin = (role is not None and role != Role.ADMIN) or data.is_active is False
    if is_admin_now and loses_admin and _count_active_admins(session) <= 1:
        field = "role" if role is not None and role != Role.ADMIN else "is_active"
        raise ValidationError(field, "the last active admin cannot be demoted or disabled")
    if data.name is not None:
        user.name = _name(data.name)
    if role is not None:
        user.role = role
    if data.is_active is not None:
        user.is_active = data.is_active
    if data.password is not None:
        user.password_hash = hash_password(_password(data.password))
    user.updated_at = utcnow()
    session.add(user)
    session.flush()
    return user
