"""Passwords (bcrypt), tokens (HS256 JWT with expiry) and role checks."""

import uuid
from datetime import timedelta
from functools import cache

import bcrypt
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

from app.config import get_settings
from app.errors import AuthenticationError, PermissionDeniedError
from app.models import ROLE_RANK, Role, User, utcnow

_ALGORITHM = "HS256"


def hash_password(password: str) -> str:
    """A bcrypt hash of `password`, at the cost `IOTDECK_BCRYPT_ROUNDS` sets."""
    salt = bcrypt.gensalt(rounds=get_settings().bcrypt_rounds)
    return bcrypt.hashpw(password.encode(), salt).decode()


@cache
def _dummy_hash() -> str:
    # verified against when the email is unknown, so both failures cost the same time
    return hash_password("not a password")


def verify_password(password: str, password_hash: str | None) -> bool:
    """True when `password` matches; also spends the time when there is no hash."""
    candidate = password.encode()[:72]
    if password_hash is None:
        bcrypt.checkpw(candidate, _dummy_hash().encode())
        return False
    return bcrypt.checkpw(candidate, password_hash.encode())


def create_token(user: User, *, secret: str, expire_hours: float) -> str:
    """A signed JWT naming the user, valid for `expire_hours`."""
    now = utcnow()
    claims = {
        "sub": str(user.id),
        "role": user.role,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(hours=expire_hours)).timestamp()),
    }
    return jwt.encode({"alg": _ALGORITHM}, claims, OctKey.import_key(secret))


def user_id_from_token(token: str, *, secret: str) -> uuid.UUID:
    """The user id a valid, unexpired token names; AuthenticationError otherwise."""
    try:
        decoded = jwt.decode(token, OctKey.import_key(secret), algorithms=[_ALGORITHM])
        jwt.JWTClaimsRegistry(exp={"essential": True}, sub={"essential": True}).validate(
            decoded.claims
        )
        return uuid.UUID(decoded.claims["sub"])
    except (JoseError, ValueError, KeyError, TypeError) as exc:
        raise AuthenticationError("invalid or expired token") from exc


def has_role(user: User, role: Role) -> bool:
    """True when the user's role is `role` or above it."""
    return ROLE_RANK[Role(user.role)] >= ROLE_RANK[role]


def require_role(user: User, role: Role) -> None:
    """PermissionDeniedError unless the user has `role` or above."""
    if not has_role(user, role):
        raise PermissionDeniedError(f"requires role {role} or above")
