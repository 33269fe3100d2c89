"""activity chain: the activity trail is chained like audit records (app/activity/chain.py)

Adds `chain_index`, `content_hash` and `entry_hash` to activity_events and backfills them per organisation in
(occurred_at, id) order. Existing events keep their legacy `checksum`.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-03 14:50:00
"""

import sqlalchemy as sa
from alembic import op

from app.db import json_loads
from app.integrity import ACTIVITY_CHAIN, GENESIS_ENTRY, chain_hashes

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

_FIELDS = ACTIVITY_CHAIN.header_fields + ACTIVITY_CHAIN.content_fields


def _backfill(bind: sa.Connection) -> None:
    columns = ", ".join("metadata::text AS metadata" if f == "metadata" else f for f in _FIELDS)
    orgs = bind.execute(sa.text("SELECT DISTINCT org_id FROM activity_events ORDER BY org_id")).scalars().all()
    for org_id in orgs:
        rows = bind.execute(
            sa.text(f"SELECT {columns} FROM activity_events WHERE org_id = :org ORDER BY occurred_at, id"),
            {"org": org_id},
        ).all()
        previous, updates = GENESIS_ENTRY, []
        for index, row in enumerate(rows, 1):
            record = dict(row._mapping)
            record["metadata"] = json_loads(record["metadata"]) if record["metadata"] is not None else {}
            hashes = chain_hashes(ACTIVITY_CHAIN, record, index, previous)
            previous = hashes.entry_hash
            updates.append({"id": record["id"], "i": index, "c": hashes.content_hash, "e": hashes.entry_hash})
        if updates:
            bind.execute(
                sa.text("UPDATE activity_events SET chain_index = :i, content_hash = :c, entry_hash = :e WHERE id = :id"),
                updates,
            )


def upgrade() -> None:
    op.add_column("activity_events", sa.Column("chain_index", sa.BigInteger(), nullable=True))
    op.add_column("activity_events", sa.Column("content_hash", sa.LargeBinary(), nullable=True))
    op.add_column("activity_events", sa.Column("entry_hash", sa.LargeBinary(), nullable=True))
    op.execute("ALTER TABLE activity_events DISABLE TRIGGER activity_events_immutable")
    _backfill(op.get_bind())
    op.execute("ALTER TABLE activity_events ENABLE TRIGGER activity_events_immutable")
    for name in ("chain_index", "content_hash", "entry_hash"):
        op.alter_column("activity_events", name, nullable=False)
    op.create_index("uq_activity_events_org_chain", "activity_events", ["org_id", "chain_index"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_activity_events_org_chain", table_name="activity_events")
    for name in ("entry_hash", "content_hash", "chain_index"):
        op.drop_column("activity_events", name)
