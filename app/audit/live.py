"""Live spans: published after a batch commits, received by `traceSpans` subscribers on any API node.

A message carries only the new records' ids (a few dozen bytes a span instead of whole prompts): most
traces have no live viewer, and a viewer reads the spans it is told about in one query.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import orjson

from app.audit.models import AuditRecord
from app.runtime.redis import Broadcaster


def trace_channel(org_id: str, trace_id: str) -> str:
    return f"agentrail:trace:{org_id}:{trace_id}"


def encode(records: Sequence[AuditRecord]) -> bytes:
    return orjson.dumps([record.id for record in records])


def decode(message: bytes) -> list[str]:
    """The ids of the records that a message announces."""
    return [str(record_id) for record_id in orjson.loads(message)]


async def publish_spans(broadcaster: Broadcaster, records: Sequence[AuditRecord]) -> None:
    """One message per trace per batch, all in one pipelined round trip."""
    by_channel: dict[str, list[AuditRecord]] = defaultdict(list)
    for record in records:
        by_channel[trace_channel(record.org_id, record.trace_id)].append(record)
    if by_channel:
        await broadcaster.publish_many([(channel, encode(batch)) for channel, batch in by_channel.items()])
