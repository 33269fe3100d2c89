"""GraphQL: `startExport`, `cancelExport`, `exportJobs`, `exportJob`."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated

import strawberry

from app.activity.schema import ActivityFilter, Actor
from app.audit.schema import AuditLogFilter
from app.errors import BadUserInput
from app.exports import service
from app.exports.models import ExportJob as JobRow
from app.info import Info
from app.pagination import (
    After,
    Before,
    Connection,
    First,
    Last,
    build_connection,
    page_request,
)
from app.principal import Principal
from app.scalars import stored


@strawberry.enum(description="What an export contains.")
class ExportDataset(Enum):
    AUDIT_LOGS = strawberry.enum_value("AUDIT_LOGS", description="The audit records (users and API keys).")
    ACTIVITY = strawberry.enum_value("ACTIVITY", description="The activity trail (users only).")
    OPERATIONS_AUDIT = strawberry.enum_value(
        "OPERATIONS_AUDIT",
        description=(
            "The activity trail in the layout of `GET /api/v1/audit/export` (id, timestamp, action, user, role, "
            "resource, resourceType, namespace, sourceIP, checksum; users only; filtered as ACTIVITY)."
        ),
    )


@strawberry.enum(description="File format of an export.")
class ExportFormat(Enum):
    CSV = strawberry.enum_value("CSV", description="Comma-separated values (RFC 4180, with a formula-injection guard).")
    JSON = strawberry.enum_value("JSON", description="One JSON document: {apiVersion, kind, metadata, records}.")
    NDJSON = strawberry.enum_value("NDJSON", description="Newline-delimited JSON: one record per line.")
    PARQUET = strawberry.enum_value("PARQUET", description="Apache Parquet with typed columns (zstd).")


@strawberry.enum(description="Where an export job stands.")
class ExportStatus(Enum):
    PENDING = strawberry.enum_value("PENDING", description="Queued; no worker has started it yet.")
    RUNNING = strawberry.enum_value("RUNNING", description="A worker is writing the file.")
    READY = strawberry.enum_value("READY", description="The file can be downloaded.")
    FAILED = strawberry.enum_value("FAILED", description="It failed after its last attempt (see error).")
    EXPIRED = strawberry.enum_value("EXPIRED", description="The file passed its retention and was deleted.")
    CANCELLED = strawberry.enum_value(
        "CANCELLED", description="Cancelled before it finished; what it wrote is deleted."
    )


@strawberry.type(
    description="An export of the audit record or the activity trail to a file, written in the background."
)
class ExportJob:
    id: strawberry.ID = strawberry.field(description="Export id (`exp_…`).")
    dataset: ExportDataset = strawberry.field(description="What is exported.")
    format: ExportFormat = strawberry.field(description="The file format.")
    include_proofs: bool = strawberry.field(description="Whether the file is a proof bundle (`includeProofs`).")
    status: ExportStatus = strawberry.field(description="Where the job stands.")
    row_count: int = strawberry.field(description="Rows written so far (all of them once READY).")
    progress: float = strawberry.field(description="Share done, 0 to 1.")
    size_bytes: int | None = strawberry.field(description="Size of the file, once READY.")
    download_url: str | None = strawberry.field(
        description="Signed, expiring download link (fresh at each read), only while READY."
    )
    expires_at: datetime | None = strawberry.field(description="When the file is deleted (READY jobs).")
    error: str | None = strawberry.field(description="Why the job failed, when it did.")
    created_at: datetime = strawberry.field(description="When the export was requested.")
    started_at: datetime | None = strawberry.field(description="When a worker first started it.")
    completed_at: datetime | None = strawberry.field(description="When it became READY, FAILED or CANCELLED.")
    requested_by: Actor = strawberry.field(description="The user or API key that asked for it.")

    @classmethod
    def of(cls, info: Info, job: JobRow, reader: Principal) -> ExportJob:
        return cls(
            id=strawberry.ID(job.id),
            dataset=ExportDataset(job.dataset),
            format=ExportFormat(job.format),
            include_proofs=job.include_proofs,
            status=ExportStatus(job.status),
            row_count=job.row_count,
            progress=job.progress,
            size_bytes=job.size_bytes,
            download_url=service.download_url(info.context.runtime, job, reader),
            expires_at=job.expires_at,
            error=job.error,
            created_at=job.created_at,
            started_at=job.started_at,
            completed_at=job.completed_at,
            requested_by=Actor(
                type=job.requested_by_type,
                id=job.requested_by_id,
                name=job.requested_by_name,
                email=job.requested_by_email,
            ),
        )


ExportJobConnection = Connection[ExportJob]


@strawberry.input(description="What to export, and how.")
class StartExportInput:
    dataset: ExportDataset = strawberry.field(description="AUDIT_LOGS (users and API keys) or ACTIVITY (users only).")
    format: ExportFormat = strawberry.field(description="CSV, JSON (one envelope), NDJSON or PARQUET.")
    audit_log_filter: AuditLogFilter | None = strawberry.field(
        default=None, description="Which audit records (as for `auditLogs`); only with dataset AUDIT_LOGS."
    )
    activity_filter: ActivityFilter | None = strawberry.field(
        default=None,
        description="Which activity events (as for `activity`); only with dataset ACTIVITY or OPERATIONS_AUDIT.",
    )
    include_proofs: bool = strawberry.field(
        default=False,
        description="Write the proof bundle of the filter's window (every record of its chain, the signed digests "
        "and the signing keys) for `agentrail-verify`, as JSON, NDJSON or PARQUET; only `from` and `to` apply.",
    )


@strawberry.input(description="Which export jobs to list.")
class ExportJobFilter:
    status: list[ExportStatus] | None = strawberry.field(default=None, description="Any of these statuses.")


def _query_of(input: StartExportInput) -> object:
    if input.dataset is ExportDataset.AUDIT_LOGS:
        if input.activity_filter is not None:
            raise BadUserInput("activityFilter only applies to the ACTIVITY data set", field="activityFilter")
        return (input.audit_log_filter or AuditLogFilter()).to_query()
    if input.audit_log_filter is not None:
        raise BadUserInput("auditLogFilter only applies to the AUDIT_LOGS data set", field="auditLogFilter")
    return (input.activity_filter or ActivityFilter()).to_query()


@strawberry.type
class ExportsQuery:
    @strawberry.field(description="The organisation's export jobs, newest first (API keys see audit-log exports only).")
    async def export_jobs(
        self,
        info: Info,
        filter: Annotated[ExportJobFilter | None, strawberry.argument(description="Conditions.")] = None,
        first: First = None,
        after: After = None,
        last: Last = None,
        before: Before = None,
    ) -> ExportJobConnection:
        principal = await info.context.principal()
        page = page_request(first, after, last, before, types=(datetime, str))
        statuses = [stored(s) for s in filter.status] if filter and filter.status else None
        rows = await service.list_jobs(
            await info.context.db(),
            principal,
            statuses=statuses,
            page=page,
        )
        return build_connection(
            rows,
            page=page,
            to_node=lambda job: ExportJob.of(info, job, principal),
            sort_key=lambda j: (j.created_at, j.id),
        )

    @strawberry.field(description="One export job; null when it does not exist in your organisation.")
    async def export_job(
        self, info: Info, id: Annotated[strawberry.ID, strawberry.argument(description="Export id.")]
    ) -> ExportJob | None:
        principal = await info.context.principal()
        job = await service.find_job(await info.context.db(), principal, str(id))
        return ExportJob.of(info, job, principal) if job else None


@strawberry.type
class ExportsMutation:
    @strawberry.mutation(
        description="Start an export to a file, written in the background; follow it with `jobUpdates` or "
        "`exportJob`, then download it from `downloadUrl`. Activity-trail exports are for users only."
    )
    async def start_export(
        self, info: Info, input: Annotated[StartExportInput, strawberry.argument(description="What to export.")]
    ) -> ExportJob:
        principal = await info.context.principal()
        query = _query_of(input)
        job = await service.create_job(
            info.context.runtime,
            await info.context.db(),
            principal,
            stored(input.dataset),
            stored(input.format),
            query,
            include_proofs=input.include_proofs,
        )
        return ExportJob.of(info, job, principal)

    @strawberry.mutation(
        description="Stop a PENDING or RUNNING export and delete what it wrote; CONFLICT when it has already "
        "finished, NOT_FOUND when you cannot see it; another person's export takes an owner or admin."
    )
    async def cancel_export(
        self, info: Info, id: Annotated[strawberry.ID, strawberry.argument(description="Export id.")]
    ) -> ExportJob:
        principal = await info.context.principal()
        job = await service.cancel_job(info.context.runtime, await info.context.db(), principal, str(id))
        return ExportJob.of(info, job, principal)
