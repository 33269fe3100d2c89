"""Operations of export jobs: start, read, list, cancel; claiming, progress and completion for the worker;
the sweeper that re-enqueues jobs a dead worker left behind, and expiry.

The job's state lives in `export_jobs` (PostgreSQL); Redis only carries the queue and live updates. A job is
claimed by one attempt at a time (`claim_token`, taken under a row lock); every progress report and the
completion are conditional on still holding the claim and the job still RUNNING, so a cancelled job stops,
and a job completes once even when two workers ran it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from arq.constants import abort_jobs_ss
from arq.utils import timestamp_ms
from sqlmodel import col, select

from app import unit_of_work
from app.activity.service import record_activity
from app.db import AsyncSession, Database, iso, new_id, utcnow
from app.errors import BadUserInput, Conflict, Forbidden, NotFound
from app.exports import auth
from app.exports.datasets import DATASETS, Dataset, beyond_window, query_to_json
from app.exports.formats import FILE_TYPES, PROOF_FORMATS
from app.exports.models import ExportJob
from app.jobs.service import JobUpdate, lock_claimable, publish_job_update, signed_download_url
from app.pagination import PageRequest
from app.principal import Principal
from app.runtime.resources import Runtime
from app.webhooks import service as webhooks

log = structlog.get_logger(__name__)

PENDING, RUNNING, READY, FAILED, EXPIRED, CANCELLED = "PENDING", "RUNNING", "READY", "FAILED", "EXPIRED", "CANCELLED"
ACTIVE = (PENDING, RUNNING)
JOB_FUNCTION = "run_export"


def download_path(job_id: str) -> str:
    return f"/api/v1/exports/{job_id}/download"


def status_path(job_id: str) -> str:
    return f"/api/v1/exports/{job_id}"


def download_url(runtime: Runtime, job: ExportJob, reader: Principal | None) -> str | None:
    """A fresh signed link while the job is READY and its file has not expired, for a reader who may have the
    file (app/exports/auth.py; None: the requester's own update channel); None otherwise."""
    if job.status != READY or job.expires_at is None or job.expires_at <= utcnow():
        return None
    if not auth.FILE.may_act_on(reader, job.requested_by_id):
        return None
    return signed_download_url(
        runtime.settings, runtime.secret_key, download_path(job.id), job.org_id, not_after=job.expires_at
    )


def visible_to(principal: Principal, job: ExportJob) -> bool:
    """Everyone in the organisation sees its exports, except that API keys never see activity-trail exports
    (the activity trail is for users only)."""
    return principal.is_user or not DATASETS[job.dataset].users_only


# --- starting ------------------------------------------------------------------------------------------
def check_request(
    principal: Principal, dataset_name: str, fmt: str, query: Any, *, include_proofs: bool = False
) -> Dataset:
    """Who may export what, in which format, with which filter. Raises before anything is written."""
    dataset = DATASETS.get(dataset_name)
    if dataset is None:
        raise BadUserInput(f"dataset must be one of {', '.join(DATASETS)}", field="dataset")
    if dataset.users_only and not principal.is_user:
        raise Forbidden(f"an API key cannot export the {dataset.name} data set; sign in as a user")
    if fmt not in FILE_TYPES:
        raise BadUserInput(f"format must be one of {', '.join(FILE_TYPES)}", field="format")
    if not isinstance(query, dataset.query_type):
        raise BadUserInput(f"the filter does not fit the {dataset.name} data set", field="filter")
    start, end = query.occurred_from, query.occurred_to
    if start is not None and end is not None and start >= end:
        raise BadUserInput("filter.from must be before filter.to", field="filter.from")
    if include_proofs:
        if fmt not in PROOF_FORMATS:
            raise BadUserInput(
                f"includeProofs writes a proof bundle as {', '.join(PROOF_FORMATS)}, not {fmt}", field="format"
            )
        other = beyond_window(query)
        if other is not None:
            raise BadUserInput(
                f"includeProofs exports the whole chain of a window: only from and to apply, not {other}",
                field=f"filter.{other}",
            )
    return dataset


async def create_job(
    runtime: Runtime,
    session: AsyncSession,
    principal: Principal,
    dataset_name: str,
    fmt: str,
    query: Any,
    *,
    include_proofs: bool = False,
) -> ExportJob:
    """Writes the job (PENDING) and its activity event in one transaction, then queues it. A queue that is
    down loses nothing: the sweeper queues PENDING jobs that nobody picked up. `include_proofs`: the file is the
    proof bundle of the filter's window (JSON, NDJSON or PARQUET), for the offline verifier."""
    dataset = check_request(principal, dataset_name, fmt, query, include_proofs=include_proofs)
    job_id = new_id("exp")
    now = utcnow()
    job = ExportJob(
        id=job_id,
        org_id=principal.org_id,
        dataset=dataset.name,
        format=fmt,
        filter=query_to_json(query),
        include_proofs=include_proofs,
        status=PENDING,
        queue_job_id=f"export:{job_id}",
        requested_by_type=principal.kind,
        requested_by_id=principal.actor_id,
        requested_by_name=principal.actor_name,
        requested_by_email=principal.actor_email,
        created_at=now,
        enqueued_at=now,
    )
    session.add(job)
    record_activity(
        session,
        principal,
        "export.started",
        target_type="export",
        target_id=job_id,
        metadata={"dataset": dataset.name, "format": fmt, "filter": job.filter, "includeProofs": include_proofs},
    )
    await session.flush()
    unit_of_work.after_commit(session, lambda runtime: enqueue(runtime, job.org_id, job.id, job.queue_job_id or ""))
    return job


async def enqueue(runtime: Runtime, org_id: str, job_id: str, queue_job_id: str) -> None:
    try:
        await runtime.queue.enqueue_job(JOB_FUNCTION, org_id, job_id, _job_id=queue_job_id)
    except Exception:
        log.warning("could not queue an export job; the sweeper will", job_id=job_id, exc_info=True)


# --- reading -------------------------------------------------------------------------------------------
async def find_job(session: AsyncSession, principal: Principal, job_id: str) -> ExportJob | None:
    job = await session.get(ExportJob, job_id)
    return job if job is not None and visible_to(principal, job) else None


async def list_jobs(
    session: AsyncSession,
    principal: Principal,
    *,
    statuses: list[str] | None,
    page: PageRequest,
) -> list[ExportJob]:
    """Newest first; keyset pagination on (created_at, id)."""
    stmt = select(ExportJob)
    if statuses:
        stmt = stmt.where(col(ExportJob.status).in_(statuses))
    if not principal.is_user:
        stmt = stmt.where(col(ExportJob.dataset).in_([d.name for d in DATASETS.values() if not d.users_only]))
    stmt = page.apply(stmt, col(ExportJob.created_at), col(ExportJob.id))
    return list((await session.exec(stmt)).all())


async def file_of(runtime: Runtime, org_id: str, principal: Principal | None, job_id: str) -> str | None:
    """The stored file of a READY export of this organisation, for `app.rest.downloads.download`: with
    credentials, only an export the caller may see (`find_job`); with a signed link, any."""
    async with runtime.db.tenant_session(org_id) as session:
        job = await find_job(session, principal, job_id) if principal else await session.get(ExportJob, job_id)
    if job is None or job.status != READY or not auth.FILE.may_act_on(principal, job.requested_by_id):
        return None
    return job.file_id


def job_to_json(runtime: Runtime, job: ExportJob, reader: Principal) -> dict[str, Any]:
    """The job as the REST endpoints show it."""
    return {
        "id": job.id,
        "dataset": job.dataset,
        "format": job.format,
        "includeProofs": job.include_proofs,
        "status": job.status,
        "rowCount": job.row_count,
        "progress": job.progress,
        "sizeBytes": job.size_bytes,
        "createdAt": iso(job.created_at),
        "completedAt": iso(job.completed_at),
        "expiresAt": iso(job.expires_at),
        "error": job.error,
        "downloadUrl": download_url(runtime, job, reader),
        "links": {"self": status_path(job.id), "download": download_path(job.id)},
    }


# --- cancelling ----------------------------------------------------------------------------------------
async def cancel_job(runtime: Runtime, session: AsyncSession, principal: Principal, job_id: str) -> ExportJob:
    """Stops a PENDING or RUNNING job: the row says CANCELLED at once (the running attempt sees it between two
    batches and stops), the arq job is aborted, and whatever was written is deleted."""
    job = (await session.exec(select(ExportJob).where(ExportJob.id == job_id).with_for_update())).first()
    if job is None or not visible_to(principal, job):
        raise NotFound("export job not found", id=job_id)
    auth.CANCEL.require_owner_or_role(principal, job.requested_by_id)
    if job.status not in ACTIVE:
        raise Conflict(f"the export is already {job.status}; only PENDING or RUNNING exports can be cancelled")
    job.status = CANCELLED
    job.completed_at = utcnow()
    job.claim_token = None
    record_activity(
        session,
        principal,
        "export.cancelled",
        target_type="export",
        target_id=job.id,
        metadata={"dataset": job.dataset},
    )
    await session.flush()
    unit_of_work.after_commit(session, lambda runtime: _cancelled(runtime, job))
    return job


async def _cancelled(runtime: Runtime, job: ExportJob) -> None:
    """Once the cancellation is committed: the arq job aborted, the partial file deleted, the requester told."""
    if job.queue_job_id:
        with contextlib.suppress(Exception):
            await runtime.queue.zadd(abort_jobs_ss, {job.queue_job_id: timestamp_ms()})
    if job.file_id:
        await runtime.files.delete(job.org_id, job.file_id)
    await publish(runtime, job)


async def publish(runtime: Runtime, job: ExportJob) -> None:
    await publish_job_update(
        runtime.broadcaster,
        job.org_id,
        job.requested_by_id,
        JobUpdate(
            job_id=job.id,
            kind="export",
            status=job.status,
            progress=job.progress,
            row_count=job.row_count,
            download_url=download_url(runtime, job, None),  # published to the requester only
            error=job.error,
        ),
    )


# --- the worker's side ---------------------------------------------------------------------------------
@dataclass
class Claim:
    """One attempt's hold on a job."""

    job: ExportJob
    token: str


def _held(claim: Claim) -> list[Any]:
    return [ExportJob.id == claim.job.id, ExportJob.claim_token == claim.token, ExportJob.status == RUNNING]


async def claim(runtime: Runtime, org_id: str, job_id: str) -> Claim | None:
    """Takes the job for this attempt: if it is PENDING, or RUNNING with a heartbeat older than the timeout
    (its worker died). The row is locked (SKIP LOCKED: a job another worker is claiming right now is left to
    it). Each attempt gets a new file id; the previous attempt's partial file is deleted."""
    timeout = timedelta(seconds=runtime.settings.export_heartbeat_timeout_seconds)
    async with unit_of_work.unit_of_work(runtime, org_id) as session:
        job = await lock_claimable(session, ExportJob, job_id, lease="heartbeat_at", lease_timeout=timeout)
        if job is None:
            return None
        now = utcnow()
        previous_file = job.file_id
        token = new_id("claim")
        job.status = RUNNING
        job.attempts += 1
        job.claim_token = token
        job.file_id = f"{job.id}_{job.attempts}"
        job.started_at = job.started_at or now
        job.heartbeat_at = now
        job.row_count = 0
        job.progress = 0.0
        job.error = None
    if previous_file:
        await runtime.files.delete(org_id, previous_file)
    return Claim(job=job, token=token)


async def heartbeat(db: Database, claim: Claim, *, row_count: int, total: int | None) -> bool:
    """Records progress and proves the attempt alive. False when the job was cancelled or taken over."""
    progress = min(1.0, row_count / total) if total else 0.0
    claim.job.row_count, claim.job.progress = row_count, progress
    async with unit_of_work.transaction(db, claim.job.org_id) as session:
        result = await session.execute(
            sa.update(ExportJob)
            .where(*_held(claim))
            .values(heartbeat_at=utcnow(), row_count=row_count, progress=progress)
            .returning(col(ExportJob.id))
        )
        held = result.first() is not None
    return held


async def mark_ready(runtime: Runtime, claim: Claim, *, row_count: int, size_bytes: int, expires_at: datetime) -> bool:
    """The job turns READY: the one place an export completes (once: only the attempt holding the claim of a
    RUNNING job gets here). Tells the requester, with a fresh download link. False if the claim was lost."""
    job = claim.job
    now = utcnow()
    async with unit_of_work.unit_of_work(runtime, job.org_id) as session:
        result = await session.execute(
            sa.update(ExportJob)
            .where(*_held(claim))
            .values(
                status=READY,
                row_count=row_count,
                progress=1.0,
                size_bytes=size_bytes,
                completed_at=now,
                expires_at=expires_at,
                heartbeat_at=now,
                claim_token=None,
            )
            .returning(col(ExportJob.id))
        )
        done = result.first() is not None
        if done:  # the webhook event is written with the state change (outbox): READY and export.ready go together
            await webhooks.emit_event(
                session,
                "export.ready",
                {
                    "exportId": job.id,
                    "dataset": job.dataset,
                    "format": job.format,
                    "rowCount": row_count,
                    "sizeBytes": size_bytes,
                    "requestedBy": job.requested_by_id,
                    "expiresAt": iso(expires_at),
                },
            )
    if not done:
        return False
    job.status, job.row_count, job.progress, job.size_bytes = READY, row_count, 1.0, size_bytes
    job.completed_at, job.expires_at, job.claim_token = now, expires_at, None
    log.info("export ready", job_id=job.id, org_id=job.org_id, rows=row_count, bytes=size_bytes)
    await publish(runtime, job)
    return True


async def mark_failed(runtime: Runtime, claim: Claim, error: str) -> None:
    job = claim.job
    async with unit_of_work.unit_of_work(runtime, job.org_id) as session:
        result = await session.execute(
            sa.update(ExportJob)
            .where(*_held(claim))
            .values(status=FAILED, error=error[:500], completed_at=utcnow(), claim_token=None)
            .returning(col(ExportJob.id))
        )
        failed = result.first() is not None
    if failed:
        job.status, job.error = FAILED, error[:500]
        await publish(runtime, job)


async def release(db: Database, claim: Claim) -> None:
    """The worker is stopping mid-job: the job goes back to PENDING so that the next worker (arq runs a
    cancelled job again) starts it over at once instead of waiting for the heartbeat timeout."""
    async with unit_of_work.transaction(db, claim.job.org_id) as session:
        await session.execute(
            sa.update(ExportJob)
            .where(*_held(claim))
            .values(status=PENDING, claim_token=None, heartbeat_at=None, enqueued_at=utcnow())
        )


async def sweep(runtime: Runtime, *, limit: int = 100) -> int:
    """Re-queues jobs that nobody is running: PENDING ones whose queue entry was lost, RUNNING ones whose worker
    stopped sending heartbeats. Rows are taken with SKIP LOCKED, so concurrent sweepers split the work. A job
    that used up its attempts is FAILED. Returns how many jobs were re-queued or given up."""
    settings = runtime.settings
    now = utcnow()
    cutoff = now - timedelta(seconds=settings.export_heartbeat_timeout_seconds)
    queued_before = sa.func.coalesce(ExportJob.enqueued_at, ExportJob.created_at) < cutoff
    stmt = (
        select(ExportJob)
        .where(
            queued_before,
            sa.or_(
                col(ExportJob.status) == PENDING,
                sa.and_(
                    col(ExportJob.status) == RUNNING,
                    sa.or_(col(ExportJob.heartbeat_at).is_(None), col(ExportJob.heartbeat_at) < cutoff),
                ),
            ),
        )
        .order_by(col(ExportJob.created_at))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    requeue: list[ExportJob] = []
    given_up: list[ExportJob] = []
    async with unit_of_work.system_unit_of_work(runtime) as session:
        for job in (await session.exec(stmt)).all():
            if job.attempts >= settings.export_max_attempts:
                job.status, job.completed_at, job.claim_token = FAILED, now, None
                job.error = f"gave up after {job.attempts} attempts"
                given_up.append(job)
            else:
                job.queue_job_id = f"export:{job.id}:{new_id('q')}"
                job.enqueued_at = now
                requeue.append(job)
    for job in requeue:
        log.info("re-queueing an export job", job_id=job.id, status=job.status, attempts=job.attempts)
        await enqueue(runtime, job.org_id, job.id, job.queue_job_id or "")
    for job in given_up:
        if job.file_id:
            await runtime.files.delete(job.org_id, job.file_id)
        await publish(runtime, job)
    return len(requeue) + len(given_up)


async def expire(runtime: Runtime, now: datetime | None = None) -> int:
    """READY jobs past their expiry become EXPIRED (the file cron removes their files). Returns how many."""
    async with unit_of_work.system_unit_of_work(runtime) as session:
        result = await session.execute(
            sa.update(ExportJob)
            .where(col(ExportJob.status) == READY, col(ExportJob.expires_at) <= (now or utcnow()))
            .values(status=EXPIRED)
            .returning(col(ExportJob.id), col(ExportJob.org_id))
        )
        expired = result.all()
    return len(expired)
