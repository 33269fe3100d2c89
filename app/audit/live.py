"""Live spans: published after a batch commits, received by `traceSpans` subscribers on any API node."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

import orjson

from app.audit.models import AuditRecord
from app.runtime.redis import Broadcaster


def trace_channel(org_id: str, trace_id: str) -> str:
    return f"agentrail:trace:{org_id}:{trace_id}"


def encode(records: Sequence[AuditRecord]) -> bytes:
    return orjson.dumps([{f: getattr(r, f) for f in r.__slots__} for r in records])  # type: ignore[attr-defined]


def decode(message: bytes) -> list[AuditRecord]:
    records = []
    for data in orjson.loads(message):
        for key in ("occurred_at", "received_at"):
            data[key] = datetime.fromisoformat(data[key])
        records.append(AuditRecord(**data))
    return records


async def publish_spans(broadcaster: Broadcaster, records: Sequence[AuditRecord]) -> None:
    """One message per trace per batch, all in one pipelined round trip."""
    by_channel: dict[str, list[AuditRecord]] = defaultdict(list)
    for record in records:
        by_channel[trace_channel(record.org_id, record.trace_id)].append(record)
    if by_channel:
        await broadcaster.publish_many([(channel, encode(batch)) for channel, batch in by_channel.items()])
