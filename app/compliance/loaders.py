"""Per-request DataLoaders of the compliance domain."""

from __future__ import annotations

from typing import Any

from sqlmodel import select
from strawberry.dataloader import DataLoader

from app.compliance.models import ComplianceRule


async def rule_loader(context: Any) -> DataLoader[str, ComplianceRule | None]:
    session = await context.db()

    async def load(ids: list[str]) -> list[ComplianceRule | None]:
        rows = (await session.exec(select(ComplianceRule).where(ComplianceRule.id.in_(ids)))).all()
        by_id = {r.id: r for r in rows}
        return [by_id.get(i) for i in ids]

    return context.loader("compliance.rule", lambda: DataLoader(load_fn=load))
