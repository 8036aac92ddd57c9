"""Telemetry over GraphQL: exact series, latest values, metric lists, aggregates, bad input."""

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.core import db
from app.core.models import DeviceCreate, Role
from app.graphql.types import iso_utc
from app.services import devices, rollups, telemetry
from app.services.telemetry import Point
from tests.integration.graphql.client import GraphQLClient, code_of
from tests.integration.graphql.conftest import Account

pytestmark = pytest.mark.all_backends

T0 = datetime(2026, 11, 2, tzinfo=UTC)
UNKNOWN_ID = "99999999-2222-4333-8444-555555555555"

SERIES = (
    "query($id: ID!, $metric: String!, $from: String!, $to: String!, $limit: Int) {"
    " deviceTelemetry(deviceId: $id, metricName: $metric, from: $from, to: $to, limit: $limit)"
    " { metricName points { time value unit } } }"
)
SERIES_DEFAULT_LIMIT = (
    "query($id: ID!, $metric: String!, $from: String!, $to: String!) {"
    " deviceTelemetry(deviceId: $id, metricName: $metric, from: $from, to: $to)"
    " { points { time } } }"
)
AGGREGATED = (
    "query($id: ID!, $metric: String!, $from: String!, $to: String!, $interval: String!) {"
    " deviceTelemetryAggregated(deviceId: $id, metricName: $metric, from: $from, to: $to,"
    " interval: $interval) { bucket avg min max count } }"
)
LATEST = (
    "query($id: ID!, $metric: String!) {"
    " deviceLatestMetric(deviceId: $id, metricName: $metric) { time value unit } }"
)
METRICS = "query($id: ID!) { deviceMetrics(deviceId: $id) }"
DEVICE_TELEMETRY = (
    "query($id: ID!, $metric: String!) {"
    " device(id: $id) { metrics latest(metricName: $metric) { time value unit } } }"
)


def _device(name: str = "Boiler") -> str:
    """A registered device's id."""
    with db.session_scope() as session:
        created = devices.create_device(session=session, data=DeviceCreate(name=name, type="t"))
        return str(created.id)


def _write(points: list[Point]) -> None:
    with db.session_scope() as session:
        telemetry.write_points(session=session, points=points, seen_at=datetime.now(UTC))


def _point(device_id: str, metric: str, at: datetime, value: float, unit: str | None) -> Point:
    return Point(uuid.UUID(device_id), metric, at, value, unit)


def _range(start: datetime, end: datetime, **more: Any) -> dict[str, Any]:
    return {"from": iso_utc(start), "to": iso_utc(end), **more}


async def test_series_is_exact_oldest_first_and_limited(api: GraphQLClient, viewer: str) -> None:
    device_id, other = _device(), _device("Other")
    times = [T0 + timedelta(minutes=i, milliseconds=125 * i) for i in range(6)]
    stored = [
        _point(device_id, "temperature", at, 20.5 + i, "°C" if i % 2 else None)
        for i, at in enumerate(times)
    ]
    # written newest first, with neighbours that must not leak in
    _write(
        [
            *reversed(stored),
            _point(device_id, "humidity", times[1], 50.0, "%"),
            _point(other, "temperature", times[1], -1.0, "°C"),
        ]
    )
    expected = [{"time": iso_utc(p.time), "value": p.value, "unit": p.unit} for p in stored]
    everything = {"id": device_id, "metric": "temperature", **_range(T0, T0 + timedelta(hours=1))}
    data = await api.data(SERIES, everything, token=viewer)
    assert data["deviceTelemetry"] == {"metricName": "temperature", "points": expected}
    assert expected[1] == {"time": "2026-11-02T00:01:00.125Z", "value": 21.5, "unit": "°C"}

    # from <= time < to; the same instants written with another zone or none at all
    half_open = {
        "id": device_id,
        "metric": "temperature",
        "from": "2026-11-02T02:01:00.125+02:00",
        "to": "2026-11-02T00:04:00.500",
    }
    data = await api.data(SERIES, half_open, token=viewer)
    assert data["deviceTelemetry"]["points"] == expected[1:4]

    limited = await api.data(SERIES, {**everything, "limit": 2}, token=viewer)
    assert limited["deviceTelemetry"]["points"] == expected[:2]
    # an explicit null limit and a left-out one both mean the default, 1000
    nulled = await api.data(SERIES, {**everything, "limit": None}, token=viewer)
    assert nulled["deviceTelemetry"]["points"] == expected
    default = await api.data(SERIES_DEFAULT_LIMIT, everything, token=viewer)
    assert len(default["deviceTelemetry"]["points"]) == len(expected)
    empty = {**everything, "metric": "pressure"}
    assert (await api.data(SERIES, empty, token=viewer))["deviceTelemetry"] == {
        "metricName": "pressure",
        "points": [],
    }


def _without(variables: dict[str, Any], key: str) -> dict[str, Any]:
    return {name: value for name, value in variables.items() if name != key}


async def test_series_limit_reaches_ten_thousand(api: GraphQLClient, viewer: str) -> None:
    device_id = _device()
    _write([_point(device_id, "n", T0 + timedelta(seconds=i), i, None) for i in range(10_001)])
    variables = {"id": device_id, "metric": "n", **_range(T0, T0 + timedelta(days=1))}
    data = await api.data(SERIES, {**variables, "limit": 10_000}, token=viewer)
    points = data["deviceTelemetry"]["points"]
    assert len(points) == 10_000 and points[-1]["value"] == 9_999
    default = await api.data(SERIES, variables, token=viewer)
    assert len(default["deviceTelemetry"]["points"]) == 1000


async def test_latest_and_metrics_at_the_root_and_on_devices(
    api: GraphQLClient, viewer: str
) -> None:
    device_id, quiet = _device(), _device("Quiet")
    _write(
        [
            _point(device_id, "temperature", T0, 20.0, "°C"),
            _point(device_id, "temperature", T0 + timedelta(seconds=30), 21.25, "°C"),
            _point(device_id, "temperature", T0 + timedelta(seconds=10), 19.0, "°C"),
            _point(device_id, "humidity", T0, 40.0, "%"),
            _point(device_id, "battery.level", T0, 97.0, None),
        ]
    )
    newest = {"time": "2026-11-02T00:00:30.000Z", "value": 21.25, "unit": "°C"}
    latest = await api.data(LATEST, {"id": device_id, "metric": "temperature"}, token=viewer)
    assert latest == {"deviceLatestMetric": newest}
    unit_less = await api.data(LATEST, {"id": device_id, "metric": "battery.level"}, token=viewer)
    assert unit_less["deviceLatestMetric"]["unit"] is None
    none = await api.data(LATEST, {"id": device_id, "metric": "pressure"}, token=viewer)
    assert none == {"deviceLatestMetric": None}
    assert await api.data(METRICS, {"id": device_id}, token=viewer) == {
        "deviceMetrics": ["battery.level", "humidity", "temperature"]
    }
    assert await api.data(METRICS, {"id": quiet}, token=viewer) == {"deviceMetrics": []}

    one = await api.data(DEVICE_TELEMETRY, {"id": device_id, "metric": "temperature"}, token=viewer)
    assert one["device"] == {
        "metrics": ["battery.level", "humidity", "temperature"],
        "latest": newest,
    }
    # several devices in one request: batched, each with its own answer
    listing = await api.data(
        '{ devices { name metrics latest(metricName: "temperature") { value } } }', token=viewer
    )
    assert listing["devices"] == [
        {
            "name": "Boiler",
            "metrics": ["battery.level", "humidity", "temperature"],
            "latest": {"value": 21.25},
        },
        {"name": "Quiet", "metrics": [], "latest": None},
    ]


def _reference(points: list[Point], start: datetime, end: datetime, width: int) -> list[dict]:
    """What `deviceTelemetryAggregated` must answer, computed in plain Python."""
    buckets: dict[int, list[float]] = {}
    for point in points:
        if start <= point.time < end:
            key = int(point.time.timestamp()) // width * width
            buckets.setdefault(key, []).append(point.value)
    return [
        {
            "bucket": iso_utc(datetime.fromtimestamp(key, UTC)),
            "avg": pytest.approx(sum(values) / len(values), rel=1e-9, abs=1e-9),
            "min": min(values),
            "max": max(values),
            "count": len(values),
        }
        for key, values in sorted(buckets.items())
    ]


INTERVALS = {
    "1 minute": 60,
    "15 minutes": 900,
    "1 hour": 3600,
    "1 day": 86400,
    "5m": 300,
    "1h": 3600,
    "1d": 86400,
    " 2 HOURS ": 7200,
}


async def test_aggregates_equal_a_python_reference_across_rollup_refreshes(
    api: GraphQLClient, viewer: str, subtests: pytest.Subtests
) -> None:
    device_id = _device()
    rng = random.Random(7)
    points = [
        _point(device_id, "load", T0 + timedelta(seconds=rng.randrange(3 * 86400)), v, "%")
        for v in (round(rng.uniform(-50, 50), 3) for _ in range(800))
    ]
    points = list({p.time: p for p in points}.values())  # one value per instant
    _write(points)
    # neither end on an hour: partial hours come from raw points, whole ones from rollups
    start = T0 + timedelta(minutes=17, seconds=5)
    end = T0 + timedelta(days=2, hours=21, minutes=43)

    async def check(stage: str) -> None:
        for interval, width in INTERVALS.items():
            with subtests.test(stage=stage, interval=interval):
                variables = {"id": device_id, "metric": "load", "interval": interval}
                data = await api.data(AGGREGATED, {**variables, **_range(start, end)}, token=viewer)
                assert data["deviceTelemetryAggregated"] == _reference(points, start, end, width)

    await check("raw only")
    assert rollups.refresh(engine=db.get_engine()) > 0
    await check("rolled up")
    # late points land in hours already rolled up: those hours read raw until the next refresh
    late = [
        _point(device_id, "load", T0 + timedelta(hours=h, seconds=0.5), 999.0 - h, "%")
        for h in (1, 5, 30)
    ]
    _write(late)
    points += late
    await check("late points pending")
    rollups.refresh(engine=db.get_engine())
    await check("late points rolled up")


async def test_aggregate_of_nothing_is_empty(api: GraphQLClient, viewer: str) -> None:
    device_id = _device()
    variables = {"id": device_id, "metric": "load", "interval": "1h"}
    data = await api.data(
        AGGREGATED, {**variables, **_range(T0, T0 + timedelta(days=1))}, token=viewer
    )
    assert data == {"deviceTelemetryAggregated": []}


# the same valid arguments for every query; each case spoils one
VALID = {
    "metric": "temperature",
    "from": "2026-11-02T00:00:00Z",
    "to": "2026-11-03T00:00:00Z",
    "limit": 10,
    "interval": "1h",
}
Case = tuple[str, dict[str, Any], str]


def series(**spoilt: Any) -> tuple[str, dict[str, Any]]:
    """deviceTelemetry with valid arguments but for `spoilt`."""
    return SERIES, _without({**VALID, **spoilt}, "interval")


def aggregated(**spoilt: Any) -> tuple[str, dict[str, Any]]:
    """deviceTelemetryAggregated with valid arguments but for `spoilt`."""
    return AGGREGATED, _without({**VALID, **spoilt}, "limit")


def latest(**spoilt: Any) -> tuple[str, dict[str, Any]]:
    """deviceLatestMetric with valid arguments but for `spoilt`."""
    return LATEST, {"metric": "temperature", **spoilt}


LITERAL_SERIES = (
    '{{ deviceTelemetry(deviceId: "{id}", metricName: "t", {arguments}) {{ metricName }} }}'
)

# case name -> (query and variables, the field the error must name); "<id>" is the device
CASES: dict[str, tuple[tuple[str, dict[str, Any]], str]] = {
    "series deviceId malformed": (series(id="nope"), "deviceId"),
    "aggregated deviceId malformed": (aggregated(id="12"), "deviceId"),
    "latest deviceId malformed": (latest(id="not-a-uuid"), "deviceId"),
    "metrics deviceId malformed": ((METRICS, {"id": "x"}), "deviceId"),
    "metricName too long": (series(metric="m" * 101), "metricName"),
    "metricName empty": (series(metric=""), "metricName"),
    "metricName with a space": (aggregated(metric="air temp"), "metricName"),
    "metricName with a quote": (latest(metric="t'; DROP TABLE x"), "metricName"),
    "metricName non-ASCII": (latest(metric="température"), "metricName"),
    "metricName null": (series(metric=None), "metricName"),
    "Device.latest metricName bad": ((DEVICE_TELEMETRY, {"metric": "a/b"}), "metricName"),
    "from garbage": (series(**{"from": "yesterday"}), "from"),
    "from empty": (aggregated(**{"from": ""}), "from"),
    "from before 1970": (series(**{"from": "1969-12-31T23:59:59Z"}), "from"),
    "from overflows with its zone": (series(**{"from": "0001-01-01T00:00:00+05:00"}), "from"),
    "from a number": ((LITERAL_SERIES.format(id="<id>", arguments='from: 5, to: "x"'), {}), "from"),
    "from missing": ((LITERAL_SERIES.format(id="<id>", arguments='to: "2026-11-03"'), {}), "from"),
    "to garbage": (series(to="2026-13-01T00:00:00Z"), "to"),
    "to after 9999-01-01": (aggregated(to="9999-06-01T00:00:00Z"), "to"),
    "to null": (aggregated(to=None), "to"),
    "from equals to": (series(to=VALID["from"]), "from"),
    "from after to": (aggregated(**{"from": "2026-11-04T00:00:00Z"}), "from"),
    "from after to across zones": (series(to="2026-11-02T01:00:00+02:00"), "from"),
    "limit zero": (series(limit=0), "limit"),
    "limit negative": (series(limit=-1), "limit"),
    "limit above 10000": (series(limit=10_001), "limit"),
    "limit not an int": (series(limit="ten"), "limit"),
    "interval unknown": (aggregated(interval="fortnight"), "interval"),
    "interval zero": (aggregated(interval="0 minutes"), "interval"),
    "interval fractional": (aggregated(interval="1.5h"), "interval"),
    "interval empty": (aggregated(interval=""), "interval"),
    "interval negative": (aggregated(interval="-5m"), "interval"),
    "interval over a year": (aggregated(interval="400 days"), "interval"),
    "too many buckets": (aggregated(interval="1s"), "interval"),
}


async def test_bad_arguments_name_the_field(
    api: GraphQLClient, viewer: str, subtests: pytest.Subtests
) -> None:
    device_id = _device()
    _write([_point(device_id, "temperature", T0, 1.0, None)])
    for case, ((query, variables), field) in CASES.items():
        with subtests.test(case):
            filled = {"id": device_id, **variables}
            error = await api.error(query.replace("<id>", device_id), filled, token=viewer)
            assert code_of(error) == "BAD_USER_INPUT", error
            assert error["extensions"]["field"] == field
            assert error["message"].startswith(f"{field}: "), error["message"]


async def test_interval_message_lists_the_accepted_forms(api: GraphQLClient, viewer: str) -> None:
    query, variables = aggregated(interval="a while")
    error = await api.error(query, {"id": _device(), **variables}, token=viewer)
    for form in ("'1 minute'", "'15 minutes'", "'1 hour'", "'1 day'", "'5m'", "'1h'", "'1d'"):
        assert form in error["message"]


async def test_unknown_device_is_not_found_after_argument_checks(
    api: GraphQLClient, viewer: str, subtests: pytest.Subtests
) -> None:
    operations = {
        "deviceTelemetry": series(),
        "deviceTelemetryAggregated": aggregated(),
        "deviceLatestMetric": latest(),
        "deviceMetrics": (METRICS, {}),
    }
    for operation, (query, variables) in operations.items():
        with subtests.test(operation):
            error = await api.error(query, {"id": UNKNOWN_ID, **variables}, token=viewer)
            assert code_of(error) == "NOT_FOUND"
            assert UNKNOWN_ID in error["message"]
            assert error["path"] == [operation]
    # a bad argument is BAD_USER_INPUT whether or not the device exists
    query, variables = aggregated(interval="1s")
    error = await api.error(query, {"id": UNKNOWN_ID, **variables}, token=viewer)
    assert (code_of(error), error["extensions"]["field"]) == ("BAD_USER_INPUT", "interval")


async def test_every_role_may_read_and_anonymous_may_not(
    api: GraphQLClient, accounts: dict[Role, Account], subtests: pytest.Subtests
) -> None:
    device_id = _device()
    _write([_point(device_id, "temperature", T0, 1.5, "°C")])
    operations = {
        "deviceTelemetry": series(),
        "deviceTelemetryAggregated": aggregated(),
        "deviceLatestMetric": latest(),
        "deviceMetrics": (METRICS, {}),
        "device": (DEVICE_TELEMETRY, {"metric": "temperature"}),
    }
    for operation, (query, variables) in operations.items():
        with subtests.test(operation):
            filled = {"id": device_id, **variables}
            anonymous = await api.error(query, filled)
            assert code_of(anonymous) == "UNAUTHENTICATED"
            forged = await api.error(query, filled, authorization="Bearer not.a.token")
            assert code_of(forged) == "UNAUTHENTICATED"
            for role in (Role.VIEWER, Role.OPERATOR, Role.ADMIN):
                data = await api.data(query, filled, token=accounts[role].token)
                assert data[operation], (role, data)
