"""Per-request DataLoaders of the compliance domain."""

from __future__ import annotations

from typing import Any

from sqlmodel import select
from strawberry.dataloader import DataLoader

from app.compliance import service
from app.compliance.models import Alert, ComplianceRule


async def rule_loader(context: Any) -> DataLoader[str, ComplianceRule | None]:
    session = await context.db()

    async def load(ids: list[str]) -> list[ComplianceRule | None]:
        rows = (await session.exec(select(ComplianceRule).where(ComplianceRule.id.in_(ids)))).all()
        by_id = {r.id: r for r in rows}
        return [by_id.get(i) for i in ids]

    return context.loader("compliance.rule", lambda: DataLoader(load_fn=load))


async def alerts_by_record_loader(context: Any) -> DataLoader[str, list[Alert]]:
    session = await context.db()

    async def load(record_ids: list[str]) -> list[list[Alert]]:
        found = await service.alerts_by_record(session, record_ids)
        return [found.get(i, []) for i in record_ids]

    return context.loader("compliance.alerts_by_record", lambda: DataLoader(load_fn=load))


async def alert_count_loader(context: Any) -> DataLoader[str, int]:
    session = await context.db()

    async def load(trace_ids: list[str]) -> list[int]:
        found = await service.alert_counts_by_trace(session, trace_ids)
        return [found.get(t, 0) for t in trace_ids]

    return context.loader("compliance.alert_count", lambda: DataLoader(load_fn=load))
