"""alert notification emails: how far each member's emails have gone in each organisation

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-03 15:15:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_notification_states",
        sa.Column("org_id", sa.String(length=40), sa.ForeignKey("organizations.id"), primary_key=True),
        sa.Column("user_id", sa.String(length=40), sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("emails_sent", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("alert_notification_states")
