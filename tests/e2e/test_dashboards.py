"""Low-code dashboards in Chromium against `iotdeck serve`: built by clicking, live, shared.

Each test registers devices of its own (a type no other test uses) over GraphQL, gives
them MQTT passwords as an admin would, and publishes as they do; nothing is mocked.
"""

import json
import queue
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import orjson
import paho.mqtt.client as mqtt
import pytest
from playwright.async_api import Locator, Page, expect

from tests.e2e.conftest import Server, device_login, graphql_as, screenshot, sign_in
from tests.waiting import wait_until

ADMIN, OPERATOR, VIEWER = "admin@example.com", "operator@example.com", "viewer@example.com"
PUSH_MS = 5_000  # a published point shows within this, without a reload
ROW_STEP = 72 + 12  # px of one grid row and its gap (components/dashboard/views.py)
_NO_RELOAD = "window.__sameDocument === true"
_CREATE_DEVICE = "mutation($input: CreateDeviceInput!) { createDevice(input: $input) { id } }"
_CREATE_DASHBOARD = """
mutation($input: CreateDashboardInput!) { createDashboard(input: $input) { id } }
"""


class Probe:
    """A device registered for one test, connected over MQTT with its own password."""

    def __init__(self, server: Server, broker_port: int, device_type: str, name: str) -> None:
        created = graphql_as(
            server, ADMIN, _CREATE_DEVICE, input={"name": name, "type": device_type}
        )
        self.id = created["createDevice"]["id"]
        self.name = name
        self.commands: queue.Queue[dict[str, Any]] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.username_pw_set(*device_login(server, self.id))
        self.client.on_message = lambda _c, _u, m: self.commands.put(orjson.loads(m.payload))
        self.client.connect("127.0.0.1", broker_port, keepalive=30)
        self.client.subscribe(f"devices/{self.id}/commands", qos=1)
        self.client.loop_start()

    def send(self, **metrics: float) -> None:
        """Publish one telemetry message and wait for the broker's acknowledgement."""
        payload = {"metrics": [{"name": k, "value": v, "unit": "°C"} for k, v in metrics.items()]}
        self.publish("telemetry", payload)

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        """Publish to `devices/{id}/{topic}` at QoS 1."""
        info = self.client.publish(f"devices/{self.id}/{topic}", orjson.dumps(payload), qos=1)
        info.wait_for_publish(5)

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def probes(server: Server, broker_port: int) -> Iterator[Callable[[str], Probe]]:
    """Register and connect devices of a type unique to the test."""
    device_type = f"probe_{uuid.uuid4().hex[:8]}"
    made: list[Probe] = []

    def make(name: str) -> Probe:
        probe = Probe(server, broker_port, device_type, f"{name} {uuid.uuid4().hex[:4]}")
        made.append(probe)
        return probe

    yield make
    for probe in made:
        probe.close()


def _latest(server: Server, probe: Probe, metric: str) -> float | None:
    query = (
        "query($id: ID!, $m: String!) { deviceLatestMetric(deviceId: $id, metricName: $m)"
        " { value } }"
    )
    latest = graphql_as(server, ADMIN, query, id=probe.id, m=metric)["deviceLatestMetric"]
    return None if latest is None else latest["value"]


def _stored(probe: Probe, server: Server, metric: str, value: float) -> None:
    """Wait until ingest stored the point (the pickers offer what a device reported)."""
    wait_until(lambda: _latest(server, probe, metric) == value, timeout=15)


def _dashboard(server: Server, email: str, name: str, spec: dict[str, Any], *, shared: bool) -> str:
    visibility = "SHARED" if shared else "PRIVATE"
    made = graphql_as(
        server,
        email,
        _CREATE_DASHBOARD,
        input={"name": name, "visibility": visibility, "spec": spec},
    )
    return made["createDashboard"]["id"]


def _card(page: Page, widget_type: str) -> Locator:
    return page.locator(f".dashboard-card[data-type='{widget_type}']")


async def _pick(page: Page, label: str, option: str) -> None:
    """Choose `option` in the drawer's dropdown called `label`."""
    drawer = page.locator(".q-dialog")
    await drawer.get_by_label(label, exact=True).click()
    await page.get_by_role("option", name=option).click()


async def _add(page: Page, kind: str, device: str, metric: str) -> None:
    """Add a widget of `kind` showing `device`'s `metric`, as an operator clicks it."""
    await page.get_by_role("button", name="Add widget").click()
    await page.locator(f"button[data-kind='{kind}']").click()
    drawer = page.locator(".q-dialog").get_by_label("Device", exact=True)
    await expect(drawer).to_be_visible(timeout=15_000)
    await _pick(page, "Device", device)
    await _pick(page, "Metric", metric)
    await page.wait_for_timeout(600)  # the preview redraws once the edits pause
    await page.locator(".q-dialog").get_by_role("button").first.click()  # close the drawer


async def test_an_operator_builds_a_dashboard_by_clicking_and_it_stays_live(
    page: Page, server: Server, probes: Callable[[str], Probe]
) -> None:
    probe = probes("Freezer")
    probe.send(temperature=-18.5)
    _stored(probe, server, "temperature", -18.5)

    await sign_in(page, server, OPERATOR)
    await page.goto(f"{server.url}/dashboards")
    await page.get_by_role("button", name="New dashboard").click()
    await page.get_by_label("Name").fill(f"Freezers {probe.id[:6]}")
    await page.get_by_role("button", name="Create").click()
    await page.wait_for_url("**/dashboards/*?edit=1")
    dashboard_url = page.url.split("?")[0]

    await _add(page, "timeseries", probe.name, "temperature")
    await _add(page, "stat", probe.name, "temperature")
    stat = _card(page, "stat")
    await expect(stat.locator("[data-value]")).to_have_attribute("data-value", "-18.5")
    assert await stat.get_attribute("data-y") == "0"
    await screenshot(page, "dashboard-01-editing")

    # drag the stat by its title bar four rows down, under nothing
    head = stat.locator(".dashboard-card-head")
    box = await head.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 3, box["y"] + box["height"] / 2
    await page.mouse.move(x, y)
    await page.mouse.down()
    await page.mouse.move(x, y + 2 * ROW_STEP, steps=5)
    await page.mouse.move(x, y + 4 * ROW_STEP, steps=5)
    await page.mouse.up()
    await expect(stat).to_have_attribute("data-y", "4")
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_text("Dashboard saved")).to_be_visible()

    await page.goto(dashboard_url)  # the layout was stored
    stat = _card(page, "stat")
    await expect(stat).to_have_attribute("data-y", "4")
    await expect(_card(page, "timeseries")).to_have_attribute("data-w", "6")
    await expect(stat.locator("[data-value]")).to_have_attribute("data-value", "-18.5")

    await page.evaluate("window.__sameDocument = true")
    line = "document.querySelector(\".dashboard-card[data-type='timeseries'] .js-plotly-plot\")"
    count = f"(() => {{ const gd = {line}; return gd && gd.data && gd.data[0].x.length; }})()"
    before = await (await page.wait_for_function(f"() => {count}")).json_value()
    probe.send(temperature=-16.25)
    await expect(stat.locator("[data-value]")).to_have_attribute(
        "data-value", "-16.25", timeout=PUSH_MS
    )
    await page.wait_for_function(f"() => {count} > {before}", timeout=PUSH_MS)
    assert await page.evaluate(_NO_RELOAD), "the page was reloaded"
    await screenshot(page, "dashboard-02-saved-live")


async def test_a_command_widget_sends_a_command_that_ends_executed(
    page: Page, server: Server, probes: Callable[[str], Probe]
) -> None:
    probe = probes("Pump")
    probe.send(flow=1.5)  # a point brings it ONLINE: commands are dispatched to it at once
    _stored(probe, server, "flow", 1.5)
    spec = {
        "version": 1,
        "widgets": [
            {
                "id": "flush",
                "type": "command",
                "title": "Flush the pump",
                "x": 0,
                "y": 0,
                "w": 4,
                "h": 2,
                "options": {"device": probe.id, "action": "flush", "params": {"seconds": 5}},
            }
        ],
    }
    dashboard_id = _dashboard(server, OPERATOR, f"Pump {probe.id[:6]}", spec, shared=True)
    await sign_in(page, server, OPERATOR)
    await page.goto(f"{server.url}/dashboards/{dashboard_id}")
    await page.get_by_role("button", name="flush").click()
    await page.get_by_role("button", name="Send").click()
    received = probe.commands.get(timeout=10)
    assert (received["action"], received["params"]) == ("flush", {"seconds": 5})
    chip = _card(page, "command").locator("[data-command-status]")
    await expect(chip).to_have_attribute("data-command-status", "SENT", timeout=PUSH_MS)
    for status in ("acknowledged", "executed"):
        probe.publish("commands/ack", {"command_id": received["command_id"], "status": status})
    await expect(chip).to_have_attribute("data-command-status", "EXECUTED", timeout=PUSH_MS)
    await screenshot(page, "dashboard-03-command-executed")

    # a VIEWER sees the shared dashboard, with no edit mode and no working command
    viewer = await page.context.browser.new_page()  # type: ignore[union-attr]
    try:
        await sign_in(viewer, server, VIEWER)
        await viewer.goto(f"{server.url}/dashboards/{dashboard_id}")
        await expect(viewer.get_by_text("Flush the pump")).to_be_visible()
        await expect(viewer.get_by_role("button", name="flush")).to_be_disabled()
        await expect(viewer.get_by_text("Commands need the OPERATOR role")).to_be_visible()
        await expect(viewer.get_by_role("button", name="Edit")).to_have_count(0)
        await viewer.goto(f"{server.url}/dashboards/{dashboard_id}?edit=1")
        await expect(viewer.get_by_text("Flush the pump")).to_be_visible()
        await expect(viewer.get_by_role("button", name="Add widget")).to_be_hidden()
        await expect(viewer.get_by_role("button", name="New dashboard")).to_have_count(0)
    finally:
        await viewer.close()
    assert probe.commands.empty(), "the viewer's page sent nothing"


async def test_switching_the_device_variable_changes_every_widget(
    page: Page, server: Server, probes: Callable[[str], Probe]
) -> None:
    first, second = probes("Tank A"), probes("Tank B")
    first.send(level=41.0)
    second.send(level=87.5)
    _stored(first, server, "level", 41.0)
    _stored(second, server, "level", 87.5)
    device_type = _type_of(server, first)
    source = {"device": "$device", "metric": "level"}
    spec = {
        "version": 1,
        "variables": [{"name": "device", "label": "Tank", "deviceType": device_type}],
        "widgets": [
            {
                "id": "now",
                "type": "stat",
                "title": "Level",
                "x": 0,
                "y": 0,
                "w": 3,
                "h": 2,
                "options": source,
            },
            {
                "id": "dial",
                "type": "gauge",
                "title": "Dial",
                "x": 3,
                "y": 0,
                "w": 3,
                "h": 3,
                "options": source,
            },
        ],
    }
    dashboard_id = _dashboard(server, ADMIN, f"Tanks {device_type}", spec, shared=True)
    await sign_in(page, server, VIEWER)
    await page.goto(f"{server.url}/dashboards/{dashboard_id}?var-device={first.id}")
    stat, gauge = (
        _card(page, "stat").locator("[data-value]"),
        _card(page, "gauge").locator(".js-plotly-plot"),
    )
    await expect(stat).to_have_attribute("data-value", "41.0")
    await expect(gauge).to_have_attribute("data-value", "41.0")

    await page.get_by_label("Tank").click()
    await page.get_by_role("option", name=second.name).click()
    await expect(stat).to_have_attribute("data-value", "87.5")
    await expect(gauge).to_have_attribute("data-value", "87.5")
    assert parse_qs(urlparse(page.url).query)["var-device"] == [second.id]
    second.send(level=90.0)  # and the new device's values are the ones followed live
    await expect(stat).to_have_attribute("data-value", "90.0", timeout=PUSH_MS)
    await screenshot(page, "dashboard-04-variable")


def _type_of(server: Server, probe: Probe) -> str:
    query = "query($id: ID!) { device(id: $id) { type } }"
    return graphql_as(server, ADMIN, query, id=probe.id)["device"]["type"]


async def test_create_alert_from_a_widget_opens_a_filled_editor_whose_rule_saves(
    page: Page, server: Server, probes: Callable[[str], Probe]
) -> None:
    probe = probes("Boiler")
    probe.send(pressure=2.1)
    _stored(probe, server, "pressure", 2.1)
    spec = {
        "version": 1,
        "widgets": [
            {
                "id": "pressure",
                "type": "stat",
                "title": "Boiler pressure",
                "x": 0,
                "y": 0,
                "w": 4,
                "h": 2,
                "options": {
                    "device": probe.id,
                    "expression": "avg(pressure, 5m)",
                    "thresholds": [{"value": 2.5, "color": "orange"}, {"value": 3, "color": "red"}],
                },
            }
        ],
    }
    dashboard_id = _dashboard(server, OPERATOR, f"Boiler {probe.id[:6]}", spec, shared=False)
    await sign_in(page, server, OPERATOR)
    await page.goto(f"{server.url}/dashboards/{dashboard_id}")
    await _card(page, "stat").locator(".dashboard-card-head button").click()
    await page.get_by_text("Create alert from this widget").click()
    await page.wait_for_url("**/rules/new?*")
    editor = page.locator(".cm-content")
    await expect(editor).to_contain_text("when avg(pressure, 5m) > 3")
    await expect(editor).to_contain_text(f'on device "{probe.id}"')
    await screenshot(page, "dashboard-05-alert-from-widget")
    await page.get_by_role("button", name="Create rule").click()
    await page.wait_for_url(lambda url: "/rules/new" not in url)
    rules = graphql_as(server, OPERATOR, "{ alertRules { name expression } }")["alertRules"]
    saved = [r for r in rules if r["name"] == "Boiler pressure too high"]
    assert saved, json.dumps(rules)[:500]
    assert probe.id in saved[0]["expression"]


async def test_edit_json_refuses_with_the_path_and_undo_and_discard_go_back(
    page: Page, server: Server
) -> None:
    note = {"id": "note", "type": "markdown", "title": "Note", "x": 0, "y": 0, "w": 4, "h": 2}
    content = "Hello **operators** <script>window.__hacked = 1</script>"
    spec = {"version": 1, "widgets": [note | {"options": {"content": content}}]}
    name = f"Notes {uuid.uuid4().hex[:6]}"
    dashboard_id = _dashboard(server, ADMIN, name, spec, shared=False)
    await sign_in(page, server, ADMIN)
    await page.goto(f"{server.url}/dashboards/{dashboard_id}?edit=1")
    await expect(page.locator(".dashboard-card")).to_have_count(1)
    # Markdown renders; raw HTML in it shows as text and never runs
    await expect(page.locator(".dashboard-card strong")).to_have_text("operators")
    await expect(page.get_by_text("<script>window.__hacked = 1</script>")).to_be_visible()
    assert await page.evaluate("window.__hacked") is None

    async def apply(document: dict[str, Any]) -> None:
        await page.locator(".cm-content").click()
        await page.keyboard.press("Control+A")
        await page.keyboard.insert_text(json.dumps(document, indent=2))
        await page.get_by_role("button", name="Apply").click()

    await page.get_by_role("button", name="Edit JSON").click()
    await expect(page.locator(".cm-content")).to_contain_text('"Hello **operators** <script>')
    exported = {"version": 1, "name": name, "widgets": [spec["widgets"][0]]}
    second = note | {"id": "more", "x": 4, "options": {"content": "Second"}}
    await apply(exported | {"widgets": [*exported["widgets"], second | {"x": 10}]})
    error = page.get_by_text("widgets[1].w: x + w is 14", exact=False)
    await expect(error).to_be_visible()
    await screenshot(page, "dashboard-06-json-error")
    await expect(page.locator(".dashboard-card")).to_have_count(1)  # nothing applied

    await apply(exported | {"widgets": [*exported["widgets"], second]})
    await expect(page.locator(".dashboard-card")).to_have_count(2)
    await expect(page.get_by_text("Second")).to_be_visible()
    await page.get_by_role("button", name="Undo").click()
    await expect(page.locator(".dashboard-card")).to_have_count(1)

    await page.get_by_role("button", name="Edit JSON").click()
    await apply(exported | {"widgets": [*exported["widgets"], second]})
    await expect(page.locator(".dashboard-card")).to_have_count(2)
    await page.get_by_role("button", name="Discard").click()
    await expect(page.locator(".dashboard-card")).to_have_count(1)
    await expect(page.get_by_role("button", name="Edit")).to_be_visible()
    query = "query($id: ID!) { dashboard(id: $id) { spec } }"
    stored = graphql_as(server, ADMIN, query, id=dashboard_id)["dashboard"]["spec"]
    assert [w["id"] for w in stored["widgets"]] == ["note"], "nothing was saved"


async def test_home_is_the_fleet_overview_until_the_user_picks_another(
    page: Page, server: Server
) -> None:
    spec = {"version": 1, "widgets": []}
    name = f"Wall screen {uuid.uuid4().hex[:6]}"
    dashboard_id = _dashboard(server, ADMIN, name, spec, shared=True)
    await sign_in(page, server, VIEWER)
    await page.goto(f"{server.url}/")
    await expect(
        page.get_by_role("heading", name="Fleet overview").or_(
            page.get_by_text("Fleet overview", exact=True)
        )
    ).to_be_visible()
    await expect(page.locator(".dashboard-card[data-type='fleet']")).to_have_count(3)
    await expect(page.get_by_text("Built in and read-only")).to_be_visible()
    await expect(page.get_by_role("button", name="Edit")).to_have_count(0)
    await screenshot(page, "dashboard-00-home")

    await page.goto(f"{server.url}/dashboards/{dashboard_id}")
    await page.get_by_role("button", name="Make my home").click()
    await expect(page.get_by_text("Home", exact=True)).to_be_visible()
    await page.goto(f"{server.url}/")
    await expect(page.get_by_text(name, exact=True)).to_be_visible()
    await expect(page.get_by_text("No widgets yet")).to_be_visible()
