"""The SSO routes when the provider cannot be used: back to the login page, saying why."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from starlette.middleware.sessions import SessionMiddleware

from app.core.config import ConfigError, Settings
from app.web.oidc import SsoFailure
from bench.services import free_port
from pages.oidc import create_router
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, running_provider


def _settings(issuer: str) -> Settings:
    return Settings(oidc_issuer=issuer, oidc_client_id=CLIENT_ID, oidc_client_secret=CLIENT_SECRET)


@asynccontextmanager
async def _client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    # the routes alone, with the session middleware NiceGUI gives them in `serve`
    routes = FastAPI()
    routes.include_router(create_router(settings))
    routes.add_middleware(SessionMiddleware, secret_key="s" * 32)
    transport = httpx.ASGITransport(app=routes)
    async with httpx.AsyncClient(transport=transport, base_url="http://iotdeck.test") as client:
        yield client


def _refusal(response: httpx.Response) -> tuple[str, dict[str, list[str]]]:
    assert response.status_code == 303
    location = urlsplit(response.headers["location"])
    return location.path, parse_qs(location.query)


async def test_unreachable_provider_sends_back_to_login() -> None:
    settings = _settings(f"http://127.0.0.1:{free_port()}")  # nobody listens there
    async with _client(settings) as client:
        response = await client.get("/auth/oidc/login", params={"redirect_to": "/users"})
    path, query = _refusal(response)
    assert path == "/login"
    assert query == {"sso_error": [SsoFailure.PROVIDER.value], "redirect_to": ["/users"]}


async def test_discovery_naming_another_issuer_is_refused() -> None:
    # a mix-up: the document at our issuer's address speaks for someone else
    with running_provider() as provider:
        provider.announced_issuer = "https://someone-else.example"
        async with _client(_settings(provider.issuer)) as client:
            response = await client.get("/auth/oidc/login")
            path, query = _refusal(response)
            assert (path, query["sso_error"]) == ("/login", [SsoFailure.PROVIDER.value])
            provider.announced_issuer = None  # fixed at the provider: the next try goes there
            response = await client.get("/auth/oidc/login")
    assert response.status_code == 302
    assert response.headers["location"].startswith(f"{provider.issuer}/authorize?")


@pytest.mark.parametrize("issuer", ["id.example.com", "ftp://id.example.com"])
def test_issuer_must_be_a_web_url(issuer: str) -> None:
    with pytest.raises(ConfigError, match="IOTDECK_OIDC_ISSUER"):
        create_router(_settings(issuer))


def test_issuer_without_client_credentials_refuses_to_start() -> None:
    settings = Settings(oidc_issuer="https://id.example.com", oidc_client_id="iotdeck")
    with pytest.raises(ConfigError, match="IOTDECK_OIDC_CLIENT_SECRET is not set"):
        create_router(settings)
