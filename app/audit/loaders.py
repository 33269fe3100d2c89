"""Per-request DataLoaders of the audit domain: one set-based query per batch, never one per node."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import col

from app.audit import service
from app.audit.models import RECORD_COLUMNS, AuditLog, AuditRecord, record_from_row
from app.audit.traces import TraceTree, build_tree
from app.dataloader import SessionLoader
from app.db import AsyncSession

SpanKey = tuple[str, str]  # (trace_id, span_id)


class SpanLoader(SessionLoader[SpanKey, AuditRecord | None]):
    """Spans by (trace id, span id)."""

    async def fetch(self, session: AsyncSession, keys: list[SpanKey]) -> list[AuditRecord | None]:
        found = await service.spans_by_id(session, keys)
        return [found.get(k) for k in keys]


class ChildrenLoader(SessionLoader[SpanKey, list[AuditRecord]]):
    """The child spans of each span (by trace id, span id), in time order."""

    async def fetch(self, session: AsyncSession, keys: list[SpanKey]) -> list[list[AuditRecord]]:
        found = await service.children_of(session, keys)
        return [found.get(k, []) for k in keys]


class TraceLoader(SessionLoader[str, TraceTree | None]):
    """Whole traces for a page of `traces`: one query for all of them, each capped at MAX_TRACE_SPANS."""

    async def fetch(self, session: AsyncSession, keys: list[str]) -> list[TraceTree | None]:
        ranked = (
            sa.select(
                *RECORD_COLUMNS,
                sa.func.row_number()
                .over(partition_by=col(AuditLog.trace_id), order_by=(col(AuditLog.occurred_at), col(AuditLog.seq)))
                .label("rank"),
            )
            .where(col(AuditLog.trace_id).in_(keys))
            .subquery()
        )
        stmt = (
            sa.select(*[c for c in ranked.c if c.name != "rank"])
            .where(ranked.c.rank <= service.MAX_TRACE_SPANS + 1)
            .order_by(ranked.c.trace_id, ranked.c.occurred_at, ranked.c.seq)
        )
        by_trace: dict[str, list[AuditRecord]] = {t: [] for t in keys}
        for row in (await session.execute(stmt)).all():
            record = record_from_row(row)
            by_trace[record.trace_id].append(record)
        out: list[TraceTree | None] = []
        for trace_id in keys:
            records = by_trace[trace_id]
            truncated = len(records) > service.MAX_TRACE_SPANS
            out.append(
                build_tree(trace_id, records[: service.MAX_TRACE_SPANS], truncated=truncated) if records else None
            )
        return out


class RecordLoader(SessionLoader[str, AuditRecord | None]):
    """Records by id (for alerts pointing at their record)."""

    async def fetch(self, session: AsyncSession, keys: list[str]) -> list[AuditRecord | None]:
        by_id = {r.id: r for r in await service.records_by_ids(session, keys)}
        return [by_id.get(i) for i in keys]


RootsKey = tuple[str, bool]  # (trace_id, with the JSON content)


class TraceRootsLoader(SessionLoader[RootsKey, list[AuditRecord]]):
    """The root spans of traces, read alone (a page of `traces` selecting `rootSpans` without `children`):
    no other span's content is read."""

    async def fetch(self, session: AsyncSession, keys: list[RootsKey]) -> list[list[AuditRecord]]:
        out: dict[RootsKey, list[AuditRecord]] = {}
        for with_json in (False, True):
            trace_ids = [t for t, j in keys if j is with_json]
            if trace_ids:
                found = await service.trace_roots(session, trace_ids, with_json=with_json)
                out.update({(t, with_json): found[t] for t in trace_ids})
        return [out[k] for k in keys]
