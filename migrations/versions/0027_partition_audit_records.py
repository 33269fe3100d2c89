"""audit records and their search rows partitioned by month of `received_at` (app/audit/partitions.py)

The records move, in this transaction, from the plain table into a partitioned one with the same columns,
indexes (leading with org_id, as before) and immutability trigger; `seq` keeps its values and its identity
continues after them. What changes because a partitioned table's unique keys must hold the partition key:
  - the primary key is (id, received_at); ids are ULIDs made by the server and never repeat anyway;
  - `seq`, (org_id, chain_index) and (org_id, idempotency_key) are indexed, no longer unique: they are unique
    by construction, since ingest assigns chain indexes and looks up idempotency keys under the exclusive
    per-organisation ingest lock (app.audit.service.ingest), and `seq` is an identity;
  - alerts and search rows no longer carry a foreign key to audit_logs (one to a partitioned table would have
    to name received_at, and would make retention check every alert per removed record): retention removes
    them with their records (app.audit.retention).
audit_search gets `received_at` (its record's) and the same partitions, so both are dropped together.
Partitions exist from the oldest record's month to AHEAD_MONTHS after the current one, plus a DEFAULT one.

Revision ID: 0027
Revises: 0026
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from app.audit.partitions import AHEAD_MONTHS, Partition, ahead, default_partition_sql, month_of, months

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None

_LOG_COLUMNS = """
    id varchar(40) NOT NULL,
    org_id varchar(40) NOT NULL REFERENCES organizations (id),
    seq bigint GENERATED ALWAYS AS IDENTITY,
    trace_id varchar(64) NOT NULL,
    span_id varchar(64) NOT NULL,
    parent_span_id varchar(64),
    agent_id varchar(40) REFERENCES agents (id),
    action varchar(128) NOT NULL,
    prompt varchar,
    response varchar,
    metadata jsonb NOT NULL,
    args jsonb,
    result jsonb,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    duration_ms double precision,
    status varchar(16) NOT NULL,
    idempotency_key varchar(255),
    execution_id varchar(255),
    verb varchar(255),
    provider varchar(255),
    risk_level varchar(16),
    governance_status varchar(32),
    dry_run boolean,
    idempotent boolean,
    tenant_id varchar(255),
    credential_masked boolean NOT NULL,
    checksum varchar(80) NOT NULL,
    chain_index bigint NOT NULL,
    content_hash bytea NOT NULL,
    entry_hash bytea NOT NULL
"""
_COPIED = (
    "id, org_id, seq, trace_id, span_id, parent_span_id, agent_id, action, prompt, response, metadata, args, "
    "result, occurred_at, received_at, duration_ms, status, idempotency_key, execution_id, verb, provider, "
    "risk_level, governance_status, dry_run, idempotent, tenant_id, credential_masked, checksum, chain_index, "
    "content_hash, entry_hash"
)
_LOG_INDEXES = (
    "CREATE INDEX ix_audit_logs_org_occurred ON audit_logs (org_id, occurred_at DESC, id DESC)",
    "CREATE INDEX ix_audit_logs_org_trace ON audit_logs (org_id, trace_id, occurred_at)",
    "CREATE INDEX ix_audit_logs_org_span ON audit_logs (org_id, trace_id, span_id)",
    "CREATE INDEX ix_audit_logs_org_parent ON audit_logs (org_id, trace_id, parent_span_id)",
    "CREATE INDEX ix_audit_logs_org_agent ON audit_logs (org_id, agent_id, occurred_at DESC)",
    "CREATE INDEX ix_audit_logs_org_seq ON audit_logs (org_id, seq)",
    "CREATE INDEX ix_audit_logs_org_chain ON audit_logs (org_id, chain_index)",
    "CREATE INDEX ix_audit_logs_org_idempotency ON audit_logs (org_id, idempotency_key) "
    "WHERE idempotency_key IS NOT NULL",
    "CREATE INDEX ix_audit_logs_seq ON audit_logs (seq)",
)

# UPDATE and DELETE are refused, except the DELETE of retention (app.audit.retention): in a transaction that set
# agentrail.retention (SET LOCAL, so no other transaction carries it), of a record that a signed retention entry
# of its organisation already covers (its chain index at most the entry's last, received before its cutoff).
GUARD_FUNCTION = """
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


def _foreign_keys(bind: sa.Connection, table: str) -> list[str]:
    return list(
        bind.execute(
            sa.text(
                "SELECT conname FROM pg_constraint WHERE conrelid = CAST(:t AS regclass) AND contype = 'f' "
                "AND confrelid = CAST('audit_logs' AS regclass)"
            ),
            {"t": table},
        ).scalars()
    )


def _month_range(bind: sa.Connection) -> list[date]:
    oldest = bind.execute(sa.text("SELECT min(received_at) FROM audit_logs")).scalar()
    now = datetime.now(UTC)
    return months(month_of(oldest or now), ahead(now, AHEAD_MONTHS))


def _partitions(table: str, span: list[date]) -> None:
    for month in span:
        op.execute(Partition(table, month).create_sql())
    op.execute(default_partition_sql(table))


_UNPARTITIONED_INDEXES = (
    *_LOG_INDEXES[:6],
    "CREATE UNIQUE INDEX uq_audit_logs_org_chain ON audit_logs (org_id, chain_index)",
    "CREATE UNIQUE INDEX uq_audit_logs_org_idempotency ON audit_logs (org_id, idempotency_key) "
    "WHERE idempotency_key IS NOT NULL",
)


def upgrade() -> None:
    bind = op.get_bind()
    op.execute("LOCK TABLE audit_logs, audit_search, alerts IN ACCESS EXCLUSIVE MODE")
    for table in ("alerts", "audit_search"):
        for name in _foreign_keys(bind, table):
            op.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    op.create_table(
        "audit_retention_cuts",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("from_index", sa.BigInteger(), nullable=False),
        sa.Column("through_index", sa.BigInteger(), nullable=False),
        sa.Column("record_count", sa.BigInteger(), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=True),
        sa.Column("cutoff", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=False),
        sa.Column("chain_head", sa.String(64), nullable=False),
        sa.Column("tree_root", sa.String(64), nullable=False),
        sa.Column("frontier", postgresql.JSONB(), nullable=False),
        sa.Column("leaves", sa.LargeBinary(), nullable=False),
        sa.Column("digest_sequence", sa.BigInteger(), nullable=False),
        sa.Column("digest_hash", sa.String(80), nullable=False),
        sa.Column("previous_hash", sa.String(80), nullable=False),
        sa.Column("cut_hash", sa.String(80), nullable=False),
        sa.Column("signature", sa.String(200), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("org_id", "sequence", name="uq_audit_retention_cuts_org_sequence"),
    )
    op.execute(
        "CREATE TRIGGER audit_retention_cuts_immutable BEFORE UPDATE OR DELETE ON audit_retention_cuts "
        "FOR EACH ROW EXECUTE FUNCTION agentrail_reject_audit_change()"
    )
    op.create_table(
        "audit_retention_settings",
        sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), primary_key=True),
        sa.Column("retention_days", sa.Integer(), nullable=True),
        sa.Column("applied_days", sa.Integer(), nullable=True),
        sa.Column("grace_days", sa.Integer(), nullable=True),
        sa.Column("grace_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )

    # audit_logs: the old table aside, the partitioned one in its place, the rows copied over
    span = _month_range(bind)
    op.execute("DROP TRIGGER audit_logs_immutable ON audit_logs")
    op.execute("ALTER TABLE audit_logs RENAME TO audit_logs_unpartitioned")
    op.execute("ALTER TABLE audit_logs_unpartitioned RENAME CONSTRAINT audit_logs_pkey TO audit_logs_unpartitioned_pkey")
    op.execute(
        f"CREATE TABLE audit_logs ({_LOG_COLUMNS}, PRIMARY KEY (id, received_at)) PARTITION BY RANGE (received_at)"
    )
    _partitions("audit_logs", span)
    op.execute(
        f"INSERT INTO audit_logs ({_COPIED}) OVERRIDING SYSTEM VALUE SELECT {_COPIED} FROM audit_logs_unpartitioned"
    )
    op.execute(_RESTART_SEQ)
    op.execute("DROP TABLE audit_logs_unpartitioned")
    for statement in _LOG_INDEXES:
        op.execute(statement)
    op.execute(GUARD_FUNCTION)
    op.execute(_TRIGGER.format(function="agentrail_audit_logs_guard"))

    # audit_search: the same partitions, by its record's received_at
    op.execute("ALTER TABLE audit_search RENAME TO audit_search_unpartitioned")
    op.execute(
        "ALTER TABLE audit_search_unpartitioned RENAME CONSTRAINT audit_search_pkey TO audit_search_unpartitioned_pkey"
    )
    op.execute("DROP INDEX ix_audit_search_document")
    op.execute(
        "CREATE TABLE audit_search (log_id varchar(40) NOT NULL, org_id varchar(40) NOT NULL "
        "REFERENCES organizations (id), received_at timestamptz NOT NULL, document tsvector NOT NULL, "
        "PRIMARY KEY (log_id, received_at)) PARTITION BY RANGE (received_at)"
    )
    _partitions("audit_search", span)
    op.execute(
        "INSERT INTO audit_search (log_id, org_id, received_at, document) "
        "SELECT s.log_id, s.org_id, a.received_at, s.document FROM audit_search_unpartitioned s "
        "JOIN audit_logs a ON a.id = s.log_id"
    )
    op.execute("DROP TABLE audit_search_unpartitioned")
    op.execute("CREATE INDEX ix_audit_search_document ON audit_search USING gin (document)")
    op.execute("ANALYZE audit_logs")
    op.execute("ANALYZE audit_search")


_RESTART_SEQ = (
    "SELECT setval(pg_get_serial_sequence('audit_logs', 'seq'), (SELECT coalesce(max(seq), 0) + 1 FROM audit_logs), "
    "false)"
)
_TRIGGER = (
    "CREATE TRIGGER audit_logs_immutable BEFORE UPDATE OR DELETE ON audit_logs "
    "FOR EACH ROW EXECUTE FUNCTION {function}()"
)


def downgrade() -> None:
    op.execute("LOCK TABLE audit_logs, audit_search, alerts IN ACCESS EXCLUSIVE MODE")
    for name in ("audit_logs", "audit_search"):
        op.execute(f"ALTER TABLE {name} RENAME TO {name}_partitioned")
        op.execute(f"ALTER TABLE {name}_partitioned RENAME CONSTRAINT {name}_pkey TO {name}_partitioned_pkey")
    op.execute("DROP INDEX ix_audit_search_document")
    for statement in _LOG_INDEXES:
        op.execute(f"DROP INDEX {statement.split()[2]}")
    op.execute(f"CREATE TABLE audit_logs ({_LOG_COLUMNS}, PRIMARY KEY (id), UNIQUE (seq))")
    op.execute(
        f"INSERT INTO audit_logs ({_COPIED}) OVERRIDING SYSTEM VALUE SELECT {_COPIED} FROM audit_logs_partitioned"
    )
    op.execute(_RESTART_SEQ)
    op.execute("DROP TABLE audit_logs_partitioned")
    for statement in _UNPARTITIONED_INDEXES:
        op.execute(statement)
    op.execute(_TRIGGER.format(function="agentrail_reject_audit_change"))
    op.execute("DROP FUNCTION IF EXISTS agentrail_audit_logs_guard()")
    op.execute(
        "CREATE TABLE audit_search (log_id varchar(40) NOT NULL REFERENCES audit_logs (id), "
        "org_id varchar(40) NOT NULL REFERENCES organizations (id), document tsvector NOT NULL, PRIMARY KEY (log_id))"
    )
    op.execute(
        "INSERT INTO audit_search (log_id, org_id, document) "
        "SELECT log_id, org_id, document FROM audit_search_partitioned"
    )
    op.execute("DROP TABLE audit_search_partitioned")
    op.execute("CREATE INDEX ix_audit_search_document ON audit_search USING gin (document)")
    op.execute("ALTER TABLE alerts ADD FOREIGN KEY (audit_log_id) REFERENCES audit_logs (id)")
    op.drop_table("audit_retention_settings")
    op.execute("DROP TRIGGER IF EXISTS audit_retention_cuts_immutable ON audit_retention_cuts")
    op.drop_table("audit_retention_cuts")
