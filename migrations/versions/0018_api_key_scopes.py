"""API key scopes (INGEST, READ, FULL) and the agents a key may write for; existing keys keep FULL

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03 13:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "api_keys",
        sa.Column("scopes", sa.ARRAY(sa.String(length=20)), nullable=False, server_default=sa.text("'{full}'")),
    )
    op.add_column("api_keys", sa.Column("agent_ids", sa.ARRAY(sa.String(length=40)), nullable=True))


def downgrade() -> None:
    op.drop_column("api_keys", "agent_ids")
    op.drop_column("api_keys", "scopes")
