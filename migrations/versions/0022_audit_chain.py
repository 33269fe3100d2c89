"""audit chain: every record commits to its predecessor in its organisation's stream

Adds `chain_index`, `content_hash` and `entry_hash` to audit_logs (see app/integrity.py) and backfills them
for the records already there, per organisation in `seq` order (the order ingest wrote them), in batches.
Existing records keep their legacy `checksum` (and the HMAC digests that sealed them keep verifying); the
chain covers them from the first record on, so there is no legacy boundary.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-03 13:40:00
"""

import sqlalchemy as sa
from alembic import op

from app.db import json_loads
from app.integrity import AUDIT_CHAIN, GENESIS_ENTRY, RECORD_CHECKSUM_FIELDS, chain_hashes

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

_BATCH = 5_000
_JSON = ("metadata", "args", "result")


def _backfill(bind: sa.Connection) -> None:
    columns = ", ".join(f"{name}::text AS {name}" if name in _JSON else name for name in RECORD_CHECKSUM_FIELDS)
    orgs = bind.execute(sa.text("SELECT DISTINCT org_id FROM audit_logs ORDER BY org_id")).scalars().all()
    for org_id in orgs:
        index, previous, after = 0, GENESIS_ENTRY, 0
        while True:
            rows = bind.execute(
                sa.text(
                    f"SELECT seq, {columns} FROM audit_logs WHERE org_id = :org AND seq > :after ORDER BY seq LIMIT :n"
                ),
                {"org": org_id, "after": after, "n": _BATCH},
            ).all()
            if not rows:
                break
            updates = []
            for row in rows:
                record = dict(row._mapping)
                for name in _JSON:
                    record[name] = None if record[name] is None else json_loads(record[name])
                index += 1
                hashes = chain_hashes(AUDIT_CHAIN, record, index, previous)
                previous = hashes.entry_hash
                updates.append(
                    {"seq": row.seq, "i": index, "c": hashes.content_hash, "e": hashes.entry_hash}
                )
            bind.execute(
                sa.text("UPDATE audit_logs SET chain_index = :i, content_hash = :c, entry_hash = :e WHERE seq = :seq"),
                updates,
            )
            after = rows[-1].seq


def upgrade() -> None:
    op.add_column("audit_logs", sa.Column("chain_index", sa.BigInteger(), nullable=True))
    op.add_column("audit_logs", sa.Column("content_hash", sa.LargeBinary(), nullable=True))
    op.add_column("audit_logs", sa.Column("entry_hash", sa.LargeBinary(), nullable=True))
    op.execute("ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_immutable")
    _backfill(op.get_bind())
    op.execute("ALTER TABLE audit_logs ENABLE TRIGGER audit_logs_immutable")
    for name in ("chain_index", "content_hash", "entry_hash"):
        op.alter_column("audit_logs", name, nullable=False)
    op.create_index("uq_audit_logs_org_chain", "audit_logs", ["org_id", "chain_index"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_audit_logs_org_chain", table_name="audit_logs")
    for name in ("entry_hash", "content_hash", "chain_index"):
        op.drop_column("audit_logs", name)
