"""Alert rules, alerts and notification deliveries (the seed's 004, plus the rule text).

Revision ID: 004
Revises: 003

As the seed's 004, with these differences, all from SPEC section 7:
- `alert_rules.expression` holds the whole rule in the rule language; `metric_name`,
  `condition` and `threshold` are derived from it and are NULL when the rule's condition
  is not a single comparison;
- at most one open (not RESOLVED) alert per (rule, device): a partial unique index, so
  concurrent evaluations can never open a second one;
- `alerts.resolution` keeps the message given when resolving;
- `notification_deliveries` records every notification and its attempts.
"""

import sqlalchemy as sa
from alembic import op

revision = "004"
down_revision = "003"
branch_labels = None
depends_on = None

SEVERITY = sa.Enum("INFO", "WARNING", "CRITICAL", name="alert_severity")
STATUS = sa.Enum("ACTIVE", "ACKNOWLEDGED", "RESOLVED", name="alert_status")


def upgrade() -> None:
    """Create the alerting tables."""
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("device_id", sa.Uuid(), sa.ForeignKey("devices.id", ondelete="CASCADE")),
        sa.Column("device_type", sa.String(100)),
        sa.Column("metric_name", sa.String(100)),
        sa.Column("condition", sa.String(20)),
        sa.Column("threshold", sa.Float(precision=53)),
        sa.Column("severity", SEVERITY, nullable=False, server_default="WARNING"),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("cooldown_minutes", sa.Integer(), nullable=False, server_default="5"),
        sa.Column("expression", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Uuid(), sa.ForeignKey("users.id")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("rule_id", sa.Uuid(), sa.ForeignKey("alert_rules.id", ondelete="SET NULL")),
        sa.Column("device_id", sa.Uuid(), sa.ForeignKey("devices.id", ondelete="CASCADE")),
        sa.Column("severity", SEVERITY, nullable=False),
        sa.Column("status", STATUS, nullable=False, server_default="ACTIVE"),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("message", sa.Text()),
        sa.Column("metric_name", sa.String(100)),
        sa.Column("metric_value", sa.Float(precision=53)),
        sa.Column("threshold", sa.Float(precision=53)),
        sa.Column("triggered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True)),
        sa.Column("acknowledged_by", sa.Uuid(), sa.ForeignKey("users.id")),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        sa.Column("resolved_by", sa.Uuid(), sa.ForeignKey("users.id")),
        sa.Column("resolution", sa.Text()),
    )
    op.create_index("idx_alerts_device", "alerts", ["device_id", sa.text("triggered_at DESC")])
    op.create_index("idx_alerts_status", "alerts", ["status", sa.text("triggered_at DESC")])
    op.create_index("idx_alert_rules_device", "alert_rules", ["device_id"])
    op.create_index("idx_alert_rules_enabled", "alert_rules", ["enabled"])
    open_only = sa.text("status <> 'RESOLVED'")
    op.create_index(
        "uq_alerts_one_open_per_rule_device",
        "alerts",
        ["rule_id", "device_id"],
        unique=True,
        postgresql_where=open_only,
        sqlite_where=open_only,
    )
    op.create_table(
        "notification_deliveries",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "alert_id", sa.Uuid(), sa.ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("target", sa.String(2048), nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default="PENDING"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text()),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("channel IN ('email', 'webhook')", name="ck_deliveries_channel"),
        sa.CheckConstraint("status IN ('PENDING', 'SENT', 'FAILED')", name="ck_deliveries_status"),
    )
    op.create_index("idx_deliveries_due", "notification_deliveries", ["status", "next_attempt_at"])


def downgrade() -> None:
    """Drop the alerting tables and their enum types."""
    op.drop_table("notification_deliveries")
    op.drop_table("alerts")
    op.drop_table("alert_rules")
    STATUS.drop(op.get_bind(), checkfirst=True)
    SEVERITY.drop(op.get_bind(), checkfirst=True)
