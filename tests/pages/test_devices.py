"""The devices list: filters, paging, registration through the dialog, role-based buttons."""

from collections.abc import Callable

from nicegui import ElementFilter, ui
from nicegui.testing import User
from nicegui.testing.user_interaction import UserInteraction

from app.core import db
from app.core.models import Device, DeviceStatus
from app.services import devices
from tests.pages.conftest import Account


def _stored_names() -> list[str]:
    with db.session_scope() as session:
        return [device.name for device in devices.list_devices(session=session)]


def _rows(user: User) -> int:
    return len(user.find(marker="device-row").elements)


async def test_devices_page_opens_directly(user: User, admin: Account) -> None:
    del admin
    await user.open("/devices")
    await user.should_see("Every device registered on this platform")


async def test_empty_list_says_so(user: User, admin: Account) -> None:
    del admin
    await user.should_see("No devices yet")


def _choose(user: User, marker: str, option: str) -> None:
    """Pick `option` in the select marked `marker` (the header's "Offline" must not catch it)."""
    select = user.find(marker=marker).click()
    UserInteraction(user, select.elements, option).click()


async def test_search_type_and_status_filters(
    user: User, add_device: Callable[..., Device], admin: Account
) -> None:
    del admin
    add_device("Boiler room thermostat", "thermostat", DeviceStatus.ONLINE)
    add_device("Warehouse thermostat", "thermostat", DeviceStatus.OFFLINE)
    add_device("Open space air quality", "air_quality", DeviceStatus.ONLINE)
    await user.open("/devices")
    await user.should_see("Boiler room thermostat")
    assert _rows(user) == 3

    user.find(marker="device-search").type("boiler")
    await user.should_not_see("Warehouse thermostat")
    await user.should_see("Boiler room thermostat")
    assert _rows(user) == 1
    user.find(marker="device-search").clear()
    await user.should_see("Warehouse thermostat")

    user.find(marker="type-filter").click()
    user.find("air_quality").click()
    await user.should_not_see("Boiler room thermostat")
    await user.should_see("Open space air quality")
    user.find(marker="type-filter").click()
    user.find("All types").click()
    await user.should_see("Boiler room thermostat")

    _choose(user, "status-filter", "Offline")
    await user.should_see("Warehouse thermostat")
    await user.should_not_see("Boiler room thermostat")
    assert _rows(user) == 1

    user.find(marker="device-search").type("nothing like this")
    await user.should_see("No devices match")
    user.find("Clear filters").click()
    await user.should_see("Open space air quality")
    assert _rows(user) == 3


async def test_paging_by_25(user: User, add_device: Callable[..., Device], admin: Account) -> None:
    del admin
    for number in range(30):
        add_device(f"Sensor {number:02d}")
    await user.open("/devices")
    await user.should_see("1\u201325 of 30")
    assert _rows(user) == 25
    await user.should_see("Sensor 24")
    await user.should_not_see("Sensor 25")
    user.find(marker="page-next").click()
    await user.should_see("26\u201330 of 30")
    await user.should_see("Sensor 29")
    assert _rows(user) == 5
    user.find(marker="page-previous").click()
    await user.should_see("1\u201325 of 30")


async def test_admin_creates_a_device_through_the_dialog(user: User, admin: Account) -> None:
    del admin
    user.find(marker="new-device").click()
    await user.should_see(marker="device-form")
    user.find("Name").type("Roof weather station")
    user.find("Type").type("weather")
    user.find("Metadata (JSON object)").clear().type('{"site": "Lyon HQ", "floor": 7}')
    user.find(marker="device-form-save").click()
    await user.should_see("Device “Roof weather station” created")
    await user.should_not_see(marker="device-form")
    await user.should_see("Roof weather station")
    assert _stored_names() == ["Roof weather station"]
    with db.session_scope() as session:
        (stored,) = devices.list_devices(session=session)
        assert stored.type == "weather"
        assert stored.metadata_ == {"site": "Lyon HQ", "floor": 7}


async def test_a_double_click_on_create_makes_one_device(user: User, admin: Account) -> None:
    del admin
    user.find(marker="new-device").click()
    await user.should_see(marker="device-form")
    user.find("Name").type("Pump")
    user.find("Type").type("pump")
    user.find(marker="device-form-save").click()
    user.find(marker="device-form-save").click()  # while the first press is saving
    await user.should_see("Device “Pump” created")
    await user.should_see(kind=ui.link, content="Pump", retries=20)  # the list has reloaded
    assert _stored_names() == ["Pump"]
    assert user.notify.messages.count("Device “Pump” created") == 1


async def test_invalid_metadata_names_the_field_and_stores_nothing(
    user: User, admin: Account
) -> None:
    del admin
    user.find(marker="new-device").click()
    await user.should_see(marker="device-form")  # the form reads the known types first
    user.find("Name").type("Broken device")
    user.find("Type").type("thermostat")
    user.find("Metadata (JSON object)").clear().type('{"site": ')
    user.find(marker="device-form-save").click()
    await user.should_see("Metadata is not valid JSON")
    await user.should_see(marker="device-form")
    assert _stored_names() == []


async def test_invalid_type_names_the_field_and_stores_nothing(user: User, admin: Account) -> None:
    del admin
    user.find(marker="new-device").click()
    await user.should_see(marker="device-form")  # the form reads the known types first
    user.find("Name").type("Badly typed")
    user.find("Type").type("Not A Type!")
    user.find(marker="device-form-save").click()
    await user.should_see("Type must be 1 to 100 characters")
    await user.should_see(marker="device-form")
    assert _stored_names() == []


async def test_viewer_sees_no_admin_controls(
    user: User, add_device: Callable[..., Device], viewer: Account
) -> None:
    del viewer
    add_device("Boiler room thermostat")
    await user.open("/devices")
    await user.should_see("Boiler room thermostat")
    await user.should_see("VIEWER")
    await user.should_not_see(marker="new-device")
    await user.should_not_see("New device")
    await user.should_not_see(marker="nav-users")
    await user.should_see(marker="nav-devices")


async def test_header_leads_with_dashboards_and_the_logo_goes_home(
    user: User, viewer: Account
) -> None:
    del viewer
    await user.open("/devices")
    await user.should_see(marker="nav-dashboards")
    with user:
        targets = [link.props["href"] for link in ElementFilter(kind=ui.link)]
    # the product logo first, then the navigation, Dashboards leading
    assert targets[:5] == ["/", "/dashboards", "/devices", "/alerts", "/rules"]
