"""Per-request DataLoaders of the policies domain: a list of agents or policies costs one query per field."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlmodel import select
from strawberry.dataloader import DataLoader

from app.policies import service
from app.policies.models import Policy, PolicyVersion


async def policies_by_agent_loader(context: Any) -> DataLoader[str, list[Policy]]:
    session = await context.db()

    async def load(agent_ids: list[str]) -> list[list[Policy]]:
        found = await service.policies_of(session, agent_ids)
        return [found.get(a, []) for a in agent_ids]

    return context.loader("policies.by_agent", lambda: DataLoader(load_fn=load))


async def agent_ids_by_policy_loader(context: Any) -> DataLoader[str, list[str]]:
    session = await context.db()

    async def load(policy_ids: list[str]) -> list[list[str]]:
        found = await service.agents_of(session, policy_ids)
        return [found.get(p, []) for p in policy_ids]

    return context.loader("policies.agent_ids", lambda: DataLoader(load_fn=load))


async def version_loader(context: Any) -> DataLoader[tuple[str, int], PolicyVersion | None]:
    session = await context.db()

    async def load(keys: list[tuple[str, int]]) -> list[PolicyVersion | None]:
        stmt = select(PolicyVersion).where(sa.tuple_(PolicyVersion.policy_id, PolicyVersion.number).in_(keys))
        by_key = {(v.policy_id, v.number): v for v in (await session.exec(stmt)).all()}
        return [by_key.get(k) for k in keys]

    return context.loader("policies.version", lambda: DataLoader(load_fn=load))
