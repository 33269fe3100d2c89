"""GraphQL types and operations of the agents domain. Thin: parse, authorise, call the service, map."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry

from app.agents import models, service
from app.alerts.analytics import alert_counts_by_severity
from app.alerts.schema import AlertConnection, alert_page
from app.alerts.service import AlertQuery
from app.audit.schema import AuditLogConnection, AuditLogFilter, TraceConnection
from app.info import Info, RequestInfo
from app.pagination import (
    TOTAL_COUNT,
    After,
    Before,
    Connection,
    First,
    Last,
    build_connection,
    page_request,
    selects_any,
)
from app.scalars import JSON

if TYPE_CHECKING:
    from app.policies.schema import Policy


@strawberry.type(description="Alerts of one severity.")
class SeverityCount:
    severity: str = strawberry.field(description="LOW, MEDIUM, HIGH or CRITICAL.")
    count: int = strawberry.field(description="How many.")


@strawberry.type(description="What an agent did over a window.")
class AgentStats:
    records: int = strawberry.field(description="Audit records.")
    traces: int = strawberry.field(description="Distinct traces.")
    errors: int = strawberry.field(description="Records with status ERROR.")
    blocked: int = strawberry.field(
        description='Records blocked: governanceStatus "blocked" (by a rule, or as sent) or status BLOCKED.'
    )
    error_rate: float = strawberry.field(
        description="Share of its records that failed: errors / records (0 when there are none)."
    )
    duration_p50: float | None = strawberry.field(description="Median duration in milliseconds.")
    duration_p95: float | None = strawberry.field(description="95th percentile duration in milliseconds.")
    alerts_by_severity: list[SeverityCount] = strawberry.field(description="Alerts raised, by severity.")


@strawberry.type(
    description=(
        "An agent of the organisation: the actor its audit records name. Deleting an agent is soft: "
        "it keeps its records and stays readable by id, with `isDeleted: true`."
    )
)
class Agent:
    id: strawberry.ID = strawberry.field(description="Agent id (`agent_…`).")
    name: str = strawberry.field(
        description="Display name, unique (case-insensitively) among the organisation's active agents."
    )
    description: str = strawberry.field(description='Free text, at most 2000 characters; "" when not set.')
    metadata: JSON = strawberry.field(description="Free-form JSON object (at most 64 KB), e.g. model, owner.")
    created_at: datetime = strawberry.field(description="When it was created.")
    updated_at: datetime = strawberry.field(description="When it was last changed (or deleted).")
    deleted_at: datetime | None = strawberry.field(description="When it was deleted; null while active.")
    last_seen_at: datetime | None = strawberry.field(
        description="When the last audit record naming this agent arrived; null before the first."
    )
    is_deleted: bool = strawberry.field(description="True once deleted: its records remain, but it takes no new ones.")

    @strawberry.field(description="This agent's audit records, newest first.")
    async def audit_logs(
        self,
        info: Info,
        filter: Annotated[
            AuditLogFilter | None, strawberry.argument(description="More conditions (the agent is fixed).")
        ] = None,
        first: First = None,
        after: After = None,
        last: Last = None,
        before: Before = None,
    ) -> AuditLogConnection:
        from app.audit.schema import audit_log_page
        from app.audit.service import AuditLogQuery

        query = filter.to_query() if filter is not None else AuditLogQuery()
        query.agent_ids = [str(self.id)]
        return await audit_log_page(info, query, first, after, last, before)

    @strawberry.field(description="Traces this agent took part in, newest first.")
    async def traces(
        self,
        info: Info,
        first: First = None,
        after: After = None,
        last: Last = None,
        before: Before = None,
    ) -> TraceConnection:
        from app.audit.schema import trace_page
        from app.audit.service import TraceQuery

        return await trace_page(info, TraceQuery(agent_ids=[str(self.id)]), first, after, last, before)

    @strawberry.field(description="Alerts raised by this agent's records, newest first.")
    async def alerts(
        self,
        info: Info,
        resolved: Annotated[bool | None, strawberry.argument(description="Only resolved or open ones.")] = None,
        first: First = None,
        after: After = None,
        last: Last = None,
        before: Before = None,
    ) -> AlertConnection:
        return await alert_page(
            info, AlertQuery(agent_ids=[str(self.id)], resolved=resolved), first, after, last, before
        )

    @strawberry.field(description="Activity figures over a window (computed in SQL).")
    async def stats(
        self,
        info: Info,
        from_: Annotated[datetime | None, strawberry.argument(name="from", description="Records from.")] = None,
        to: Annotated[datetime | None, strawberry.argument(description="Records before.")] = None,
    ) -> AgentStats:
        from app.audit.service import agent_stats

        session = await info.context.db()
        figures = await agent_stats(session, str(self.id), occurred_from=from_, occurred_to=to)
        severities = await alert_counts_by_severity(session, str(self.id), created_from=from_, created_to=to)
        return AgentStats(
            records=figures.records,
            traces=figures.traces,
            errors=figures.errors,
            blocked=figures.blocked,
            error_rate=figures.errors / figures.records if figures.records else 0.0,
            duration_p50=figures.duration_p50,
            duration_p95=figures.duration_p95,
            alerts_by_severity=[SeverityCount(severity=k, count=v) for k, v in severities.items()],
        )

    @strawberry.field(description="Policies attached to this agent; their current versions check its records.")
    async def policies(self, info: Info) -> list[Annotated[Policy, strawberry.lazy("app.policies.schema")]]:
        from app.policies.schema import Policy

        attached = await info.context.loaders.policies_by_agent.load(str(self.id))
        return [Policy.of(p) for p in attached]

    @classmethod
    def from_model(cls, agent: models.Agent) -> Agent:
        return cls(
            id=strawberry.ID(agent.id),
            name=agent.name,
            description=agent.description,
            metadata=agent.metadata_,
            created_at=agent.created_at,
            updated_at=agent.updated_at,
            deleted_at=agent.deleted_at,
            last_seen_at=agent.last_seen_at,
            is_deleted=agent.deleted_at is not None,
        )


AgentConnection = Connection[Agent]


@strawberry.input(description="Which agents to list.")
class AgentFilter:
    search: str | None = strawberry.field(
        default=None, description="Case-insensitive substring of the name or the description."
    )
    include_deleted: bool = strawberry.field(default=False, description="Include deleted agents too.")
    has_open_alerts: bool | None = strawberry.field(
        default=None, description="Only agents with unresolved alerts (true) or without (false)."
    )


@strawberry.input(description="A new agent.")
class CreateAgentInput:
    name: str = strawberry.field(
        description="1–200 characters (trimmed); unique, case-insensitively, among active agents."
    )
    description: str | None = strawberry.field(default=None, description="At most 2000 characters.")
    metadata: JSON | None = strawberry.field(
        default=None, description="A JSON object of at most 64 KB; defaults to {}."
    )


@strawberry.input(description="Agent fields to change; omitted (or null) fields stay as they are.")
class UpdateAgentInput:
    name: str | None = strawberry.field(
        default=None, description="New name: 1–200 characters, unique among active agents."
    )
    description: str | None = strawberry.field(
        default=None, description='New description, at most 2000 characters; "" clears it.'
    )
    metadata: JSON | None = strawberry.field(
        default=None, description="Replaces the whole metadata object (at most 64 KB); {} clears it."
    )


@strawberry.type
class AgentsQuery:
    @strawberry.field(
        description="The organisation's agents, newest first (deleted ones on request). Users and API keys."
    )
    async def agents(
        self,
        info: Info,
        filter: Annotated[AgentFilter | None, strawberry.argument(description="What to list.")] = None,
        first: First = None,
        after: After = None,
        last: Last = None,
        before: Before = None,
    ) -> AgentConnection:
        filter = filter or AgentFilter()
        page = page_request(first, after, last, before, types=(datetime, str))
        session = await info.context.db()
        rows = await service.list_agents(
            session,
            search=filter.search,
            include_deleted=filter.include_deleted,
            has_open_alerts=filter.has_open_alerts,
            page=page,
        )
        total = (
            await service.count_agents(
                session,
                search=filter.search,
                include_deleted=filter.include_deleted,
                has_open_alerts=filter.has_open_alerts,
            )
            if selects_any(info.selected_fields, TOTAL_COUNT)
            else None
        )
        return build_connection(
            rows,
            page=page,
            to_node=Agent.from_model,
            sort_key=lambda a: (a.created_at, a.id),
            total_count=total,
        )

    @strawberry.field(
        description=(
            "One agent by id, deleted ones included (see `isDeleted`); null for an unknown id or another "
            "organisation's. Users and API keys."
        )
    )
    async def agent(
        self, info: Info, id: Annotated[strawberry.ID, strawberry.argument(description="Agent id.")]
    ) -> Agent | None:
        agent = await service.find_agent(await info.context.db(), str(id), include_deleted=True)
        return Agent.from_model(agent) if agent else None


@strawberry.type
class AgentsMutation:
    @strawberry.mutation(
        description="Create an agent. Users only (API keys get FORBIDDEN); CONFLICT when the name is taken."
    )
    async def create_agent(
        self,
        info: RequestInfo,
        input: Annotated[CreateAgentInput, strawberry.argument(description="The new agent.")],
    ) -> Agent:
        principal = await info.context.principal()
        agent = await service.create_agent(
            await info.context.db(),
            principal,
            name=input.name,
            description=input.description,
            metadata=input.metadata,
            source_ip=info.context.source_ip,
        )
        return Agent.from_model(agent)

    @strawberry.mutation(
        description=(
            "Change an agent's name, description or metadata. Users only; NOT_FOUND for deleted agents; "
            "CONFLICT when the new name is taken."
        )
    )
    async def update_agent(
        self,
        info: RequestInfo,
        id: Annotated[strawberry.ID, strawberry.argument(description="Agent id.")],
        input: Annotated[UpdateAgentInput, strawberry.argument(description="Fields to change.")],
    ) -> Agent:
        principal = await info.context.principal()
        agent = await service.update_agent(
            await info.context.db(),
            principal,
            str(id),
            name=input.name,
            description=input.description,
            metadata=input.metadata,
            source_ip=info.context.source_ip,
        )
        return Agent.from_model(agent)

    @strawberry.mutation(
        description=(
            "Delete an agent. Users only. Its audit records stay and still name it; its id takes no new "
            "records; its name can be reused. NOT_FOUND when it is already deleted."
        )
    )
    async def delete_agent(
        self, info: RequestInfo, id: Annotated[strawberry.ID, strawberry.argument(description="Agent id.")]
    ) -> Agent:
        principal = await info.context.principal()
        agent = await service.delete_agent(
            await info.context.db(), principal, str(id), source_ip=info.context.source_ip
        )
        return Agent.from_model(agent)
