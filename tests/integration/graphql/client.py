"""A tiny GraphQL-over-HTTP client for the tests, speaking to the ASGI app in process."""

from typing import Any

import httpx
from fastapi import FastAPI

from app.core.config import Settings
from app.graphql.router import create_router

SECRET = "s" * 40


def build_app(settings: Settings) -> FastAPI:
    """A bare FastAPI app serving only the GraphQL router, as `app.main.build` mounts it."""
    api = FastAPI()
    api.include_router(create_router(settings))
    return api


def make_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for a test, independent of the environment and any `.env` file."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "jwt_secret": SECRET,
        "jwt_expire_hours": 1,
        "max_page_size": 50,
        "graphql_max_depth": 10,
        "cors_origins": [],
        "demo": False,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class GraphQLClient:
    """Posts operations to /graphql and unpacks the answers."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def post(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        authorization: str | None = None,
    ) -> dict[str, Any]:
        """The JSON body of the answer (GraphQL errors come back with HTTP 200)."""
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if authorization is not None:
            headers["Authorization"] = authorization
        payload: dict[str, Any] = {"query": query}
        if variables is not None:
            payload["variables"] = variables
        response = await self.http.post("/graphql", json=payload, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()

    async def data(
        self, query: str, variables: dict[str, Any] | None = None, *, token: str | None = None
    ) -> dict[str, Any]:
        """The `data` of an operation that must succeed."""
        body = await self.post(query, variables, token=token)
        assert "errors" not in body, body
        return body["data"]

    async def error(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        authorization: str | None = None,
    ) -> dict[str, Any]:
        """The single error of an operation that must fail."""
        body = await self.post(query, variables, token=token, authorization=authorization)
        assert len(body.get("errors") or []) == 1, body
        return body["errors"][0]


def code_of(error: dict[str, Any]) -> str:
    """`extensions.code` of an error from the answer body."""
    return error["extensions"]["code"]
