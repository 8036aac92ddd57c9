"""Telemetry points and hourly rollups (TimescaleDB when available).

Revision ID: 003
Revises: 002

With TimescaleDB (the layout `app.core.storage.choose_layout` picks from IOTDECK_TIMESCALEDB and
the server's `shared_preload_libraries`) this follows the seed's 003: hypertable, retention
policy, continuous aggregate `telemetry_hourly` and its refresh policy; revision 005a then
hands rollups and retention to iotdeck's own jobs and turns compression on. Without it
(plain PostgreSQL, SQLite) the same names are plain tables: `telemetry_hourly` is kept up
to date by the rollup job from the buckets listed in `telemetry_rollup_pending`, and the
retention job deletes old points.
"""

import os

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import JSONB

from app.core import storage

revision = "003"
down_revision = "002"
branch_labels = None
depends_on = None


def _retention_days() -> int:
    # read directly: migrations must not depend on the application's settings object
    return int(os.environ.get("IOTDECK_RETENTION_DAYS", "90"))


def _layout() -> storage.Layout:
    # app.core.migrate decides before any revision runs; a bare `alembic upgrade` decides here
    chosen = context.config.attributes.get("layout")
    if chosen is None:
        mode = os.environ.get("IOTDECK_TIMESCALEDB", "auto")
        chosen = storage.choose_layout(op.get_bind(), mode)  # type: ignore[arg-type]
    return chosen


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
    # WITH NO DATA: there is nothing to materialise yet, and without the initial refresh
    # the view can be created inside this revision's transaction (all of it or nothing)
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
        WITH NO DATA
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
    if _layout() is storage.Layout.TIMESCALEDB:
        _upgrade_timescaledb()
    else:
        _upgrade_plain()


def downgrade() -> None:
    """Drop the telemetry tables (and the continuous aggregate)."""
    if storage.recorded_layout(op.get_bind()) is storage.Layout.TIMESCALEDB:
        op.execute("DROP MATERIALIZED VIEW telemetry_hourly")
    else:
        op.drop_table("telemetry_rollup_pending")
        op.drop_table("telemetry_hourly")
    op.drop_table("device_telemetry")
