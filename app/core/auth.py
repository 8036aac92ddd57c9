"""Passwords (bcrypt), tokens (HS256 JWT with expiry) and role checks."""

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import cache

import bcrypt
from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import OctKey

from app.core.config import get_settings
from app.core.errors import AuthenticationError, PermissionDeniedError
from app.core.models import ROLE_RANK, Role, User, utcnow

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


def credentials_fingerprint(user: User) -> str:
    """A digest of the user's password hash and role: it changes when either does.

    Tokens and browser sessions carry it, so changing a password or a role ends every
    earlier token and session of that user (SPEC 8.2). It reveals nothing usable: a
    one-way digest of a bcrypt hash.
    """
    material = f"iotdeck-credentials|{user.password_hash}|{Role(user.role).value}".encode()
    return hashlib.sha256(material).hexdigest()[:32]


@dataclass(frozen=True)
class TokenClaims:
    """What a valid token says: whose it is, and the credentials it was issued against."""

    user_id: uuid.UUID
    fingerprint: str


def create_token(user: User, *, secret: str, expire_hours: float) -> str:
    """A signed JWT naming the user, valid for `expire_hours`."""
    now = utcnow()
    claims = {
        "sub": str(user.id),
        "role": user.role,
        "fpr": credentials_fingerprint(user),
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(hours=expire_hours)).timestamp()),
    }
    return jwt.encode({"alg": _ALGORITHM}, claims, OctKey.import_key(secret))


def _verified(token: str, secrets: Sequence[str]) -> jwt.Token:
    # the token names no key: try each, newest first (HMAC checks cost microseconds)
    for secret in secrets[:-1]:
        try:
            return jwt.decode(token, OctKey.import_key(secret), algorithms=[_ALGORITHM])
        except BadSignatureError:
            continue
    return jwt.decode(token, OctKey.import_key(secrets[-1]), algorithms=[_ALGORITHM])


def read_token(token: str, *, secrets: Sequence[str]) -> TokenClaims:
    """The claims of a valid, unexpired token signed with any of `secrets`.

    `secrets` is the signing key first, then the previous ones (IOTDECK_JWT_PREVIOUS_SECRETS):
    a rotated key keeps its tokens valid until they expire. AuthenticationError otherwise.
    """
    try:
        decoded = _verified(token, secrets)
        jwt.JWTClaimsRegistry(
            exp={"essential": True}, sub={"essential": True}, fpr={"essential": True}
        ).validate(decoded.claims)
        return TokenClaims(uuid.UUID(decoded.claims["sub"]), str(decoded.claims["fpr"]))
    except (JoseError, ValueError, KeyError, TypeError) as exc:
        raise AuthenticationError("invalid or expired token") from exc


def has_role(user: User, role: Role) -> bool:
    """True when the user's role is `role` or above it."""
    return ROLE_RANK[Role(user.role)] >= ROLE_RANK[role]


def require_role(user: User, role: Role) -> None:
    """PermissionDeniedError unless the user has `role` or above."""
    if not has_role(user, role):
        raise PermissionDeniedError(f"requires role {role} or above")
