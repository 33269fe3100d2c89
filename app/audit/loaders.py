"""Per-request DataLoaders of the audit domain: one set-based query per batch, never one per node."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from strawberry.dataloader import DataLoader

from app.audit import service
from app.audit.models import RECORD_COLUMNS, AuditLog, AuditRecord, record_from_row
from app.audit.traces import TraceTree, build_tree

SpanKey = tuple[str, str]  # (trace_id, span_id)


async def span_loader(context: Any) -> DataLoader[SpanKey, AuditRecord | None]:
    session = await context.db()

    async def load(keys: list[SpanKey]) -> list[AuditRecord | None]:
        found = await service.spans_by_id(session, keys)
        return [found.get(k) for k in keys]

    return context.loader("audit.span", lambda: DataLoader(load_fn=load))


async def children_loader(context: Any) -> DataLoader[SpanKey, list[AuditRecord]]:
    session = await context.db()

    async def load(keys: list[SpanKey]) -> list[list[AuditRecord]]:
        found = await service.children_of(session, keys)
        return [found.get(k, []) for k in keys]

    return context.loader("audit.children", lambda: DataLoader(load_fn=load))


async def trace_loader(context: Any) -> DataLoader[str, TraceTree | None]:
    """Whole traces for a page of `traces`: one query for all of them, each capped at MAX_TRACE_SPANS."""
    session = await context.db()

    async def load(trace_ids: list[str]) -> list[TraceTree | None]:
        ranked = (
            sa.select(
                *RECORD_COLUMNS,
                sa.func.row_number()
                .over(partition_by=AuditLog.trace_id, order_by=(AuditLog.occurred_at, AuditLog.seq))
                .label("rank"),
            )
            .where(AuditLog.trace_id.in_(trace_ids))
            .subquery()
        )
        stmt = (
            sa.select(*[c for c in ranked.c if c.name != "rank"])
            .where(ranked.c.rank <= service.MAX_TRACE_SPANS + 1)
            .order_by(ranked.c.trace_id, ranked.c.occurred_at, ranked.c.seq)
        )
        by_trace: dict[str, list[AuditRecord]] = {t: [] for t in trace_ids}
        for row in (await session.execute(stmt)).all():
            record = record_from_row(row)
            by_trace[record.trace_id].append(record)
        out: list[TraceTree | None] = []
        for trace_id in trace_ids:
            records = by_trace[trace_id]
            truncated = len(records) > service.MAX_TRACE_SPANS
            out.append(
                build_tree(trace_id, records[: service.MAX_TRACE_SPANS], truncated=truncated) if records else None
            )
        return out

    return context.loader("audit.trace", lambda: DataLoader(load_fn=load))


async def record_loader(context: Any) -> DataLoader[str, AuditRecord | None]:
    """Records by id (for alerts pointing at their record)."""
    session = await context.db()

    async def load(ids: list[str]) -> list[AuditRecord | None]:
        by_id = {r.id: r for r in await service.records_by_ids(session, ids)}
        return [by_id.get(i) for i in ids]

    return context.loader("audit.record", lambda: DataLoader(load_fn=load))
