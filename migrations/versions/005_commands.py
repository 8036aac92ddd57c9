"""Device commands with their whole life, and the configuration pushed to each device.

Revision ID: 005
Revises: 004

`device_commands` follows the seed's 4.2 statuses (PENDING, SENT, ACKNOWLEDGED, EXECUTED,
FAILED, EXPIRED) plus CANCELLED; an idempotency key is unique per device. `rule_id` and
`alert_id` record a command a rule sent when it fired. `devices.config` is the
configuration last pushed (retained on `devices/{id}/config`); `config_published_at`
behind `config_updated_at` means it still has to go out.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "005"
down_revision = "004"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
STATUSES = ("PENDING", "SENT", "ACKNOWLEDGED", "EXECUTED", "FAILED", "EXPIRED", "CANCELLED")


def upgrade() -> None:
    """Create `device_commands`; give devices a pushed configuration."""
    op.create_table(
        "device_commands",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "device_id",
            sa.Uuid(),
            sa.ForeignKey("devices.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default="PENDING"),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("created_by", sa.Uuid(), sa.ForeignKey("users.id", ondelete="SET NULL")),
        sa.Column("rule_id", sa.Uuid(), sa.ForeignKey("alert_rules.id", ondelete="SET NULL")),
        sa.Column("alert_id", sa.Uuid(), sa.ForeignKey("alerts.id", ondelete="SET NULL")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True)),
        sa.Column("executed_at", sa.DateTime(timezone=True)),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("result", JSON),
        sa.CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in STATUSES) + ")",
            name="ck_device_commands_status",
        ),
        sa.UniqueConstraint("device_id", "idempotency_key", name="uq_device_commands_idempotency"),
    )
    op.create_index(
        "idx_device_commands_device", "device_commands", ["device_id", sa.text("created_at DESC")]
    )
    op.create_index("idx_device_commands_status", "device_commands", ["status", "expires_at"])
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("config", JSON))
        batch.add_column(sa.Column("config_updated_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("config_published_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    """Drop `device_commands` and the devices' configuration."""
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("config_published_at")
        batch.drop_column("config_updated_at")
        batch.drop_column("config")
    op.drop_table("device_commands")
