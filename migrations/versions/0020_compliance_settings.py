"""compliance settings: an organisation's defaults for its rules (redact what PII rules find)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-03 14:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "compliance_settings",
        sa.Column("org_id", sa.String(length=40), sa.ForeignKey("organizations.id"), primary_key=True),
        sa.Column("redact_pii", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=40), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("compliance_settings")
