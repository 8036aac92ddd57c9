"""Who may do what: every mutation and query for ADMIN, OPERATOR, VIEWER and anonymous."""

from typing import Any

import pytest

from app.core import db
from app.core.models import DeviceCreate, Role
from app.services import devices
from tests.integration.graphql.client import GraphQLClient, code_of
from tests.integration.graphql.conftest import PASSWORD, Account

# denied callers first, so the ADMIN's success (a delete, say) comes last
CALLERS: list[Role | None] = [None, Role.VIEWER, Role.OPERATOR, Role.ADMIN]
ADMIN_ONLY = {None: "UNAUTHENTICATED", Role.VIEWER: "FORBIDDEN", Role.OPERATOR: "FORBIDDEN"}

MUTATIONS: dict[str, str] = {
    "createDevice": 'mutation { createDevice(input: {name: "New", type: "probe"}) { id } }',
    "updateDevice": (
        'mutation($id: ID!) { updateDevice(input: {id: $id, name: "Renamed"}) { name } }'
    ),
    "deleteDevice": "mutation($id: ID!) { deleteDevice(id: $id) { success id } }",
    "createUser": (
        "mutation($email: String!) {"
        ' createUser(email: $email, password: "long enough", role: VIEWER) { email } }'
    ),
    "updateUser": 'mutation($id: ID!) { updateUser(input: {id: $id, name: "Renamed"}) { name } }',
}
QUERIES: dict[str, str] = {
    "me": "{ me { email role } }",
    "devices": "{ devices { id name } }",
    "devicesCount": "{ devicesCount }",
    "device": "query($id: ID!) { device(id: $id) { id name } }",
    "users": "{ users { email role isActive } }",
}
SNAPSHOT = "{ devices { id name type metadata } users { email name role isActive } }"


def _seed_device() -> str:
    with db.session_scope() as session:
        device = devices.create_device(session=session, data=DeviceCreate(name="Boiler", type="t"))
        return str(device.id)


def _variables(operation: str, device_id: str, accounts: dict[Role, Account], caller: str) -> Any:
    if operation in {"updateDevice", "deleteDevice", "device"}:
        return {"id": device_id}
    if operation == "updateUser":
        return {"id": str(accounts[Role.VIEWER].user.id)}
    if operation == "createUser":
        return {"email": f"new-{caller}@example.com"}
    return None


@pytest.mark.parametrize("operation", sorted(MUTATIONS))
async def test_only_admin_may_run_management_mutations(
    api: GraphQLClient, accounts: dict[Role, Account], operation: str
) -> None:
    device_id = _seed_device()
    for caller in CALLERS:
        token = accounts[caller].token if caller else None
        before = await api.data(SNAPSHOT, token=accounts[Role.ADMIN].token)
        variables = _variables(operation, device_id, accounts, str(caller))
        body = await api.post(MUTATIONS[operation], variables, token=token)
        if caller is Role.ADMIN:
            assert "errors" not in body, body
            assert body["data"][operation]
            continue
        assert body["data"] is None
        assert [code_of(error) for error in body["errors"]] == [ADMIN_ONLY[caller]], body
        # a refused mutation leaves everything as it was
        assert await api.data(SNAPSHOT, token=accounts[Role.ADMIN].token) == before


async def test_login_is_open_to_everyone_with_or_without_a_token(
    api: GraphQLClient, accounts: dict[Role, Account]
) -> None:
    query = (
        "mutation($email: String!, $password: String!) {"
        " login(email: $email, password: $password) { token user { email role } } }"
    )
    for caller in CALLERS:
        who = caller or Role.VIEWER
        credentials = {"email": f"{who.lower()}@example.com", "password": PASSWORD}
        # a caller's own (or a broken) token does not stand in the way of signing in
        token = accounts[caller].token if caller else "not-a-token"
        data = await api.data(query, credentials, token=token)
        assert data["login"]["user"] == {"email": credentials["email"], "role": who.value}
        assert data["login"]["token"].count(".") == 2


async def test_queries_need_a_token_and_any_role_may_read(
    api: GraphQLClient, accounts: dict[Role, Account], subtests: pytest.Subtests
) -> None:
    device_id = _seed_device()
    for operation, query in QUERIES.items():
        with subtests.test(operation):
            variables = _variables(operation, device_id, accounts, "reader")
            anonymous = await api.error(query, variables)
            assert code_of(anonymous) == "UNAUTHENTICATED"
            assert anonymous["message"].startswith("authentication required")
            for role in (Role.VIEWER, Role.OPERATOR, Role.ADMIN):
                data = await api.data(query, variables, token=accounts[role].token)
                assert data[operation] is not None
                if operation == "me":
                    assert data["me"] == {"email": f"{role.lower()}@example.com", "role": role}
                if operation == "users":
                    assert len(data["users"]) == len(Role)


async def test_typename_needs_no_token(api: GraphQLClient) -> None:
    # introspection, when a server allows it, needs none either: see test_limits.py
    assert await api.data("{ __typename }") == {"__typename": "Query"}
