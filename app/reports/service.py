"""Operations of the reports domain: request, list, read and delete reports, and build them in the background.

A report's row is its job's state (PostgreSQL is the truth; the arq queue only says "look at this row"):
PENDING → RUNNING (claimed by one worker under `FOR UPDATE SKIP LOCKED`, `attempts` counted) → READY with its
file, or FAILED with an error. Each change is pushed to the requester (`jobUpdates`). A build whose worker died
stays RUNNING; the `sweep_reports` cron job puts it back to PENDING after `report_timeout_seconds` and queues it
again (up to `report_max_attempts`), and re-queues PENDING rows whose queue entry was lost. A build writes its
file from the start, under the report's id, so a retried build replaces whatever a dead one left.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from sqlmodel import col, select

from app import unit_of_work
from app.activity.service import record_activity
from app.agents import service as agents
from app.audit import sealing
from app.db import AsyncSession, Database, iso, new_id, utcnow
from app.errors import AppError, BadUserInput, NotFound
from app.jobs.service import JobUpdate, lock_claimable, publish_job_update, signed_download_url
from app.orgs import service as orgs
from app.pagination import PageRequest
from app.principal import Principal
from app.reports import auth, data, render
from app.reports.models import Report
from app.settings import Settings
from app.webhooks import service as webhooks

log = structlog.get_logger(__name__)

FORMATS = ("PDF", "JSON", "CSV")
MAX_AGENT_IDS = 100
PENDING_GRACE = timedelta(minutes=1)  # a PENDING row older than this has its job queued again
SWEEP_BATCH = 100
BUILD_JOB = "build_report"


class ReportError(AppError):
    """A build failed for a reason the requester should read (it becomes the report's `error`)."""

    code = "BAD_USER_INPUT"
    http_status = 400


def download_path(report_id: str) -> str:
    return f"/api/v1/reports/{report_id}/download"


def filename(report: Report, generated_at: datetime) -> str:
    return f"{report.type}-{report.org_id}-{generated_at.astimezone(UTC):%Y%m%d}.{render.EXTENSIONS[report.format]}"


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# --- requests ----------------------------------------------------------------------------------
async def request_report(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    *,
    type: str,
    format: str,
    window_from: datetime,
    window_to: datetime,
    agent_ids: Sequence[str] | None,
    source_ip: str | None = None,
) -> Report:
    """Validates everything first (nothing is written on a rejection), then adds the PENDING row and its
    activity event in one transaction. The caller queues the build (`enqueue_build`) after this returns."""
    if type not in data.TYPES:
        raise BadUserInput(f"type must be one of {', '.join(data.TYPES)}", field="type")
    if format not in FORMATS:
        raise BadUserInput(f"format must be one of {', '.join(FORMATS)}", field="format")
    if format == "CSV" and type not in data.TABULAR_TYPES:
        raise BadUserInput(
            f"CSV is available for the tabular report types ({', '.join(data.TABULAR_TYPES)}); "
            f"ask for PDF or JSON for {type}",
            field="format",
        )
    start, end = _utc(window_from), _utc(window_to)
    if start >= end:
        raise BadUserInput("from must be before to", field="from")
    if end - start > timedelta(days=settings.report_max_window_days):
        raise BadUserInput(f"the window may span at most {settings.report_max_window_days} days", field="to")
    if start >= utcnow():
        raise BadUserInput("from must be in the past", field="from")
    ids: list[str] | None = None
    if agent_ids is not None:
        ids = sorted(set(agent_ids))
        if not ids:
            raise BadUserInput("agentIds must name at least one agent; omit it for all agents", field="agentIds")
        if len(ids) > MAX_AGENT_IDS:
            raise BadUserInput(f"at most {MAX_AGENT_IDS} agentIds", field="agentIds")
        if type not in data.AGENT_FILTERED_TYPES:
            raise BadUserInput(
                f"agentIds does not apply to {type}: the verification covers every record", field="agentIds"
            )
        # deleted agents are allowed (a report looks back); another organisation's ids are unknown here
        known = await agents.agents_by_ids(session, ids)
        missing = [i for i in ids if i not in known]
        if missing:
            raise BadUserInput(f"unknown agent id(s): {', '.join(missing[:20])}", field="agentIds", agentIds=missing)
    report = Report(
        id=new_id("rep"),
        org_id=principal.org_id,
        type=type,
        format=format,
        status="PENDING",
        window_from=start,
        window_to=end,
        agent_ids=ids,
        requested_by=principal.actor_id,
    )
    session.add(report)
    record_activity(
        session,
        principal,
        "report.requested",
        target_type="report",
        target_id=report.id,
        target_name=data.TITLES[type],
        metadata={"type": type, "format": format, "from": iso(start), "to": iso(end), "agentIds": ids},
        source_ip=source_ip,
    )
    await session.flush()
    unit_of_work.after_commit(session, lambda runtime: enqueue_build(runtime.queue, report))
    return report


async def enqueue_build(queue: Any, report: Report) -> None:
    """Queues the build. A lost enqueue (Redis down) is not an error: the sweeper finds the PENDING row."""
    try:
        await queue.enqueue_job(BUILD_JOB, report.org_id, report.id, _job_id=f"report:{report.id}:{report.attempts}")
    except Exception:
        log.warning("could not queue a report build; the sweeper will", report_id=report.id, exc_info=True)


async def get_report(session: AsyncSession, report_id: str) -> Report:
    report = await session.get(Report, report_id)
    if report is None:
        raise NotFound("report not found", id=report_id)
    return report


async def list_reports(
    session: AsyncSession,
    *,
    page: PageRequest,
    types: Sequence[str] | None = None,
    statuses: Sequence[str] | None = None,
) -> list[Report]:
    """Newest first; keyset pagination on (created_at, id)."""
    query = select(Report)
    if types:
        query = query.where(col(Report.type).in_(list(types)))
    if statuses:
        query = query.where(col(Report.status).in_(list(statuses)))
    query = page.apply(query, col(Report.created_at), col(Report.id))
    return list((await session.exec(query)).all())


async def delete_report(
    session: AsyncSession, principal: Principal, files: Any, report_id: str, *, source_ip: str | None = None
) -> str:
    """Removes the report and its file. The requester, owners and admins."""
    report = await get_report(session, report_id)
    auth.DELETE.require_owner_or_role(principal, report.requested_by)
    await session.delete(report)
    record_activity(
        session,
        principal,
        "report.deleted",
        target_type="report",
        target_id=report.id,
        target_name=data.TITLES.get(report.type, report.type),
        metadata={"type": report.type, "format": report.format, "status": report.status},
        source_ip=source_ip,
    )
    await session.flush()
    unit_of_work.after_commit(session, lambda _runtime: files.delete(report.org_id, report.id))
    return report.id


def download_url(settings: Settings, secret_key: str, report: Report, now: datetime | None = None) -> str | None:
    """A fresh signed link while the report is READY and its file kept; never valid past the file's expiry."""
    if report.status != "READY" or report.file_id is None:
        return None
    if report.expires_at is not None and report.expires_at <= (now or utcnow()):
        return None
    return signed_download_url(
        settings, secret_key, download_path(report.id), report.org_id, not_after=report.expires_at
    )


async def file_of(db: Database, org_id: str, principal: Principal | None, report_id: str) -> str | None:
    """The stored file of a READY report of this organisation (another organisation's id finds nothing), when
    the caller may have it (app/reports/auth.py; None: a signed link, whose holder may)."""
    if principal is not None and not principal.is_user:
        return None  # reports are for users: an API key finds none, as in GraphQL
    async with db.tenant_session(org_id) as session:
        report = await session.get(Report, report_id)
    if report is None or report.status != "READY" or not auth.FILE.may_act_on(principal, report.requested_by):
        return None
    return report.file_id


# --- the build ---------------------------------------------------------------------------------
async def claim(db: Database, org_id: str, report_id: str, settings: Settings) -> Report | None:
    """Takes the report for this worker: PENDING (or RUNNING past the timeout) → RUNNING, attempts + 1.
    None when it is gone, finished, being built, or locked by another worker claiming it right now."""
    async with unit_of_work.transaction(db, org_id) as session:
        timeout = timedelta(seconds=settings.report_timeout_seconds)
        report = await lock_claimable(session, Report, report_id, lease="claimed_at", lease_timeout=timeout)
        if report is None:
            return None
        report.status = "RUNNING"
        report.claimed_at = utcnow()
        report.attempts += 1
        report.error = None
        return report


async def _owned(session: AsyncSession, report_id: str, attempt: int) -> Report | None:
    """The report's row, locked, if this attempt still owns it (not deleted, not taken over by a retry)."""
    row = (await session.exec(select(Report).where(Report.id == report_id).with_for_update())).first()
    if row is None or row.status != "RUNNING" or row.attempts != attempt:
        return None
    return row


async def mark_ready(
    runtime: Any,
    report: Report,
    *,
    attempt: int,
    file_id: str,
    size_bytes: int,
    summary: dict[str, Any],
    expires_at: datetime,
) -> Report | None:
    """The one place a report becomes READY: its file is whole and stored. Anything that must happen exactly
    when a report is ready (a `report.ready` webhook event) belongs in this transaction. Returns the row, or
    None when this attempt no longer owns the report (it was deleted, or a retry took it over)."""
    async with unit_of_work.unit_of_work(runtime, report.org_id) as session:
        row = await _owned(session, report.id, attempt)
        if row is None:
            return None
        row.status = "READY"
        row.completed_at = utcnow()
        row.file_id = file_id
        row.size_bytes = size_bytes
        row.summary = summary
        row.expires_at = expires_at
        row.error = None
        # the webhook event is written with the state change (outbox): READY and report.ready go together
        await webhooks.emit_event(
            session,
            "report.ready",
            {
                "reportId": row.id,
                "type": row.type.upper(),  # GraphQL's ReportType spelling
                "format": row.format,
                "from": iso(row.window_from),
                "to": iso(row.window_to),
                "sizeBytes": size_bytes,
                "summary": summary,
                "requestedBy": row.requested_by,
                "expiresAt": iso(expires_at),
            },
        )
        return row


async def mark_failed(db: Database, report: Report, *, attempt: int, error: str) -> Report | None:
    """The build failed: FAILED with the reason the requester reads. None when this attempt no longer owns it."""
    async with unit_of_work.transaction(db, report.org_id) as session:
        row = await _owned(session, report.id, attempt)
        if row is None:
            return None
        row.status = "FAILED"
        row.completed_at = utcnow()
        row.error = error[:2000]
        return row


async def _publish(runtime: Any, report: Report, **extra: Any) -> None:
    await publish_job_update(
        runtime.broadcaster,
        report.org_id,
        report.requested_by,
        JobUpdate(job_id=report.id, kind="report", status=report.status, **extra),
    )


async def _meta(session: AsyncSession, report: Report, generated_at: datetime) -> render.Meta:
    organization = await orgs.get_organization(session, report.org_id)
    people = await orgs.user_labels(session, [report.requested_by])
    return render.Meta(
        report_id=report.id,
        type=report.type,
        format=report.format,
        org_id=report.org_id,
        org_name=organization.name,
        window_from=iso(report.window_from) or "",
        window_to=iso(report.window_to) or "",
        agent_ids=report.agent_ids,
        generated_at=iso(generated_at) or "",
        requested_by=people.get(report.requested_by, report.requested_by),
    )


async def build(runtime: Any, org_id: str, report_id: str) -> str | None:
    """The job: claims the report, gathers its figures, renders and stores the file, marks it READY (or FAILED
    with the reason). Returns the final status, or None when there was nothing to do."""
    settings: Settings = runtime.settings
    report = await claim(runtime.db, org_id, report_id, settings)
    if report is None:
        return None
    attempt = report.attempts
    await _publish(runtime, report, progress=0.0)
    try:
        generated_at = utcnow()
        window = data.Window(report.window_from, report.window_to, report.agent_ids)
        async with runtime.db.tenant_session(org_id) as session:
            content = await data.gather(session, report.type, window, sealing.Keys(runtime.secret_key, runtime.signer))
            meta = await _meta(session, report, generated_at)
        body = await asyncio.to_thread(render.render, content, meta)
        if len(body) > settings.report_max_bytes:
            raise ReportError(
                f"the report would be {len(body)} bytes, more than the limit of {settings.report_max_bytes}: "
                "narrow the window or the agents"
            )
        expires_at = generated_at + timedelta(days=settings.report_retention_days)
        async with runtime.files.writer(
            org_id,
            report.id,
            filename=filename(report, generated_at),
            content_type=render.CONTENT_TYPES[report.format],
            expires_at=expires_at,
        ) as writer:
            await writer.write(body)
        ready = await mark_ready(
            runtime,
            report,
            attempt=attempt,
            file_id=writer.file.id,
            size_bytes=writer.file.size_bytes,
            summary=content.summary,
            expires_at=expires_at,
        )
    except Exception as exc:
        if isinstance(exc, AppError):
            message = exc.message
        else:
            log.exception("report build failed", report_id=report.id, org_id=org_id)
            message = f"the report could not be built ({type(exc).__name__}); the error is in the worker log"
        failed = await mark_failed(runtime.db, report, attempt=attempt, error=message)
        if failed is not None:
            await _publish(runtime, failed, error=failed.error)
        return "FAILED"
    if ready is None:
        async with runtime.db.tenant_session(org_id) as session:
            gone = await session.get(Report, report.id) is None
        if gone:  # deleted while it was being built: its file must not outlive it
            await runtime.files.delete(org_id, report.id)
        return None
    url = download_url(settings, runtime.secret_key, ready)
    await _publish(runtime, ready, progress=1.0, download_url=url)
    return "READY"


async def sweep(runtime: Any, now: datetime | None = None) -> int:
    """Cron: builds whose worker died go back to PENDING and are queued again (FAILED after the last attempt);
    PENDING rows whose queue entry was lost are queued again. Rows are taken with SKIP LOCKED, so several
    workers sweeping at once share them. Returns how many reports it acted on."""
    settings: Settings = runtime.settings
    now = now or utcnow()
    stuck_before = now - timedelta(seconds=settings.report_timeout_seconds)
    queued, failed = [], []
    async with unit_of_work.system_unit_of_work(runtime) as session:
        query = (
            select(Report)
            .where(
                sa.or_(
                    sa.and_(col(Report.status) == "RUNNING", col(Report.claimed_at) < stuck_before),
                    sa.and_(col(Report.status) == "PENDING", col(Report.created_at) < now - PENDING_GRACE),
                )
            )
            .order_by(col(Report.created_at))
            .limit(SWEEP_BATCH)
            .with_for_update(skip_locked=True)
        )
        for report in (await session.exec(query)).all():
            if report.status == "RUNNING" and report.attempts >= settings.report_max_attempts:
                report.status = "FAILED"
                report.completed_at = now
                report.error = f"the build was interrupted {report.attempts} times (worker stopped or timed out)"
                failed.append(report)
            else:
                if report.status == "RUNNING":
                    log.warning("report build timed out; queued again", report_id=report.id, attempts=report.attempts)
                report.status = "PENDING"
                report.claimed_at = None
                queued.append(report)
    for report in queued:
        await enqueue_build(runtime.queue, report)
    for report in failed:
        await _publish(runtime, report, error=report.error)
    return len(queued) + len(failed)
