"""GraphQL of erasures (app.audit.erasure): `eraseRecords`, `auditErasures`, `auditErasure`."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated

import strawberry

from app.audit import erasure as service
from app.audit.models import AuditErasure as ErasureRow
from app.info import Info
from app.pagination import After, Before, Connection, First, Last, build_connection, page_request
from app.scalars import JSON


@strawberry.enum(description="How far an erasure went.")
class ErasureStatus(Enum):
    RUNNING = strawberry.enum_value("running", description="Records are being erased, in batches, by a job.")
    DONE = strawberry.enum_value("done", description="Every matching record is erased.")


@strawberry.input(
    description="Which records to erase. Every given condition must hold; at least one must be given. Records "
    "written after the request are not included."
)
class ErasureFilter:
    record_ids: list[strawberry.ID] | None = strawberry.field(
        default=None, description="These records (at most 10,000)."
    )
    trace_id: str | None = strawberry.field(default=None, description="Every record of this trace.")
    agent_id: list[strawberry.ID] | None = strawberry.field(default=None, description="Records of these agents.")
    tenant_id: list[str] | None = strawberry.field(
        default=None, description="Records with these tenant ids (the `tenantId` the agent sent)."
    )
    search: str | None = strawberry.field(
        default=None,
        description="Records whose prompt or response matches this full-text search (as auditLogs' search; "
        "records are searchable about a second after ingest).",
    )

    def to_filter(self) -> service.ErasureFilter:
        return service.ErasureFilter(
            record_ids=[str(i) for i in self.record_ids] if self.record_ids is not None else None,
            trace_id=self.trace_id,
            agent_ids=[str(a) for a in self.agent_id] if self.agent_id else None,
            tenant_ids=self.tenant_id,
            search=self.search,
        )


@strawberry.type(
    description="An erasure of audit records' content (GDPR Art. 17): the records keep their place in the chain "
    "and every proof; their content is gone."
)
class AuditErasure:
    id: strawberry.ID = strawberry.field(description="Erasure id (`ers_…`).")
    reason: str = strawberry.field(description="Why, as the requester gave it.")
    filter: JSON = strawberry.field(description="The filter as requested (recordIds, traceId, agentIds, …).")
    status: ErasureStatus = strawberry.field(description="Running or done.")
    record_count: int = strawberry.field(description="Records erased so far.")
    requested_by: str | None = strawberry.field(description="The user who asked for it (`usr_…`).")
    requested_by_name: str | None = strawberry.field(description="Their name at the time.")
    requested_at: datetime = strawberry.field(description="When it was asked for.")
    completed_at: datetime | None = strawberry.field(description="When the last record was erased.")

    @classmethod
    def of(cls, row: ErasureRow) -> AuditErasure:
        return cls(
            id=strawberry.ID(row.id),
            reason=row.reason,
            filter=row.filter,
            status=ErasureStatus(row.status),
            record_count=row.record_count,
            requested_by=row.requested_by,
            requested_by_name=row.requested_by_name,
            requested_at=row.requested_at,
            completed_at=row.completed_at,
        )


AuditErasureConnection = Connection[AuditErasure]


@strawberry.type
class ErasureQuery:
    @strawberry.field(description="The organisation's erasures, newest first.")
    async def audit_erasures(
        self, info: Info, first: First = None, after: After = None, last: Last = None, before: Before = None
    ) -> AuditErasureConnection:
        page = page_request(first, after, last, before, types=(datetime, str))
        rows = await service.list_erasures(await info.context.db(), page=page)
        return build_connection(rows, page=page, to_node=AuditErasure.of, sort_key=lambda r: (r.requested_at, r.id))

    @strawberry.field(description="One erasure; null when it does not exist in your organisation.")
    async def audit_erasure(
        self, info: Info, id: Annotated[strawberry.ID, strawberry.argument(description="Erasure id.")]
    ) -> AuditErasure | None:
        row = await service.find_erasure(await info.context.db(), str(id))
        return AuditErasure.of(row) if row is not None else None


@strawberry.type
class ErasureMutation:
    @strawberry.mutation(
        description="Erase the content (prompt, response, metadata, args, result) of matching records, and their "
        "search rows and alert excerpts; the records, their chain links and every proof stay verifiable, and "
        "say erasedAt. Owners only; on the activity trail. Up to 1,000 records are erased at once (status DONE); "
        "more continue in a job (status RUNNING, then DONE)."
    )
    async def erase_records(
        self,
        info: Info,
        filter: Annotated[ErasureFilter, strawberry.argument(description="Which records.")],
        reason: Annotated[str, strawberry.argument(description="Why (kept with the erasure, at most 2,000 chars).")],
    ) -> AuditErasure:
        principal = await info.context.principal()
        row = await service.request_erasure(await info.context.db(), principal, filter.to_filter(), reason)
        return AuditErasure.of(row)
