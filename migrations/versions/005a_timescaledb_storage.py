"""TimescaleDB storage that stays exact: iotdeck's own rollup and retention jobs, compression.

Revision ID: 005a
Revises: 005

Only TimescaleDB databases change; plain ones already work this way. The seed's refresh
policy materialises only the window [now - 3 h, now - 1 h], so points that arrive later
than that (a backfill, a device uploading what it buffered offline) never reached
`telemetry_hourly`, and its retention policy drops chunks without telling the aggregate.
From here on:
- every batch marks the hours it touched in `telemetry_rollup_pending`, as on plain
  tables; queries read those hours from raw points, and the rollup job refreshes them in
  the continuous aggregate (`refresh_continuous_aggregate`) before clearing the marks;
- the retention job deletes expired points and refreshes the aggregate below the cutoff,
  so both forget the same hours at the same moment;
- chunks are one day long and compressed (segment by device and metric, newest first)
  by a policy whose age `iotdeck` keeps equal to IOTDECK_COMPRESS_AFTER.
Every hour already holding points is marked, so a database migrated before this revision
heals the hours the old policy missed on the rollup job's first runs.
"""

import sqlalchemy as sa
from alembic import op

from app.core import storage

revision = "005a"
down_revision = "005"
branch_labels = None
depends_on = None


def _timescaledb() -> bool:
    return storage.recorded_layout(op.get_bind()) is storage.Layout.TIMESCALEDB


def upgrade() -> None:
    """Hand rollups and retention to iotdeck's jobs; one-day chunks, compression on."""
    if not _timescaledb():
        return
    op.create_table(
        "telemetry_rollup_pending",
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("metric_name", sa.String(100), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "device_id", "metric_name", "bucket", name="pk_telemetry_rollup_pending"
        ),
    )
    op.execute(
        "INSERT INTO telemetry_rollup_pending (device_id, metric_name, bucket)"
        " SELECT DISTINCT device_id, metric_name, time_bucket('1 hour', time)"
        " FROM device_telemetry"
    )
    op.execute("SELECT remove_continuous_aggregate_policy('telemetry_hourly', if_exists => true)")
    op.execute("SELECT remove_retention_policy('device_telemetry', if_exists => true)")
    op.execute("ALTER MATERIALIZED VIEW telemetry_hourly SET (timescaledb.materialized_only)")
    op.execute("SELECT set_chunk_time_interval('device_telemetry', INTERVAL '1 day')")
    op.execute(
        "ALTER TABLE device_telemetry SET (timescaledb.compress,"
        " timescaledb.compress_segmentby = 'device_id, metric_name',"
        " timescaledb.compress_orderby = 'time DESC')"
    )


def downgrade() -> None:
    """Back to the seed's policies: decompress, drop the marks, restore both policies."""
    if not _timescaledb():
        return
    op.execute("SELECT remove_compression_policy('device_telemetry', if_exists => true)")
    op.execute(
        "SELECT decompress_chunk(chunk, if_compressed => true)"
        " FROM show_chunks('device_telemetry') AS chunk"
    )
    op.execute("ALTER TABLE device_telemetry SET (timescaledb.compress = false)")
    op.execute("SELECT set_chunk_time_interval('device_telemetry', INTERVAL '7 days')")
    op.execute("SELECT add_retention_policy('device_telemetry', INTERVAL '90 days')")
    op.execute(
        "SELECT add_continuous_aggregate_policy('telemetry_hourly',"
        " start_offset => INTERVAL '3 hours', end_offset => INTERVAL '1 hour',"
        " schedule_interval => INTERVAL '1 hour')"
    )
    op.drop_table("telemetry_rollup_pending")
