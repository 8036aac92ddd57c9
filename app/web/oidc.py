"""Single sign-on with an OpenID Connect provider: the client, role mapping, who signs in.

The browser routes live in pages/oidc.py (they write the NiceGUI session); this module knows
no UI, so the role mapping and the account rules can be tested without a server.
"""

import logging
import secrets
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from authlib import deprecate
from sqlmodel import Session

from app.core.config import ConfigError, Settings
from app.core.errors import ValidationError
from app.core.models import ROLE_RANK, Role, User, UserCreate, UserUpdate
from app.services import users

with warnings.catch_warnings():
    # authlib 1.7+ would rather use httpx2 and warns at import when it falls back on httpx,
    # the client iotdeck ships: every `serve` would start with that warning. (Importing
    # authlib.deprecate, above, puts its own "always" filter first; this one goes before.)
    warnings.filterwarnings(
        "ignore", "The httpx module is deprecated", deprecate.AuthlibDeprecationWarning
    )
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.starlette_client import OAuth, StarletteOAuth2App

__all__ = ["OAuthError", "StarletteOAuth2App"]  # for pages/oidc.py, imported through here

logger = logging.getLogger(__name__)

CLIENT_NAME = "oidc"  # authlib keeps its state in the session under `_state_oidc_<state>`
SCOPE = "openid email profile"
PROVIDER_TIMEOUT_SECONDS = 10
NAME_MAX_LENGTH = 255
# SSO accounts never sign in with a password; this long random one only fills the column
_UNUSABLE_PASSWORD_BYTES = 48


class SsoFailure(StrEnum):
    """Why a single sign-on ended on the login page; only this code travels in the URL."""

    DENIED = "denied"
    STATE = "state"
    TOKEN = "token"
    EMAIL = "email"
    DISABLED = "disabled"
    PROVIDER = "provider"

    @property
    def message(self) -> str:
        """The fixed text the login page shows for this code."""
        return _MESSAGES[self]


_MESSAGES = {
    SsoFailure.DENIED: "Single sign-on was cancelled or refused by the identity provider.",
    SsoFailure.STATE: "That single sign-on attempt expired or did not start here; try again.",
    SsoFailure.TOKEN: "The identity provider's answer could not be verified; try again.",
    SsoFailure.EMAIL: "The identity provider did not give a verified email address.",
    SsoFailure.DISABLED: "Your iotdeck account is disabled; ask your administrator.",
    SsoFailure.PROVIDER: "The identity provider cannot be reached right now; try again later.",
}


def failure_message(code: str) -> str | None:
    """The fixed text for a code from the login page's URL; None for anything else."""
    try:
        return SsoFailure(code).message
    except ValueError:
        return None  # never echo what the URL says


class SsoError(Exception):
    """A sign-in refused on purpose; `failure` picks the login page's message."""

    def __init__(self, failure: SsoFailure, detail: str) -> None:
        super().__init__(f"{failure}: {detail}")
        self.failure = failure


@dataclass(frozen=True)
class Identity:
    """Who the provider says signed in, and the role its claims map to."""

    email: str
    name: str | None
    role: Role


def check_settings(settings: Settings) -> None:
    """Refuse to start with an issuer but no client credentials."""
    if not settings.oidc_issuer.startswith(("https://", "http://")):
        raise ConfigError("IOTDECK_OIDC_ISSUER: must be an https:// (or http://) URL")
    for name in ("oidc_client_id", "oidc_client_secret"):
        if not getattr(settings, name):
            raise ConfigError(f"IOTDECK_{name.upper()} is not set but IOTDECK_OIDC_ISSUER is")


def create_client(settings: Settings) -> StarletteOAuth2App:
    """authlib's Starlette client: discovery, code flow with PKCE (S256), state and nonce."""
    registry = OAuth()
    return registry.register(
        name=CLIENT_NAME,
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret,
        server_metadata_url=discovery_url(settings.oidc_issuer),
        client_kwargs={
            "scope": SCOPE,
            "code_challenge_method": "S256",
            "timeout": PROVIDER_TIMEOUT_SECONDS,
        },
    )


def discovery_url(issuer: str) -> str:
    """Where OpenID Connect Discovery puts the provider's metadata."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def same_issuer(configured: str, announced: object) -> bool:
    """True when the metadata names the issuer we were configured with (OIDC Discovery 4.3)."""
    return isinstance(announced, str) and announced.rstrip("/") == configured.rstrip("/")


def claim_values(claims: Mapping[str, object], claim: str) -> list[str]:
    """The strings under `claim`: a key as written, else a dotted path (`realm_access.roles`)."""
    value: object = claims.get(claim)
    if value is None and "." in claim:
        # Auth0 names claims with URLs (dots included), Keycloak nests them: try both
        value = claims
        for part in claim.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def map_role(claims: Mapping[str, object], *, claim: str, role_map: Mapping[str, str]) -> Role:
    """The highest role the claim's values map to; VIEWER when none maps.

    A value maps through `role_map` (exact match) or, being a role's name, to that role in any
    case ("admin" is ADMIN).
    """
    roles = {Role.VIEWER}
    for value in claim_values(claims, claim):
        mapped = role_map.get(value) or value.strip().upper()
        if mapped in Role.__members__:
            roles.add(Role(mapped))
    return max(roles, key=ROLE_RANK.__getitem__)


def identity_from_claims(claims: Mapping[str, object], settings: Settings) -> Identity:
    """Email, name and mapped role from verified claims; an unverified email is refused."""
    email = claims.get("email")
    if not isinstance(email, str) or not email.strip():
        raise SsoError(SsoFailure.EMAIL, "the provider sent no email claim")
    # absent means the provider does not say (some never do); only an explicit false refuses
    if claims.get("email_verified") is False or claims.get("email_verified") == "false":
        raise SsoError(SsoFailure.EMAIL, "the provider marks the email as unverified")
    name = claims.get("name")
    name = (name.strip()[:NAME_MAX_LENGTH] or None) if isinstance(name, str) else None
    role = map_role(claims, claim=settings.oidc_role_claim, role_map=settings.oidc_role_map)
    return Identity(email=email.strip().lower(), name=name, role=role)


def sign_in_user(*, session: Session, identity: Identity) -> User:
    """The account for this identity: created on first sign-in, its role kept in step.

    The provider is the source of truth for the role, except that the last active admin is
    never demoted (the users service refuses; the role stays and the refusal is logged).
    """
    user = users.get_user_by_email(session=session, email=identity.email)
    if user is None:
        return _create(session, identity)
    if not user.is_active:
        raise SsoError(SsoFailure.DISABLED, f"user {user.id} is disabled")
    if user.role != identity.role:
        try:
            user = users.update_user(
                session=session, user_id=user.id, data=UserUpdate(role=identity.role)
            )
        except ValidationError as exc:
            logger.warning("single sign-on: kept user %s as %s: %s", user.id, user.role, exc)
    return user


def _create(session: Session, identity: Identity) -> User:
    data = UserCreate(
        email=identity.email,
        password=secrets.token_urlsafe(_UNUSABLE_PASSWORD_BYTES),
        role=identity.role,
        name=identity.name,
    )
    try:
        user = users.create_user(session=session, data=data)
    except ValidationError as exc:  # an email our own rules refuse
        raise SsoError(SsoFailure.EMAIL, str(exc)) from None
    logger.info("single sign-on: created user %s as %s", user.id, user.role)
    return user
