"""Device identity at the broker: credentials, the platform CA, service accounts, limits.

Revision ID: 005b
Revises: 005a

SPEC 8.1. `device_credentials` holds what verifies a device (a password hash or a
certificate) and when it was revoked; it has no foreign key to `devices`, so a deleted
device's certificate stays on the revocation list. `certificate_authorities` keeps the
platform's CA for every process (the broker, and `serve` which issues certificates).
`broker_service_accounts` are the MQTT logins of platform processes.
`device_type_settings` carries per-type rate limits; `devices.rate_limited_at` the last
time ingest refused one of the device's messages for its rate.
"""

import sqlalchemy as sa
from alembic import op

revision = "005b"
down_revision = "005a"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the identity tables; devices remember when they were rate limited."""
    op.create_table(
        "device_credentials",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("password_hash", sa.String(255)),
        sa.Column("serial", sa.String(64), unique=True),
        sa.Column("certificate_pem", sa.Text()),
        sa.Column("authority_id", sa.Integer()),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("kind IN ('PASSWORD', 'CERTIFICATE')", name="ck_credentials_kind"),
    )
    op.create_index("ix_device_credentials_device_id", "device_credentials", ["device_id"])
    # at most one live credential of each kind per device
    op.create_index(
        "uq_device_credentials_live",
        "device_credentials",
        ["device_id", "kind"],
        unique=True,
        postgresql_where=sa.text("revoked_at IS NULL"),
        sqlite_where=sa.text("revoked_at IS NULL"),
    )
    op.create_table(
        "certificate_authorities",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("certificate_pem", sa.Text(), nullable=False),
        sa.Column("private_key_pem", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "broker_service_accounts",
        sa.Column("username", sa.String(100), primary_key=True),
        sa.Column("password", sa.String(255), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "device_type_settings",
        sa.Column("type", sa.String(100), primary_key=True),
        sa.Column("rate_limit", sa.String(50)),
        sa.Column("rate_burst", sa.Integer()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("rate_limited_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    """Drop what upgrade created."""
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("rate_limited_at")
    op.drop_table("device_type_settings")
    op.drop_table("broker_service_accounts")
    op.drop_table("certificate_authorities")
    op.drop_index("uq_device_credentials_live", table_name="device_credentials")
    op.drop_index("ix_device_credentials_device_id", table_name="device_credentials")
    op.drop_table("device_credentials")
