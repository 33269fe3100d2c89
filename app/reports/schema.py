"""GraphQL types and operations of the reports domain."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, cast

import strawberry

from app.errors import NotFound
from app.info import Info, RequestInfo
from app.pagination import (
    After,
    Before,
    Connection,
    First,
    Last,
    build_connection,
    page_request,
)
from app.reports import auth, models, service
from app.scalars import JSON


@strawberry.enum(description="What a report covers.")
class ReportType(Enum):
    COMPLIANCE_SUMMARY = strawberry.enum_value(
        "compliance_summary",
        description="Alerts by severity, rule, agent and policy version; resolution times; top violating agents.",
    )
    AGENT_ACTIVITY = strawberry.enum_value(
        "agent_activity",
        description="Per agent: records, traces, error rate, blocked, duration p50/p95. Tabular (CSV available).",
    )
    POLICY_CHANGES = strawberry.enum_value(
        "policy_changes",
        description="Policy versions created, attachments and detachments. Tabular (CSV available).",
    )
    AUDIT_INTEGRITY = strawberry.enum_value(
        "audit_integrity", description="The verification of the audit trail over the window, and its digests."
    )


@strawberry.enum(description="Where a report's build stands.")
class ReportStatus(Enum):
    PENDING = strawberry.enum_value("PENDING", description="Waiting for a worker.")
    RUNNING = strawberry.enum_value("RUNNING", description="Being built.")
    READY = strawberry.enum_value("READY", description="Built: download it with `downloadUrl`.")
    FAILED = strawberry.enum_value("FAILED", description="Could not be built: see `error`.")


@strawberry.enum(description="The file a report is delivered as.")
class ReportFormat(Enum):
    PDF = strawberry.enum_value("PDF", description="A document: title page, sections, tables and charts.")
    JSON = strawberry.enum_value("JSON", description="All the data.")
    CSV = strawberry.enum_value("CSV", description="One table; only for AGENT_ACTIVITY and POLICY_CHANGES.")


def _stored(member: ReportType | ReportFormat | ReportStatus) -> str:
    """The member's value as stored (`strawberry.enum_value` types members as their definitions)."""
    return cast(str, member.value)


@strawberry.type(description="A generated report: a PDF, JSON or CSV file over a time window.")
class Report:
    row: strawberry.Private[models.Report]
    id: strawberry.ID = strawberry.field(description="Report id (`rep_…`).")
    type: ReportType = strawberry.field(description="What it covers.")
    status: ReportStatus = strawberry.field(description="Where its build stands.")
    format: ReportFormat = strawberry.field(description="The file's format.")
    from_: datetime = strawberry.field(name="from", description="Window start (inclusive).")
    to: datetime = strawberry.field(description="Window end (exclusive).")
    agent_ids: list[strawberry.ID] | None = strawberry.field(description="The agents it is narrowed to; null: all.")
    created_at: datetime = strawberry.field(description="When it was requested.")
    completed_at: datetime | None = strawberry.field(description="When it became READY or FAILED.")
    expires_at: datetime | None = strawberry.field(description="When its file is removed (READY reports).")
    size_bytes: int | None = strawberry.field(description="Size of the file (READY reports).")
    summary: JSON = strawberry.field(description="The key figures (READY reports); the file has everything.")
    error: str | None = strawberry.field(description="Why the build failed (FAILED reports).")
    requested_by: str = strawberry.field(description="The user who asked for it (user id).")

    @strawberry.field(
        description="Signed link to the file, valid for a while from this read; only when READY, and only for "
        "the requester, owners and admins."
    )
    async def download_url(self, info: Info) -> str | None:
        runtime = info.context.runtime
        if not auth.FILE.may_act_on(await info.context.principal(), self.row.requested_by):
            return None
        return service.download_url(runtime.settings, runtime.secret_key, self.row)

    @classmethod
    def of(cls, report: models.Report) -> Report:
        return cls(
            row=report,
            id=strawberry.ID(report.id),
            type=ReportType(report.type),
            status=ReportStatus(report.status),
            format=ReportFormat(report.format),
            from_=report.window_from,
            to=report.window_to,
            agent_ids=[strawberry.ID(a) for a in report.agent_ids] if report.agent_ids is not None else None,
            created_at=report.created_at,
            completed_at=report.completed_at,
            expires_at=report.expires_at if report.status == "READY" else None,
            size_bytes=report.size_bytes,
            summary=report.summary,
            error=report.error,
            requested_by=report.requested_by,
        )


ReportConnection = Connection[Report]


@strawberry.input(description="What to report on.")
class RequestReportInput:
    type: ReportType = strawberry.field(description="What the report covers.")
    from_: datetime = strawberry.field(name="from", description="Window start (inclusive).")
    to: datetime = strawberry.field(description="Window end (exclusive); at most 366 days after `from`.")
    format: ReportFormat = strawberry.field(default=ReportFormat.PDF, description="Default PDF.")
    agent_ids: list[strawberry.ID] | None = strawberry.field(
        default=None, description="Only these agents (not for AUDIT_INTEGRITY); default: all."
    )


@strawberry.input(description="Which reports. All conditions must hold.")
class ReportFilter:
    type: list[ReportType] | None = strawberry.field(default=None, description="Any of these types.")
    status: list[ReportStatus] | None = strawberry.field(default=None, description="Any of these statuses.")


@strawberry.type
class ReportsQuery:
    @strawberry.field(description="The organisation's reports, newest first. Users only.")
    async def reports(
        self,
        info: Info,
        filter: Annotated[ReportFilter | None, strawberry.argument(description="Conditions.")] = None,
        first: First = None,
        after: After = None,
        last: Last = None,
        before: Before = None,
    ) -> ReportConnection:
        page = page_request(first, after, last, before, types=(datetime, str))
        f = filter or ReportFilter()
        rows = await service.list_reports(
            await info.context.db(),
            page=page,
            types=[_stored(t) for t in f.type] if f.type else None,
            statuses=[_stored(s) for s in f.status] if f.status else None,
        )
        return build_connection(rows, page=page, to_node=Report.of, sort_key=lambda r: (r.created_at, r.id))

    @strawberry.field(description="One report; null when it does not exist in your organisation. Users only.")
    async def report(
        self, info: Info, id: Annotated[strawberry.ID, strawberry.argument(description="Report id.")]
    ) -> Report | None:
        try:
            return Report.of(await service.get_report(await info.context.db(), str(id)))
        except NotFound:
            return None


@strawberry.type
class ReportsMutation:
    @strawberry.mutation(
        description="Ask for a report; it is built in the background (follow it with `jobUpdates`). Users only."
    )
    async def request_report(
        self, info: RequestInfo, input: Annotated[RequestReportInput, strawberry.argument(description="The report.")]
    ) -> Report:
        ctx = info.context
        report = await service.request_report(
            await ctx.db(),
            await ctx.principal(),
            ctx.runtime.settings,
            type=_stored(input.type),
            format=_stored(input.format),
            window_from=input.from_,
            window_to=input.to,
            agent_ids=[str(a) for a in input.agent_ids] if input.agent_ids is not None else None,
            source_ip=ctx.source_ip,
        )
        return Report.of(report)

    @strawberry.mutation(description="Delete a report and its file. The requester, owners and admins. Returns the id.")
    async def delete_report(
        self, info: RequestInfo, id: Annotated[strawberry.ID, strawberry.argument(description="Report id.")]
    ) -> strawberry.ID:
        ctx = info.context
        deleted = await service.delete_report(
            await ctx.db(), await ctx.principal(), ctx.runtime.files, str(id), source_ip=ctx.source_ip
        )
        return strawberry.ID(deleted)
