"""Issue 12: every mutation, every argument, hostile values: refused, naming it; nothing written.

The corpus (tests/integration/graphql/corpus.py) comes from the live schema. Each hostile
value is sent by an ADMIN in an otherwise valid call (`BASELINES`, against seeded data), so
the refusal is about that value: it must be BAD_USER_INPUT with `extensions.field` naming
the argument or input field, and every table must read the same afterwards. Each value
goes as a variable and, where GraphQL can write it, inline in the document: graphql-core
checks the two in different phases. Values that are valid data for an argument (unicode in
a name, a JSON object holding an injection string) are sent in a pass of their own and
must be taken; `domains.DOMAINS` says which.
"""

import asyncio
import copy
import itertools
import json
import random
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, MetaData, select

from app.core import db
from app.core.config import Settings
from app.core.models import DeviceCreate, Role, UserCreate, utcnow
from app.services import alerts, commands, dashboards, devices, rules, users
from app.services.rules import RuleInput
from tests.integration.graphql.client import build_app
from tests.integration.graphql.conftest import PASSWORD, Account
from tests.integration.graphql.corpus import MISSING, Argument, literal, mutation_arguments
from tests.integration.graphql.domains import (
    PATH_INSIDE,
    accepted_values,
    domain,
    refused_values,
)

TIMEOUT = 60  # seconds; a refusal that takes this long is a hang
MAX_ANSWER = 20_000  # characters: a refusal does not send a megabyte back
RULE = 'rule "Overheat" on type "thermostat" when temperature > 30'
EXAMPLE_SPEC = json.loads(
    (Path(__file__).parents[3] / "seeds" / "dashboards" / "cold-store.dashboard.json").read_text()
)
_emails = itertools.count()


def unique_email() -> str:
    """An address no account has: sign-in throttling counts per account."""
    return f"nobody-{next(_emails)}-{uuid.uuid4().hex[:6]}@example.com"


@dataclass(frozen=True)
class Targets:
    """Seeded things the mutations act on, as GraphQL ids."""

    device: str
    rule: str
    alert: str  # ACTIVE
    command: str  # PENDING
    user: str  # a VIEWER
    dashboard: str  # the ADMIN's


def seed(admin_id: uuid.UUID) -> Targets:
    """A device with an open alert of a rule, a pending command and a user, via the services."""
    with db.session_scope() as session:
        device = devices.create_device(
            session=session,
            data=DeviceCreate(name="Boiler", type="thermostat", metadata={"site": "Lyon"}),
        )
        rule = rules.create_rule(
            session=session, data=RuleInput(expression=RULE), created_by=admin_id
        )
        alert = alerts.open_alert(
            session=session, rule=rule, device_id=device.id, at=utcnow(), metric_value=31.5
        )
        assert alert is not None
        command = commands.send_command(
            session=session,
            data=commands.CommandInput(device_id=device.id, action="reboot"),
            created_by=admin_id,
        )
        user = users.create_user(
            session=session,
            data=UserCreate(email=unique_email(), password=PASSWORD, role=Role.VIEWER, name="Vi"),
        )
        admin = users.get_user(session=session, user_id=admin_id)
        assert admin is not None
        board = dashboards.import_dashboard(session=session, user=admin, spec=EXAMPLE_SPEC)
        ids = (device.id, rule.id, alert.id, command.id, user.id, board.id)
    return Targets(*(str(ident) for ident in ids))


# per mutation, valid arguments against `Targets` (GraphQL's names)
BASELINES: dict[str, Callable[[Targets], dict[str, Any]]] = {
    # an address without an account: well-formed, so the answer is UNAUTHENTICATED
    "login": lambda t: {"email": unique_email(), "password": PASSWORD},
    "createUser": lambda t: {
        "email": unique_email(),
        "password": "long enough",
        "role": "VIEWER",
        "name": "New",
    },
    "updateUser": lambda t: {"input": {"id": t.user, "name": "Renamed"}},
    "createDevice": lambda t: {
        "input": {"name": "Pump", "type": "pump", "metadata": {"site": "Lyon"}}
    },
    "updateDevice": lambda t: {"input": {"id": t.device, "name": "Boiler 2"}},
    "deleteDevice": lambda t: {"id": t.device},
    "createAlertRule": lambda t: {
        "input": {
            "name": "Too hot",
            "metricName": "temperature",
            "condition": "gt",
            "threshold": 30,
        }
    },
    "updateAlertRule": lambda t: {
        "input": {"id": t.rule, "metricName": "temperature", "condition": "gte", "threshold": 35}
    },
    "deleteAlertRule": lambda t: {"id": t.rule},
    "acknowledgeAlert": lambda t: {"id": t.alert},
    "resolveAlert": lambda t: {"id": t.alert, "message": "valve replaced"},
    "sendCommand": lambda t: {
        "input": {
            "deviceId": t.device,
            "action": "set_speed",
            "params": {"speed": 3},
            "timeoutSeconds": 60,
            "idempotencyKey": "corpus-1",
        }
    },
    "cancelCommand": lambda t: {"id": t.command},
    "updateDeviceConfig": lambda t: {"deviceId": t.device, "config": {"interval": 10}},
    "issueDeviceCredentials": lambda t: {"deviceId": t.device, "kind": "PASSWORD"},
    "revokeDeviceCredentials": lambda t: {"deviceId": t.device},
    "updateDeviceTypeSettings": lambda t: {
        "type": "thermostat",
        "rateLimit": "5/second",
        "rateBurst": 10,
    },
    "createDashboard": lambda t: {
        "input": {
            "name": "Freezers",
            "description": "Site A",
            "visibility": "SHARED",
            "spec": EXAMPLE_SPEC,
        }
    },
    "updateDashboard": lambda t: {
        "input": {"id": t.dashboard, "name": "Freezers 2", "spec": EXAMPLE_SPEC}
    },
    "deleteDashboard": lambda t: {"id": t.dashboard},
    "importDashboard": lambda t: {"spec": EXAMPLE_SPEC, "visibility": "PRIVATE"},
}
EXPECTED_ERROR = {"login": "UNAUTHENTICATED"}  # what a valid call answers, when not data


@pytest.fixture
async def client(engine: Engine, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The neighbours' in-process client of /graphql, from an address of this test's own.

    Sign-in throttling counts failures per client address too; a fresh one keeps other
    tests' failed sign-ins out of this test's count.
    """
    del engine
    address = f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
    transport = httpx.ASGITransport(build_app(settings), client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.fixture
def admin_account(accounts: dict[Role, Account]) -> Account:
    """The admin account: every mutation is open to it, so only the input can be refused."""
    return accounts[Role.ADMIN]


@pytest.fixture(scope="module")
def arguments() -> dict[str, list[Argument]]:
    """Every mutation and its arguments, from the live schema."""
    return mutation_arguments()


def with_value(baseline: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """The baseline's arguments with `value` at `path` (MISSING: left out)."""
    changed = copy.deepcopy(baseline)
    parent = changed
    for name in path[:-1]:
        parent = parent[name]
    if value is MISSING:
        parent.pop(path[-1], None)
    else:
        parent[path[-1]] = value
    return changed


def operation(
    mutation: str, arguments: list[Argument], values: dict[str, Any], *, inline: bool
) -> str:
    """The mutation with each top-level argument in `values`, as a variable or inline."""
    present = [arg for arg in arguments if len(arg.path) == 1 and arg.name in values]
    if inline:
        types = {arg.path: arg.type for arg in arguments}
        passed = ", ".join(
            f"{arg.name}: {literal(values[arg.name], types, arg.path)}" for arg in present
        )
        head = "mutation Corpus"
    else:
        passed = ", ".join(f"{arg.name}: ${arg.name}" for arg in present)
        declared = ", ".join(f"${arg.name}: {arg.type}" for arg in present)
        head = f"mutation Corpus({declared})" if present else "mutation Corpus"
    call = f"{mutation}({passed})" if present else mutation
    return f"{head} {{ {call} {{ __typename }} }}"


async def send(http: httpx.AsyncClient, token: str, query: str, variables: dict) -> dict[str, Any]:
    """POST the operation; NaN and Infinity travel as the JSON tokens Python writes for them."""
    payload = {"query": query, "variables": variables}
    response = await asyncio.wait_for(
        http.post(
            "/graphql",
            content=json.dumps(payload),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        ),
        TIMEOUT,
    )
    assert response.status_code == 200, response.text[:300]
    return response.json()


def shown(body: dict[str, Any]) -> str:
    """An answer, cut short for a failure message."""
    return json.dumps(body)[:400]


def dump() -> dict[str, list[tuple]]:
    """Every row of every table, ordered by primary key: the database's data, comparable."""
    engine = db.get_engine()
    tables = MetaData()
    tables.reflect(engine)
    with engine.connect() as connection:
        return {
            name: [
                tuple(row)
                for row in connection.execute(
                    select(table).order_by(*(table.primary_key.columns or table.columns))
                )
            ]
            for name, table in sorted(tables.tables.items())
        }


def test_every_mutation_has_a_baseline(arguments: dict[str, list[Argument]]) -> None:
    missing = sorted(set(arguments) - set(BASELINES))
    assert not missing, f"add a valid call of {missing} to BASELINES to cover it"
    assert set(BASELINES) <= set(arguments), "BASELINES names a mutation the schema lacks"


async def test_every_hostile_argument_is_refused_naming_it_and_nothing_changes(
    client: httpx.AsyncClient,
    admin_account: Account,
    arguments: dict[str, list[Argument]],
    subtests: pytest.Subtests,
) -> None:
    targets = seed(admin_account.user.id)
    first = dump()
    assert first["devices"] and first["alerts"] and first["device_commands"]
    for mutation, taken in arguments.items():
        before = dump()
        for argument in taken:
            takes = domain(argument)
            for label, value in refused_values(argument):
                values = with_value(BASELINES[mutation](targets), argument.path, value)
                named = takes.refusal_names(argument, value)
                for inline in (False, True):
                    try:
                        query = operation(mutation, taken, values, inline=inline)
                    except ValueError:
                        continue  # nothing to write inline: NaN, Infinity, odd keys
                    how = "inline" if inline else "variable"
                    with subtests.test(f"{argument.key}: {label} ({how})"):
                        body = await send(
                            client, admin_account.token, query, {} if inline else values
                        )
                        assert len(json.dumps(body)) < MAX_ANSWER, shown(body)
                        errors = body.get("errors") or []
                        assert errors, f"accepted, but it takes {takes.says}: {shown(body)}"
                        extensions = errors[0].get("extensions") or {}
                        assert extensions.get("code") == "BAD_USER_INPUT", shown(body)
                        field = extensions.get("field")
                        if named == PATH_INSIDE:
                            assert isinstance(field, str) and field, shown(body)
                        else:
                            assert field == named, shown(body)
        with subtests.test(f"{mutation}: the database is unchanged"):
            assert dump() == before
    assert dump() == first


async def test_valid_calls_and_values_that_are_data_are_taken(
    client: httpx.AsyncClient,
    admin_account: Account,
    arguments: dict[str, list[Argument]],
    subtests: pytest.Subtests,
) -> None:
    for mutation, taken in arguments.items():
        cases: list[tuple[str, tuple[str, ...], Any]] = [("baseline", (), None)]
        cases += [
            (f"{argument.key}: {label}", argument.path, value)
            for argument in taken
            for label, value in accepted_values(argument)
        ]
        for case, path, value in cases:
            with subtests.test(case):
                fresh = seed(admin_account.user.id)  # the calls change them
                values = BASELINES[mutation](fresh)
                if path:
                    values = with_value(values, path, value)
                query = operation(mutation, taken, values, inline=False)
                body = await send(client, admin_account.token, query, values)
                if mutation in EXPECTED_ERROR:
                    code = body["errors"][0]["extensions"]["code"]
                    assert code == EXPECTED_ERROR[mutation], shown(body)
                else:
                    assert "errors" not in body, shown(body)
                    assert body["data"][mutation]["__typename"], shown(body)


async def test_json_nested_past_the_parser_is_a_bad_request_not_a_crash(
    client: httpx.AsyncClient, admin_account: Account
) -> None:
    # Python's JSON parser recurses: 10,000 levels (20 KB) would raise RecursionError
    deep = '{"a":' * 10_000 + "1" + "}" * 10_000
    variables = f'{{"input":{{"name":"Pump","type":"pump","metadata":{deep}}}}}'
    query = "mutation($input: CreateDeviceInput!) { createDevice(input: $input) { id } }"
    body = f'{{"query":{json.dumps(query)},"variables":{variables}}}'
    before = dump()
    response = await client.post(
        "/graphql",
        content=body,
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {admin_account.token}",
        },
    )
    assert response.status_code == 400, response.text[:300]
    assert "JSON" in response.text
    assert dump() == before
