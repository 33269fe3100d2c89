"""The activity trail is chained at write time, like audit records (app.integrity, ACTIVITY_CHAIN).

`record_activity` adds events to the caller's transaction without a round trip; when that transaction flushes,
this hook takes the organisation's activity lock (held until the commit, so events of one organisation are
chained one transaction after another) with the chain head in the same round trip, and gives each new event its
chain index, content hash, entry hash and record hash (`checksum`), in the order they were added.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from app.activity.models import ActivityEvent
from app.db import LOCKED_CHAIN_HEAD
from app.integrity import ACTIVITY_CHAIN, GENESIS_ENTRY, chain_hashes

ACTIVITY_LOCK_NAMESPACE = 0x41435456  # "ACTV": writers of an organisation's activity, and its sealing


@event.listens_for(Session, "before_flush")
def _chain_new_events(session: Session, _flush_context: Any, _instances: Any) -> None:
    pending = [obj for obj in session.new if isinstance(obj, ActivityEvent) and obj.chain_index is None]
    if not pending:
        return
    by_org: dict[str, list[ActivityEvent]] = {}
    for obj in sorted(pending, key=lambda e: (e.occurred_at, e.id)):
        by_org.setdefault(str(obj.org_id), []).append(obj)
    connection = session.connection()
    for org_id, events in sorted(by_org.items()):
        # the lock and the head in one round trip (app.db.LOCKED_CHAIN_HEAD)
        head = connection.execute(
            LOCKED_CHAIN_HEAD, {"ns": ACTIVITY_LOCK_NAMESPACE, "org": org_id, "stream": "activity"}
        ).first()
        index, previous = (int(head[0]), bytes(head[1])) if head else (0, GENESIS_ENTRY)
        for obj in events:
            index += 1
            record = {name: getattr(obj, name) for name in ACTIVITY_CHAIN.header_fields}
            record["metadata"] = obj.metadata_
            hashes = chain_hashes(ACTIVITY_CHAIN, record, index, previous)
            obj.chain_index, obj.content_hash, obj.entry_hash = index, hashes.content_hash, hashes.entry_hash
            obj.checksum = hashes.checksum
            previous = hashes.entry_hash
