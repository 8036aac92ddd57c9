"""Live pages: pushes from the bus reach open pages without a reload; closed pages unsubscribe."""

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from nicegui import ElementFilter, ui
from nicegui.testing import User

from app.core import bus, db
from app.core.models import Device, DeviceStatus
from app.services import devices, telemetry
from app.services.telemetry import Point
from tests.pages.conftest import Account

PUSH_RETRIES = 30  # 3 s: a push makes the page reload, off the event loop, after a short delay


async def _until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    """Wait until `condition()` holds (pushes arrive through the event loop)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def _write(points: list[Point]) -> None:
    """Store points in a committed session: the bus publishes them after the commit."""
    with db.session_scope() as session:
        telemetry.write_points(session=session, points=points, seen_at=datetime.now(UTC))


def _set_status(device: Device, status: DeviceStatus) -> None:
    with db.session_scope() as session:
        devices.set_status(
            session=session, device_id=device.id, status=status, at=datetime.now(UTC)
        )


def _trace(user: User, metric: str) -> dict:
    (plot,) = user.find(marker=f"chart-{metric}").elements
    assert isinstance(plot, ui.plotly)
    return plot.figure["data"][0]


def _badges(user: User) -> list[str]:
    """The words of every status badge on the page, in order."""
    with user:
        return [label.text for label in ElementFilter(kind=ui.label).within(marker="status-badge")]


def _indicator(user: User) -> ui.element:
    (indicator,) = user.find(marker="live-indicator").elements
    return indicator


async def test_pushed_points_extend_the_chart_and_update_the_tiles(
    user: User, add_device: Callable[..., Device], admin: Account
) -> None:
    del admin
    device = add_device("Live one", status=DeviceStatus.ONLINE)
    now = datetime.now(UTC)
    _write(
        [Point(device.id, "temperature", now - timedelta(minutes=m), 21.0, "°C") for m in (3, 2)]
    )
    await user.open(f"/devices/{device.id}")
    await user.should_see(marker="tile-temperature")
    assert _indicator(user).props["data-live"] == "true"
    assert len(_trace(user, "temperature")["x"]) == 2

    # no timer tick, no reload: the commit's bus message alone moves the page
    _write([Point(device.id, "temperature", datetime.now(UTC), 23.75, "°C")])
    await _until(lambda: len(_trace(user, "temperature")["x"]) == 3)
    assert _trace(user, "temperature")["y"][-1] == 23.75
    await user.should_see(marker="tile-value", content="23.75")
    await user.should_see(marker="chart-caption", content="3 points")

    # a new metric lays the telemetry section out again, with its own tile and chart
    _write([Point(device.id, "humidity", datetime.now(UTC), 41.0, "%")])
    await user.should_see(marker="tile-humidity", retries=PUSH_RETRIES)
    assert _trace(user, "humidity")["y"] == [41.0]
    assert len(_trace(user, "temperature")["x"]) == 3


async def test_first_pushed_point_replaces_the_empty_state(
    user: User, add_device: Callable[..., Device], admin: Account
) -> None:
    del admin
    device = add_device("Newcomer")
    await user.open(f"/devices/{device.id}")
    await user.should_see("No telemetry yet")
    assert _badges(user) == ["Unknown", "Unknown"]
    _write([Point(device.id, "co2", datetime.now(UTC), 612.0, "ppm")])
    await user.should_see(marker="tile-co2", retries=PUSH_RETRIES)
    await user.should_not_see("No telemetry yet")
    # the first point also brought the device online: both badges say so
    await _until(lambda: _badges(user) == ["Online", "Online"])
    await user.should_see(marker="last-seen", content="just now")


async def test_status_change_flips_the_device_page_badges(
    user: User, add_device: Callable[..., Device], admin: Account
) -> None:
    del admin
    device = add_device("Gateway", status=DeviceStatus.ONLINE)
    other = add_device("Another", status=DeviceStatus.ONLINE)
    await user.open(f"/devices/{device.id}")
    assert _badges(user) == ["Online", "Online"]
    _set_status(other, DeviceStatus.OFFLINE)  # someone else's last will: not ours
    _set_status(device, DeviceStatus.OFFLINE)
    await _until(lambda: _badges(user) == ["Offline", "Offline"])


async def test_devices_list_shows_status_and_last_seen_live(
    user: User, add_device: Callable[..., Device], admin: Account
) -> None:
    del admin
    add_device("Boiler", status=DeviceStatus.ONLINE)
    silent = add_device("Silent sensor")
    await user.open("/devices")
    await user.should_see("Silent sensor")
    assert _badges(user) == ["Online", "Unknown"]
    await user.should_see(marker="last-seen", content="never")

    _write([Point(silent.id, "t", datetime.now(UTC), 1.0, None)])
    await _until(lambda: _badges(user) == ["Online", "Online"])
    await user.should_not_see(marker="last-seen", content="never")

    _set_status(silent, DeviceStatus.OFFLINE)
    await _until(lambda: _badges(user) == ["Online", "Offline"])

    add_device("Brand new")  # registered elsewhere: the list shows it without a reload
    await user.should_see("Brand new", retries=PUSH_RETRIES)


async def test_closing_the_page_closes_its_subscription(
    user: User, add_device: Callable[..., Device], admin: Account
) -> None:
    del admin
    device = add_device("Watched")
    hub = bus.get_hub()
    before = hub.subscribers
    client = await user.open(f"/devices/{device.id}")
    assert hub.subscribers == before + 1  # one subscription per page, however many widgets

    client.page.reconnect_timeout = 0.05  # the tab is gone for good, not reconnecting
    for socket_id in list(client._socket_to_document_id):  # the simulated socket
        client.handle_disconnect(socket_id)
    await _until(lambda: client.is_deleted)
    await _until(lambda: hub.subscribers == before)
    # a message after the close reaches nobody and breaks nothing
    hub.deliver(bus.DEVICE_STATUS, {"v": 1, "device_id": str(device.id), "status": "OFFLINE"})
