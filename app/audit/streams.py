"""The chained streams that sealing and verification work on: audit records, and the activity trail.

A stream is a per-organisation sequence of records, each with a 1-based `chain_index`, a content hash and an
entry hash (app.integrity). Sealing and verification (app.audit.sealing) see a stream only through these
reads, so that the activity trail is sealed and proved exactly like audit records, through its own domain's
service functions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import col

from app.activity import service as activity
from app.activity.chain import ACTIVITY_LOCK_NAMESPACE
from app.audit import erasure
from app.audit.models import CHAIN_COLUMNS, RECORD_COLUMNS, AuditDigest, AuditLog, AuditRetentionCut, record_from_row
from app.audit.service import INGEST_LOCK_NAMESPACE
from app.db import AsyncSession, within
from app.integrity import ACTIVITY_CHAIN, AUDIT_CHAIN, ChainSpec, checksum_content, record_checksum


@dataclass(slots=True)
class ChainRow:
    record: Any  # has the spec's fields as attributes, `id`, `seq` and `checksum`
    chain_index: int
    content_hash: bytes
    entry_hash: bytes


@dataclass(slots=True)
class Span:
    count: int
    last_index: int
    first_seq: int
    last_seq: int
    first_occurred_at: datetime
    last_occurred_at: datetime


@dataclass(slots=True)
class ErasureClaim:
    """What the organisation's records say of one erasure: requested on the activity trail, complete, and the
    count and chain-index hash of its records as its signed completion event gives them (None without one)."""

    requested: bool
    complete: bool
    record_count: int | None
    indexes_hash: str | None
    first_index: int | None = None  # the chain index of its first record (retention may have removed it since)
    last_index: int | None = None  # and of its last


@dataclass(frozen=True)
class Stream:
    name: str
    spec: ChainSpec
    lock_namespace: int  # the per-organisation advisory lock that writers and sealing take
    legacy_checksums: bool  # records may carry a checksum from before the chain
    orgs_with_unsealed: Callable[[AsyncSession], Awaitable[list[str]]]
    index_after_seq: Callable[[AsyncSession, int], Awaitable[int]]
    span: Callable[[AsyncSession, int, int], Awaitable[Span | None]]
    entries: Callable[[AsyncSession, int, int], Awaitable[list[tuple[int, bytes]]]]
    chain_rows: Callable[[AsyncSession, int, int, int | None], Awaitable[list[ChainRow]]]
    window: Callable[[AsyncSession, datetime | None, datetime | None], Awaitable[tuple[int, int] | None]]
    record: Callable[[AsyncSession, str], Awaitable[ChainRow | None]]
    legacy_checksum: Callable[[Any], str] | None = None  # the checksum records carried before the chain
    # the erasures that records of the stream may name (erasure id -> claim); None: records are never erased
    erasures: Callable[[AsyncSession], Awaitable[dict[str, ErasureClaim]]] | None = None


# ---------------------------------------------------------------------------------------------------
# audit records


async def _audit_orgs(session: AsyncSession) -> list[str]:
    query = sa.text(
        """
        SELECT o.id FROM organizations o
        WHERE EXISTS (
            SELECT 1 FROM audit_logs a
            WHERE a.org_id = o.id
              AND a.seq > COALESCE(
                  (SELECT max(d.to_seq) FROM audit_digests d WHERE d.org_id = o.id AND d.stream = 'audit'), 0)
        )
        ORDER BY o.id
        """
    )
    return list((await session.execute(query)).scalars().all())


async def _audit_index_after_seq(session: AsyncSession, seq: int) -> int:
    stmt = sa.select(sa.func.max(col(AuditLog.chain_index))).where(col(AuditLog.seq) <= seq)
    return int((await session.execute(stmt)).scalar_one() or 0) + 1


async def _audit_span(session: AsyncSession, low: int, high: int) -> Span | None:
    stmt = sa.select(
        sa.func.count(),
        sa.func.max(col(AuditLog.chain_index)),
        sa.func.min(col(AuditLog.seq)),
        sa.func.max(col(AuditLog.seq)),
        sa.func.min(col(AuditLog.occurred_at)),
        sa.func.max(col(AuditLog.occurred_at)),
    ).where(col(AuditLog.chain_index).between(low, high))
    row = (await session.execute(stmt)).one()
    return None if not row[0] else Span(*row)


async def _audit_entries(session: AsyncSession, low: int, high: int) -> list[tuple[int, bytes]]:
    if high < low:
        return []
    stmt = (
        sa.select(col(AuditLog.chain_index), col(AuditLog.entry_hash))
        .where(col(AuditLog.chain_index).between(low, high))
        .order_by(col(AuditLog.chain_index))
    )
    found = [(int(i), bytes(e)) for i, e in (await session.execute(stmt)).all()]
    if found and found[0][0] == low:
        return found
    # the start is missing: retention may have removed it, keeping the entry hashes of its last incomplete block
    cut_stmt = sa.select(col(AuditRetentionCut.through_index), col(AuditRetentionCut.leaves))
    cut = (await session.execute(cut_stmt.order_by(col(AuditRetentionCut.sequence).desc()).limit(1))).first()
    if cut is None or cut.through_index < low:
        return found
    first = cut.through_index - len(cut.leaves) // 32 + 1
    kept = [
        (i, bytes(cut.leaves[(i - first) * 32 : (i - first + 1) * 32]))
        for i in range(max(low, first), min(high, cut.through_index) + 1)
    ]
    return kept + [(i, e) for i, e in found if i > cut.through_index]


def _audit_row(row: Any) -> ChainRow:
    n = len(RECORD_COLUMNS)
    return ChainRow(record_from_row(row[:n]), int(row[n]), bytes(row[n + 1]), bytes(row[n + 2]))


async def _audit_chain_rows(session: AsyncSession, after: int, limit: int, high: int | None) -> list[ChainRow]:
    stmt = (
        sa.select(*RECORD_COLUMNS, *CHAIN_COLUMNS)
        .where(col(AuditLog.chain_index) > after)
        .order_by(col(AuditLog.chain_index))
        .limit(limit)
    )
    if high is not None:
        stmt = stmt.where(col(AuditLog.chain_index) <= high)
    return [_audit_row(row) for row in (await session.execute(stmt)).all()]


async def _audit_window(
    session: AsyncSession, occurred_from: datetime | None, occurred_to: datetime | None
) -> tuple[int, int] | None:
    stmt = sa.select(sa.func.min(col(AuditLog.chain_index)), sa.func.max(col(AuditLog.chain_index))).where(
        *within(AuditLog.occurred_at, occurred_from, occurred_to)
    )
    low, high = (await session.execute(stmt)).one()
    return None if low is None else (int(low), int(high))


async def _audit_record(session: AsyncSession, record_id: str) -> ChainRow | None:
    stmt = sa.select(*RECORD_COLUMNS, *CHAIN_COLUMNS).where(col(AuditLog.id) == record_id)
    row = (await session.execute(stmt)).first()
    return None if row is None else _audit_row(row)


def _int(data: dict[str, Any] | None, key: str) -> int | None:
    value = (data or {}).get(key)
    return value if isinstance(value, int) else None


async def _audit_erasures(session: AsyncSession) -> dict[str, ErasureClaim]:
    events: dict[str, dict[str, Any]] = {}
    requested: set[str] = set()
    for event in await activity.events_by_action(session, (erasure.REQUESTED_ACTION, erasure.ERASED_ACTION)):
        if event.action == erasure.REQUESTED_ACTION:
            requested.add(event.target_id or "")
        else:
            events[event.target_id or ""] = event.metadata_ or {}
    claims = {}
    for row in (await erasure.erasures_of(session)).values():
        done = events.get(row.id)
        count = done.get("recordCount") if done else None
        claims[row.id] = ErasureClaim(
            requested=row.id in requested,
            complete=row.status == erasure.DONE,
            record_count=count if isinstance(count, int) else None,
            indexes_hash=done.get("chainIndexesHash") if done else None,
            first_index=_int(done, "firstChainIndex"),
            last_index=_int(done, "lastChainIndex"),
        )
    return claims


AUDIT = Stream(
    name="audit",
    spec=AUDIT_CHAIN,
    lock_namespace=INGEST_LOCK_NAMESPACE,
    legacy_checksums=True,
    legacy_checksum=lambda record: record_checksum(checksum_content(record)),
    orgs_with_unsealed=_audit_orgs,
    index_after_seq=_audit_index_after_seq,
    span=_audit_span,
    entries=_audit_entries,
    chain_rows=_audit_chain_rows,
    window=_audit_window,
    record=_audit_record,
    erasures=_audit_erasures,
)

# ---------------------------------------------------------------------------------------------------
# the activity trail (through the activity domain's service functions)


class _Event:
    """An activity event as the chain walk reads it: its fields, `seq` (its chain index: no legacy digests)."""

    __slots__ = ("_event", "seq")

    def __init__(self, event: Any) -> None:
        self._event, self.seq = event, event.chain_index

    def __getattr__(self, name: str) -> Any:
        return getattr(self._event, name)


def _event_row(event: Any) -> ChainRow:
    return ChainRow(_Event(event), int(event.chain_index), bytes(event.content_hash), bytes(event.entry_hash))


async def _activity_orgs(session: AsyncSession) -> list[str]:
    heads = await activity.chain_heads(session)
    sealed = dict(
        (
            await session.execute(
                sa.select(col(AuditDigest.org_id), sa.func.max(col(AuditDigest.tree_size)))
                .where(col(AuditDigest.stream) == "activity")
                .group_by(col(AuditDigest.org_id))
            )
        ).all()
    )
    return sorted(org for org, head in heads.items() if head > (sealed.get(org) or 0))


async def _activity_index_after_seq(_session: AsyncSession, _seq: int) -> int:
    return 1  # the activity trail has no version 1 digests


async def _activity_span(session: AsyncSession, low: int, high: int) -> Span | None:
    found = await activity.chain_span(session, low, high)
    if found is None:
        return None
    count, last, first_at, last_at = found
    return Span(count, last, low, last, first_at, last_at)


async def _activity_rows(session: AsyncSession, after: int, limit: int, high: int | None) -> list[ChainRow]:
    return [_event_row(e) for e in await activity.chain_events(session, after, limit, high)]


async def _activity_record(session: AsyncSession, event_id: str) -> ChainRow | None:
    event = await activity.find_event(session, event_id)
    return None if event is None else _event_row(event)


ACTIVITY = Stream(
    name="activity",
    spec=ACTIVITY_CHAIN,
    lock_namespace=ACTIVITY_LOCK_NAMESPACE,
    legacy_checksums=True,
    legacy_checksum=lambda record: activity.legacy_checksum(record._event),
    orgs_with_unsealed=_activity_orgs,
    index_after_seq=_activity_index_after_seq,
    span=_activity_span,
    entries=activity.chain_entries,
    chain_rows=_activity_rows,
    window=activity.chain_window,
    record=_activity_record,
)

STREAMS: tuple[Stream, ...] = (AUDIT, ACTIVITY)
BY_NAME = {stream.name: stream for stream in STREAMS}
