"""export jobs: asynchronous exports of the audit record and the activity trail

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 02:30:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "export_jobs",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("org_id", sa.String(length=40), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("dataset", sa.String(length=20), nullable=False),
        sa.Column("format", sa.String(length=10), nullable=False),
        sa.Column("filter", postgresql.JSONB(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("row_count", sa.BigInteger(), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("file_id", sa.String(length=48), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claim_token", sa.String(length=40), nullable=True),
        sa.Column("queue_job_id", sa.String(length=120), nullable=True),
        sa.Column("requested_by_type", sa.String(length=20), nullable=False),
        sa.Column("requested_by_id", sa.String(length=40), nullable=False),
        sa.Column("requested_by_name", sa.String(length=200), nullable=True),
        sa.Column("requested_by_email", sa.String(length=320), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_export_jobs_org_created", "export_jobs", ["org_id", sa.text("created_at DESC"), sa.text("id DESC")]
    )
    op.create_index(
        "ix_export_jobs_open",
        "export_jobs",
        ["status", "heartbeat_at"],
        postgresql_where=sa.text("status IN ('PENDING', 'RUNNING', 'READY')"),
    )


def downgrade() -> None:
    op.drop_table("export_jobs")
