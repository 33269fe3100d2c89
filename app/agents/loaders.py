"""Per-request DataLoader: agents by id, deleted ones included, one query per batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from strawberry.dataloader import DataLoader

from app.agents import service
from app.agents.models import Agent

if TYPE_CHECKING:
    from app.api.context import Context

AgentLoader = DataLoader[str, Agent | None]


async def agent_loader(context: Context) -> AgentLoader:
    """`(await agent_loader(info.context)).load(agent_id)` → the Agent row (deleted ones too);
    None for an id the caller's organisation does not have. One loader per request."""
    session = await context.db()

    async def load(ids: list[str]) -> Sequence[Agent | None]:
        found = await service.agents_by_ids(session, ids)
        return [found.get(agent_id) for agent_id in ids]

    return context.loader("agents", lambda: AgentLoader(load_fn=load))
