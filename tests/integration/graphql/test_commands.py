"""Commands and configuration over GraphQL: send, idempotency, history, cancel, roles, errors."""

import uuid

import pytest

from app.core import db
from app.core.models import DeviceCreate, Role, utcnow
from app.services import commands, devices
from app.services.commands import Answer
from tests.integration.graphql.client import GraphQLClient, code_of
from tests.integration.graphql.conftest import Account

pytestmark = pytest.mark.all_backends

COMMAND = (
    "id deviceId action params status sentAt acknowledgedAt executedAt error createdAt "
    "updatedAt expiresAt result idempotencyKey createdBy ruleId alertId"
)
SEND = f"mutation($input: SendCommandInput!) {{ sendCommand(input: $input) {{ {COMMAND} }} }}"
CANCEL = f"mutation($id: ID!) {{ cancelCommand(id: $id) {{ {COMMAND} }} }}"
HISTORY = (
    f"query($id: ID!, $status: CommandStatus, $limit: Int) "
    f"{{ deviceCommands(deviceId: $id, status: $status, limit: $limit) {{ {COMMAND} }} }}"
)
ONE = f"query($id: ID!) {{ command(id: $id) {{ {COMMAND} }} }}"
CONFIG = (
    "mutation($id: ID!, $config: JSON!) { updateDeviceConfig(deviceId: $id, config: $config) "
    "{ id config updatedAt } }"
)


@pytest.fixture
def operator(accounts: dict[Role, Account]) -> str:
    """The OPERATOR's token."""
    return accounts[Role.OPERATOR].token


def _device(name: str = "pump") -> str:
    with db.session_scope() as session:
        return str(
            devices.create_device(session=session, data=DeviceCreate(name=name, type="p")).id
        )


async def _send(api: GraphQLClient, token: str, **fields: object) -> dict:
    answer = await api.data(SEND, {"input": {"action": "set_interval", **fields}}, token=token)
    return answer["sendCommand"]


async def test_send_stores_a_pending_command_with_the_seed_fields(
    api: GraphQLClient, operator: str, accounts: dict[Role, Account]
) -> None:
    device = _device()
    sent = await _send(api, operator, deviceId=device, params={"seconds": 5}, timeoutSeconds=60)
    assert (sent["deviceId"], sent["action"], sent["params"], sent["status"]) == (
        device,
        "set_interval",
        {"seconds": 5},
        "PENDING",
    )
    # sentAt is non-null in the seed: until the broker has it, the time it was requested
    assert sent["sentAt"] == sent["createdAt"] and sent["sentAt"].endswith("Z")
    assert sent["acknowledgedAt"] is None and sent["executedAt"] is None
    assert sent["createdBy"] == str(accounts[Role.OPERATOR].user.id)
    assert (sent["ruleId"], sent["alertId"], sent["idempotencyKey"]) == (None, None, None)
    assert (await api.data(ONE, {"id": sent["id"]}, token=operator))["command"] == sent
    assert (await api.data(ONE, {"id": str(uuid.uuid4())}, token=operator))["command"] is None
    defaults = await _send(api, operator, deviceId=device)  # no params, default timeout
    assert defaults["params"] == {}


async def test_the_same_idempotency_key_returns_the_same_command(
    api: GraphQLClient, operator: str
) -> None:
    device = _device()
    first = await _send(api, operator, deviceId=device, idempotencyKey="order-17")
    again = await _send(
        api, operator, deviceId=device, idempotencyKey="order-17", params={"other": 1}
    )
    assert again == first
    history = (await api.data(HISTORY, {"id": device}, token=operator))["deviceCommands"]
    assert [c["id"] for c in history] == [first["id"]]


async def test_history_is_newest_first_filtered_and_follows_answers(
    api: GraphQLClient, operator: str
) -> None:
    device = _device()
    made = [await _send(api, operator, deviceId=device, action=f"a{n}") for n in range(3)]
    with db.session_scope() as session:
        commands.record_answer(
            session=session,
            device_id=uuid.UUID(device),
            answer=Answer(uuid.UUID(made[0]["id"]), "failed", error="no such valve"),
            at=utcnow(),
        )
    history = (await api.data(HISTORY, {"id": device}, token=operator))["deviceCommands"]
    assert [c["action"] for c in history] == ["a2", "a1", "a0"]
    failed = (await api.data(HISTORY, {"id": device, "status": "FAILED"}, token=operator))[
        "deviceCommands"
    ]
    assert [(c["action"], c["error"]) for c in failed] == [("a0", "no such valve")]
    assert failed[0]["executedAt"] is not None
    limited = await api.data(HISTORY, {"id": device, "limit": 1}, token=operator)
    assert [c["action"] for c in limited["deviceCommands"]] == ["a2"]


async def test_cancel_before_the_device_acknowledged_only(
    api: GraphQLClient, operator: str
) -> None:
    device = _device()
    pending = await _send(api, operator, deviceId=device)
    cancelled = (await api.data(CANCEL, {"id": pending["id"]}, token=operator))["cancelCommand"]
    assert (cancelled["status"], cancelled["error"]) == ("CANCELLED", "cancelled by an operator")
    again = await api.error(CANCEL, {"id": pending["id"]}, token=operator)
    assert again["extensions"] == {"code": "BAD_USER_INPUT", "field": "id"}
    assert "CANCELLED" in again["message"]
    missing = await api.error(CANCEL, {"id": str(uuid.uuid4())}, token=operator)
    assert code_of(missing) == "NOT_FOUND"


async def test_update_device_config_stores_it_on_the_device(
    api: GraphQLClient, operator: str, viewer: str
) -> None:
    device = _device()
    updated = (await api.data(CONFIG, {"id": device, "config": {"interval": 9}}, token=operator))[
        "updateDeviceConfig"
    ]
    assert (updated["id"], updated["config"]) == (device, {"interval": 9})
    shown = await api.data(
        "query($id: ID!) { device(id: $id) { config } }", {"id": device}, token=viewer
    )
    assert shown["device"]["config"] == {"interval": 9}
    refused = await api.error(CONFIG, {"id": device, "config": [1, 2]}, token=operator)
    assert refused["extensions"] == {"code": "BAD_USER_INPUT", "field": "config"}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"action": "Reboot Now"}, "action"),
        ({"action": "x" * 101}, "action"),
        ({"params": [1]}, "params"),
        ({"params": {"blob": "x" * 17_000}}, "params"),
        ({"timeoutSeconds": 0}, "timeoutSeconds"),
        ({"timeoutSeconds": 86_401}, "timeoutSeconds"),
        ({"idempotencyKey": "k" * 256}, "idempotencyKey"),
        ({"deviceId": "not-a-uuid"}, "deviceId"),
    ],
)
async def test_bad_input_is_refused_naming_the_field(
    api: GraphQLClient, operator: str, fields: dict, field: str
) -> None:
    device = _device()
    error = await api.error(
        SEND, {"input": {"deviceId": device, "action": "set_interval", **fields}}, token=operator
    )
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": field}
    assert (await api.data(HISTORY, {"id": device}, token=operator))["deviceCommands"] == []


async def test_unknown_devices_are_not_found(api: GraphQLClient, operator: str) -> None:
    ghost = str(uuid.uuid4())
    for query, variables in [
        (SEND, {"input": {"deviceId": ghost, "action": "reboot"}}),
        (HISTORY, {"id": ghost}),
        (CONFIG, {"id": ghost, "config": {}}),
    ]:
        assert code_of(await api.error(query, variables, token=operator)) == "NOT_FOUND"


async def test_roles_viewers_read_operators_act(
    api: GraphQLClient, operator: str, viewer: str, admin: str
) -> None:
    device = _device()
    spare = await _send(api, admin, deviceId=device)
    for query, variables in [
        (SEND, {"input": {"deviceId": device, "action": "reboot"}}),
        (CANCEL, {"id": spare["id"]}),
        (CONFIG, {"id": device, "config": {"interval": 3}}),
    ]:
        assert code_of(await api.error(query, variables)) == "UNAUTHENTICATED"
        assert code_of(await api.error(query, variables, token=viewer)) == "FORBIDDEN"
        await api.data(query, variables, token=operator)
    for query, variables in [(HISTORY, {"id": device}), (ONE, {"id": spare["id"]})]:
        await api.data(query, variables, token=viewer)
        assert code_of(await api.error(query, variables)) == "UNAUTHENTICATED"
