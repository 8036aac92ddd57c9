"""Single sign-on routes: /auth/oidc/login sends the browser to the provider, /callback signs in.

Plain FastAPI routes, not pages: they only redirect. They sit under pages/ because they sign the
browser in as the login form does (pages.auth.start_session, NiceGUI's user storage). authlib
keeps state, nonce and PKCE verifier in `request.session`: the signed session cookie NiceGUI's
SessionMiddleware already provides (storage_secret), so no second session middleware is added.
"""

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from joserfc.errors import JoseError
from starlette.concurrency import run_in_threadpool

from app.core import db
from app.core.config import Settings
from app.core.models import User
from app.web import oidc
from app.web.oidc import OAuthError, SsoError, SsoFailure, StarletteOAuth2App
from pages.auth import HOME, _safe_target, start_session

logger = logging.getLogger(__name__)

try:  # authlib talks through httpx2 when it is installed, else httpx: catch whichever fails
    import httpx2

    HTTP_ERRORS: tuple[type[Exception], ...] = (httpx.HTTPError, httpx2.HTTPError)
except ImportError:
    HTTP_ERRORS = (httpx.HTTPError,)

PREFIX = "/auth/oidc"
TARGET_KEY = "oidc_redirect_to"  # in request.session, beside authlib's state


def create_router(settings: Settings) -> APIRouter:
    """GET /auth/oidc/login and /auth/oidc/callback for the configured provider."""
    oidc.check_settings(settings)
    client = oidc.create_client(settings)
    router = APIRouter(prefix=PREFIX, tags=["single sign-on"])

    @router.get("/login", name="oidc_login")
    async def login(request: Request, redirect_to: str = HOME) -> RedirectResponse:
        target = _safe_target(redirect_to)
        try:
            await _metadata(client, settings)
        except SsoError as exc:
            logger.warning("single sign-on: %s", exc)
            return _back_to_login(exc.failure, target)
        request.session[TARGET_KEY] = target
        callback = str(request.url_for("oidc_callback"))
        return await client.authorize_redirect(request, callback)

    @router.get("/callback", name="oidc_callback")
    async def callback(request: Request) -> RedirectResponse:
        target = _safe_target(str(request.session.pop(TARGET_KEY, HOME)))
        try:
            claims = await _verified_claims(client, request, settings)
            identity = oidc.identity_from_claims(claims, settings)
            user = await run_in_threadpool(_sign_in_user, identity)
        except SsoError as exc:
            logger.warning("single sign-on refused: %s", exc)
            return _back_to_login(exc.failure, target)
        await start_session(request, user)  # a new session id, as a password sign-in gets
        logger.info("single sign-on: user %s signed in as %s", user.id, user.role)
        return RedirectResponse(target, status_code=303)

    return router


async def _metadata(client: StarletteOAuth2App, settings: Settings) -> dict[str, Any]:
    """The provider's discovery document, checked to name the configured issuer."""
    try:
        metadata = await client.load_server_metadata()
    except (*HTTP_ERRORS, ValueError) as exc:
        raise SsoError(SsoFailure.PROVIDER, f"discovery failed: {exc}") from None
    if not oidc.same_issuer(settings.oidc_issuer, metadata.get("issuer")):
        client.server_metadata.clear()  # fetched again next time, maybe fixed by then
        raise SsoError(SsoFailure.PROVIDER, "the discovery document names another issuer")
    return metadata


async def _verified_claims(
    client: StarletteOAuth2App, request: Request, settings: Settings
) -> Mapping[str, object]:
    """The ID token's claims once state, signature, issuer, audience, expiry and nonce hold.

    Claims the ID token lacks (email, the role claim) come from the userinfo endpoint; the
    signed ID token wins where both say something.
    """
    if request.query_params.get("error"):
        raise SsoError(SsoFailure.DENIED, f"provider error {request.query_params['error']!r}")
    metadata = await _metadata(client, settings)
    # authlib checks only `iss` by default, and `aud` merely through `azp`: name both
    expected = {
        "iss": {"essential": True, "value": metadata["issuer"]},
        "aud": {"essential": True, "value": settings.oidc_client_id},
    }
    try:
        token = await client.authorize_access_token(request, claims_options=expected)
    except OAuthError as exc:
        failure = SsoFailure.STATE if exc.error == "mismatching_state" else SsoFailure.TOKEN
        raise SsoError(failure, f"{exc.error}: {exc.description}") from None
    except JoseError as exc:
        raise SsoError(SsoFailure.TOKEN, f"ID token refused: {exc}") from None
    except HTTP_ERRORS as exc:
        raise SsoError(SsoFailure.PROVIDER, f"token request failed: {exc}") from None
    claims = token.get("userinfo")
    if not claims:
        raise SsoError(SsoFailure.TOKEN, "the token response has no ID token")
    if "email" in claims and settings.oidc_role_claim in claims:
        return claims
    return await _with_userinfo(client, token, claims)


async def _with_userinfo(
    client: StarletteOAuth2App, token: dict[str, Any], claims: Mapping[str, object]
) -> Mapping[str, object]:
    if not (await client.load_server_metadata()).get("userinfo_endpoint"):
        return claims
    try:
        userinfo = await client.userinfo(token=token)
    except (*HTTP_ERRORS, OAuthError, ValueError) as exc:
        raise SsoError(SsoFailure.PROVIDER, f"userinfo request failed: {exc}") from None
    if userinfo.get("sub") != claims.get("sub"):  # OIDC Core 5.3.2: another user's answer
        raise SsoError(SsoFailure.TOKEN, "userinfo names another subject than the ID token")
    return {**userinfo, **claims}


def _sign_in_user(identity: oidc.Identity) -> User:
    with db.session_scope() as session:
        return oidc.sign_in_user(session=session, identity=identity)


def _back_to_login(failure: SsoFailure, target: str) -> RedirectResponse:
    query = urlencode({"sso_error": failure.value, "redirect_to": target})
    return RedirectResponse(f"/login?{query}", status_code=303)
