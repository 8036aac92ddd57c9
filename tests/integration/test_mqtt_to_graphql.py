"""End to end: MQTT publish -> real Mosquitto -> ingest worker -> storage -> GraphQL query."""

import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import Engine
from starlette.exceptions import StarletteDeprecationWarning

from app.core import db
from app.core.auth import create_token
from app.core.config import Settings
from app.core.models import DeviceCreate, Role, UserCreate
from app.graphql.types import iso_utc
from app.mqtt.ingest import IngestWorker
from app.services import devices, users
from tests.integration.conftest import Publish
from tests.integration.graphql.client import build_app, make_settings
from tests.waiting import wait_until

if TYPE_CHECKING:
    from starlette.testclient import TestClient

LATEST = (
    "query($id: ID!, $metric: String!) {"
    " deviceLatestMetric(deviceId: $id, metricName: $metric) { time value unit } }"
)
SERIES = (
    "query($id: ID!, $metric: String!, $from: String!, $to: String!) {"
    " deviceTelemetry(deviceId: $id, metricName: $metric, from: $from, to: $to)"
    " { metricName points { time value unit } } }"
)
DEVICE = "query($id: ID!) { device(id: $id) { status lastSeenAt metrics } }"


class GraphQL:
    """Posts operations with a bearer token; synchronous, so `wait_until` can poll it."""

    def __init__(self, http: "TestClient", token: str) -> None:
        self.http = http
        self.token = token

    def data(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        """The `data` of an operation that must succeed."""
        headers = {"Authorization": f"Bearer {self.token}"}
        response = self.http.post(
            "/graphql", json={"query": query, "variables": variables}, headers=headers
        )
        body = response.json()
        assert response.status_code == 200 and "errors" not in body, body
        return body["data"]


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Settings for this test's database."""
    return make_settings(database_url)


@pytest.fixture
def graphql(engine: Engine, settings: Settings) -> Iterator[GraphQL]:
    """A VIEWER's synchronous client of /graphql (Starlette's TestClient, so polling works)."""
    del engine
    with db.session_scope() as session:
        data = UserCreate(email="viewer@example.com", password="long enough", role=Role.VIEWER)
        viewer = users.create_user(session=session, data=data)
        token = create_token(
            viewer, secret=settings.jwt_secret, expire_hours=settings.jwt_expire_hours
        )
    with warnings.catch_warnings():
        # Starlette 1.x would rather drive TestClient with `httpx2`; plain httpx still works
        warnings.simplefilter("ignore", StarletteDeprecationWarning)
        from starlette.testclient import TestClient
    with TestClient(build_app(settings)) as http:
        yield GraphQL(http, token)


def test_published_telemetry_reads_back_exactly_over_graphql(
    ingest: IngestWorker, publish: Publish, graphql: GraphQL
) -> None:
    with db.session_scope() as session:
        created = devices.create_device(session=session, data=DeviceCreate(name="d", type="t"))
        device_id = str(created.id)
    # in the past (the ingest refuses times more than 5 minutes ahead), with milliseconds
    seed_time = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=123000)
    flat_time = seed_time + timedelta(minutes=1, milliseconds=333)
    topic = f"devices/{device_id}/telemetry"
    publish(
        topic,
        {
            "device_id": device_id,
            "timestamp": seed_time.isoformat(),
            "metrics": [
                {"name": "temperature", "value": 23.5, "unit": "°C"},
                {"name": "humidity", "value": 65.2, "unit": "%"},
            ],
        },
    )
    # the flat form, its time as epoch milliseconds
    flat_ms = round(flat_time.timestamp() * 1000)
    publish(topic, {"temperature": 24.25, "battery": 97, "ts": flat_ms})

    def latest(metric: str) -> dict[str, Any] | None:
        variables = {"id": device_id, "metric": metric}
        return graphql.data(LATEST, variables)["deviceLatestMetric"]

    # one metric only the seed message carries, one only the flat message carries
    wait_until(lambda: latest("humidity") and latest("battery"))

    seed_at, flat_at = iso_utc(seed_time), iso_utc(flat_time)
    assert seed_at.endswith(".123Z") and flat_at.endswith(".456Z")
    expected = {
        "temperature": [
            {"time": seed_at, "value": 23.5, "unit": "°C"},
            {"time": flat_at, "value": 24.25, "unit": None},
        ],
        "humidity": [{"time": seed_at, "value": 65.2, "unit": "%"}],
        "battery": [{"time": flat_at, "value": 97.0, "unit": None}],
    }
    window = {"from": iso_utc(seed_time - timedelta(hours=1)), "to": iso_utc(datetime.now(UTC))}
    for metric, points in expected.items():
        series = graphql.data(SERIES, {"id": device_id, "metric": metric, **window})
        assert series["deviceTelemetry"] == {"metricName": metric, "points": points}
        assert latest(metric) == points[-1]
    device = graphql.data(DEVICE, {"id": device_id})["device"]
    assert device["status"] == "ONLINE" and device["lastSeenAt"] is not None
    assert device["metrics"] == ["battery", "humidity", "temperature"]
