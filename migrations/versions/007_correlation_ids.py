"""Correlation ids on alerts and commands (SPEC 11): what caused them, as the logs name it.

Revision ID: 007
Revises: 006

`correlation_id` is the id of the work that created the row: the MQTT batch whose points
fired the alert (a time-driven firing, `for` or `nodata`, has an id of its own), the alert
a rule's command was sent for, or the HTTP request that sent the command. An operator
reads it off the row and finds every log line about it. Older rows have none.
"""

import sqlalchemy as sa
from alembic import op

revision = "007"
down_revision = "006"
branch_labels = None
depends_on = None

TABLES = ("alerts", "device_commands")


def upgrade() -> None:
    """Add the nullable `correlation_id` to alerts and device commands."""
    for table in TABLES:
        op.add_column(table, sa.Column("correlation_id", sa.String(128)))


def downgrade() -> None:
    """Drop what upgrade added."""
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("correlation_id")
