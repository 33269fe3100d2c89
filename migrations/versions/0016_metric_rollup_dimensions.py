"""metric rollups by verb, provider and tenant, with idempotency hits; blocked counts the governance decision

Rollups are derived data: the old rows are dropped and the next rollup run recomputes every hour.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03 07:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_OLD_KEY = ["org_id", "hour", "agent_id", "action", "status", "governance_status"]
_NEW_KEY = [*_OLD_KEY, "verb", "provider", "tenant_id"]


def _recompute_from_scratch() -> None:
    op.execute("DELETE FROM metric_rollups")
    op.execute("DELETE FROM metric_rollup_state")


def upgrade() -> None:
    _recompute_from_scratch()
    for name in ("verb", "provider", "tenant_id"):
        op.add_column("metric_rollups", sa.Column(name, sa.String(length=255), nullable=False, server_default=""))
        op.alter_column("metric_rollups", name, server_default=None)
    op.add_column("metric_rollups", sa.Column("idempotent", sa.BigInteger(), nullable=False, server_default="0"))
    op.alter_column("metric_rollups", "idempotent", server_default=None)
    op.drop_constraint("metric_rollups_pkey", "metric_rollups", type_="primary")
    op.create_primary_key("metric_rollups_pkey", "metric_rollups", _NEW_KEY)


def downgrade() -> None:
    _recompute_from_scratch()
    op.drop_constraint("metric_rollups_pkey", "metric_rollups", type_="primary")
    op.create_primary_key("metric_rollups_pkey", "metric_rollups", _OLD_KEY)
    for name in ("idempotent", "tenant_id", "provider", "verb"):
        op.drop_column("metric_rollups", name)
