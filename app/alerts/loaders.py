"""Per-request DataLoaders of the alerts domain."""

from __future__ import annotations

from typing import Any

from strawberry.dataloader import DataLoader

from app.alerts import service
from app.alerts.models import Alert


async def alerts_by_record_loader(context: Any) -> DataLoader[str, list[Alert]]:
    session = await context.db()

    async def load(record_ids: list[str]) -> list[list[Alert]]:
        found = await service.alerts_by_record(session, record_ids)
        return [found.get(i, []) for i in record_ids]

    return context.loader("alerts.by_record", lambda: DataLoader(load_fn=load))


async def alert_count_loader(context: Any) -> DataLoader[str, int]:
    session = await context.db()

    async def load(trace_ids: list[str]) -> list[int]:
        found = await service.alert_counts_by_trace(session, trace_ids)
        return [found.get(t, 0) for t in trace_ids]

    return context.loader("alerts.count", lambda: DataLoader(load_fn=load))
