"""signed digests: Ed25519 keys, version 2 digests over the RFC 9162 tree of the chain, kept Merkle nodes

Version 1 (HMAC) digests stay as they are and keep verifying; the next digest of each organisation is a
version 2 one, whose tree covers its whole chain from the first record.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-03 14:00:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_signing_keys",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("previous_key_id", sa.String(length=40), nullable=True),
        sa.Column("previous_key_signature", sa.String(length=200), nullable=True),
        sa.Column("endorsement", sa.String(length=200), nullable=True),
    )
    op.create_table(
        "audit_merkle_nodes",
        sa.Column("org_id", sa.String(length=40), sa.ForeignKey("organizations.id"), primary_key=True),
        sa.Column("stream", sa.String(length=16), primary_key=True),
        sa.Column("level", sa.SmallInteger(), primary_key=True),
        sa.Column("idx", sa.BigInteger(), primary_key=True),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.Column("leaves", sa.LargeBinary(), nullable=True),
    )
    op.execute(
        "CREATE TRIGGER audit_merkle_nodes_immutable BEFORE UPDATE OR DELETE ON audit_merkle_nodes "
        "FOR EACH ROW EXECUTE FUNCTION agentrail_reject_audit_change()"
    )
    op.add_column("audit_digests", sa.Column("stream", sa.String(length=16), nullable=False, server_default="audit"))
    op.drop_constraint("uq_audit_digests_org_sequence", "audit_digests", type_="unique")
    op.create_unique_constraint("uq_audit_digests_org_sequence", "audit_digests", ["org_id", "stream", "sequence"])
    op.add_column("audit_digests", sa.Column("version", sa.SmallInteger(), nullable=False, server_default="1"))
    op.add_column("audit_digests", sa.Column("key_id", sa.String(length=40), nullable=True))
    op.add_column("audit_digests", sa.Column("from_index", sa.BigInteger(), nullable=True))
    op.add_column("audit_digests", sa.Column("tree_size", sa.BigInteger(), nullable=True))
    op.add_column("audit_digests", sa.Column("chain_head", sa.String(length=64), nullable=True))
    op.add_column("audit_digests", sa.Column("frontier", JSONB(), nullable=True))
    op.alter_column("audit_digests", "version", server_default=None)
    op.alter_column("audit_digests", "stream", server_default=None)


def downgrade() -> None:
    op.drop_constraint("uq_audit_digests_org_sequence", "audit_digests", type_="unique")
    op.create_unique_constraint("uq_audit_digests_org_sequence", "audit_digests", ["org_id", "sequence"])
    for name in ("frontier", "chain_head", "tree_size", "from_index", "key_id", "version", "stream"):
        op.drop_column("audit_digests", name)
    op.execute("DROP TRIGGER IF EXISTS audit_merkle_nodes_immutable ON audit_merkle_nodes")
    op.drop_table("audit_merkle_nodes")
    op.drop_table("audit_signing_keys")
