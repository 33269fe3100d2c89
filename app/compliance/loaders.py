"""Per-request DataLoader of the compliance domain."""

from __future__ import annotations

from sqlmodel import col, select

from app.compliance.models import ComplianceRule
from app.dataloader import SessionLoader
from app.db import AsyncSession


class RuleLoader(SessionLoader[str, ComplianceRule | None]):
    """Rules by id; None for one deleted since."""

    async def fetch(self, session: AsyncSession, keys: list[str]) -> list[ComplianceRule | None]:
        rows = (await session.exec(select(ComplianceRule).where(col(ComplianceRule.id).in_(keys)))).all()
        by_id = {r.id: r for r in rows}
        return [by_id.get(i) for i in keys]
