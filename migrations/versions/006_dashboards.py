"""Low-code dashboards (SPEC 12): a versioned JSON spec each, owned, shared or provisioned.

Revision ID: 006
Revises: 005b

`dashboards.spec` is the whole spec as `app.dashboards.spec` validates it. A provisioned
dashboard (from IOTDECK_DASHBOARDS_DIR) has no owner and keeps the file it came from in
`provisioned_from`, so provisioning again updates it instead of adding a copy.
`users.home_dashboard_id` is the dashboard `/` shows the user (none: the fleet overview).
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "006"
down_revision = "005b"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create `dashboards` and let each user pick a home dashboard."""
    op.create_table(
        "dashboards",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("visibility", sa.String(10), nullable=False),
        sa.Column("spec", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.Column("owner_id", sa.Uuid(), sa.ForeignKey("users.id", ondelete="SET NULL")),
        sa.Column("provisioned_from", sa.String(1000), unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("visibility IN ('PRIVATE', 'SHARED')", name="ck_dashboards_visibility"),
    )
    op.create_index("ix_dashboards_owner_id", "dashboards", ["owner_id"])
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column(
                "home_dashboard_id",
                sa.Uuid(),
                sa.ForeignKey("dashboards.id", name="fk_users_home_dashboard", ondelete="SET NULL"),
            )
        )


def downgrade() -> None:
    """Drop what upgrade created."""
    with op.batch_alter_table("users") as batch:
        batch.drop_column("home_dashboard_id")
    op.drop_index("ix_dashboards_owner_id", "dashboards")
    op.drop_table("dashboards")
