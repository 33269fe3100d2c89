"""audit erasure: the content of audit records can be erased (GDPR Art. 17), keeping every proof

Adds `audit_erasures` (one row per erasure: reason, filter, status, count, who, when), `audit_logs.erased_at` and
`audit_logs.erasure_id`, and lets `audit_logs.metadata` be NULL (an erased record's content is NULL). The guard
of audit_logs (agentrail_audit_logs_guard, migration 0027: only retention's DELETE passes) also lets exactly one
UPDATE through: the content columns set to NULL and erased_at/erasure_id set, every other column unchanged, on a
record not yet erased, while the transaction names a running erasure of the record's organisation
(`set_config('agentrail.erasure_id', id, true)`, app/audit/erasure.py).

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-04 18:40:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None

# retention's DELETE (migration 0027) as before; the erasure's UPDATE (app.audit.erasure)
GUARD_FUNCTION = """
CREATE OR REPLACE FUNCTION agentrail_audit_logs_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    erasure text;
    erasable text[] := ARRAY['prompt', 'response', 'metadata', 'args', 'result', 'erased_at', 'erasure_id'];
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('agentrail.retention', true) = 'on' AND EXISTS (
        SELECT 1 FROM audit_retention_cuts c
        WHERE c.org_id = OLD.org_id AND c.through_index >= OLD.chain_index AND OLD.received_at < c.cutoff
    ) THEN
        RETURN OLD;
    END IF;
    erasure := current_setting('agentrail.erasure_id', true);
    IF TG_OP = 'UPDATE' AND erasure IS NOT NULL AND erasure <> ''
       AND OLD.erased_at IS NULL AND OLD.erasure_id IS NULL
       AND NEW.erasure_id = erasure AND NEW.erased_at IS NOT NULL
       AND NEW.prompt IS NULL AND NEW.response IS NULL AND NEW.metadata IS NULL
       AND NEW.args IS NULL AND NEW.result IS NULL
       AND (to_jsonb(NEW) - erasable) = (to_jsonb(OLD) - erasable)
       AND EXISTS (
           SELECT 1 FROM audit_erasures e
           WHERE e.id = erasure AND e.org_id = NEW.org_id AND e.status = 'running'
       )
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit records are immutable: % on % is not allowed', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$;
"""

# migration 0027's guard, for the downgrade
_RETENTION_ONLY = """
CREATE OR REPLACE FUNCTION agentrail_audit_logs_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('agentrail.retention', true) = 'on' AND EXISTS (
        SELECT 1 FROM audit_retention_cuts c
        WHERE c.org_id = OLD.org_id AND c.through_index >= OLD.chain_index AND OLD.received_at < c.cutoff
    ) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit records are immutable: % on % is not allowed', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$;
"""


def upgrade() -> None:
    op.create_table(
        "audit_erasures",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("org_id", sa.String(length=40), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("reason", sa.String(length=2000), nullable=False),
        sa.Column("filter", JSONB(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("record_count", sa.BigInteger(), nullable=False),
        sa.Column("through_seq", sa.BigInteger(), nullable=False),
        sa.Column("requested_by", sa.String(length=40), nullable=True),
        sa.Column("requested_by_name", sa.String(length=255), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_audit_erasures_org_requested",
        "audit_erasures",
        ["org_id", sa.text("requested_at DESC"), sa.text("id DESC")],
    )
    op.add_column("audit_logs", sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "audit_logs",
        sa.Column("erasure_id", sa.String(length=40), sa.ForeignKey("audit_erasures.id"), nullable=True),
    )
    op.alter_column("audit_logs", "metadata", nullable=True)
    op.create_index(
        "ix_audit_logs_org_erasure",
        "audit_logs",
        ["org_id", "erasure_id"],
        postgresql_where=sa.text("erasure_id IS NOT NULL"),
    )
    op.execute(GUARD_FUNCTION)


def downgrade() -> None:
    op.execute(_RETENTION_ONLY)
    op.drop_index("ix_audit_logs_org_erasure", table_name="audit_logs")
    # erased records keep no content: a downgrade cannot give it back, so it leaves their metadata as {}
    op.execute("ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_immutable")
    op.execute("UPDATE audit_logs SET metadata = '{}'::jsonb WHERE metadata IS NULL")
    op.execute("ALTER TABLE audit_logs ENABLE TRIGGER audit_logs_immutable")
    op.alter_column("audit_logs", "metadata", nullable=False)
    op.drop_column("audit_logs", "erasure_id")
    op.drop_column("audit_logs", "erased_at")
    op.drop_index("ix_audit_erasures_org_requested", table_name="audit_erasures")
    op.drop_table("audit_erasures")
