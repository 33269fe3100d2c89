"""Per-request DataLoaders of the policies domain: a list of agents or policies costs one query per field."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import select

from app.dataloader import SessionLoader
from app.db import AsyncSession
from app.policies import service
from app.policies.models import Policy, PolicyVersion

VersionKey = tuple[str, int]  # (policy_id, number)


class PoliciesByAgentLoader(SessionLoader[str, list[Policy]]):
    """The policies attached to each agent (by id)."""

    async def fetch(self, session: AsyncSession, keys: list[str]) -> list[list[Policy]]:
        found = await service.policies_of(session, keys)
        return [found.get(a, []) for a in keys]


class AgentIdsByPolicyLoader(SessionLoader[str, list[str]]):
    """The ids of the agents each policy (by id) is attached to."""

    async def fetch(self, session: AsyncSession, keys: list[str]) -> list[list[str]]:
        found = await service.agents_of(session, keys)
        return [found.get(p, []) for p in keys]


class VersionLoader(SessionLoader[VersionKey, PolicyVersion | None]):
    """Policy versions by (policy id, number)."""

    async def fetch(self, session: AsyncSession, keys: list[VersionKey]) -> list[PolicyVersion | None]:
        stmt = select(PolicyVersion).where(sa.tuple_(PolicyVersion.policy_id, PolicyVersion.number).in_(keys))
        by_key = {(v.policy_id, v.number): v for v in (await session.exec(stmt)).all()}
        return [by_key.get(k) for k in keys]
