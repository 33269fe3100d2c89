"""policy attachment intervals: when each policy was attached to each agent, for what it evaluated

Backfilled from the current attachments (open intervals from their `attached_at`).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03 07:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policy_attachment_intervals",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("org_id", sa.String(length=40), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("policy_id", sa.String(length=40), sa.ForeignKey("policies.id"), nullable=False),
        sa.Column("agent_id", sa.String(length=40), sa.ForeignKey("agents.id"), nullable=False),
        sa.Column("attached_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detached_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_policy_attachment_intervals_policy", "policy_attachment_intervals", ["org_id", "policy_id", "agent_id"]
    )
    op.execute(
        """
        INSERT INTO policy_attachment_intervals (id, org_id, policy_id, agent_id, attached_at)
        SELECT 'pati_' || md5(org_id || policy_id || agent_id), org_id, policy_id, agent_id, attached_at
        FROM policy_attachments
        """
    )


def downgrade() -> None:
    op.drop_index("ix_policy_attachment_intervals_policy", table_name="policy_attachment_intervals")
    op.drop_table("policy_attachment_intervals")
