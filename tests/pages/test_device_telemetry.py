"""The device page's telemetry: tiles, charts, empty state, ranges, live refresh."""

import importlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo

import pytest
from nicegui import ElementFilter, ui
from nicegui.testing import User

from app.core import db
from app.core.models import Device
from app.services import telemetry
from app.services.telemetry import Point
from tests.pages.conftest import Account


def _write(points: list[Point]) -> None:
    with db.session_scope() as session:
        telemetry.write_points(session=session, points=points, seen_at=datetime.now(UTC))


def _recent(device: Device, now: datetime) -> list[Point]:
    """A temperature and a humidity point every 5 minutes over the last hour."""
    points = []
    for step in range(12):
        at = now - timedelta(minutes=5 * step + 1)
        points.append(Point(device.id, "temperature", at, 21.0 + step / 10, "°C"))
        points.append(Point(device.id, "humidity", at, 48.0 - step, "%"))
    return points


def _tile(user: User, metric: str) -> list[str]:
    """The texts of one metric's tile: name, value, unit, age."""
    with user:
        return [
            label.text for label in ElementFilter(kind=ui.label).within(marker=f"tile-{metric}")
        ]


def _chart(user: User, metric: str) -> ui.plotly:
    (plot,) = user.find(marker=f"chart-{metric}").elements
    assert isinstance(plot, ui.plotly)
    return plot


async def _tick(user: User) -> None:
    """Run the refresh timer's callback now, to its end, instead of waiting for it."""
    (timer,) = user.find(marker="telemetry-timer").elements
    assert isinstance(timer, ui.timer) and timer.callback is not None
    with user:
        await timer.callback()


async def test_tiles_and_charts_show_the_latest_values(
    user: User, add_device: Callable[..., Device], admin: Account
) -> None:
    del admin
    device = add_device("Boiler room thermostat")
    now = datetime.now(UTC)
    _write(
        [
            *_recent(device, now),
            Point(device.id, "battery", now - timedelta(hours=2), 97.0, "%"),
        ]
    )
    await user.open(f"/devices/{device.id}")
    await user.should_see("Latest values")
    await user.should_see(marker="tile-temperature")
    assert _tile(user, "temperature") == ["temperature", "21", "°C", "1 min ago"]
    assert _tile(user, "humidity") == ["humidity", "48", "%", "1 min ago"]
    # battery last reported two hours ago: its tile is marked stale
    assert _tile(user, "battery") == ["battery", "97", "%", "2 h ago"]
    await user.should_see(marker=["tile-battery", "tile-stale"])
    await user.should_see(marker=["tile-temperature", "tile-fresh"])

    assert len(user.find(marker="telemetry-chart").elements) == 3
    temperature = _chart(user, "temperature").figure
    assert temperature["data"][0]["y"][-1] == 21.0  # oldest first, newest last
    assert len(temperature["data"][0]["x"]) == 12
    assert temperature["layout"]["yaxis"]["title"]["text"] == "°C"
    assert temperature["layout"]["xaxis"]["title"]["text"] == "Time (UTC)"
    assert temperature["config"]["displayModeBar"] is False
    battery = _chart(user, "battery").figure
    assert battery["data"][0]["x"] == [] and battery["layout"]["annotations"]  # "No points"
    await user.should_see(marker="chart-caption", content="12 points")
    await user.should_see("Metadata")


async def test_device_without_telemetry_shows_the_topic_to_publish_to(
    user: User, add_device: Callable[..., Device], admin: Account
) -> None:
    del admin
    device = add_device("Silent sensor")
    await user.open(f"/devices/{device.id}")
    await user.should_see("No telemetry yet")
    await user.should_see(marker="telemetry-topic", content=f"devices/{device.id}/telemetry")
    user.find(marker="copy-topic").click()
    await user.should_see("Topic copied")
    await user.should_not_see(marker="telemetry-chart")
    await user.should_not_see("Latest values")


async def test_first_points_replace_the_empty_state_on_refresh(
    user: User, add_device: Callable[..., Device], admin: Account
) -> None:
    del admin
    device = add_device("Newcomer")
    await user.open(f"/devices/{device.id}")
    await user.should_see("No telemetry yet")
    _write([Point(device.id, "co2", datetime.now(UTC) - timedelta(seconds=3), 612.0, "ppm")])
    await _tick(user)
    await user.should_see(marker="tile-co2")
    assert _tile(user, "co2") == ["co2", "612", "ppm", "just now"]
    await user.should_not_see("No telemetry yet")
    assert _chart(user, "co2").figure["data"][0]["y"] == [612.0]


async def test_refresh_appends_new_points_and_updates_tiles(
    user: User, add_device: Callable[..., Device], admin: Account
) -> None:
    del admin
    device = add_device("Live one")
    now = datetime.now(UTC)
    _write(_recent(device, now))
    await user.open(f"/devices/{device.id}")
    await user.should_see(marker="tile-temperature")
    _write([Point(device.id, "temperature", datetime.now(UTC), 23.75, "°C")])
    await _tick(user)
    await user.should_see(marker="tile-value", content="23.75")
    assert _tile(user, "temperature")[1:] == ["23.75", "°C", "just now"]
    trace = _chart(user, "temperature").figure["data"][0]
    assert (len(trace["x"]), trace["y"][-1]) == (13, 23.75)
    await user.should_see(marker="chart-caption", content="13 points")
    await _tick(user)  # nothing new: nothing appended twice
    assert len(_chart(user, "temperature").figure["data"][0]["x"]) == 13


async def test_range_switch_redraws_and_buckets_dense_history(
    user: User, add_device: Callable[..., Device], admin: Account
) -> None:
    del admin
    device = add_device("Busy sensor")
    now = datetime.now(UTC)
    # 2,520 points over 7 days: raw in the last hour, too many for one 7-day chart
    _write(
        [
            Point(device.id, "power", now - timedelta(minutes=4 * step + 1), 100.0 + step % 7, "kW")
            for step in range(2520)
        ]
    )
    await user.open(f"/devices/{device.id}")
    await user.should_see(marker="chart-caption", content="15 points")
    assert len(_chart(user, "power").figure["data"]) == 1

    user.find(marker="range-7d").click()
    await user.should_see(marker="chart-caption", content="15 min averages")
    figure = _chart(user, "power").figure
    assert len(figure["data"]) == 3  # max, min (filled to max) and the average line
    assert figure["data"][1]["fill"] == "tonexty"
    assert 600 < len(figure["data"][2]["x"]) <= 2000
    start = datetime.fromisoformat(figure["layout"]["xaxis"]["range"][0]).replace(tzinfo=UTC)
    assert abs(datetime.now(UTC) - timedelta(days=7) - start) < timedelta(seconds=5)

    user.find(marker="range-15min").click()
    await user.should_see(marker="chart-caption", content="4 points")


async def test_custom_range_is_validated_inline(
    user: User, add_device: Callable[..., Device], admin: Account
) -> None:
    del admin
    device = add_device("History")
    _write([Point(device.id, "t", datetime(2026, 3, 1, 12, 0, tzinfo=UTC), 5.0, "°C")])
    await user.open(f"/devices/{device.id}")
    user.find(marker="range-custom").click()
    user.find(marker="range-from").clear().type("2026-03-01T13:00")
    user.find(marker="range-to").clear().type("2026-03-01T11:00")
    user.find(marker="range-apply").click()
    await user.should_see("From must be before “To”")
    user.find(marker="range-to").clear().type("not a time")
    user.find(marker="range-apply").click()
    await user.should_see("To is not a date and time")

    user.find(marker="range-from").clear().type("2026-03-01T11:00")
    user.find(marker="range-to").clear().type("2026-03-01T13:00")
    user.find(marker="range-apply").click()
    await user.should_see(marker="chart-caption", content="1 point")
    await user.should_not_see("From must be before")
    # the axis shows the range, plus a sixtieth on the right so the last point is not cut
    assert _chart(user, "t").figure["layout"]["xaxis"]["range"] == [
        "2026-03-01 11:00:00.000000",
        "2026-03-01 13:02:00.000000",
    ]


async def test_dense_hour_is_bucketed_and_redrawn_once_a_new_bucket_begins(
    user: User,
    add_device: Callable[..., Device],
    admin: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    del admin
    device = add_device("Fast sensor")
    now = datetime.now(UTC)
    _write(
        [
            Point(device.id, "vibration", now - timedelta(seconds=1.5 * step + 1), step % 9, "mm/s")
            for step in range(2200)
        ]
    )
    await user.open(f"/devices/{device.id}")
    await user.should_see(marker="chart-caption", content="10 s averages")
    before = _chart(user, "vibration").figure["layout"]["xaxis"]["range"]

    class OneMinuteLater(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> "OneMinuteLater":
            return cls.fromtimestamp(now.timestamp() + 60, tz)

    # the page module as the running app imported it (the user fixture loads the app afresh)
    page_module = importlib.import_module("pages.device_detail")
    monkeypatch.setattr(page_module, "datetime", OneMinuteLater)
    await _tick(user)
    after = _chart(user, "vibration").figure["layout"]["xaxis"]["range"]
    moved = datetime.fromisoformat(after[0]) - datetime.fromisoformat(before[0])
    assert timedelta(seconds=59) < moved < timedelta(seconds=61)
    await user.should_see(marker="chart-caption", content="10 s averages")
