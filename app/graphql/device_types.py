"""Settings per device type over GraphQL: the ingest rate limit (ADMINs change it)."""

import strawberry
from sqlmodel import Session

from app.core import models
from app.core.config import Settings
from app.graphql.context import Info, in_session
from app.graphql.permissions import IsAdmin, IsAuthenticated, requires
from app.graphql.types import given
from app.services import device_types


@strawberry.type(
    description="Settings shared by the devices of one type; a null override falls back to "
    "the server's default."
)
class DeviceTypeSettings:
    """A device type's rate limit overrides and the limit in force."""

    type: str
    rate_limit: str | None = strawberry.field(
        description="Messages a device of this type may publish, in `limits` notation "
        "(`10/second`, `600/minute`); null: IOTDECK_DEVICE_RATE_LIMIT."
    )
    rate_burst: int | None = strawberry.field(
        description="Messages a device may publish at once before the rate applies; null: "
        "IOTDECK_DEVICE_RATE_BURST."
    )
    effective_rate_limit: str = strawberry.field(description="The rate limit in force.")
    effective_rate_burst: int = strawberry.field(description="The burst in force.")

    @classmethod
    def from_model(
        cls, stored: models.DeviceTypeSettings, defaults: Settings
    ) -> "DeviceTypeSettings":
        """The GraphQL view of a type's settings, the server's defaults filling the gaps."""
        rate_limit, rate_burst = stored.rate_limit, stored.rate_burst
        return cls(
            type=stored.type,
            rate_limit=rate_limit,
            rate_burst=rate_burst,
            effective_rate_limit=defaults.device_rate_limit if rate_limit is None else rate_limit,
            effective_rate_burst=defaults.device_rate_burst if rate_burst is None else rate_burst,
        )


@strawberry.type
class DeviceTypesQuery:
    """Read access to device type settings, for every signed-in role."""

    @strawberry.field(
        description="The settings of a device type (defaults when none are stored).",
        extensions=requires(IsAuthenticated()),
    )
    async def device_type_settings(
        self,
        info: Info,
        type: str,  # GraphQL's name, shadowing the builtin here only
    ) -> DeviceTypeSettings:
        """The type's overrides and the limits in force."""
        stored = await in_session(
            lambda session: device_types.get_type_settings(session=session, type=type)
        )
        return DeviceTypeSettings.from_model(stored, info.context.settings)


@strawberry.type
class DeviceTypesMutation:
    """Device type settings, ADMIN only."""

    @strawberry.mutation(
        description="Override the rate limit of a device type (ADMIN): an argument left out "
        "stays, null goes back to the server's default; ingest applies it within 30 s.",
        extensions=requires(IsAdmin()),
    )
    async def update_device_type_settings(
        self,
        info: Info,
        type: str,  # GraphQL's name, shadowing the builtin here only
        rate_limit: str | None = strawberry.UNSET,
        rate_burst: int | None = strawberry.UNSET,
    ) -> DeviceTypeSettings:
        """The settings after the change; nothing changes when any argument is refused."""

        def change(session: Session) -> models.DeviceTypeSettings:
            current = device_types.get_type_settings(session=session, type=type)
            return device_types.set_type_settings(
                session=session,
                type=type,
                rate_limit=rate_limit if given(rate_limit) else current.rate_limit,
                rate_burst=rate_burst if given(rate_burst) else current.rate_burst,
            )

        return DeviceTypeSettings.from_model(await in_session(change), info.context.settings)
