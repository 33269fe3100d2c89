"""audit search beside the records: full-text indexing moves off the ingest path

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_search",
        sa.Column("log_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("org_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("document", postgresql.TSVECTOR(), nullable=False),
        sa.ForeignKeyConstraint(["log_id"], ["audit_logs.id"]),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"]),
        sa.PrimaryKeyConstraint("log_id"),
    )
    op.create_index("ix_audit_search_document", "audit_search", ["document"], unique=False, postgresql_using="gin")
    op.create_table(
        "audit_search_progress",
        sa.Column("org_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("swept_seq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"]),
        sa.PrimaryKeyConstraint("org_id"),
    )
    # the documents of existing records move over; the generated column goes
    op.execute(
        "INSERT INTO audit_search (log_id, org_id, document) SELECT id, org_id, search FROM audit_logs "
        "WHERE search IS NOT NULL"
    )
    op.drop_index("ix_audit_logs_search", table_name="audit_logs", postgresql_using="gin")
    op.drop_column("audit_logs", "search")


def downgrade() -> None:
    op.add_column(
        "audit_logs",
        sa.Column(
            "search",
            postgresql.TSVECTOR(),
            sa.Computed(
                "to_tsvector('simple', left(coalesce(prompt, ''), 100000) || ' ' || "
                "left(coalesce(response, ''), 100000))",
                persisted=True,
            ),
            nullable=True,
        ),
    )
    op.create_index("ix_audit_logs_search", "audit_logs", ["search"], unique=False, postgresql_using="gin")
    op.drop_table("audit_search_progress")
    op.drop_index("ix_audit_search_document", table_name="audit_search", postgresql_using="gin")
    op.drop_table("audit_search")
