"""GraphQL types and the `metrics` query: counts, errors, tokens and latency percentiles over time."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, cast

import strawberry

from app.audit.schema import SpanStatus
from app.cost import Cost
from app.info import Info
from app.metrics import service
from app.scalars import stored


@strawberry.enum(description="What metric buckets are split by.")
class MetricDimension(Enum):
    AGENT = strawberry.enum_value("agent", description="The agent that sent the records.")
    ACTION = strawberry.enum_value("action", description="The action (llm_call, tool_use, ...).")
    STATUS = strawberry.enum_value("status", description="The outcome (OK, ERROR, BLOCKED).")
    GOVERNANCE_STATUS = strawberry.enum_value("governance_status", description="The governance decision.")
    VERB = strawberry.enum_value("verb", description="The verb called (e.g. stripe:create_refund).")
    PROVIDER = strawberry.enum_value("provider", description="The provider called (e.g. stripe, openai).")
    TENANT = strawberry.enum_value("tenant", description="The tenant of the agent's customer (`tenantId`).")
    HOUR = strawberry.enum_value("hour", description="The UTC hour the records occurred in.")
    DAY = strawberry.enum_value("day", description="The UTC day the records occurred on.")


@strawberry.input(description="Which records count. All conditions must hold.")
class MetricFilter:
    agent_id: list[strawberry.ID] | None = strawberry.field(default=None, description="Any of these agents.")
    action: list[str] | None = strawberry.field(default=None, description="Any of these actions.")
    status: list[SpanStatus] | None = strawberry.field(default=None, description="Any of these outcomes.")
    governance_status: list[str] | None = strawberry.field(
        default=None, description='Any of these governance decisions; "" selects records without one.'
    )
    verb: list[str] | None = strawberry.field(
        default=None, description='Any of these verbs; "" selects records without one.'
    )
    provider: list[str] | None = strawberry.field(
        default=None, description='Any of these providers; "" selects records without one.'
    )
    tenant_id: list[str] | None = strawberry.field(
        default=None, description='Any of these tenants; "" selects records without one.'
    )


@strawberry.type(description="The values of the dimensions a bucket is split by; null when not grouped by it.")
class MetricDimensions:
    agent_id: strawberry.ID | None = strawberry.field(description="The agent (null also for records without one).")
    action: str | None = strawberry.field(description="The action.")
    status: SpanStatus | None = strawberry.field(description="The outcome.")
    governance_status: str | None = strawberry.field(
        description="The governance decision (null also for records without one)."
    )
    verb: str | None = strawberry.field(description="The verb (null also for records without one).")
    provider: str | None = strawberry.field(description="The provider (null also for records without one).")
    tenant_id: str | None = strawberry.field(description="The tenant (null also for records without one).")


@strawberry.type(description="Aggregates of the audit records of one bucket.")
class MetricBucket:
    start: datetime = strawberry.field(
        description="Start of the bucket's hour or day (UTC) when grouped by HOUR or DAY, else `from`."
    )
    dimensions: MetricDimensions = strawberry.field(description="What this bucket is.")
    count: int = strawberry.field(description="Number of records.")
    errors: int = strawberry.field(description="Records with status ERROR.")
    blocked: int = strawberry.field(
        description='Records blocked: governanceStatus "blocked" (by a rule, or as sent) or status BLOCKED.'
    )
    idempotent: int = strawberry.field(
        description="Records sent with `idempotent: true` (the agent's idempotency fence caught a repeat)."
    )
    idempotency_hit_rate: float = strawberry.field(description="`idempotent` / `count` (0 to 1).")
    governance_block_rate: float = strawberry.field(description="`blocked` / `count` (0 to 1).")
    alerts: int = strawberry.field(description="Alerts the records raised.")
    tokens: float = strawberry.field(description="Sum of the numeric `metadata.tokens` of the records.")
    duration_p50: float | None = strawberry.field(
        description="Median duration in ms (from ~9 % wide histogram buckets); null without durations."
    )
    duration_p95: float | None = strawberry.field(description="95th percentile duration in ms; null without durations.")

    @classmethod
    def of(cls, row: service.MetricRow) -> MetricBucket:
        return cls(
            start=row.start,
            dimensions=MetricDimensions(
                agent_id=strawberry.ID(row.agent_id) if row.agent_id else None,
                action=row.action,
                status=SpanStatus(row.status) if row.status else None,
                governance_status=row.governance_status,
                verb=row.verb,
                provider=row.provider,
                tenant_id=row.tenant_id,
            ),
            **row.figures(),
        )


@strawberry.type
class MetricsQuery:
    @strawberry.field(
        description=(
            "Aggregates of the organisation's audit records in [from, to), by occurrence time. Complete hours "
            "come from hourly rollups, the rest (including the newest minute) from the records themselves. "
            "API keys and users."
        ),
        # an aggregate over a whole window of records; up to one bucket per hour and dimension
        directives=[Cost(weight=5_000, list_size=1_000)],
    )
    async def metrics(
        self,
        info: Info,
        from_: Annotated[datetime, strawberry.argument(name="from", description="Start (inclusive).")],
        to: Annotated[
            datetime | None, strawberry.argument(description="End (exclusive; default now). At most 400 days.")
        ] = None,
        group_by: Annotated[
            list[MetricDimension] | None,
            strawberry.argument(description="Split buckets by these; at most one of HOUR and DAY. None: one bucket."),
        ] = None,
        filter: Annotated[MetricFilter | None, strawberry.argument(description="Which records count.")] = None,
    ) -> list[MetricBucket]:
        f = filter or MetricFilter()
        query = service.MetricsQuery(
            start=from_,
            end=to,
            group_by=[cast(str, d.value) for d in group_by or []],  # enum_value types members as definitions
            agent_ids=[str(a) for a in f.agent_id] if f.agent_id is not None else None,
            actions=f.action,
            statuses=[stored(s) for s in f.status] if f.status is not None else None,
            governance_statuses=f.governance_status,
            verbs=f.verb,
            providers=f.provider,
            tenant_ids=f.tenant_id,
        )
        rows = await service.metrics(await info.context.db(), query)
        return [MetricBucket.of(r) for r in rows]
