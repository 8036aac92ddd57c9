"""EMQX 5's HTTP authenticator and authorizer (SPEC 8.1 "For EMQX"): `POST /mqtt/auth`, `/mqtt/acl`.

EMQX renders the body template an operator configures (docs/deployment.md#emqx) with the
client's values, every placeholder as a string ("" when it has none), and posts it here
with the shared secret in `X-Iotdeck-Secret`. The rules are those of `iotdeck mqtt-broker`:
- login: a service account (by its password) is a superuser, whom EMQX then never asks
  about topics; a device logs in with its password credential (username = its id) or, on
  the TLS listener, with its certificate (`cert_common_name` = its id, which must also be
  the username, since the authorizer only sees the username) when it holds a live
  CERTIFICATE credential and, if EMQX sends `cert_pem` (5.7.1+), exactly that certificate;
- topics: app/mqtt/access.py.
Only a 200 answer counts for EMQX: any other status is "ignore", which falls through to
the end of its chain, so the configuration in the docs makes that a refusal.
"""

import asyncio
import base64
import binascii
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from cryptography import x509
from fastapi import APIRouter, Depends, Header, HTTPException, Request
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from app.core import db
from app.core.config import Settings
from app.core.errors import ValidationError
from app.core.models import CredentialKind
from app.mqtt import access
from app.services import credentials

logger = logging.getLogger(__name__)

SECRET_HEADER = "X-Iotdeck-Secret"
ACTIONS = {
    "publish": (access.device_may_publish,),
    "subscribe": (access.device_may_subscribe,),
    "all": (access.device_may_publish, access.device_may_subscribe),
}


class AuthResult(BaseModel):
    """What EMQX's HTTP authenticator reads."""

    result: Literal["allow", "deny"]
    is_superuser: bool = False


class AclResult(BaseModel):
    """What EMQX's HTTP authorizer reads."""

    result: Literal["allow", "deny"]


@dataclass(frozen=True)
class Login:
    """One connection attempt, as EMQX describes it."""

    username: str
    password: str
    cert_common_name: str = ""
    # SHA-256 of the client certificate EMQX verified, when it sends `cert_pem`
    cert_fingerprint: str | None = None
    clientid: str = ""
    peerhost: str = ""


# the request body -----------------------------------------------------------------------


def _bad(reason: str) -> HTTPException:
    return HTTPException(status_code=400, detail=reason)


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise _bad("the body is not JSON") from None
    if not isinstance(body, dict):
        raise _bad("the body is not a JSON object")
    return body


def _text(body: dict[str, Any], field: str, *, required: bool = False) -> str:
    """The string `field` of the body; "" when absent and optional."""
    value = body.get(field)
    if value is None:
        if required:
            raise _bad(f"field '{field}' is missing")
        return ""
    if not isinstance(value, str):
        raise _bad(f"field '{field}' must be a string")
    return value


def _fingerprint(cert_pem: str) -> str | None:
    """The fingerprint of EMQX's `cert_pem` (base64 DER; PEM accepted too); None if empty."""
    if not cert_pem:
        return None
    try:
        if "-----BEGIN" in cert_pem:
            certificate = x509.load_pem_x509_certificate(cert_pem.encode())
        else:
            der = base64.b64decode(cert_pem, validate=True)
            certificate = x509.load_der_x509_certificate(der)
    except (ValueError, binascii.Error):
        raise _bad("field 'cert_pem' is not a certificate (base64 DER or PEM)") from None
    return credentials.fingerprint(certificate)


def _login(body: dict[str, Any]) -> Login:
    return Login(
        username=_text(body, "username", required=True),
        password=_text(body, "password", required=True),
        cert_common_name=_text(body, "cert_common_name"),
        cert_fingerprint=_fingerprint(_text(body, "cert_pem")),
        clientid=_text(body, "clientid"),
        peerhost=_text(body, "peerhost"),
    )


# the decisions --------------------------------------------------------------------------


def _certificate_holder(session: Session, login: Login) -> bool:
    """True when the certificate's CN is a device holding that live certificate."""
    if login.username != login.cert_common_name:
        return False
    try:
        live = credentials.credentials_of(session=session, device_id=login.cert_common_name)
    except ValidationError:  # a CN that is no device id
        return False
    return any(
        c.kind == CredentialKind.CERTIFICATE and login.cert_fingerprint in (None, c.fingerprint)
        for c in live
    )


def decide_login(login: Login) -> AuthResult:
    """EMQX's authentication answer for `login` (blocking: it reads the database)."""
    with db.session_scope() as session:
        # platform processes send their password, with or without a certificate
        if login.password and credentials.is_service_login(
            session=session, username=login.username, password=login.password
        ):
            return AuthResult(result="allow", is_superuser=True)
        if login.cert_common_name:
            # a device's certificate decides alone, as on Mosquitto's TLS listener
            allowed = _certificate_holder(session, login)
        else:
            allowed = bool(login.password) and credentials.password_credential(
                session=session, username=login.username, password=login.password
            )
    return AuthResult(result="allow" if allowed else "deny")


def decide_access(username: str, topic: str, action: str) -> AclResult:
    """EMQX's authorization answer: service accounts anything, a device its own topics."""
    # service accounts log in as superusers, so EMQX asks only if that flag was lost
    if username in credentials.SERVICE_ACCOUNTS:
        return AclResult(result="allow")
    allowed = all(check(username, topic) for check in ACTIONS[action])
    return AclResult(result="allow" if allowed else "deny")


# the endpoints --------------------------------------------------------------------------


async def authenticate(request: Request) -> AuthResult:
    """EMQX's HTTP authenticator: may this client connect, and is it a superuser?"""
    login = _login(await _json_object(request))
    try:
        answer = await asyncio.to_thread(decide_login, login)
    except SQLAlchemyError as exc:
        logger.warning("EMQX login of '%s': database unreachable: %s", login.username, exc)
        raise HTTPException(status_code=503, detail="database unreachable") from None
    if answer.result == "deny":
        logger.info(
            "EMQX login refused: username '%s', client '%s' from %s",
            login.username,
            login.clientid,
            login.peerhost or "?",
        )
    return answer


async def authorize(request: Request) -> AclResult:
    """EMQX's HTTP authorizer: may this client publish or subscribe to this topic?"""
    body = await _json_object(request)
    username = _text(body, "username", required=True)
    topic = _text(body, "topic", required=True)
    action = _text(body, "action", required=True)
    if action not in ACTIONS:
        raise _bad(f"field 'action' must be one of {', '.join(ACTIONS)}, not '{action}'")
    return decide_access(username, topic, action)


def _secret_check(settings: Settings) -> Callable[..., Awaitable[None]]:
    """A dependency refusing calls without IOTDECK_EMQX_SECRET (404 while it is unset)."""
    expected = settings.emqx_secret.encode()

    async def check(
        secret: Annotated[str | None, Header(alias=SECRET_HEADER)] = None,
    ) -> None:
        if not expected:
            raise HTTPException(
                status_code=404, detail="EMQX hooks are off: IOTDECK_EMQX_SECRET is not set"
            )
        if secret is None or not hmac.compare_digest(secret.encode(), expected):
            raise HTTPException(status_code=401, detail=f"missing or wrong {SECRET_HEADER}")

    return check


def create_router(settings: Settings) -> APIRouter:
    """`POST /mqtt/auth` and `POST /mqtt/acl`, guarded by the shared secret."""
    router = APIRouter(
        prefix="/mqtt", tags=["emqx"], dependencies=[Depends(_secret_check(settings))]
    )
    router.add_api_route("/auth", authenticate, methods=["POST"])
    router.add_api_route("/acl", authorize, methods=["POST"])
    return router
