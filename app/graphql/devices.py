"""Devices over GraphQL: listing, counting, reading, and the ADMIN's create/update/delete."""

import strawberry

from app.core.errors import ValidationError
from app.core.models import DeviceCreate, DeviceUpdate
from app.graphql import arguments
from app.graphql.context import Info, in_session
from app.graphql.permissions import IsAdmin, IsAuthenticated, requires
from app.graphql.types import (
    CreateDeviceInput,
    DeleteResult,
    Device,
    DeviceStatus,
    UpdateDeviceInput,
    given,
)
from app.services import devices
from app.services.devices import DeviceFilter

DEFAULT_LIMIT = 100


def _device_update(data: UpdateDeviceInput) -> DeviceUpdate:
    """The service update for an input: absent stays, `metadata: null` clears, else refused."""
    for field in ("name", "type"):
        if given(getattr(data, field)) and getattr(data, field) is None:
            raise ValidationError(field, "must not be null (leave it out to keep it)")
    metadata = data.metadata if given(data.metadata) else None
    return DeviceUpdate(
        name=data.name if given(data.name) else None,
        type=data.type if given(data.type) else None,
        # the service reads None as "unchanged"; an explicit null asks for no metadata
        metadata={} if given(data.metadata) and metadata is None else metadata,
    )


def _filter(type_: str | None, status: DeviceStatus | None, search: str | None) -> DeviceFilter:
    """The service filter for the listing arguments; absent and null both mean "any"."""
    return DeviceFilter(
        type=type_ if given(type_) else None,
        status=status if given(status) else None,
        search=search if given(search) else None,
    )


@strawberry.type
class DevicesQuery:
    """Read access to devices, for every signed-in role."""

    @strawberry.field(
        description="Devices by name, filtered; `limit` is 1 to the server's page size.",
        extensions=requires(IsAuthenticated()),
    )
    async def devices(
        self,
        info: Info,
        *,
        type: str | None = strawberry.UNSET,  # GraphQL's name, shadowing the builtin here only
        status: DeviceStatus | None = strawberry.UNSET,
        search: str | None = strawberry.UNSET,
        limit: int | None = DEFAULT_LIMIT,
        offset: int | None = 0,
    ) -> list[Device]:
        """One page of the devices matching every given filter."""
        where = _filter(type, status, search)
        max_limit = info.context.settings.max_page_size
        count = arguments.page_limit(limit, DEFAULT_LIMIT, max_limit)
        page_offset = 0 if offset is None else offset
        found = await in_session(
            lambda session: devices.list_devices(
                session=session,
                where=where,
                limit=count,
                offset=page_offset,
                max_limit=max_limit,
            )
        )
        return [Device.from_model(device) for device in found]

    @strawberry.field(
        description="How many devices match the filters (for paging).",
        extensions=requires(IsAuthenticated()),
    )
    async def devices_count(
        self,
        *,
        type: str | None = strawberry.UNSET,  # GraphQL's name, shadowing the builtin here only
        status: DeviceStatus | None = strawberry.UNSET,
        search: str | None = strawberry.UNSET,
    ) -> int:
        """The number of devices `devices` would page through."""
        where = _filter(type, status, search)
        return await in_session(lambda session: devices.count_devices(session=session, where=where))

    @strawberry.field(
        description="The device with this id, or null.", extensions=requires(IsAuthenticated())
    )
    async def device(self, id: strawberry.ID) -> Device | None:
        """One device, or None when no device has this id."""
        found = await in_session(lambda session: devices.get_device(session=session, device_id=id))
        return None if found is None else Device.from_model(found)


@strawberry.type
class DevicesMutation:
    """Device management, ADMIN only."""

    @strawberry.mutation(description="Register a device (ADMIN).", extensions=requires(IsAdmin()))
    async def create_device(self, input: CreateDeviceInput) -> Device:
        """The new device; it is UNKNOWN until it speaks."""
        metadata = input.metadata if given(input.metadata) else None
        data = DeviceCreate(name=input.name, type=input.type, metadata=metadata)
        created = await in_session(
            lambda session: devices.create_device(session=session, data=data)
        )
        return Device.from_model(created)

    @strawberry.mutation(
        description="Change a device's name, type or metadata (ADMIN).",
        extensions=requires(IsAdmin()),
    )
    async def update_device(self, input: UpdateDeviceInput) -> Device:
        """The device after the change; nothing changes when any field is refused."""
        data = _device_update(input)
        updated = await in_session(
            lambda session: devices.update_device(session=session, device_id=input.id, data=data)
        )
        return Device.from_model(updated)

    @strawberry.mutation(description="Remove a device (ADMIN).", extensions=requires(IsAdmin()))
    async def delete_device(self, id: strawberry.ID) -> DeleteResult:
        """The id of the removed device; NOT_FOUND when there is none."""
        deleted = await in_session(
            lambda session: devices.delete_device(session=session, device_id=id)
        )
        return DeleteResult(success=True, id=strawberry.ID(str(deleted)))
