"""Per-request DataLoaders of the alerts domain."""

from __future__ import annotations

from app.alerts import service
from app.alerts.models import Alert
from app.dataloader import SessionLoader
from app.db import AsyncSession


class AlertsByRecordLoader(SessionLoader[str, list[Alert]]):
    """The alerts each record (by id) raised."""

    async def fetch(self, session: AsyncSession, keys: list[str]) -> list[list[Alert]]:
        found = await service.alerts_by_record(session, keys)
        return [found.get(i, []) for i in keys]


class AlertCountLoader(SessionLoader[str, int]):
    """How many alerts each trace's (by id) spans raised."""

    async def fetch(self, session: AsyncSession, keys: list[str]) -> list[int]:
        found = await service.alert_counts_by_trace(session, keys)
        return [found.get(t, 0) for t in keys]
