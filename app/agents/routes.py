"""REST /api/v1/agents as the API reference documents it (seed 002): CRUD, answering `organizationId`.
Thin adapters over the service functions the GraphQL fields call, under the same declarations."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.agents import service
from app.agents.models import Agent
from app.errors import NotFound
from app.pagination import PageRequest
from app.rest import params
from app.rest.openapi import Answer, Body, body_of, documented
from app.rest.params import query_of
from app.rest.responses import JSONResponse, answers, principal_of, row_json, source_ip
from app.unit_of_work import unit_of_work

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


@documented("List all agents for your org", responses={200: AgentList}, graphql="Query.agents", tag="agents")
@params.accepts(
    params.integer("limit", minimum=1, maximum=MAX_LIMIT, default=MAX_LIMIT), params.text("search", max_length=200)
)
@answers
async def list_agents(request: Request) -> Response:
    principal = principal_of(request)
    q = query_of(request)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        page = PageRequest(q["limit"])
        rows = (await service.list_agents(session, search=q["search"], page=page))[: page.size]
        total = await service.count_agents(session, search=q["search"])
    return JSONResponse({"agents": [agent_json(a) for a in rows], "total": total})


@documented(
    "Register a new agent", body=AgentIn, responses={201: AgentOut}, graphql="Mutation.createAgent", tag="agents"
)
@answers
async def create_agent(request: Request) -> Response:
    principal = principal_of(request)
    body = await body_of(request, AgentIn)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        agent = await service.create_agent(
            session,
            principal,
            name=body.name,
            description=body.description,
            metadata=body.metadata,
            source_ip=source_ip(request),
        )
        answer = agent_json(agent)
    return JSONResponse(answer, status_code=201)


@documented("Get a single agent", responses={200: AgentOut}, graphql="Query.agent", tag="agents")
@answers
async def get_agent(request: Request) -> Response:
    principal = principal_of(request)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        agent = await service.find_agent(session, request.path_params["agent_id"][:64], include_deleted=True)
    if agent is None:
        raise NotFound("agent not found")
    return JSONResponse(agent_json(agent))


@documented(
    "Update agent name / metadata",
    body=AgentPatch,
    responses={200: AgentOut},
    graphql="Mutation.updateAgent",
    tag="agents",
)
@answers
async def update_agent(request: Request) -> Response:
    principal = principal_of(request)
    body = await body_of(request, AgentPatch)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        agent = await service.update_agent(
            session,
            principal,
            request.path_params["agent_id"][:64],
            name=body.name,
            description=body.description,
            metadata=body.metadata,
            source_ip=source_ip(request),
        )
        answer = agent_json(agent)
    return JSONResponse(answer)


@documented("Remove an agent", responses={200: AgentOut}, graphql="Mutation.deleteAgent", tag="agents")
@answers
async def delete_agent(request: Request) -> Response:
    principal = principal_of(request)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        agent = await service.delete_agent(
            session, principal, request.path_params["agent_id"][:64], source_ip=source_ip(request)
        )
        answer = agent_json(agent)
    return JSONResponse(answer)


routes = [
    Route("/api/v1/agents", list_agents, methods=["GET"]),
    Route("/api/v1/agents", create_agent, methods=["POST"]),
    Route("/api/v1/agents/{agent_id}", get_agent, methods=["GET"]),
    Route("/api/v1/agents/{agent_id}", update_agent, methods=["PATCH"]),
    Route("/api/v1/agents/{agent_id}", delete_agent, methods=["DELETE"]),
]
