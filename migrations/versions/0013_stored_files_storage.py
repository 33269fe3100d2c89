"""stored files: where each file's bytes are (PostgreSQL chunks or an S3-compatible object)

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 03:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "stored_files",
        sa.Column("storage", sa.String(length=16), nullable=False, server_default="postgres"),
    )
    op.add_column("stored_files", sa.Column("object_key", sa.String(length=1024), nullable=True))
    op.create_check_constraint(
        "ck_stored_files_storage",
        "stored_files",
        "(storage = 'postgres' AND object_key IS NULL) OR (storage = 's3' AND object_key IS NOT NULL)",
    )


def downgrade() -> None:
    # files whose bytes are in a bucket cannot be described without these columns
    op.execute("DELETE FROM stored_files WHERE storage <> 'postgres'")
    op.drop_constraint("ck_stored_files_storage", "stored_files", type_="check")
    op.drop_column("stored_files", "object_key")
    op.drop_column("stored_files", "storage")
