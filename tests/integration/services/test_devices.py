"""Devices service contract, on SQLite and PostgreSQL alike."""

import pytest
from sqlmodel import Session

from app.core.errors import NotFoundError, ValidationError
from app.core.models import DeviceCreate, DeviceStatus, DeviceUpdate
from app.services import devices
from app.services.devices import DeviceFilter

pytestmark = pytest.mark.all_backends


def _make(session: Session, name: str, type_: str = "thermostat", **metadata: object):
    data = DeviceCreate(name=name, type=type_, metadata=metadata or None)
    return devices.create_device(session=session, data=data)


def test_created_device_reads_back_with_defaults(session: Session) -> None:
    device = _make(session, "  Boiler  ", site="Lyon")
    session.commit()
    stored = devices.get_device(session=session, device_id=str(device.id))
    assert stored is not None
    assert (stored.name, stored.type, stored.status) == ("Boiler", "thermostat", "UNKNOWN")
    assert stored.metadata_ == {"site": "Lyon"}
    assert stored.created_at.tzinfo is not None


@pytest.mark.parametrize(
    ("field", "data"),
    [
        ("name", DeviceCreate(name="", type="thermostat")),
        ("name", DeviceCreate(name="x" * 256, type="thermostat")),
        ("type", DeviceCreate(name="ok", type="Thermostat")),
        ("type", DeviceCreate(name="ok", type="x" * 101)),
        ("type", DeviceCreate(name="ok", type="")),
        ("metadata", DeviceCreate(name="ok", type="t", metadata=["not", "an", "object"])),
        ("metadata", DeviceCreate(name="ok", type="t", metadata={"blob": "x" * 17000})),
    ],
)
def test_bad_input_names_the_field_and_stores_nothing(
    session: Session, field: str, data: DeviceCreate
) -> None:
    with pytest.raises(ValidationError) as caught:
        devices.create_device(session=session, data=data)
    assert caught.value.field == field
    session.rollback()
    assert devices.count_devices(session=session) == 0


def test_list_filters_search_and_pages(session: Session) -> None:
    for index in range(5):
        _make(session, f"Thermo {index}")
    _make(session, "Air 1", "air_quality")
    session.commit()
    by_type = devices.list_devices(session=session, where=DeviceFilter(type="air_quality"))
    assert [d.name for d in by_type] == ["Air 1"]
    searched = devices.list_devices(session=session, where=DeviceFilter(search="THERMO 3"))
    assert [d.name for d in searched] == ["Thermo 3"]
    page = devices.list_devices(session=session, limit=2, offset=2)
    assert [d.name for d in page] == ["Thermo 1", "Thermo 2"]
    unknown = DeviceFilter(status=DeviceStatus.UNKNOWN)
    assert devices.count_devices(session=session, where=unknown) == 6
    online = DeviceFilter(status=DeviceStatus.ONLINE)
    assert devices.count_devices(session=session, where=online) == 0
    assert devices.device_types(session=session) == ["air_quality", "thermostat"]


def test_search_treats_wildcards_literally(session: Session) -> None:
    _make(session, "100% humidity")
    _make(session, "plain")
    session.commit()
    found = devices.list_devices(session=session, where=DeviceFilter(search="%"))
    assert [d.name for d in found] == ["100% humidity"]


def test_paging_bounds_are_checked(session: Session) -> None:
    with pytest.raises(ValidationError) as caught:
        devices.list_devices(session=session, limit=5000)
    assert caught.value.field == "limit"
    with pytest.raises(ValidationError) as caught:
        devices.list_devices(session=session, offset=-1)
    assert caught.value.field == "offset"


def test_update_checks_every_field_before_changing_any(session: Session) -> None:
    device = _make(session, "Before", site="A")
    session.commit()
    bad = DeviceUpdate(name="After", type="BAD TYPE")
    with pytest.raises(ValidationError) as caught:
        devices.update_device(session=session, device_id=device.id, data=bad)
    assert caught.value.field == "type"
    session.rollback()
    stored = devices.get_device(session=session, device_id=device.id)
    assert stored is not None and stored.name == "Before"

    good = DeviceUpdate(name="After", metadata={"site": "B"})
    updated = devices.update_device(session=session, device_id=device.id, data=good)
    session.commit()
    assert (updated.name, updated.type, updated.metadata_) == ("After", "thermostat", {"site": "B"})
    assert updated.updated_at >= updated.created_at


def test_delete_and_missing_ids(session: Session) -> None:
    device = _make(session, "Doomed")
    session.commit()
    assert devices.delete_device(session=session, device_id=device.id) == device.id
    session.commit()
    assert devices.get_device(session=session, device_id=device.id) is None
    with pytest.raises(NotFoundError):
        devices.delete_device(session=session, device_id=device.id)
    with pytest.raises(ValidationError) as caught:
        devices.get_device(session=session, device_id="not-a-uuid")
    assert caught.value.field == "id"
