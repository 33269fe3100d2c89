"""audit traces: one summary row per trace, kept in the ingest transaction, backfilled from the records

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03 07:45:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_traces",
        sa.Column("org_id", sa.String(length=40), sa.ForeignKey("organizations.id"), primary_key=True),
        sa.Column("trace_id", sa.String(length=64), primary_key=True),
        sa.Column("span_count", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("error_count", sa.BigInteger(), nullable=False),
        sa.Column("blocked_count", sa.BigInteger(), nullable=False),
        sa.Column("agent_ids", postgresql.ARRAY(sa.String(length=40)), nullable=False),
    )
    op.create_index(
        "ix_audit_traces_org_started",
        "audit_traces",
        ["org_id", sa.text("started_at DESC"), sa.text("trace_id DESC")],
    )
    # the records already stored, summarised with the expressions ingest uses (app/audit/summaries.py); records
    # being written wait for this to commit (SHARE lock), and the ingest that writes them then adds them
    op.execute("LOCK TABLE audit_logs IN SHARE MODE")
    op.execute(
        """
        INSERT INTO audit_traces (
            org_id, trace_id, span_count, started_at, ended_at, error_count, blocked_count, agent_ids)
        SELECT org_id, trace_id, count(*), min(occurred_at),
            max(occurred_at + make_interval(secs => coalesce(duration_ms, 0) / 1000.0)),
            count(*) FILTER (WHERE status = 'error'), count(*) FILTER (WHERE status = 'blocked'),
            array_remove(array_agg(DISTINCT agent_id), NULL)
        FROM audit_logs GROUP BY org_id, trace_id
        """
    )


def downgrade() -> None:
    op.drop_index("ix_audit_traces_org_started", table_name="audit_traces")
    op.drop_table("audit_traces")
