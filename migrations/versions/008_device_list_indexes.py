"""A devices table for 100,000: indexed type filter and search, HOT updates for the rest.

Revision ID: 008
Revises: 007

The device list (the Devices page, GraphQL `devices` and `devicesCount`, the dashboards'
device table) filters by type or status and pages in (name, id) order. `(type, name, id)`
gives the type filter its page straight from the index, at any offset (a page 200 deep in
one type went from 24 to 7 ms over 100,000 devices); it replaces the index on type.

`status` is no longer indexed at all: the columns that change all the time (`status`,
`last_seen_at`) stay out of every index, so that changing them is a HOT update (same
page, no index writes, the old version pruned without VACUUM). Marking 50,000 of
100,000 devices OFFLINE wrote a new entry into each of the table's six indexes for each
device (1.27 s for the statement alone); HOT, it writes none. A status filter or count
reads the whole table instead, a few milliseconds for 100,000 devices (docs/performance.md,
"Fleet"); the offline job does too, every 15 s.

Search is `lower(name) LIKE '%...%' OR lower(type) LIKE '%...%'`, which no B-tree can
serve: over 100,000 devices it read every row, about 40 ms, and through GraphQL 2% of
such searches took over 100 ms. On PostgreSQL, GIN trigram indexes (pg_trgm) on both
expressions make it two index probes (0.1 ms). pg_trgm ships with PostgreSQL and is a
trusted extension; where it cannot be created (not installed, no CREATE right on the
database) search keeps working by scanning, and the migration says so in its log. SQLite
gets the B-tree index only.

On PostgreSQL the table's fillfactor becomes 70, the room on each page that HOT updates
need: ingest moves `last_seen_at` forward for every device that spoke, every few seconds
(app/services/last_seen.py). With full pages (the default fillfactor 100) each of those
updates writes its new row version on another page and a new entry into every index,
the trigram ones included, leaving a dead tuple. Flushing the contacts of 100,000 devices
went from 2.4-2.9 s to 1.4-2.3 s, most updates HOT instead of none. The table grows by
about 40% (12 to 17 MB for 100,000 devices); existing pages make room as VACUUM clears
them.
"""

import logging

import sqlalchemy as sa
from alembic import op

revision = "008"
down_revision = "007"
branch_labels = None
depends_on = None


logger = logging.getLogger(__name__)

FILLFACTOR = 70
TRIGRAM_INDEXES = {"ix_devices_name_trgm": "name", "ix_devices_type_trgm": "type"}


def _trigrams_available(bind: sa.Connection) -> bool:
    """Create pg_trgm if it can be; False (and a log line) where it cannot."""
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError as exc:
        logger.warning("pg_trgm unavailable (%s): device search will scan", exc.orig)
        return False
    return True


def upgrade() -> None:
    """(type, name, id) in place of (type), no index on status; on PostgreSQL, room on
    each page for HOT updates and trigram indexes for the search."""
    op.create_index("ix_devices_type_name", "devices", ["type", "name", "id"])
    op.drop_index("ix_devices_type", "devices")
    op.drop_index("ix_devices_status", "devices")
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute(f"ALTER TABLE devices SET (fillfactor = {FILLFACTOR})")
    if _trigrams_available(bind):
        for index, column in TRIGRAM_INDEXES.items():
            op.execute(f"CREATE INDEX {index} ON devices USING gin (lower({column}) gin_trgm_ops)")


def downgrade() -> None:
    """Back to the single-column indexes and full pages (pg_trgm stays: others may use it)."""
    if op.get_bind().dialect.name == "postgresql":
        for index in TRIGRAM_INDEXES:
            op.execute(f"DROP INDEX IF EXISTS {index}")
        op.execute("ALTER TABLE devices RESET (fillfactor)")
    op.create_index("ix_devices_type", "devices", ["type"])
    op.create_index("ix_devices_status", "devices", ["status"])
    op.drop_index("ix_devices_type_name", "devices")
