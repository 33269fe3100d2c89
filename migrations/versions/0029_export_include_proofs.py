"""export include_proofs: an export job can write the proof bundle of its window (app/audit/proofs.py)

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-04 19:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "export_jobs", sa.Column("include_proofs", sa.Boolean(), nullable=False, server_default=sa.false())
    )


def downgrade() -> None:
    op.drop_column("export_jobs", "include_proofs")
