"""HTTP metrics label a request with its route template, never with what varies in its path."""

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from app.web.http_metrics import HttpMetricsMiddleware


async def _ok(request: Request) -> Response:
    return PlainTextResponse(str(request.path_params))


async def _broken(request: Request) -> Response:
    raise RuntimeError("a bug")


async def _files(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse("a file")(scope, receive, send)


class _RefuseBeforeRouting:
    """Answers 429 to requests carrying `X-Refuse`, as the rate limit does: before routing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (b"x-refuse", b"1") in scope["headers"]:
            await PlainTextResponse("slow down", status_code=429)(scope, receive, send)
            return
        await self.app(scope, receive, send)


APP = Starlette(
    routes=[
        Route("/devices/{device_id}", _ok),
        Route("/readings/{reading_id:int}", _ok, methods=["GET"]),
        Route("/broken", _broken),
        Mount("/static", app=_files),
    ],
    middleware=[Middleware(HttpMetricsMiddleware), Middleware(_RefuseBeforeRouting)],
)


def _requests(method: str, route: str, status: str) -> float:
    labels = {"method": method, "route": route, "status": status}
    return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0


def _timed(method: str, route: str) -> float:
    labels = {"method": method, "route": route}
    return REGISTRY.get_sample_value("http_request_duration_seconds_count", labels) or 0.0


@pytest.fixture
def client() -> Iterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=APP, raise_app_exceptions=False)
    yield httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.mark.parametrize(
    ("method", "path", "route", "status"),
    [
        ("GET", "/devices/0b7e4c1e-1f7a-4a51-9d55-5d4b3c1e8f00", "/devices/{device_id}", "200"),
        ("GET", "/readings/42", "/readings/{reading_id}", "200"),  # converter dropped
        ("POST", "/readings/42", "/readings/{reading_id}", "405"),  # the path exists
        ("GET", "/static/css/site.css", "/static/{path}", "200"),
        ("GET", "/nothing/here/7", "other", "404"),
        ("BREW", "/devices/pot", "/devices/{device_id}", "405"),  # method: "other" below
        ("GET", "/broken", "/broken", "500"),
    ],
)
async def test_a_request_is_counted_and_timed_under_its_route_template(
    client: httpx.AsyncClient, method: str, path: str, route: str, status: str
) -> None:
    label = method if method != "BREW" else "other"
    before, timed_before = _requests(label, route, status), _timed(label, route)
    response = await client.request(method, path)
    assert str(response.status_code) == status
    assert _requests(label, route, status) == before + 1
    assert _timed(label, route) == timed_before + 1


async def test_a_request_refused_before_routing_counts_under_the_route_it_asked_for(
    client: httpx.AsyncClient,
) -> None:
    before = _requests("GET", "/devices/{device_id}", "429")
    response = await client.get("/devices/d-1", headers={"X-Refuse": "1"})
    assert response.status_code == 429
    assert _requests("GET", "/devices/{device_id}", "429") == before + 1


async def test_no_series_names_a_raw_path(client: httpx.AsyncClient) -> None:
    await client.get("/devices/raw-device-id-123")
    await client.get("/nowhere-raw-path-456")
    routes = {
        sample.labels["route"]
        for family in REGISTRY.collect()
        if family.name == "http_requests"
        for sample in family.samples
    }
    assert not [route for route in routes if "raw-" in route]
    assert {"/devices/{device_id}", "other"} <= routes
