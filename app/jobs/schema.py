"""GraphQL: `Subscription.jobUpdates`, the live status of the caller's own exports and reports."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from enum import Enum
from typing import Annotated

import strawberry

from app.info import Info
from app.jobs import service


@strawberry.enum(description="What kind of background job an update is about.")
class JobKind(Enum):
    EXPORT = strawberry.enum_value("export", description="An export job (startExport).")
    REPORT = strawberry.enum_value("report", description="A compliance report (requestReport).")


@strawberry.type(description="A change of one of your background jobs.")
class JobUpdate:
    job_id: strawberry.ID = strawberry.field(description="The export job's or report's id.")
    kind: JobKind = strawberry.field(description="Export or report.")
    status: str = strawberry.field(description="The job's new status, e.g. RUNNING, READY, FAILED.")
    progress: float | None = strawberry.field(description="Share done, 0 to 1, when known.")
    row_count: int | None = strawberry.field(description="Rows written so far (exports).")
    download_url: str | None = strawberry.field(description="Signed, expiring download link once READY.")
    error: str | None = strawberry.field(description="Why the job failed, when it did.")
    updated_at: datetime = strawberry.field(description="When the change happened.")

    @classmethod
    def from_update(cls, update: service.JobUpdate) -> JobUpdate:
        return cls(
            job_id=strawberry.ID(update.job_id),
            kind=JobKind(update.kind),
            status=update.status,
            progress=update.progress,
            row_count=update.row_count,
            download_url=update.download_url,
            error=update.error,
            updated_at=datetime.fromisoformat(update.updated_at.replace("Z", "+00:00")),
        )


@strawberry.type
class JobsSubscription:
    @strawberry.subscription(
        description="Status changes of the exports and reports that you requested, as they happen "
        "(read the current state with `exportJob` / `report` after reconnecting)."
    )
    async def job_updates(
        self,
        info: Info,
        job_id: Annotated[
            strawberry.ID | None, strawberry.argument(description="Only this job; all of yours when omitted.")
        ] = None,
    ) -> AsyncGenerator[JobUpdate, None]:
        principal = await info.context.principal()
        channel = service.job_updates_channel(principal.org_id, principal.actor_id)
        async with info.context.runtime.broadcaster.subscribe(channel) as messages:
            async for message in messages:
                update = service.decode_job_update(message)
                if job_id is None or update.job_id == str(job_id):
                    yield JobUpdate.from_update(update)
