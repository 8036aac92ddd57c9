"""Telemetry points and hourly rollups (TimescaleDB when available).

Revision ID: 003
Revises: 002

With TimescaleDB (PostgreSQL where `pg_available_extensions` lists it) this follows the
seed's 003 exactly: hypertable, retention policy, continuous aggregate `telemetry_hourly`
and its refresh policy. Without it (plain PostgreSQL, SQLite) the same names are plain
tables: `telemetry_hourly` is kept up to date by the rollup job from the buckets listed
in `telemetry_rollup_pending`, and the retention job deletes old points. The
TimescaleDB branch cannot run on the project's development machines (no extension
there); it is written to the TimescaleDB 2.x documentation and reviewed by hand.
"""

import os

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "003"
down_revision = "002"
branch_labels = None
depends_on = None


def _retention_days() -> int:
    # read directly: migrations must not depend on the application's settings object
    return int(os.environ.get("IOTDECK_RETENTION_DAYS", "90"))


def _timescaledb_available() -> bool:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    query = sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    return bind.execute(query).first() is not None


def _create_points_table() -> None:
    op.create_table(
        "device_telemetry",
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "device_id",
            sa.Uuid(),
            sa.ForeignKey("devices.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("metric_name", sa.String(100), nullable=False),
        sa.Column("value", sa.Float(precision=53), nullable=False),
        sa.Column("unit", sa.String(50)),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(JSONB(), "postgresql"),
            nullable=False,
            server_default="{}",
        ),
        # the unique key that makes a redelivered message a no-op
        sa.PrimaryKeyConstraint("device_id", "metric_name", "time", name="pk_device_telemetry"),
    )
    op.create_index(
        "idx_telemetry_device_time", "device_telemetry", ["device_id", sa.text("time DESC")]
    )
    op.create_index(
        "idx_telemetry_metric", "device_telemetry", ["metric_name", sa.text("time DESC")]
    )


def _upgrade_timescaledb() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    _create_points_table()
    op.execute("SELECT create_hypertable('device_telemetry', 'time')")
    op.execute(
        f"SELECT add_retention_policy('device_telemetry', INTERVAL '{_retention_days()} days')"
    )
    # continuous aggregates cannot be created inside a transaction block
    with op.get_context().autocommit_block():
        op.execute(
            """
            CREATE MATERIALIZED VIEW telemetry_hourly
            WITH (timescaledb.continuous) AS
            SELECT
                time_bucket('1 hour', time) AS bucket,
                device_id,
                metric_name,
                AVG(value) as avg_value,
                MIN(value) as min_value,
                MAX(value) as max_value,
                COUNT(*) as sample_count
            FROM device_telemetry
            GROUP BY bucket, device_id, metric_name
            """
        )
        op.execute(
            """
            SELECT add_continuous_aggregate_policy('telemetry_hourly',
                start_offset => INTERVAL '3 hours',
                end_offset => INTERVAL '1 hour',
                schedule_interval => INTERVAL '1 hour')
            """
        )


def _upgrade_plain() -> None:
    _create_points_table()
    op.create_table(
        "telemetry_hourly",
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "device_id",
            sa.Uuid(),
            sa.ForeignKey("devices.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("metric_name", sa.String(100), nullable=False),
        sa.Column("avg_value", sa.Float(precision=53), nullable=False),
        sa.Column("min_value", sa.Float(precision=53), nullable=False),
        sa.Column("max_value", sa.Float(precision=53), nullable=False),
        sa.Column("sample_count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "metric_name", "bucket", name="pk_telemetry_hourly"),
    )
    # hours whose rollup is stale: written with each batch, consumed by the rollup job
    op.create_table(
        "telemetry_rollup_pending",
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("metric_name", sa.String(100), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "device_id", "metric_name", "bucket", name="pk_telemetry_rollup_pending"
        ),
    )


def upgrade() -> None:
    """Create the telemetry tables for this database."""
    if _timescaledb_available():
        _upgrade_timescaledb()
    else:
        _upgrade_plain()


def downgrade() -> None:
    """Drop the telemetry tables (and the continuous aggregate)."""
    bind = op.get_bind()
    is_view = (
        bind.dialect.name == "postgresql"
        and bind.execute(
            sa.text("SELECT 1 FROM pg_matviews WHERE matviewname = 'telemetry_hourly'")
        ).first()
    )
    if is_view:
        with op.get_context().autocommit_block():
            op.execute("DROP MATERIALIZED VIEW telemetry_hourly")
    else:
        op.drop_table("telemetry_rollup_pending")
        op.drop_table("telemetry_hourly")
    op.drop_table("device_telemetry")
