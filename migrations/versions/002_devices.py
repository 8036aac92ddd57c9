"""Devices with type, status, metadata and last contact.

Revision ID: 002
Revises: 001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "002"
down_revision = "001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create `devices` and its lookup indexes."""
    op.create_table(
        "devices",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default="UNKNOWN"),
        sa.Column("metadata", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('ONLINE', 'OFFLINE', 'UNKNOWN')", name="ck_devices_status"),
    )
    op.create_index("ix_devices_type", "devices", ["type"])
    op.create_index("ix_devices_status", "devices", ["status"])
    op.create_index("ix_devices_name", "devices", ["name"])


def downgrade() -> None:
    """Drop `devices`."""
    op.drop_table("devices")
