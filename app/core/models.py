"""Tables and their data shapes; one family per entity (Base / Create / Update / table)."""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, String
from sqlalchemy import Enum as SAEnum
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

# JSONB on PostgreSQL (indexable, compact), plain JSON text elsewhere
JSONDocument = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A stored time as UTC: SQLite hands back naive datetimes, and everything is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Role(StrEnum):
    """What a user may do: VIEWER reads, OPERATOR acts on devices, ADMIN manages."""

    ADMIN = "ADMIN"
    OPERATOR = "OPERATOR"
    VIEWER = "VIEWER"


ROLE_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


class DeviceStatus(StrEnum):
    """Connectivity as last reported by the device or inferred from silence."""

    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"
    UNKNOWN = "UNKNOWN"


class User(SQLModel, table=True):
    """An operator, integrator or admin who signs in to the dashboard or GraphQL."""

    __tablename__ = "users"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    email: str = Field(sa_column=Column(String(255), unique=True, nullable=False))
    name: str | None = Field(default=None, max_length=255)
    password_hash: str = Field(max_length=255)
    role: Role = Field(sa_column=Column(String(20), nullable=False))
    is_active: bool = True
    # the dashboard `/` shows this user; None: the seeded fleet overview
    home_dashboard_id: uuid.UUID | None = Field(
        default=None, foreign_key="dashboards.id", ondelete="SET NULL"
    )
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


@dataclass(frozen=True, kw_only=True)
class UserCreate:
    """What it takes to create a user (validated by the users service)."""

    email: str
    password: str
    role: Role = Role.VIEWER
    name: str | None = None


@dataclass(frozen=True, kw_only=True)
class UserUpdate:
    """Fields an admin may change on a user; None leaves a field as it is."""

    name: str | None = None
    role: Role | None = None
    is_active: bool | None = None
    password: str | None = None


class Device(SQLModel, table=True):
    """A physical or simulated thing that publishes telemetry."""

    __tablename__ = "devices"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(max_length=255)
    type: str = Field(max_length=100)
    status: DeviceStatus = Field(
        default=DeviceStatus.UNKNOWN, sa_column=Column(String(20), nullable=False)
    )
    # `metadata` is reserved by SQLAlchemy's declarative base, hence the trailing underscore
    metadata_: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column("metadata", JSONDocument, nullable=False)
    )
    last_seen_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    # the configuration last pushed (retained on devices/{id}/config); published when
    # config_published_at has caught up with config_updated_at
    config: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONDocument))
    config_updated_at: datetime | None = None
    config_published_at: datetime | None = None
    # the last time ingest refused a message of this device for its rate limit
    rate_limited_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class DeviceCreate:
    """What it takes to register a device (validated by the devices service)."""

    name: str
    id: uuid.UUID | None = None  # chosen by the platform unless provisioning brings one
    type: str
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class DeviceUpdate:
    """Fields that may change on a device; None leaves a field as it is."""

    name: str | None = None
    type: str | None = None
    metadata: dict[str, Any] | None = None


class TelemetryPoint(SQLModel, table=True):
    """One value of one metric of one device at one time (the seed's `device_telemetry`)."""

    __tablename__ = "device_telemetry"

    device_id: uuid.UUID = Field(primary_key=True, foreign_key="devices.id", ondelete="CASCADE")
    metric_name: str = Field(primary_key=True, max_length=100)
    time: datetime = Field(primary_key=True)
    value: float
    unit: str | None = Field(default=None, max_length=50)
    metadata_: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column("metadata", JSONDocument, nullable=False)
    )


class TelemetryHourly(SQLModel, table=True):
    """Hourly rollup of one metric of one device (a continuous aggregate on TimescaleDB)."""

    __tablename__ = "telemetry_hourly"

    device_id: uuid.UUID = Field(primary_key=True)
    metric_name: str = Field(primary_key=True, max_length=100)
    bucket: datetime = Field(primary_key=True)
    avg_value: float
    min_value: float
    max_value: float
    sample_count: int


class TelemetryRollupPending(SQLModel, table=True):
    """An hour whose rollup must be recomputed because points landed in it."""

    __tablename__ = "telemetry_rollup_pending"

    device_id: uuid.UUID = Field(primary_key=True)
    metric_name: str = Field(primary_key=True, max_length=100)
    bucket: datetime = Field(primary_key=True)


class AlertSeverity(StrEnum):
    """How urgent an alert is (the rule language's info / warning / critical)."""

    INFO = "INFO"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


class AlertStatus(StrEnum):
    """Where an alert is in its life: open, seen by an operator, or over."""

    ACTIVE = "ACTIVE"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    RESOLVED = "RESOLVED"


_SEVERITY_TYPE = SAEnum(
    AlertSeverity, name="alert_severity", values_callable=lambda e: [m.value for m in e]
)
_STATUS_TYPE = SAEnum(
    AlertStatus, name="alert_status", values_callable=lambda e: [m.value for m in e]
)


class AlertRule(SQLModel, table=True):
    """A rule in the rule language; the seed's structured columns are derived from it."""

    __tablename__ = "alert_rules"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(max_length=255)
    description: str | None = None
    device_id: uuid.UUID | None = Field(default=None, foreign_key="devices.id", ondelete="CASCADE")
    device_type: str | None = Field(default=None, max_length=100)
    metric_name: str | None = Field(default=None, max_length=100)
    condition: str | None = Field(default=None, max_length=20)
    threshold: float | None = None
    severity: AlertSeverity = Field(
        default=AlertSeverity.WARNING, sa_column=Column(_SEVERITY_TYPE, nullable=False)
    )
    enabled: bool = True
    cooldown_minutes: int = 5
    expression: str
    created_by: uuid.UUID | None = Field(default=None, foreign_key="users.id")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Alert(SQLModel, table=True):
    """A rule that fired on a device, and what operators did about it."""

    __tablename__ = "alerts"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    rule_id: uuid.UUID | None = Field(
        default=None, foreign_key="alert_rules.id", ondelete="SET NULL"
    )
    device_id: uuid.UUID | None = Field(default=None, foreign_key="devices.id", ondelete="CASCADE")
    severity: AlertSeverity = Field(sa_column=Column(_SEVERITY_TYPE, nullable=False))
    status: AlertStatus = Field(
        default=AlertStatus.ACTIVE, sa_column=Column(_STATUS_TYPE, nullable=False)
    )
    title: str = Field(max_length=255)
    message: str | None = None
    metric_name: str | None = Field(default=None, max_length=100)
    metric_value: float | None = None
    threshold: float | None = None
    triggered_at: datetime = Field(default_factory=utcnow)
    acknowledged_at: datetime | None = None
    acknowledged_by: uuid.UUID | None = Field(default=None, foreign_key="users.id")
    resolved_at: datetime | None = None
    resolved_by: uuid.UUID | None = Field(default=None, foreign_key="users.id")
    resolution: str | None = None
    # the id of the MQTT batch (or tick) that fired it, as its log lines carry it (SPEC 11)
    correlation_id: str | None = Field(default=None, max_length=128)


class NotificationDelivery(SQLModel, table=True):
    """One notification of an alert (an email or a webhook) and its attempts."""

    __tablename__ = "notification_deliveries"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    alert_id: uuid.UUID = Field(foreign_key="alerts.id", ondelete="CASCADE")
    channel: str = Field(max_length=20)
    target: str = Field(max_length=2048)
    status: str = Field(default="PENDING", max_length=20)
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class CommandStatus(StrEnum):
    """Where a command is (seed 4.2, plus CANCELLED): each step is what really happened.

    PENDING: stored, not yet handed to the broker (the device is offline, or it is about to
    go). SENT: the broker acknowledged the publish. ACKNOWLEDGED, EXECUTED, FAILED: what
    the device answered. EXPIRED: no final answer before `expires_at`. CANCELLED: an
    operator withdrew it before the device acknowledged it.
    """

    PENDING = "PENDING"
    SENT = "SENT"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    EXECUTED = "EXECUTED"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"


class DeviceCommand(SQLModel, table=True):
    """A command for a device (the seed's `device_commands`)."""

    __tablename__ = "device_commands"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    device_id: uuid.UUID = Field(foreign_key="devices.id", ondelete="CASCADE")
    action: str = Field(max_length=100)
    params: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONDocument, nullable=False)
    )
    status: CommandStatus = Field(
        default=CommandStatus.PENDING, sa_column=Column(String(20), nullable=False)
    )
    idempotency_key: str | None = Field(default=None, max_length=255)
    created_by: uuid.UUID | None = Field(default=None, foreign_key="users.id", ondelete="SET NULL")
    rule_id: uuid.UUID | None = Field(
        default=None, foreign_key="alert_rules.id", ondelete="SET NULL"
    )
    alert_id: uuid.UUID | None = Field(default=None, foreign_key="alerts.id", ondelete="SET NULL")
    # the sending request's id, or its alert's correlation id, as log lines carry it
    correlation_id: str | None = Field(default=None, max_length=128)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    sent_at: datetime | None = None
    acknowledged_at: datetime | None = None
    executed_at: datetime | None = None
    expires_at: datetime
    error: str | None = None
    result: Any | None = Field(default=None, sa_column=Column(JSONDocument))


class CredentialKind(StrEnum):
    """How a device proves who it is to the broker (SPEC 8.1)."""

    PASSWORD = "PASSWORD"
    CERTIFICATE = "CERTIFICATE"


class DeviceCredential(SQLModel, table=True):
    """One credential a device was issued; never its secret, only what verifies it.

    `device_id` has no foreign key: a revoked certificate must stay on the revocation
    list after its device is deleted.
    """

    __tablename__ = "device_credentials"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    device_id: uuid.UUID = Field(index=True)
    kind: CredentialKind = Field(sa_column=Column(String(20), nullable=False))
    # PASSWORD: Mosquitto's `$7$` PBKDF2-SHA512 hash of the password
    password_hash: str | None = Field(default=None, max_length=255)
    # CERTIFICATE: the serial number (decimal) and the certificate itself (public)
    serial: str | None = Field(default=None, max_length=64)
    certificate_pem: str | None = None
    authority_id: int | None = None  # the CA that signed the certificate
    fingerprint: str = Field(max_length=128)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


class CertificateAuthority(SQLModel, table=True):
    """The platform's CA that signs device and broker certificates (newest one issues)."""

    __tablename__ = "certificate_authorities"

    id: int | None = Field(default=None, primary_key=True)
    certificate_pem: str
    private_key_pem: str
    created_at: datetime = Field(default_factory=utcnow)
    # a retired CA is no longer trusted by the broker (after a rotation)
    retired_at: datetime | None = None


class ServiceAccount(SQLModel, table=True):
    """An MQTT login of a platform process (ingest, command dispatcher, simulator).

    The password is kept readable: every platform process reads it here to connect.
    """

    __tablename__ = "broker_service_accounts"

    username: str = Field(primary_key=True, max_length=100)
    password: str = Field(max_length=255)
    password_hash: str = Field(max_length=255)
    created_at: datetime = Field(default_factory=utcnow)


class DeviceTypeSettings(SQLModel, table=True):
    """Settings shared by every device of one type; None falls back to the environment."""

    __tablename__ = "device_type_settings"

    type: str = Field(primary_key=True, max_length=100)
    rate_limit: str | None = Field(default=None, max_length=50)
    rate_burst: int | None = None
    updated_at: datetime = Field(default_factory=utcnow)


class DashboardVisibility(StrEnum):
    """PRIVATE: its owner (and ADMINs); SHARED: every signed-in user."""

    PRIVATE = "PRIVATE"
    SHARED = "SHARED"


class Dashboard(SQLModel, table=True):
    """A dashboard: its spec (app/dashboards/spec.py) and who may see and change it."""

    __tablename__ = "dashboards"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(max_length=200)
    description: str | None = None
    visibility: DashboardVisibility = Field(
        default=DashboardVisibility.PRIVATE, sa_column=Column(String(10), nullable=False)
    )
    spec: dict[str, Any] = Field(sa_column=Column(JSONDocument, nullable=False))
    owner_id: uuid.UUID | None = Field(default=None, foreign_key="users.id", ondelete="SET NULL")
    # the file IOTDECK_DASHBOARDS_DIR provisioned it from; None: made in the app
    provisioned_from: str | None = Field(default=None, max_length=1000, unique=True)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @property
    def provisioned(self) -> bool:
        """True when it comes from a file: read-only in the app."""
        return self.provisioned_from is not None
