"""One device's page: fields, metadata, edit, delete, not found, role-based buttons."""

from collections.abc import Callable
from datetime import timedelta

from nicegui.testing import User

from app.core import db
from app.core.models import Device, DeviceStatus, utcnow
from app.services import device_types, devices
from tests.pages.conftest import Account


def _stored(device: Device) -> Device | None:
    with db.session_scope() as session:
        return devices.get_device(session=session, device_id=device.id)


async def test_detail_shows_fields_and_metadata(
    user: User, add_device: Callable[..., Device], admin: Account
) -> None:
    del admin
    device = add_device(
        "Boiler room thermostat",
        "thermostat",
        DeviceStatus.ONLINE,
        {"site": "Lyon HQ", "floor": -1, "sensors": ["t", "h"]},
    )
    await user.open("/devices")
    user.find("Boiler room thermostat").click()
    await user.should_see(marker="device-name")
    await user.should_see(str(device.id))
    await user.should_see("Online")
    await user.should_see("just now")
    await user.should_see("Lyon HQ")
    await user.should_see("-1")
    await user.should_see('"h"')
    await user.should_see(marker="copy-id")


async def test_type_links_to_the_dashboards_of_that_type(
    user: User, add_device: Callable[..., Device], viewer: Account
) -> None:
    del viewer
    device = add_device("Air box", "air_quality")
    await user.open(f"/devices/{device.id}")
    await user.should_see(marker="device-type-dashboards", content="Dashboards for this type")
    (link,) = user.find(marker="device-type-dashboards").elements
    assert link.props["href"] == "/dashboards?type=air_quality"


async def test_metadata_markup_is_shown_as_text(
    user: User, add_device: Callable[..., Device], admin: Account
) -> None:
    del admin
    markup = "<img src=x onerror=alert(1)>"
    device = add_device("Tricky", metadata={"note": markup})
    await user.open(f"/devices/{device.id}")
    await user.should_see(markup)


async def test_admin_edits_a_device(
    user: User, add_device: Callable[..., Device], admin: Account
) -> None:
    del admin
    device = add_device("Old name", metadata={"site": "Lyon"})
    await user.open(f"/devices/{device.id}")
    user.find(marker="edit-device").click()
    await user.should_see(marker="device-form")
    user.find("Name").clear().type("New name")
    user.find("Metadata (JSON object)").clear().type('{"site": "Paris"}')
    user.find(marker="device-form-save").click()
    await user.should_see("Device saved")
    await user.should_see("Paris")
    stored = _stored(device)
    assert stored is not None
    assert (stored.name, stored.metadata_) == ("New name", {"site": "Paris"})


async def test_edit_error_names_the_field_and_changes_nothing(
    user: User, add_device: Callable[..., Device], admin: Account
) -> None:
    del admin
    device = add_device("Keep me", metadata={"site": "Lyon"})
    await user.open(f"/devices/{device.id}")
    user.find(marker="edit-device").click()
    await user.should_see(marker="device-form")  # the form reads the known types first
    user.find("Name").clear()
    user.find("Metadata (JSON object)").clear().type('{"site": "Paris"}')
    user.find(marker="device-form-save").click()
    await user.should_see("Name must be 1 to 255 characters")
    stored = _stored(device)
    assert stored is not None
    assert (stored.name, stored.metadata_) == ("Keep me", {"site": "Lyon"})


async def test_delete_asks_first_and_cancel_keeps_the_device(
    user: User, add_device: Callable[..., Device], admin: Account
) -> None:
    del admin
    device = add_device("Keep me")
    await user.open(f"/devices/{device.id}")
    user.find(marker="delete-device").click()
    await user.should_see("Delete this device?")
    user.find(marker="confirm-cancel").click()
    await user.should_not_see("Delete this device?")
    assert _stored(device) is not None


async def test_delete_with_confirmation(
    user: User, add_device: Callable[..., Device], admin: Account
) -> None:
    del admin
    device = add_device("Doomed sensor")
    await user.open(f"/devices/{device.id}")
    user.find(marker="delete-device").click()
    await user.should_see("Delete this device?")
    user.find(marker="confirm-ok").click()
    await user.should_see("Device “Doomed sensor” deleted")
    await user.should_see("No devices yet")
    assert _stored(device) is None


async def test_unknown_and_invalid_ids_show_not_found(user: User, admin: Account) -> None:
    del admin
    await user.open("/devices/6f1c2a8e-0c1b-4a51-9d1e-1a00000000ff")
    await user.should_see("Device not found")
    await user.open("/devices/not-a-uuid")
    await user.should_see("Device not found")
    user.find("Back to devices").click()
    await user.should_see("Every device registered on this platform")


async def test_viewer_sees_no_edit_or_delete(
    user: User, add_device: Callable[..., Device], viewer: Account
) -> None:
    del viewer
    device = add_device("Look but do not touch")
    await user.open(f"/devices/{device.id}")
    await user.should_see(marker="device-name")
    await user.should_not_see(marker="edit-device")
    await user.should_not_see(marker="delete-device")
    await user.should_not_see("Edit")
    await user.should_not_see("Delete")


async def test_a_rate_limited_device_says_so_with_the_time(
    user: User, add_device: Callable[..., Device], viewer: Account
) -> None:
    del viewer
    calm, noisy = add_device("Calm"), add_device("Chatty")
    with db.session_scope() as session:
        refused_at = utcnow() - timedelta(minutes=3)
        device_types.record_rate_limited(session=session, device_ids=[noisy.id], at=refused_at)
    await user.open(f"/devices/{calm.id}")
    await user.should_see(marker="device-name")
    await user.should_not_see("rate limited")
    await user.open(f"/devices/{noisy.id}")
    await user.should_see("rate limited")
    await user.should_see("3 min ago")
