"""REST /api/v1/agents as the API reference documents it (seed 002): CRUD, answering `organizationId`.
Thin adapters over the service functions the GraphQL fields call, under the same declarations."""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from app.agents import service
from app.agents.models import Agent
from app.errors import NotFound
from app.pagination import PageRequest
from app.rest import params
from app.rest.handler import Call, endpoint
from app.rest.openapi import Answer, Body
from app.rest.responses import row_json

MAX_LIMIT = 500


class AgentIn(Body):
    name: str
    description: str | None = None
    metadata: dict[str, Any] | None = None


class AgentPatch(Body):
    name: str | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None


class AgentOut(Answer):
    id: str
    name: str
    organization_id: str
    description: str
    metadata: dict[str, Any]
    created_at: str
    updated_at: str
    deleted_at: str | None = None
    last_seen_at: str | None = None


class AgentList(Answer):
    agents: list[AgentOut]
    total: int


def agent_json(agent: Agent) -> dict[str, Any]:
    return row_json(agent, hide=(), org_id="organizationId", metadata_="metadata")


@params.accepts(
    params.integer("limit", minimum=1, maximum=MAX_LIMIT, default=MAX_LIMIT), params.text("search", max_length=200)
)
@endpoint(responses={200: AgentList}, graphql="Query.agents", tag="agents")
async def list_agents(call: Call) -> Any:
    """List all agents for your org"""
    page = PageRequest(call.query["limit"])
    rows = (await service.list_agents(call.session, search=call.query["search"], page=page))[: page.size]
    total = await service.count_agents(call.session, search=call.query["search"])
    return {"agents": [agent_json(a) for a in rows], "total": total}


@endpoint(body=AgentIn, responses={201: AgentOut}, graphql="Mutation.createAgent", tag="agents")
async def create_agent(call: Call) -> Any:
    """Register a new agent"""
    return agent_json(await call.apply(service.create_agent))


@endpoint(responses={200: AgentOut}, graphql="Query.agent", tag="agents")
async def get_agent(call: Call) -> Any:
    """Get a single agent"""
    agent = await service.find_agent(call.session, call.path("agent_id"), include_deleted=True)
    if agent is None:
        raise NotFound("agent not found")
    return agent_json(agent)


@endpoint(responses={200: AgentOut}, graphql="Mutation.deleteAgent", tag="agents")
async def delete_agent(call: Call) -> Any:
    """Remove an agent"""
    agent = await service.delete_agent(call.session, call.principal, call.path("agent_id"), source_ip=call.source_ip)
    return agent_json(agent)


@endpoint(body=AgentPatch, responses={200: AgentOut}, graphql="Mutation.updateAgent", tag="agents")
async def update_agent(call: Call) -> Any:
    """Update agent name / metadata"""
    return agent_json(await call.apply(service.update_agent, call.path("agent_id")))


routes = [
    Route("/api/v1/agents", list_agents, methods=["GET"]),
    Route("/api/v1/agents", create_agent, methods=["POST"]),
    Route("/api/v1/agents/{agent_id}", get_agent, methods=["GET"]),
    Route("/api/v1/agents/{agent_id}", update_agent, methods=["PATCH"]),
    Route("/api/v1/agents/{agent_id}", delete_agent, methods=["DELETE"]),
]
