"""From a broken rule to an acknowledged alert, in Chromium against the real server.

An operator types a rule with a mistake and sees it marked on its line, fixes it, tests it
against the telemetry stored in the last 24 hours, saves it; a device then publishes a
violating value over MQTT and the alert appears on /alerts without a reload; the operator
acknowledges it and the stored alert says so.
"""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import paho.mqtt.client as mqtt
import pytest
from playwright.async_api import Locator, Page, expect

from tests.e2e.conftest import SCREENSHOTS, Server, graphql_as, sign_in

# a seeded device (seeds/demo.json) no other browser test publishes for, and a metric of
# its own, so the seeded rules and the other tests leave this flow alone
CHILLER = "6f1c2a8e-0c1b-4a51-9d1e-1a0000000009"
METRIC = "e2e_pressure"
OPERATOR = "operator@example.com"
RULE_NAME = "E2E overpressure"
BROKEN = f'rule "{RULE_NAME}"\n  on device "{CHILLER}"\n  when {METRIC} = 80\n  severity critical'
FIXED = BROKEN.replace(f"{METRIC} = 80", f"{METRIC} > 80")
# two excursions above 80 in the stored history, and back below it at the end
HISTORY = ((300, 50.0), (270, 85.0), (240, 60.0), (180, 90.0), (120, 55.0), (60, 52.0))
PUSH_MS = 5_000


@pytest.fixture
def chiller(connect_device: Callable[..., mqtt.Client]) -> mqtt.Client:
    """The chiller's MQTT connection."""
    return connect_device(CHILLER)


async def _open_details(row: Locator) -> None:
    """Open an alert's details (its timeline), clicking again if a redraw swallowed the click.

    The row is drawn anew when the acknowledgement comes back over the bus; a click that
    lands on the row being replaced is lost. An open row's button shows `expand_more`.
    """
    for _ in range(5):
        await row.locator("button").first.click()
        try:
            await expect(row.get_by_text("expand_more")).to_be_visible(timeout=3_000)
            return
        except AssertionError:
            continue
    raise AssertionError("the alert's details did not open")


def _publish(client: mqtt.Client, value: float, at: datetime | None = None) -> None:
    payload: dict = {"metrics": [{"name": METRIC, "value": value, "unit": "bar"}]}
    if at is not None:
        payload["timestamp"] = at.isoformat()
    message = client.publish(f"devices/{CHILLER}/telemetry", orjson.dumps(payload), qos=1)
    message.wait_for_publish(5)


def _stored_status(server: Server, title: str) -> str:
    """The alert's status as the server stores it, read back over GraphQL."""
    query = "query($d: ID!) { activeAlerts(deviceId: $d) { title status } }"
    found = graphql_as(server, OPERATOR, query, d=CHILLER)["activeAlerts"]
    (status,) = [alert["status"] for alert in found if alert["title"] == title]
    return status


async def screenshot(page: Page, name: str) -> None:
    """The whole page, from the top (the editor page is taller than the window)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.evaluate("window.scrollTo(0, 0)")
    await page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True, animations="disabled")


async def _replace_text(page: Page, text: str) -> None:
    """Select everything in the editor and type `text` over it."""
    await page.locator(".rule-code .cm-content").click()
    await page.keyboard.press("Control+A")
    await page.keyboard.insert_text(text)


async def test_broken_rule_to_acknowledged_alert(
    page: Page, server: Server, chiller: mqtt.Client
) -> None:
    now = datetime.now(UTC)
    for minutes, value in HISTORY:
        _publish(chiller, value, now - timedelta(minutes=minutes))
    await sign_in(page, server, OPERATOR)
    # the history is stored once the device page shows the metric's newest value
    await page.goto(f"{server.url}/devices/{CHILLER}")
    tile = page.locator(f".nicegui-column[data-metric='{METRIC}']")
    await expect(tile.get_by_text("52", exact=True)).to_be_visible(timeout=PUSH_MS)

    await page.goto(f"{server.url}/rules/new")
    await expect(page.locator(".rule-code .cm-content")).to_be_visible()
    await _replace_text(page, BROKEN)
    # the mistake: on line 3, column 21, under the `=`; the line is tinted
    await expect(page.get_by_text("Line 3, column 21")).to_be_visible()
    await expect(page.get_by_text("did you mean `==`?")).to_be_visible()
    error_line = page.locator(".rule-code .cm-line.cm-rule-error-line")
    await expect(error_line).to_have_count(1)
    await expect(error_line).to_contain_text(f"when {METRIC} = 80")
    lines = page.locator(".rule-code .cm-line")
    index = await lines.evaluate_all(
        "(ls) => ls.findIndex((l) => l.matches('.cm-rule-error-line'))"
    )
    assert index == 2  # the third line
    await expect(page.locator(".rule-code .cm-rule-error")).to_have_text("=")
    # the language's own colours: keywords are highlighted, not plain text
    keyword = page.locator(".rule-code .cm-line span", has_text="rule").first
    await expect(keyword).to_have_text("rule")
    keyword_colour = await keyword.evaluate("(span) => getComputedStyle(span).color")
    plain_colour = await page.locator(".rule-code .cm-content").evaluate(
        "(content) => getComputedStyle(content).color"
    )
    assert keyword_colour != plain_colour
    await screenshot(page, "50-rule-editor-error")

    await _replace_text(page, FIXED)
    await expect(page.get_by_text("No problems: the rule can be saved.")).to_be_visible()
    await expect(error_line).to_have_count(0)

    await page.get_by_role("button", name="Test against the last 24 h").click()
    summary = page.get_by_text("Would have fired 2 times on 1 device")
    await expect(summary).to_be_visible(timeout=15_000)
    chart = page.locator(f".js-plotly-plot[data-device='{CHILLER}']")
    await expect(chart).to_be_visible()
    drawn = await chart.element_handle()
    # plotly has drawn the two would-be alerts as shaded regions over the metric's line
    await page.wait_for_function(
        "(gd) => gd._fullLayout && gd.layout.shapes.filter((s) => s.type === 'rect').length == 2",
        arg=drawn,
    )
    await screenshot(page, "51-rule-editor-replay")

    await page.get_by_role("button", name="Create rule").click()
    await page.wait_for_url(f"{server.url}/rules/*")
    await expect(page.get_by_text(f"Rule “{RULE_NAME}” created")).to_be_visible()

    await page.goto(f"{server.url}/alerts")
    await expect(page.locator(".q-header").get_by_text("Live", exact=True)).to_be_visible()
    await page.evaluate("window.__sameDocument = true")  # a reload would forget it
    row = page.locator("tr[data-alert-id]", has_text=RULE_NAME)
    await expect(row).to_have_count(0)
    _publish(chiller, 95.0)
    await expect(row).to_be_visible(timeout=PUSH_MS)
    await expect(row.get_by_text("Active", exact=True)).to_be_visible()
    await expect(row.get_by_text("95", exact=True)).to_be_visible()
    assert await page.evaluate("window.__sameDocument === true")
    await screenshot(page, "52-alerts-live")

    await row.get_by_role("button", name="Acknowledge").click()
    await expect(row.get_by_text("Acknowledged", exact=True)).to_be_visible()
    assert _stored_status(server, RULE_NAME) == "ACKNOWLEDGED"
    await _open_details(row)
    await expect(page.get_by_text("Timeline")).to_be_visible()
    await screenshot(page, "53-alert-acknowledged")

    await page.goto(f"{server.url}/devices/{CHILLER}")
    await expect(page.get_by_text(RULE_NAME, exact=True)).to_be_visible()
    await screenshot(page, "54-device-alerts")
    await page.goto(f"{server.url}/rules")
    await expect(page.get_by_role("link", name=RULE_NAME)).to_be_visible()
    await screenshot(page, "55-rules-list")
