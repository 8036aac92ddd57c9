"""SPEC 8.2 from outside: request limits, sign-in throttling and tokens against a running
`iotdeck serve`, over real HTTP and WebSocket, as an integrator's suite would see them.

The server trusts 127.0.0.1 as a reverse proxy, so each test speaks for its own client
address through X-Forwarded-For and no test spends another's budget.
"""

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from limits.aio.storage import RedisStorage
from sqlmodel import Session, create_engine, select

from app.core.auth import create_token
from app.core.models import User
from app.web.limiter import KEY_PREFIX, ClientAddresses, RequestLimiter
from tests.e2e.conftest import Server, seeded_server, server_environment

LIMIT = 20  # requests a minute per address: no window turns over during a test
SECRET = "security-new-" + "n" * 40
PREVIOUS_SECRET = "security-old-" + "o" * 40
PASSWORD = "security-password"
LOGIN = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`iotdeck serve` with a small request limit, behind a "proxy" at 127.0.0.1."""
    root = tmp_path_factory.mktemp("security")
    env = server_environment(
        root,
        password=PASSWORD,
        IOTDECK_JWT_SECRET=SECRET,
        IOTDECK_JWT_PREVIOUS_SECRETS=PREVIOUS_SECRET,
        IOTDECK_RATE_LIMIT=f"{LIMIT}/minute",
        IOTDECK_TRUSTED_PROXIES="127.0.0.1",
    )
    with seeded_server(root, ["--no-ingest"], env) as running:
        yield running


def _client(server: Server, address: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"X-Forwarded-For": address}, timeout=10)


def _address() -> str:
    """A client address of its own (TEST-NET-3) for one test."""
    number = uuid.uuid4().int
    return f"203.0.{number % 250}.{number // 250 % 250 + 1}"


def _graphql(client: httpx.Client, query: str, token: str = "", **variables: Any) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.post(
        "/graphql", json={"query": query, "variables": variables}, headers=headers
    )
    return response.json()


def _login(client: httpx.Client, email: str, password: str) -> dict:
    return _graphql(client, LOGIN, e=email, p=password)


def test_a_page_route_over_the_limit_gets_429_with_retry_after(server: Server) -> None:
    with _client(server, _address()) as client:
        codes = [client.get("/login").status_code for _ in range(LIMIT)]
        assert codes == [200] * LIMIT
        refused = client.get("/login")
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        # probes are never limited: an orchestrator must see the process alive
        assert client.get("/health/live").status_code == 200


def test_graphql_over_the_limit_gets_rate_limited_with_retry_after(server: Server) -> None:
    with _client(server, _address()) as client:
        for _ in range(LIMIT):
            assert _graphql(client, "{ __typename }") == {"data": {"__typename": "Query"}}
        refused = client.post("/graphql", json={"query": "{ __typename }"})
    assert refused.status_code == 429
    (error,) = refused.json()["errors"]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert error["extensions"]["retryAfter"] == int(refused.headers["retry-after"])


def test_each_client_address_has_its_own_budget(server: Server) -> None:
    spent, fresh = _address(), _address()
    with _client(server, spent) as client:
        for _ in range(LIMIT + 1):
            client.get("/login")
        assert client.get("/login").status_code == 429
    with _client(server, fresh) as client:
        assert client.get("/login").status_code == 200


async def test_a_websocket_over_the_limit_is_refused(server: Server) -> None:
    address = _address()
    with _client(server, address) as client:
        for _ in range(LIMIT):
            client.get("/health/ready")  # not counted
            client.get("/login")
    url = server.url.replace("http://", "ws://") + "/graphql"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(
            url,
            subprotocols=[websockets.Subprotocol("graphql-transport-ws")],
            additional_headers={"X-Forwarded-For": address},
        ):
            pass
    assert refused.value.response.status_code == 403


async def test_operations_over_a_websocket_count_against_the_limit(server: Server) -> None:
    address = _address()
    with _client(server, address) as client:  # one request
        token = _login(client, "viewer@example.com", PASSWORD)["data"]["login"]["token"]
    url = server.url.replace("http://", "ws://") + "/graphql"
    answers = []
    async with websockets.connect(  # a second
        url,
        subprotocols=[websockets.Subprotocol("graphql-transport-ws")],
        additional_headers={"X-Forwarded-For": address},
    ) as socket:
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
        await socket.send(json.dumps(init))
        assert json.loads(await socket.recv())["type"] == "connection_ack"
        for number in range(LIMIT - 1):
            query = {"query": "{ __typename }"}
            await socket.send(
                json.dumps({"id": str(number), "type": "subscribe", "payload": query})
            )
            answer = json.loads(await socket.recv())
            if answer["type"] == "next":
                assert json.loads(await socket.recv())["type"] == "complete"
            answers.append(answer)
    served, (refused,) = answers[: LIMIT - 2], answers[LIMIT - 2 :]
    assert all(answer["payload"] == {"data": {"__typename": "Query"}} for answer in served)
    errors = refused["payload"] if refused["type"] == "error" else refused["payload"]["errors"]
    assert errors[0]["extensions"]["code"] == "RATE_LIMITED"
    assert errors[0]["extensions"]["retryAfter"] >= 1


def test_forwarded_for_counts_only_from_a_trusted_proxy() -> None:
    addresses = ClientAddresses(["10.0.0.0/8"])
    # a stranger writing the header gains nothing: its own address is counted
    assert addresses.resolve("198.51.100.7", "1.2.3.4") == "198.51.100.7"
    # behind two of our proxies, the first hop they did not add is the client
    assert addresses.resolve("10.0.0.2", "1.2.3.4, 198.51.100.9, 10.0.0.1") == "198.51.100.9"
    assert ClientAddresses([]).resolve("10.0.0.2", "1.2.3.4") == "10.0.0.2"


async def test_processes_share_their_counts_through_redis() -> None:
    name = f"{uuid.uuid4().hex}"
    storages = [
        RedisStorage("async+redis://127.0.0.1:6379/0", implementation="redispy") for _ in range(2)
    ]
    first, second = (RequestLimiter("3/minute", storage) for storage in storages)
    try:
        assert await first.retry_after(name) is None
        assert await second.retry_after(name) is None
        assert await first.retry_after(name) is None
        # the fourth request, in "another process", is over the shared limit
        assert await second.retry_after(name) is not None
    finally:
        await storages[0].reset()
    assert KEY_PREFIX  # what `serve` prefixes its keys with, so deployments can find them


def test_login_is_throttled_per_account_and_the_right_password_does_not_bypass_it(
    server: Server,
) -> None:
    email = "viewer@example.com"
    usual, attacker, stranger = _address(), _address(), _address()
    with _client(server, usual) as client:
        assert "token" in _login(client, email, PASSWORD)["data"]["login"]
    with _client(server, attacker) as client:
        for _ in range(5):
            failed = _login(client, email, "wrong password")
            assert failed["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        locked = _login(client, email, PASSWORD)
    (error,) = locked["errors"]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert 1 <= error["extensions"]["retryAfter"] <= 60
    # the account is locked for addresses it never signed in from...
    with _client(server, stranger) as client:
        assert _login(client, email, PASSWORD)["errors"][0]["extensions"]["code"] == (
            "RATE_LIMITED"
        )
        # ...but not other accounts
        assert "token" in _login(client, "operator@example.com", PASSWORD)["data"]["login"]
    # and its owner's usual address still gets in: an attacker cannot lock them out
    with _client(server, usual) as client:
        assert "token" in _login(client, email, PASSWORD)["data"]["login"]


def _user(server: Server, email: str) -> User:
    engine = create_engine(server.env["IOTDECK_DATABASE_URL"])
    try:
        with Session(engine) as session:
            return session.exec(select(User).where(User.email == email)).one()
    finally:
        engine.dispose()


def test_tokens_of_the_previous_jwt_secret_stay_valid(server: Server) -> None:
    admin = _user(server, "admin@example.com")
    old = create_token(admin, secret=PREVIOUS_SECRET, expire_hours=1)
    forged = create_token(admin, secret="never-configured-" + "x" * 40, expire_hours=1)
    with _client(server, _address()) as client:
        assert _graphql(client, "{ me { email } }", old) == {
            "data": {"me": {"email": "admin@example.com"}}
        }
        refused = _graphql(client, "{ me { email } }", forged)
    assert refused["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


def test_a_password_or_role_change_ends_earlier_tokens(server: Server) -> None:
    with _client(server, _address()) as client:
        admin = _login(client, "admin@example.com", PASSWORD)["data"]["login"]["token"]
        operator = _login(client, "operator@example.com", PASSWORD)["data"]["login"]["token"]
        user_id = _graphql(client, "{ me { id } }", operator)["data"]["me"]["id"]
        change = "mutation($i: UpdateUserInput!) { updateUser(input: $i) { role } }"
        changed = _graphql(client, change, admin, i={"id": user_id, "role": "VIEWER"})
        assert changed == {"data": {"updateUser": {"role": "VIEWER"}}}
        refused = _graphql(client, "{ me { email } }", operator)
        assert refused["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert "password or role changed" in refused["errors"][0]["message"]
        # a new sign-in works, with the new role
        renewed = _login(client, "operator@example.com", PASSWORD)["data"]["login"]["token"]
        assert _graphql(client, "{ me { role } }", renewed) == {"data": {"me": {"role": "VIEWER"}}}
        restore = {"id": user_id, "role": "OPERATOR"}
        assert "errors" not in _graphql(client, change, admin, i=restore)


def test_the_session_cookie_is_http_only_and_same_site_lax(server: Server) -> None:
    with _client(server, _address()) as client:
        cookie = client.get("/login").headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    assert "secure" not in cookie  # plain HTTP here; tests/integration/test_https.py: Secure


def test_the_data_folder_is_not_served(server: Server) -> None:
    with _client(server, _address()) as client:
        for path in ("/data/iotdeck.db", "/../data/iotdeck.db", "/static/../data/jwt_secret"):
            response = client.get(path)
            assert response.status_code in {307, 404}, path
            assert b"SQLite" not in response.content


def test_logout_by_get_changes_nothing(server: Server) -> None:
    with _client(server, _address()) as client:
        response = client.get("/logout")
        assert response.status_code == 200  # a page asking to confirm, not a sign-out
        assert client.post("/logout").status_code == 303
