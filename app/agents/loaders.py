"""Per-request DataLoader of the agents domain."""

from __future__ import annotations

from app.agents import service
from app.agents.models import Agent
from app.dataloader import SessionLoader
from app.db import AsyncSession


class AgentLoader(SessionLoader[str, Agent | None]):
    """Agents by id, deleted ones included (one query per batch); None for an id the caller's organisation
    does not have."""

    async def fetch(self, session: AsyncSession, keys: list[str]) -> list[Agent | None]:
        found = await service.agents_by_ids(session, keys)
        return [found.get(agent_id) for agent_id in keys]
