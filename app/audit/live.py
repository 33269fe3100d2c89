"""Live spans: published after a batch commits, received by `traceSpans` subscribers on any API node."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from app.audit.models import AuditRecord
from app.runtime.redis import Broadcaster


def trace_channel(org_id: str, trace_id: str) -> str:
    return f"agentrail:trace:{org_id}:{trace_id}"


def encode(record: AuditRecord) -> bytes:
    return orjson.dumps({f: getattr(record, f) for f in record.__slots__})  # type: ignore[attr-defined]


def decode(message: bytes) -> AuditRecord:
    data: dict[str, Any] = orjson.loads(message)
    for key in ("occurred_at", "received_at"):
        data[key] = datetime.fromisoformat(data[key])
    return AuditRecord(**data)


async def publish_spans(broadcaster: Broadcaster, records: Sequence[AuditRecord]) -> None:
    """One pipelined round trip for the whole batch. Best effort: the records are already committed,
    and a subscriber that misses a message re-reads the trace from PostgreSQL when it resubscribes."""
    if records:
        await broadcaster.publish_many([(trace_channel(r.org_id, r.trace_id), encode(r)) for r in records])
