"""Bad input: BAD_USER_INPUT naming the field, and nothing stored is changed."""

import uuid
from typing import Any

import pytest

from app.core import db
from app.core.models import DeviceCreate, Role
from app.services import devices
from tests.integration.graphql.client import GraphQLClient, code_of
from tests.integration.graphql.conftest import Account

DEVICE_ID = "11111111-2222-4333-8444-555555555555"
UNKNOWN_ID = "99999999-2222-4333-8444-555555555555"
BIG = {"blob": "x" * 17_000}  # over the 16 KiB metadata limit

CREATE_DEVICE = "mutation($input: CreateDeviceInput!) { createDevice(input: $input) { id } }"
UPDATE_DEVICE = "mutation($input: UpdateDeviceInput!) { updateDevice(input: $input) { id } }"
CREATE_USER = (
    "mutation($email: String!, $password: String!, $role: Role!, $name: String) {"
    " createUser(email: $email, password: $password, role: $role, name: $name) { id } }"
)
UPDATE_USER = "mutation($input: UpdateUserInput!) { updateUser(input: $input) { id } }"
LIST = "query($limit: Int, $offset: Int) { devices(limit: $limit, offset: $offset) { id } }"
NEW_USER = {"email": "new@example.com", "password": "long enough", "role": "VIEWER"}
TARGET = "<viewer id>"  # replaced by the VIEWER's id in the test
ADMIN = "<admin id>"
Case = tuple[str, dict[str, Any] | None]


def new_device(**fields: Any) -> Case:
    """createDevice with a valid input but for `fields`."""
    return CREATE_DEVICE, {"input": {"name": "ok", "type": "t", **fields}}


def device_change(**fields: Any) -> Case:
    """updateDevice of the stored device with `fields`."""
    return UPDATE_DEVICE, {"input": {"id": DEVICE_ID, **fields}}


def new_user(**fields: Any) -> Case:
    """createUser with valid arguments but for `fields`."""
    return CREATE_USER, {**NEW_USER, **fields}


def user_change(**fields: Any) -> Case:
    """updateUser of the VIEWER with `fields`."""
    return UPDATE_USER, {"input": {"id": TARGET, **fields}}


def literal(query: str) -> Case:
    """A query with its arguments inline (graphql-core checks them before any resolver)."""
    return query, None


# case name -> (query and variables, the field the error must name)
CASES: dict[str, tuple[Case, str]] = {
    "device name empty": (new_device(name="  "), "name"),
    "device name too long": (new_device(name="x" * 256), "name"),
    "device name null": (new_device(name=None), "name"),
    "device name wrong type": (
        literal('mutation { createDevice(input: {name: 5, type: "t"}) { id } }'),
        "name",
    ),
    "device name missing": (
        literal('mutation { createDevice(input: {type: "t"}) { id } }'),
        "name",
    ),
    "device type uppercase": (new_device(type="Thermo"), "type"),
    "device type too long": (new_device(type="x" * 101), "type"),
    "device type empty": (new_device(type=""), "type"),
    "metadata a list": (new_device(metadata=[1]), "metadata"),
    "metadata a string": (new_device(metadata="x"), "metadata"),
    "metadata too big": (new_device(metadata=BIG), "metadata"),
    "update id malformed": (device_change(id="not-a-uuid", name="x"), "id"),
    "update name null": (device_change(name=None), "name"),
    "update name empty": (device_change(name=""), "name"),
    "update type null": (device_change(type=None), "type"),
    "update type uppercase": (device_change(name="ok", type="X"), "type"),
    "update metadata a list": (device_change(metadata=[1]), "metadata"),
    "update metadata too big": (device_change(metadata=BIG), "metadata"),
    "delete id malformed": (literal('mutation { deleteDevice(id: "12") { id } }'), "id"),
    "device id malformed": (literal('{ device(id: "nope") { id } }'), "id"),
    "device id missing": (literal("{ device { id } }"), "id"),
    "limit zero": ((LIST, {"limit": 0}), "limit"),
    "limit too large": ((LIST, {"limit": 51}), "limit"),
    "limit not an int": (literal('{ devices(limit: "ten") { id } }'), "limit"),
    "limit not an int (variable)": ((LIST, {"limit": "ten"}), "limit"),
    "offset negative": ((LIST, {"offset": -1}), "offset"),
    "status unknown": (literal("{ devices(status: BROKEN) { id } }"), "status"),
    "email malformed": (new_user(email="not-an-email"), "email"),
    "email taken": (new_user(email="VIEWER@example.com"), "email"),
    "email wrong type": (literal('mutation { login(email: 5, password: "p") { token } }'), "email"),
    "password too short": (new_user(password="short"), "password"),
    "role ROOT": (new_user(role="ROOT"), "role"),
    "role ROOT (literal)": (
        literal(
            'mutation { createUser(email: "a@b.co", password: "long enough", role: ROOT) { id } }'
        ),
        "role",
    ),
    "role missing": (
        literal('mutation { createUser(email: "a@b.co", password: "long enough") { id } }'),
        "role",
    ),
    "update user id malformed": (user_change(id="nope"), "id"),
    "update user password short": (user_change(password="short"), "password"),
    "update user role null": (user_change(role=None), "role"),
    "update user isActive null": (user_change(isActive=None), "isActive"),
    "update user isActive a string": (user_change(isActive="no"), "isActive"),
    "last admin demoted": (user_change(id=ADMIN, role="VIEWER"), "role"),
    "last admin disabled": (user_change(id=ADMIN, isActive=False), "isActive"),
}
SNAPSHOT = (
    "{ devices { id name type status metadata updatedAt }"
    " users { id email name role isActive createdAt } }"
)


def _with_ids(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {key: _with_ids(item, ids) for key, item in value.items()}
    return ids.get(value, value) if isinstance(value, str) else value


async def test_bad_input_names_the_field_and_changes_nothing(
    api: GraphQLClient, accounts: dict[Role, Account], subtests: pytest.Subtests
) -> None:
    # one database for all cases (a fresh one each would cost more than the cases do);
    # every case must leave it exactly as it was, which is what is checked
    with db.session_scope() as session:
        data = DeviceCreate(
            id=uuid.UUID(DEVICE_ID), name="Boiler", type="t", metadata={"site": "Lyon"}
        )
        devices.create_device(session=session, data=data)
    admin = accounts[Role.ADMIN].token
    ids = {TARGET: str(accounts[Role.VIEWER].user.id), ADMIN: str(accounts[Role.ADMIN].user.id)}
    before = await api.data(SNAPSHOT, token=admin)
    for case, ((query, variables), field) in CASES.items():
        with subtests.test(case):
            error = await api.error(query, _with_ids(variables, ids), token=admin)
            assert code_of(error) == "BAD_USER_INPUT", error
            assert error["extensions"]["field"] == field
            assert error["message"].startswith(f"{field}: "), error["message"]
            assert await api.data(SNAPSHOT, token=admin) == before


async def test_update_of_an_unknown_device_or_user_is_not_found(
    api: GraphQLClient, admin: str
) -> None:
    device = await api.error(UPDATE_DEVICE, {"input": {"id": UNKNOWN_ID, "name": "x"}}, token=admin)
    user = await api.error(UPDATE_USER, {"input": {"id": UNKNOWN_ID, "name": "x"}}, token=admin)
    assert (code_of(device), code_of(user)) == ("NOT_FOUND", "NOT_FOUND")
