"""WebSocket auth: the `connection_init` payload carries the bearer token."""

import warnings
from typing import TYPE_CHECKING

import pytest
from fastapi import FastAPI
from starlette.exceptions import StarletteDeprecationWarning
from starlette.websockets import WebSocketDisconnect

from app.core.config import Settings
from app.core.models import Role
from tests.integration.graphql.client import build_app
from tests.integration.graphql.conftest import Account

if TYPE_CHECKING:
    from starlette.testclient import TestClient


def _client(api: FastAPI) -> "TestClient":
    """Starlette's TestClient (httpx's ASGI transport has no WebSocket support)."""
    with warnings.catch_warnings():
        # Starlette 1.x would rather drive TestClient with `httpx2`; plain httpx still works
        warnings.simplefilter("ignore", StarletteDeprecationWarning)
        from starlette.testclient import TestClient
    return TestClient(api)


@pytest.mark.parametrize("key", ["Authorization", "authorization", "AUTHORIZATION"])
def test_websocket_connection_init_is_authenticated(
    accounts: dict[Role, Account], settings: Settings, key: str
) -> None:
    token = accounts[Role.VIEWER].token
    with (
        _client(build_app(settings)) as client,
        client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws,
    ):
        ws.send_json({"type": "connection_init", "payload": {key: f"Bearer {token}"}})
        assert ws.receive_json() == {"type": "connection_ack"}


@pytest.mark.parametrize("payload", [{}, {"Authorization": "Bearer forged"}])
def test_websocket_without_a_valid_token_is_refused(
    accounts: dict[Role, Account], settings: Settings, payload: dict[str, str]
) -> None:
    del accounts
    with _client(build_app(settings)) as client:
        with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            ws.send_json({"type": "connection_init", "payload": payload})
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
        assert closed.value.code == 4403
        # the legacy protocol answers with a connection_error naming the cause
        with client.websocket_connect("/graphql", subprotocols=["graphql-ws"]) as ws:
            ws.send_json({"type": "connection_init", "payload": payload})
            answer = ws.receive_json()
        assert answer["type"] == "connection_error"
        assert answer["payload"]["code"] == "UNAUTHENTICATED"


def test_operations_over_a_websocket_carry_the_same_error_codes(
    accounts: dict[Role, Account], settings: Settings
) -> None:
    token = accounts[Role.VIEWER].token
    with (
        _client(build_app(settings)) as client,
        client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws,
    ):
        ws.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        assert ws.receive_json() == {"type": "connection_ack"}
        query = '{ me { email } device(id: "nope") { id } }'
        ws.send_json({"type": "subscribe", "id": "1", "payload": {"query": query}})
        answer = ws.receive_json()
        assert answer["type"] == "next"
        assert answer["payload"]["data"] == {"me": {"email": "viewer@example.com"}, "device": None}
        [error] = answer["payload"]["errors"]
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "id"}
        assert ws.receive_json() == {"type": "complete", "id": "1"}
