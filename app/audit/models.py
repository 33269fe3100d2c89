"""Tables of the audit domain: immutable audit records (spans) and the digests that seal them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR
from sqlalchemy.orm import InstrumentedAttribute
from sqlmodel import Field, SQLModel, col

from app.db import TenantScoped, optional_timestamp_column, timestamp_column


class AuditLog(SQLModel, TenantScoped, table=True):
    """One action an agent took. Never updated, never deleted (a trigger enforces it).

    `seq` is the global ingest order: digests seal contiguous `seq` ranges per organisation.
    A record is a span: `trace_id` groups it (its own id when sent without one), `span_id` names it
    (its own id, or the sender's span id for OpenTelemetry), `parent_span_id` points at another span.
    """

    __tablename__ = "audit_logs"
    __table_args__ = (
        sa.Index("ix_audit_logs_org_occurred", "org_id", sa.text("occurred_at DESC"), sa.text("id DESC")),
        sa.Index("ix_audit_logs_org_trace", "org_id", "trace_id", "occurred_at"),
        sa.Index("ix_audit_logs_org_span", "org_id", "trace_id", "span_id"),
        sa.Index("ix_audit_logs_org_parent", "org_id", "trace_id", "parent_span_id"),
        sa.Index("ix_audit_logs_org_agent", "org_id", "agent_id", sa.text("occurred_at DESC")),
        sa.Index("ix_audit_logs_org_seq", "org_id", "seq"),
        # unique by construction (assigned under the per-organisation ingest lock); a partitioned table's
        # unique index would have to hold received_at (migration 0027)
        sa.Index("ix_audit_logs_org_chain", "org_id", "chain_index"),
        sa.Index(
            "ix_audit_logs_org_erasure", "org_id", "erasure_id", postgresql_where=sa.text("erasure_id IS NOT NULL")
        ),
        sa.Index(
            "ix_audit_logs_org_idempotency",
            "org_id",
            "idempotency_key",
            postgresql_where=sa.text("idempotency_key IS NOT NULL"),
        ),
        sa.Index("ix_audit_logs_seq", "seq"),
        {"postgresql_partition_by": "RANGE (received_at)"},
    )

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organizations.id", max_length=40)
    seq: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.BigInteger, sa.Identity(always=True), nullable=False),
    )
    trace_id: str = Field(max_length=64)
    span_id: str = Field(max_length=64)
    parent_span_id: str | None = Field(default=None, max_length=64)
    agent_id: str | None = Field(default=None, foreign_key="agents.id", max_length=40)
    action: str = Field(max_length=128)
    prompt: str | None = None
    response: str | None = None
    # NULL only once erased (app.audit.erasure): every content column is then NULL
    metadata_: dict[str, Any] | None = Field(
        default_factory=dict, sa_column=sa.Column("metadata", JSONB, nullable=True)
    )
    args: Any | None = Field(default=None, sa_column=sa.Column(JSONB, nullable=True))
    result: Any | None = Field(default=None, sa_column=sa.Column(JSONB, nullable=True))
    occurred_at: datetime = timestamp_column()
    # the partition key (app.audit.partitions): the server's clock at ingest
    received_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), primary_key=True, nullable=False))
    duration_ms: float | None = None
    status: str = Field(default="ok", max_length=16)
    idempotency_key: str | None = Field(default=None, max_length=255)
    execution_id: str | None = Field(default=None, max_length=255)
    verb: str | None = Field(default=None, max_length=255)
    provider: str | None = Field(default=None, max_length=255)
    risk_level: str | None = Field(default=None, max_length=16)
    governance_status: str | None = Field(default=None, max_length=32)
    dry_run: bool | None = None
    idempotent: bool | None = None
    tenant_id: str | None = Field(default=None, max_length=255)
    credential_masked: bool = False
    checksum: str = Field(max_length=80)  # the record hash (app.integrity); a legacy checksum before the chain
    # the chain (app.integrity): 1-based position in the organisation's stream, hash of the content fields,
    # and SHA-256(previous entry_hash || record hash), all computed under the ingest lock
    chain_index: int = Field(sa_type=sa.BigInteger)
    content_hash: bytes = Field(sa_type=sa.LargeBinary)
    entry_hash: bytes = Field(sa_type=sa.LargeBinary)
    # set by an erasure (app.audit.erasure), the only change the trigger allows: content NULL, these two set
    erased_at: datetime | None = optional_timestamp_column()
    erasure_id: str | None = Field(default=None, foreign_key="audit_erasures.id", max_length=40)


class AuditErasure(SQLModel, TenantScoped, table=True):
    """One erasure of records' content (GDPR Art. 17): what was asked (the filter, the reason), by whom, when,
    how far it went. `through_seq`: the newest record when it was asked; records written later are not in it.
    Status: running (records are being erased, in batches; the sweeper queues the job again until it is
    done), done."""

    __tablename__ = "audit_erasures"
    __table_args__ = (
        sa.Index("ix_audit_erasures_org_requested", "org_id", sa.text("requested_at DESC"), sa.text("id DESC")),
    )

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organizations.id", max_length=40)
    reason: str = Field(max_length=2000)
    filter: dict[str, Any] = Field(sa_column=sa.Column(JSONB, nullable=False))
    status: str = Field(max_length=16)
    record_count: int = Field(default=0, sa_type=sa.BigInteger)
    through_seq: int = Field(sa_type=sa.BigInteger)
    requested_by: str | None = Field(default=None, max_length=40)
    requested_by_name: str | None = Field(default=None, max_length=255)
    requested_at: datetime = timestamp_column()
    completed_at: datetime | None = optional_timestamp_column()


class AuditTrace(SQLModel, TenantScoped, table=True):
    """One row per trace: its summary, kept in the ingest transaction (`app.audit.summaries`), so that the
    newest traces are an index scan of this table, whatever the number of spans stored.

    Records are never updated or deleted, so a summary only grows: counts add up, the start can only move
    earlier and the end later, agents join. It equals the aggregate over the trace's records at every commit.
    """

    __tablename__ = "audit_traces"
    __table_args__ = (
        sa.Index("ix_audit_traces_org_started", "org_id", sa.text("started_at DESC"), sa.text("trace_id DESC")),
    )

    org_id: str = Field(primary_key=True, foreign_key="organizations.id", max_length=40)
    trace_id: str = Field(primary_key=True, max_length=64)
    span_count: int = Field(sa_type=sa.BigInteger)
    started_at: datetime = timestamp_column()
    ended_at: datetime = timestamp_column()  # latest start plus duration
    error_count: int = Field(sa_type=sa.BigInteger)
    blocked_count: int = Field(sa_type=sa.BigInteger)
    agent_ids: list[str] = Field(sa_column=sa.Column(ARRAY(sa.String(40)), nullable=False))  # distinct, sorted


class AuditSearch(SQLModel, TenantScoped, table=True):
    """Full-text index of records' prompt and response, kept beside them and filled off the ingest path.

    Parsing text into a tsvector costs PostgreSQL more than the rest of an insert; a worker job fills this
    right after each batch commits (and a sweeper catches anything a lost job missed), so search is
    eventually consistent, typically within a second, while ingest stays fast.
    """

    __tablename__ = "audit_search"
    __table_args__ = (
        sa.Index("ix_audit_search_document", "document", postgresql_using="gin"),
        {"postgresql_partition_by": "RANGE (received_at)"},
    )

    log_id: str = Field(primary_key=True, max_length=40)  # its record (no foreign key: see migration 0027)
    org_id: str = Field(foreign_key="organizations.id", max_length=40)
    # its record's, the partition key: search rows live and go with their records' partitions
    received_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), primary_key=True, nullable=False))
    document: Any = Field(sa_column=sa.Column(TSVECTOR, nullable=False))


class AuditSearchProgress(SQLModel, TenantScoped, table=True):
    """Per organisation: every record with seq up to `swept_seq` has been checked by the sweeper."""

    __tablename__ = "audit_search_progress"

    org_id: str = Field(primary_key=True, foreign_key="organizations.id", max_length=40)
    swept_seq: int = Field(default=0, sa_type=sa.BigInteger)


class AuditDigest(SQLModel, TenantScoped, table=True):
    """Seals every record of an organisation with `from_seq <= seq <= to_seq`.

    Digests form a chain: each carries the hash of the previous one. Version 1 (before the chain): a Merkle
    root over the range's checksums and an HMAC under a key derived from the service secret. Version 2: the
    records with chain indexes `from_index..tree_size`, the RFC 9162 root of the tree of every record of the
    organisation up to `tree_size`, the chain head (entry hash of record `tree_size`), signed with Ed25519
    (`key_id`, app.integrity.digest_v2_payload). `frontier` is the tree's right edge, so that the next digest
    continues it without reading old records (not signed: it is checked against the root it folds to).
    """

    __tablename__ = "audit_digests"
    __table_args__ = (sa.UniqueConstraint("org_id", "stream", "sequence", name="uq_audit_digests_org_sequence"),)

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organizations.id", max_length=40)
    stream: str = Field(default="audit", max_length=16)  # audit | activity (app.audit.streams)
    sequence: int = Field(sa_type=sa.BigInteger)
    from_seq: int = Field(sa_type=sa.BigInteger)
    to_seq: int = Field(sa_type=sa.BigInteger)
    first_occurred_at: datetime = timestamp_column()
    last_occurred_at: datetime = timestamp_column()
    record_count: int
    merkle_root: str = Field(max_length=80)
    previous_hash: str = Field(max_length=80)
    digest_hash: str = Field(max_length=80)
    signature: str = Field(max_length=200)
    created_at: datetime = timestamp_column()
    version: int = Field(default=1, sa_type=sa.SmallInteger)
    key_id: str | None = Field(default=None, max_length=40)
    from_index: int | None = Field(default=None, sa_type=sa.BigInteger)
    tree_size: int | None = Field(default=None, sa_type=sa.BigInteger)
    chain_head: str | None = Field(default=None, max_length=64)
    frontier: list[Any] | None = Field(default=None, sa_column=sa.Column(JSONB, nullable=True))


class AuditMerkleNode(SQLModel, TenantScoped, table=True):
    """A perfect subtree of an organisation's Merkle tree (level >= 8: 256 leaves and more), kept when sealing
    completes it: inclusion and consistency proofs read these instead of every record. Level 8 nodes also keep
    their 256 leaves (entry hashes, 32 bytes each), so that verification names the exact record that differs
    from what was sealed. Immutable (trigger)."""

    __tablename__ = "audit_merkle_nodes"

    org_id: str = Field(primary_key=True, foreign_key="organizations.id", max_length=40)
    stream: str = Field(primary_key=True, max_length=16)
    level: int = Field(primary_key=True, sa_type=sa.SmallInteger)
    idx: int = Field(primary_key=True, sa_type=sa.BigInteger)  # first leaf // 2**level
    hash: bytes = Field(sa_type=sa.LargeBinary)
    leaves: bytes | None = Field(default=None, sa_type=sa.LargeBinary)


class AuditRetentionCut(SQLModel, TenantScoped, table=True):
    """A signed statement that an organisation's records with chain indexes `from_index..through_index`, received
    before `cutoff`, expired under its retention (app.audit.retention): written before they are removed (the
    trigger lets retention remove only records a cut covers). Verification starts the chain after the newest
    cut: from its `chain_head` (the entry hash of record `through_index`) and its `frontier` (the Merkle tree's
    right edge at `through_index`, so that later digests' roots still recompute); `leaves` are the entry hashes
    of the expired records of the last, incomplete block of 256 (what proofs and sealing read for them). Cuts
    chain (`previous_hash`) and name the newest digest at the cut. Immutable (trigger)."""

    __tablename__ = "audit_retention_cuts"
    __table_args__ = (sa.UniqueConstraint("org_id", "sequence", name="uq_audit_retention_cuts_org_sequence"),)

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organizations.id", max_length=40)
    sequence: int = Field(sa_type=sa.BigInteger)
    from_index: int = Field(sa_type=sa.BigInteger)
    through_index: int = Field(sa_type=sa.BigInteger)
    record_count: int = Field(sa_type=sa.BigInteger)
    first_seq: int | None = Field(default=None, sa_type=sa.BigInteger)
    last_seq: int | None = Field(default=None, sa_type=sa.BigInteger)
    cutoff: datetime = timestamp_column()
    retention_days: int
    chain_head: str = Field(max_length=64)
    tree_root: str = Field(max_length=64)
    frontier: list[Any] = Field(sa_column=sa.Column(JSONB, nullable=False))
    leaves: bytes = Field(sa_type=sa.LargeBinary)
    digest_sequence: int = Field(sa_type=sa.BigInteger)
    digest_hash: str = Field(max_length=80)
    previous_hash: str = Field(max_length=80)
    cut_hash: str = Field(max_length=80)
    signature: str = Field(max_length=200)
    key_id: str = Field(max_length=40)
    created_at: datetime = timestamp_column()


class AuditRetentionSetting(SQLModel, TenantScoped, table=True):
    """An organisation's retention: the owner's override (`retention_days`, None: the plan's), the retention the
    last run applied, and the grace kept after a decrease (`grace_days` until `grace_until`)."""

    __tablename__ = "audit_retention_settings"

    org_id: str = Field(primary_key=True, foreign_key="organizations.id", max_length=40)
    retention_days: int | None = None
    applied_days: int | None = None
    grace_days: int | None = None
    grace_until: datetime | None = optional_timestamp_column()
    last_run_at: datetime | None = optional_timestamp_column()
    updated_at: datetime = timestamp_column()


class AuditSigningKey(SQLModel, table=True):
    """A public key that signs (or signed) digests, with when it was the signing key. Not per organisation.

    When the signing key changes, the new key signs a statement about the previous one
    (`previous_key_signature`, app.integrity.key_statement), and the previous key, when its private half is
    still at hand (`agentrail rotate-signing-key`), signs one about the new key (`endorsement`): a verifier
    that trusts either one can follow the change."""

    __tablename__ = "audit_signing_keys"

    id: str = Field(primary_key=True, max_length=40)  # app.integrity.key_id
    public_key: bytes = Field(sa_type=sa.LargeBinary)
    valid_from: datetime = timestamp_column()
    valid_to: datetime | None = optional_timestamp_column()
    previous_key_id: str | None = Field(default=None, max_length=40)
    previous_key_signature: str | None = Field(default=None, max_length=200)
    endorsement: str | None = Field(default=None, max_length=200)


@dataclass(slots=True)
class AuditRecord:
    """A read model of one audit record: what services return and GraphQL maps. No ORM state."""

    id: str
    org_id: str
    seq: int
    trace_id: str
    span_id: str
    parent_span_id: str | None
    agent_id: str | None
    action: str
    prompt: str | None
    response: str | None
    metadata: dict[str, Any] | None  # None once erased
    args: Any
    result: Any
    occurred_at: datetime
    received_at: datetime
    duration_ms: float | None
    status: str
    idempotency_key: str | None
    execution_id: str | None
    verb: str | None
    provider: str | None
    risk_level: str | None
    governance_status: str | None
    dry_run: bool | None
    idempotent: bool | None
    tenant_id: str | None
    credential_masked: bool
    checksum: str
    erased_at: datetime | None = None
    erasure_id: str | None = None


# The columns a read selects, in AuditRecord's order (ORM attributes, so tenant scoping applies).
RECORD_COLUMNS = [
    col(AuditLog.id),
    col(AuditLog.org_id),
    col(AuditLog.seq),
    col(AuditLog.trace_id),
    col(AuditLog.span_id),
    col(AuditLog.parent_span_id),
    col(AuditLog.agent_id),
    col(AuditLog.action),
    col(AuditLog.prompt),
    col(AuditLog.response),
    col(AuditLog.metadata_),
    col(AuditLog.args),
    col(AuditLog.result),
    col(AuditLog.occurred_at),
    col(AuditLog.received_at),
    col(AuditLog.duration_ms),
    col(AuditLog.status),
    col(AuditLog.idempotency_key),
    col(AuditLog.execution_id),
    col(AuditLog.verb),
    col(AuditLog.provider),
    col(AuditLog.risk_level),
    col(AuditLog.governance_status),
    col(AuditLog.dry_run),
    col(AuditLog.idempotent),
    col(AuditLog.tenant_id),
    col(AuditLog.credential_masked),
    col(AuditLog.checksum),
    col(AuditLog.erased_at),
    col(AuditLog.erasure_id),
]


# RECORD_COLUMNS without the JSON content (metadata, args, result: NULL), for reads that select none of it
_JSON_KEYS = {"metadata_", "args", "result"}
TEXT_RECORD_COLUMNS = [
    sa.null().label(column.key) if column.key in _JSON_KEYS else column
    for column in cast(list[InstrumentedAttribute[Any]], RECORD_COLUMNS)
]


# what verification reads beside RECORD_COLUMNS
CHAIN_COLUMNS = [col(AuditLog.chain_index), col(AuditLog.content_hash), col(AuditLog.entry_hash)]


def record_from_row(row: Any) -> AuditRecord:
    return AuditRecord(*row)
