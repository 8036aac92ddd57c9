"""GraphQL types of the contract (SPEC section 6, seed 1.4), built from models and services."""

from datetime import UTC, datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.scalars import JSON

from app.core import models
from app.graphql import arguments, loaders
from app.graphql.context import Info
from app.services.telemetry import Aggregate, Sample

# the models' enums are the GraphQL enums: one name per concept, no copy to keep in step
Role = strawberry.enum(models.Role, name="Role")
DeviceStatus = strawberry.enum(models.DeviceStatus, name="DeviceStatus")
CredentialKind = strawberry.enum(
    models.CredentialKind,
    name="CredentialKind",
    description="PASSWORD: username and password, the username being the device id; "
    "CERTIFICATE: an X.509 client certificate whose CN is the device id, signed by the "
    "platform CA.",
)


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a `Z`, e.g. `2026-11-29T01:58:46.123Z`."""
    # stored times are aware; a naive one can only come from a UTC column without zone
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_utc_or_none(moment: datetime | None) -> str | None:
    """`iso_utc`, passing None through."""
    return None if moment is None else iso_utc(moment)


def iso_utc_text(text: str) -> str:
    """An ISO 8601 time from a bus message, written as `iso_utc` writes it."""
    return iso_utc(datetime.fromisoformat(text))


def iso_utc_text_or_none(text: str | None) -> str | None:
    """`iso_utc_text`, passing None through."""
    return None if text is None else iso_utc_text(text)


@strawberry.type(description="A person or integration that signs in.")
class User:
    """A user as GraphQL shows it (never the password hash)."""

    id: strawberry.ID
    email: str
    name: str | None
    role: Role
    created_at: str
    is_active: bool = strawberry.field(description="False once an admin disabled the account.")

    @classmethod
    def from_model(cls, user: models.User) -> "User":
        """The GraphQL view of a stored user."""
        return cls(
            id=strawberry.ID(str(user.id)),
            email=user.email,
            name=user.name,
            role=models.Role(user.role),
            created_at=iso_utc(user.created_at),
            is_active=user.is_active,
        )


@strawberry.type(description="The result of `login`: a bearer token and who it is for.")
class AuthPayload:
    """A token for the `Authorization: Bearer` header and its user."""

    token: str
    user: User


@strawberry.type(description="One stored value of a metric; `unit` as the device sent it.")
class TelemetryPoint:
    """A value at a time (ISO 8601 UTC)."""

    time: str
    value: float
    unit: str | None
    # an extension of the seed type: a subscriber needs it, a series already names it
    metric_name: str | None = strawberry.field(
        default=None, description="The metric; set in `telemetryReceived`, null in series."
    )

    @classmethod
    def from_sample(cls, sample: Sample) -> "TelemetryPoint":
        """The GraphQL view of a stored value."""
        return cls(time=iso_utc(sample.time), value=sample.value, unit=sample.unit)

    @classmethod
    def from_payload(cls, point: dict[str, Any]) -> "TelemetryPoint":
        """The GraphQL view of one point of a bus telemetry message."""
        return cls(
            time=iso_utc_text(point["time"]),
            value=float(point["value"]),
            unit=point.get("unit"),
            metric_name=point["metric"],
        )


@strawberry.type(description="The stored values of one metric in a time range, oldest first.")
class TelemetrySeries:
    """A metric's name and its points."""

    metric_name: str
    points: list[TelemetryPoint]


@strawberry.type(description="Statistics of one time bucket; `bucket` is its start.")
class TelemetryAggregation:
    """Average, minimum, maximum and count of the values in one bucket."""

    bucket: str
    avg: float
    min: float
    max: float
    count: int

    @classmethod
    def from_aggregate(cls, aggregate: Aggregate) -> "TelemetryAggregation":
        """The GraphQL view of a bucket's statistics."""
        return cls(
            bucket=iso_utc(aggregate.bucket),
            avg=aggregate.avg,
            min=aggregate.min,
            max=aggregate.max,
            count=aggregate.count,
        )


@strawberry.type(description="A live broker credential of a device; never its secret.")
class DeviceCredentialInfo:
    """What identifies a credential: its kind, when it was issued, its fingerprint."""

    kind: CredentialKind
    created_at: str
    fingerprint: str = strawberry.field(
        description="CERTIFICATE: SHA-256 of the certificate (colon-separated hex); PASSWORD: "
        "a short hash telling one password from the next."
    )
    expires_at: str | None = strawberry.field(
        description="When the certificate expires; null for a password."
    )

    @classmethod
    def from_model(cls, credential: models.DeviceCredential) -> "DeviceCredentialInfo":
        """The GraphQL view of a stored credential."""
        return cls(
            kind=models.CredentialKind(credential.kind),
            created_at=iso_utc(credential.created_at),
            fingerprint=credential.fingerprint,
            expires_at=iso_utc_or_none(credential.expires_at),
        )


@strawberry.type(description="A physical or simulated thing that publishes telemetry.")
class Device:
    """A device as GraphQL shows it."""

    id: strawberry.ID
    name: str
    type: str
    status: DeviceStatus
    metadata: JSON | None
    last_seen_at: str | None
    created_at: str
    updated_at: str
    config: JSON | None = strawberry.field(
        description="The configuration last pushed with `updateDeviceConfig` (retained on "
        "devices/{id}/config); null when none was."
    )
    rate_limited_at: str | None = strawberry.field(
        default=None,
        description="The last time ingest refused a message of this device for its rate "
        "limit (noted at most once a minute); null when it never did.",
    )

    @classmethod
    def from_model(cls, device: models.Device) -> "Device":
        """The GraphQL view of a stored device."""
        return cls(
            id=strawberry.ID(str(device.id)),
            name=device.name,
            type=device.type,
            status=models.DeviceStatus(device.status),
            metadata=device.metadata_,
            last_seen_at=iso_utc_or_none(device.last_seen_at),
            created_at=iso_utc(device.created_at),
            updated_at=iso_utc(device.updated_at),
            config=device.config,
            rate_limited_at=iso_utc_or_none(device.rate_limited_at),
        )

    @classmethod
    def from_payload(cls, device: dict[str, Any]) -> "Device":
        """The GraphQL view of a device as bus messages carry it (no database query)."""
        return cls(
            id=strawberry.ID(device["id"]),
            name=device["name"],
            type=device["type"],
            status=models.DeviceStatus(device["status"]),
            metadata=device.get("metadata"),
            last_seen_at=iso_utc_text_or_none(device.get("last_seen_at")),
            created_at=iso_utc_text(device["created_at"]),
            updated_at=iso_utc_text(device["updated_at"]),
            config=device.get("config"),
            rate_limited_at=iso_utc_text_or_none(device.get("rate_limited_at")),
        )

    @strawberry.field(
        description="The metrics this device has reported, sorted by name; at most the "
        "server's page size of them (`deviceMetrics` pages through more)."
    )
    async def metrics(self, info: Info) -> list[str]:
        """The device's metric names (batched across the devices of one request)."""
        load = loaders.metric_names(info.context.settings.max_page_size)
        return await info.context.loader(load).load(str(self.id))

    @strawberry.field(description="The newest value of one metric, or null when it has none.")
    async def latest(self, info: Info, metric_name: str) -> TelemetryPoint | None:
        """The newest value of `metricName` (batched across the devices of one request)."""
        name = arguments.metric_name(metric_name)
        found = await info.context.loader(loaders.latest_samples).load((str(self.id), name))
        return None if found is None else TelemetryPoint.from_sample(found)

    @strawberry.field(description="The device's live broker credentials (never a secret).")
    async def credentials(self, info: Info) -> list[DeviceCredentialInfo]:
        """What the device may connect with (batched across the devices of one request)."""
        found = await info.context.loader(loaders.device_credentials).load(str(self.id))
        return [DeviceCredentialInfo.from_model(credential) for credential in found]


@strawberry.enum(description="What happened to a device.")
class DeviceEventType(Enum):
    """The kinds of device events the bus carries."""

    CREATED = "CREATED"
    UPDATED = "UPDATED"
    DELETED = "DELETED"
    STATUS_CHANGED = "STATUS_CHANGED"


@strawberry.type(description="A device as it was right after a change; `timestamp` is ISO UTC.")
class DeviceEvent:
    """One device event of `deviceEvents`."""

    type: DeviceEventType
    device: Device
    timestamp: str

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> "DeviceEvent":
        """The GraphQL view of an `iot:device:events` message."""
        return cls(
            type=DeviceEventType(message["type"]),
            device=Device.from_payload(message["device"]),
            timestamp=iso_utc_text(message["at"]),
        )


@strawberry.type(description="The outcome of a delete mutation.")
class DeleteResult:
    """Which thing was deleted."""

    success: bool
    id: strawberry.ID


@strawberry.input(description="A new device; `type` is 1-100 characters of a-z, 0-9, _ and -.")
class CreateDeviceInput:
    """Arguments of `createDevice`."""

    name: str
    type: str
    # UNSET rather than None keeps `= null` out of the SDL, as in the contract
    metadata: JSON | None = strawberry.UNSET


@strawberry.input(
    description="Changes to a device. An absent field stays as it is; `metadata: null` "
    "clears it to {}; `name`/`type` cannot be null."
)
class UpdateDeviceInput:
    """Arguments of `updateDevice`; UNSET (absent) differs from an explicit null."""

    id: strawberry.ID
    name: str | None = strawberry.UNSET
    type: str | None = strawberry.UNSET
    metadata: JSON | None = strawberry.UNSET


@strawberry.input(
    description="Changes to a user (ADMIN only). An absent field stays as it is; "
    "`name: null` clears the name; `role`, `isActive` and `password` cannot be null."
)
class UpdateUserInput:
    """Arguments of `updateUser`; UNSET (absent) differs from an explicit null."""

    id: strawberry.ID
    name: str | None = strawberry.UNSET
    role: Role | None = strawberry.UNSET
    is_active: bool | None = strawberry.UNSET
    password: str | None = strawberry.UNSET


def given(value: Any) -> bool:
    """True when an input field was sent (even as null), False when it was left out."""
    return value is not strawberry.UNSET
