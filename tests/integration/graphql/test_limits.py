"""GraphQL limits (SPEC 8.2): depth, aliases, cost, list caps, subscriptions, testRule,
validateRule, introspection and GraphiQL."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from app.core import db
from app.core.config import Settings
from app.core.models import DeviceCreate, Role
from app.graphql.types import iso_utc
from app.services import devices, rule_testing, telemetry
from tests.integration.graphql import test_subscriptions
from tests.integration.graphql.client import GraphQLClient, build_app, code_of, make_settings
from tests.integration.graphql.conftest import Account
from tests.integration.graphql.test_subscriptions import EVENTS, Live, connect
from tests.waiting import wait_for

# the subscription tests' uvicorn server, here with this module's `settings`
live = test_subscriptions.live

ClientFor = Callable[..., AbstractAsyncContextManager[GraphQLClient]]
TEST_RULE = (
    "query($expression: String!, $from: String!, $to: String!, $ids: [ID!]) "
    "{ testRule(expression: $expression, from: $from, to: $to, deviceIds: $ids) "
    "{ deviceName firedCount truncated replayedUntil firings { firedAt } } }"
)
HOT = 'rule "hot" when temperature > 30'
START = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
WINDOW = {"from": iso_utc(START), "to": iso_utc(START + timedelta(hours=1))}


@pytest.fixture
def client_for(engine: Engine, database_url: str) -> ClientFor:
    """A client of /graphql on this test's database, with these settings changed."""
    del engine

    @asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[GraphQLClient]:
        settings = make_settings(database_url, **overrides)
        transport = httpx.ASGITransport(build_app(settings))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield GraphQLClient(http)

    return make


def _device(name: str, kind: str = "thermostat") -> str:
    with db.session_scope() as session:
        data = DeviceCreate(name=name, type=kind)
        return str(devices.create_device(session=session, data=data).id)


def _store(device_id: str, metric: str, values: dict[int, float]) -> None:
    """Points of `metric` at START + the given minutes."""
    points = [
        telemetry.Point(uuid.UUID(device_id), metric, START + timedelta(minutes=m), v)
        for m, v in values.items()
    ]
    with db.session_scope() as session:
        telemetry.write_points(session=session, points=points, seen_at=START)


# --- document limits ---------------------------------------------------------------------


async def test_an_alias_bomb_is_refused_before_running(api: GraphQLClient, viewer: str) -> None:
    allowed = "{ " + " ".join(f"a{i}: me {{ email }}" for i in range(30)) + " }"
    assert len(await api.data(allowed, token=viewer)) == 30
    bomb = "{ " + " ".join(f"a{i}: me {{ email }}" for i in range(31)) + " }"
    body = await api.post(bomb, token=viewer)
    assert body["data"] is None
    [error] = body["errors"]
    assert code_of(error) == "GRAPHQL_VALIDATION_FAILED"
    assert "31 aliases" in error["message"] and "limit of 30" in error["message"]
    assert error["extensions"]["aliases"] == 31 and error["extensions"]["maxAliases"] == 30


async def test_an_expensive_nested_list_query_is_refused_with_its_cost(
    client_for: ClientFor, viewer: str
) -> None:
    # 1 + 40 devices x (id 1 + metrics (1 + 100 names, a list without a `limit`)) = 4081
    query = "query($n: Int) { devices(limit: $n) { id metrics } }"
    async with client_for(graphql_max_cost=4000) as api:
        body = await api.post(query, {"n": 40}, token=viewer)
        assert body["data"] is None
        [error] = body["errors"]
        assert code_of(error) == "GRAPHQL_VALIDATION_FAILED"
        assert "estimated cost of 4081" in error["message"], error
        assert "limit of 4000" in error["message"]
        assert (error["extensions"]["cost"], error["extensions"]["maxCost"]) == (4081, 4000)
        # the same with a literal, and 30 devices (cost 3061) is within the limit
        literal = await api.error("{ devices(limit: 40) { id metrics } }", token=viewer)
        assert literal["extensions"]["cost"] == 4081
        assert await api.data(query, {"n": 30}, token=viewer) == {"devices": []}


async def test_fragments_spread_again_and_again_are_measured_without_expanding_them(
    api: GraphQLClient, viewer: str
) -> None:
    # each fragment spreads the next twice: 2^40 copies of `devices` if walked naively
    fragments = [f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(40)]
    document = "\n".join(["{ ...F0 }", *fragments, "fragment F40 on Query { devices { id } }"])
    error = await api.error(document, token=viewer)
    assert code_of(error) == "GRAPHQL_VALIDATION_FAILED"
    # 2^40 spreads of `devices` (1 + 50 devices x 1): the figure, not a hang
    assert error["extensions"]["cost"] == 2**40 * 51


async def test_a_document_of_too_many_tokens_is_not_even_parsed(
    api: GraphQLClient, viewer: str
) -> None:
    # `me { email }` is 4 tokens, plus the outer braces
    huge = "{ " + " ".join("me { email }" for _ in range(2500)) + " }"
    error = await api.error(huge, token=viewer)
    assert code_of(error) == "GRAPHQL_PARSE_FAILED"
    assert "more than 10000 tokens" in error["message"]


async def test_depth_counts_through_fragments(api: GraphQLClient, viewer: str) -> None:
    deep = "{ ...A } fragment A on Query { me { " + "a { " * 11 + "b" + " }" * 11 + " } }"
    body = await api.post(deep, token=viewer)
    depth = [e for e in body["errors"] if "maximum operation depth of 10" in e["message"]]
    assert depth and depth[0]["extensions"]["depth"] == 12, body


# --- list caps -----------------------------------------------------------------------------

# every list field with a `limit` (the test settings' page size is 50)
PAGED = [
    ("users", "{ users(limit: $n) { email } }"),
    ("devices", "{ devices(limit: $n) { id } }"),
    ("activeAlerts", "{ activeAlerts(limit: $n) { id } }"),
    ("alertRules", "{ alertRules(limit: $n) { id } }"),
    ("alertHistory", '{ alertHistory(from: "2026-01-01", to: "2026-01-02", limit: $n) { id } }'),
    ("deviceMetrics", "{ deviceMetrics(deviceId: $d, limit: $n) }"),
    ("deviceCommands", "{ deviceCommands(deviceId: $d, limit: $n) { id } }"),
]


@pytest.mark.parametrize(("field", "selection"), PAGED, ids=[name for name, _ in PAGED])
async def test_every_list_refuses_a_limit_over_the_page_size(
    api: GraphQLClient, viewer: str, field: str, selection: str
) -> None:
    on_device = "$d" in selection
    query = ("query($n: Int, $d: ID!) " if on_device else "query($n: Int) ") + selection
    variables = {"d": _device("paged")} if on_device else {}
    for wanted in (51, 0):
        body = await api.post(query, {**variables, "n": wanted}, token=viewer)
        [error] = body["errors"]
        assert (code_of(error), error["extensions"]["field"]) == ("BAD_USER_INPUT", "limit")
        assert "between 1 and 50" in error["message"]
    assert isinstance((await api.data(query, {**variables, "n": 50}, token=viewer))[field], list)


async def test_series_points_are_capped_at_their_own_maximum(
    api: GraphQLClient, viewer: str
) -> None:
    query = (
        'query($d: ID!, $n: Int) { deviceTelemetry(deviceId: $d, metricName: "t", '
        'from: "2026-01-01", to: "2026-01-02", limit: $n) { points { value } } }'
    )
    error = await api.error(query, {"d": _device("series"), "n": 10_001}, token=viewer)
    assert (code_of(error), error["extensions"]["field"]) == ("BAD_USER_INPUT", "limit")


async def test_new_limits_page_through_users_and_metric_names(
    client_for: ClientFor, accounts: dict[Role, Account]
) -> None:
    token = accounts[Role.VIEWER].token
    device = _device("many metrics")
    _store(device, "a", {1: 1.0})
    _store(device, "b", {1: 1.0})
    _store(device, "c", {1: 1.0})
    async with client_for(max_page_size=2) as api:
        emails = sorted(account.user.email for account in accounts.values())
        page = await api.data("{ users(limit: 2, offset: 1) { email } }", token=token)
        assert [user["email"] for user in page["users"]] == emails[1:3]
        # without `limit` a page of the server's size (2); `Device.metrics` is capped the same
        data = await api.data("{ users { email } devices { metrics } }", token=token)
        assert len(data["users"]) == 2 and data["devices"] == [{"metrics": ["a", "b"]}]
        rest = "query($d: ID!) { deviceMetrics(deviceId: $d, limit: 2, offset: 2) }"
        assert await api.data(rest, {"d": device}, token=token) == {"deviceMetrics": ["c"]}


# --- testRule and validateRule -----------------------------------------------------------


@pytest.fixture
def operator(accounts: dict[Role, Account]) -> str:
    """The OPERATOR's token."""
    return accounts[Role.OPERATOR].token


async def test_validate_rule_refuses_a_text_over_the_size_cap(
    api: GraphQLClient, viewer: str, operator: str
) -> None:
    query = "query($e: String!) { validateRule(expression: $e) { message } }"
    fits = HOT + " " * (10_000 - len(HOT))
    assert await api.data(query, {"e": fits}, token=viewer) == {"validateRule": []}
    error = await api.error(query, {"e": fits + " "}, token=viewer)
    assert (code_of(error), error["extensions"]["field"]) == ("BAD_USER_INPUT", "expression")
    assert "10001 characters" in error["message"] and "at most 10000" in error["message"]
    # saving and testing refuse it the same way, before parsing
    create = "mutation($e: String!) { createAlertRule(input: {expression: $e}) { id } }"
    error = await api.error(create, {"e": fits + " "}, token=operator)
    assert error["extensions"]["field"] == "expression"
    error = await api.error(TEST_RULE, {"expression": fits + " ", **WINDOW}, token=viewer)
    assert error["extensions"]["field"] == "expression"


async def test_test_rule_refuses_more_devices_than_it_replays(
    api: GraphQLClient, viewer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    too_many = [str(uuid.uuid4()) for _ in range(rule_testing.MAX_DEVICES + 1)]
    error = await api.error(TEST_RULE, {"expression": HOT, "ids": too_many, **WINDOW}, token=viewer)
    assert (code_of(error), error["extensions"]["field"]) == ("BAD_USER_INPUT", "deviceIds")
    assert "at most 200 devices" in error["message"]
    # a rule whose scope holds more devices than a test replays names its expression
    monkeypatch.setattr(rule_testing, "MAX_DEVICES", 2)
    for name in ("a", "b"):
        _device(name)
    _device("c", kind="meter")
    error = await api.error(TEST_RULE, {"expression": HOT, **WINDOW}, token=viewer)
    assert (code_of(error), error["extensions"]["field"]) == ("BAD_USER_INPUT", "expression")
    assert "more than 2 devices" in error["message"]
    scoped = 'rule "hot" on type "meter" when temperature > 30'
    data = await api.data(TEST_RULE, {"expression": scoped, **WINDOW}, token=viewer)
    assert [result["deviceName"] for result in data["testRule"]] == ["c"]


async def test_test_rule_stops_at_its_budget_and_says_how_far_it_got(
    api: GraphQLClient, viewer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = _device("hot")
    _store(device, "temperature", {5: 35, 6: 20, 20: 35, 21: 20})
    variables = {"expression": HOT, **WINDOW}
    [whole] = (await api.data(TEST_RULE, variables, token=viewer))["testRule"]
    assert (whole["firedCount"], whole["truncated"], whole["replayedUntil"]) == (
        2,
        False,
        WINDOW["to"],
    )
    # the firing cap: the replay stops after the first firing, at the point that fired it
    monkeypatch.setattr(rule_testing, "MAX_FIRINGS", 1)
    [capped] = (await api.data(TEST_RULE, variables, token=viewer))["testRule"]
    assert (capped["firedCount"], capped["truncated"]) == (1, True)
    assert capped["replayedUntil"] == iso_utc(START + timedelta(minutes=5))
    # no time at all: nothing replayed, and it says so
    monkeypatch.setattr(rule_testing, "MAX_FIRINGS", 10_000)
    monkeypatch.setattr(rule_testing, "BUDGET_SECONDS", 0.0)
    [stopped] = (await api.data(TEST_RULE, variables, token=viewer))["testRule"]
    assert (stopped["firedCount"], stopped["truncated"]) == (0, True)
    assert stopped["replayedUntil"] == WINDOW["from"]


def _lock_waiters(connection: Any) -> int:
    query = text(
        "SELECT count(*) FROM pg_locks WHERE NOT granted "
        "AND relation = 'device_telemetry'::regclass"
    )
    return int(connection.execute(query).scalar_one())


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_one_rule_test_at_a_time_per_user(
    api: GraphQLClient, accounts: dict[Role, Account]
) -> None:
    viewer, operator = accounts[Role.VIEWER].token, accounts[Role.OPERATOR].token
    _store(_device("hot"), "temperature", {5: 35})
    variables = {"expression": HOT, **WINDOW}
    # hold the telemetry table: each replay that gets to its points waits there
    with db.get_engine().connect() as holder:
        holder.execute(text("LOCK TABLE device_telemetry IN ACCESS EXCLUSIVE MODE"))
        first = asyncio.create_task(api.post(TEST_RULE, variables, token=viewer))
        other_user = asyncio.create_task(api.post(TEST_RULE, variables, token=operator))
        await wait_for(lambda: _lock_waiters(holder) == 2)
        # the viewer's second test, while the first one runs
        refused = await api.error(TEST_RULE, variables, token=viewer)
        holder.rollback()
    assert code_of(refused) == "RATE_LIMITED"
    assert "already running" in refused["message"]
    for task in (first, other_user):
        body = await task
        assert "errors" not in body, body
        assert body["data"]["testRule"][0]["firedCount"] == 1
    # once it finished, the viewer may test again
    assert (await api.data(TEST_RULE, variables, token=viewer))["testRule"][0]["firedCount"] == 1


# --- subscriptions -----------------------------------------------------------------------


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Small subscription limits, so the tests reach them."""
    return make_settings(
        database_url,
        graphql_max_subscriptions_per_connection=2,
        graphql_max_subscriptions_per_user=3,
    )


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_subscriptions_over_the_limits_are_refused_and_the_others_go_on(
    live: Live, viewer: str, protocol: str
) -> None:
    everything = {"ids": []}
    async with connect(live, protocol, viewer) as first:
        # the document limits hold over a WebSocket too
        aliases = " ".join(f"a{i}: id" for i in range(31))
        await first.subscribe(
            "0", f"subscription {{ deviceEvents {{ device {{ {aliases} }} }} }}", {}
        )
        error = await first.error()
        assert code_of(error) == "GRAPHQL_VALIDATION_FAILED" and "31 aliases" in error["message"]
        await first.subscribe("1", EVENTS, everything)
        await first.subscribe("2", EVENTS, everything)
        await wait_for(lambda: live.hub.subscribers == 2)
        await first.subscribe("3", EVENTS, everything)
        error = await first.error()
        assert code_of(error) == "RATE_LIMITED"
        assert "connection already holds 2 subscriptions" in error["message"]
        created = _device("after the refusal")
        delivered = {}
        for _ in range(2):
            message = await first.receive()
            delivered[message["id"]] = message["payload"]["data"]["deviceEvents"]["device"]["id"]
        assert delivered == {"1": created, "2": created}
        # the same account on another connection: 1 more, then the per-user limit (3)
        async with connect(live, protocol, viewer) as second:
            await second.subscribe("1", EVENTS, everything)
            await wait_for(lambda: live.hub.subscribers == 3)
            await second.subscribe("2", EVENTS, everything)
            error = await second.error()
            assert code_of(error) == "RATE_LIMITED"
            assert "account already holds 3 subscriptions" in error["message"]
            # ending one frees its place
            await first.stop("1")
            await wait_for(lambda: live.hub.subscribers == 2)
            await second.subscribe("3", EVENTS, everything)
            await wait_for(lambda: live.hub.subscribers == 3)


# --- introspection and GraphiQL ----------------------------------------------------------

INTROSPECTION = [
    "{ __schema { queryType { name } } }",
    '{ __type(name: "Device") { name } }',
]


async def test_introspection_and_graphiql_are_off_by_default(
    api: GraphQLClient, viewer: str
) -> None:
    for query in INTROSPECTION:
        error = await api.error(query, token=viewer)
        assert code_of(error) == "GRAPHQL_VALIDATION_FAILED"
        assert "introspection is disabled" in error["message"]
    # clients rely on __typename: it stays
    assert await api.data("{ __typename me { __typename } }", token=viewer) == {
        "__typename": "Query",
        "me": {"__typename": "User"},
    }
    page = await api.http.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 404
    assert "graphiql" not in page.text.lower()


@pytest.mark.parametrize(
    "overrides", [{"graphql_introspection": True}, {"demo": True}], ids=["setting", "demo"]
)
async def test_introspection_and_graphiql_on_with_the_setting_or_in_demo(
    client_for: ClientFor, overrides: dict[str, Any]
) -> None:
    async with client_for(**overrides) as api:
        # no token needed: the schema is public where introspection is on
        data = await api.data(INTROSPECTION[0])
        assert data == {"__schema": {"queryType": {"name": "Query"}}}
        assert (await api.data(INTROSPECTION[1])) == {"__type": {"name": "Device"}}
        page = await api.http.get("/graphql", headers={"Accept": "text/html"})
        assert page.status_code == 200 and "graphiql" in page.text.lower()


async def test_demo_can_still_turn_introspection_off(client_for: ClientFor) -> None:
    async with client_for(demo=True, graphql_introspection=False) as api:
        error = await api.error(INTROSPECTION[0])
        assert code_of(error) == "GRAPHQL_VALIDATION_FAILED"
