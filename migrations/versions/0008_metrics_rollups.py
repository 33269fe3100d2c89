"""metrics: hourly rollups of audit records, and each organisation's rollup watermark

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metric_rollup_state",
        sa.Column("org_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("rolled_seq", sa.BigInteger(), nullable=False),
        sa.Column("rolled_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"]),
        sa.PrimaryKeyConstraint("org_id"),
    )
    op.create_table(
        "metric_rollups",
        sa.Column("org_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("agent_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("action", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("governance_status", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("blocked", sa.BigInteger(), nullable=False),
        sa.Column("alerts", sa.BigInteger(), nullable=False),
        sa.Column("tokens", sa.Double(), nullable=False),
        sa.Column("duration_count", sa.BigInteger(), nullable=False),
        sa.Column("duration_sum", sa.Double(), nullable=False),
        sa.Column("duration_min", sa.Double(), nullable=True),
        sa.Column("duration_max", sa.Double(), nullable=True),
        sa.Column("duration_buckets", postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"]),
        # the key starts with org_id and hour: a range of one organisation's hours is one index scan
        sa.PrimaryKeyConstraint("org_id", "hour", "agent_id", "action", "status", "governance_status"),
    )


def downgrade() -> None:
    op.drop_table("metric_rollups")
    op.drop_table("metric_rollup_state")
