"""Exports over HTTP. GET /api/v1/audit-logs/export and /api/v1/activity/export stream CSV or JSON directly up to
`export_sync_max_rows` rows; above it they answer 202 with an export job. GET /api/v1/exports/{id} shows a job,
GET /api/v1/exports/{id}/download serves its file (owner credentials or a signed link)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from app.activity import service as activity
from app.audit import service as audit
from app.db import iso
from app.errors import AppError, BadUserInput, NotFound
from app.exports import service
from app.exports.datasets import ACTIVITY, AUDIT_LOGS, Dataset
from app.exports.formats import JsonArrayItems, csv_header, json_envelope_head
from app.principal import Principal
from app.rest.downloads import download
from app.rest.responses import JSONResponse, error_response, principal_of
from app.unit_of_work import unit_of_work


def _time(params: Any, name: str) -> datetime | None:
    value = params.get(name)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadUserInput(f"{name} must be an ISO 8601 date-time", field=name) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _format(request: Request) -> str:
    fmt = request.query_params.get("format", "csv").lower()
    if fmt not in ("csv", "json"):
        raise BadUserInput("format must be csv or json", field="format")
    return fmt


def _many(params: Any, name: str) -> list[str] | None:
    values = [v for item in params.getlist(name) for v in item.split(",") if v]
    return values or None


async def _sync_export(request: Request, principal: Principal, dataset: Dataset, fmt: str, query: Any) -> Response:
    """Up to `export_sync_max_rows` rows streamed now, with the data set's own readers (those of the export job,
    so both give the same bytes); above it, the same export as a background job (202)."""
    runtime = request.app.state.runtime
    limit = runtime.settings.export_sync_max_rows
    async with runtime.db.tenant_session(principal.org_id) as session:
        total = await dataset.count(session, query)
    if total > limit:
        return await _start_job(request, principal, dataset.name, fmt, query, total)

    async def csv_chunks() -> AsyncIterator[bytes]:
        yield csv_header(dataset.header)
        async with runtime.db.tenant_session(principal.org_id) as session:
            async for _, lines in dataset.csv_rows(session, query, limit=limit):
                yield lines

    async def json_chunks(metadata: dict[str, Any]) -> AsyncIterator[bytes]:
        yield json_envelope_head(dataset.kind, metadata)
        items = JsonArrayItems()
        async with runtime.db.tenant_session(principal.org_id) as session:
            async for _, lines in dataset.json_lines(session, query, limit=limit):
                yield items.convert(lines)
        yield b"]}"

    now = datetime.now(UTC)
    filename = dataset.filename(principal.org_id, now, fmt)
    if fmt == "csv":
        chunks = csv_chunks()
    else:
        metadata = {
            "exportedAt": iso(now),
            "from": iso(query.occurred_from),
            "to": iso(query.occurred_to),
            "totalRecords": total,
            "format": "json",
            "filters": dict(request.query_params),
        }
        chunks = json_chunks(metadata)
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
    return StreamingResponse(
        chunks, media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )


async def export_audit_logs(request: Request) -> Response:
    try:
        principal = principal_of(request)
        fmt = _format(request)
        params = request.query_params
        has_alerts = params.get("hasAlerts")
        query = audit.AuditLogQuery(
            agent_ids=_many(params, "agentId"),
            actions=_many(params, "action"),
            trace_id=params.get("traceId"),
            statuses=_many(params, "status"),
            risk_levels=_many(params, "riskLevel"),
            governance_statuses=_many(params, "governanceStatus"),
            providers=_many(params, "provider"),
            verbs=_many(params, "verb"),
            tenant_ids=_many(params, "tenantId"),
            execution_id=params.get("executionId"),
            occurred_from=_time(params, "from"),
            occurred_to=_time(params, "to"),
            search=params.get("search"),
            has_alerts=None if has_alerts is None else has_alerts.lower() == "true",
        )
        return await _sync_export(request, principal, AUDIT_LOGS, fmt, query)
    except AppError as exc:
        return error_response(exc)


async def export_activity(request: Request) -> Response:
    try:
        principal = principal_of(request)
        fmt = _format(request)
        params = request.query_params
        query = activity.ActivityQuery(
            target_types=_many(params, "targetType"),
            actions=_many(params, "action"),
            actor_id=params.get("actorId"),
            target_id=params.get("targetId"),
            occurred_from=_time(params, "from"),
            occurred_to=_time(params, "to"),
            search=params.get("search"),
        )
        return await _sync_export(request, principal, ACTIVITY, fmt, query)
    except AppError as exc:
        return error_response(exc)


async def _start_job(
    request: Request, principal: Principal, dataset: str, fmt: str, query: Any, total: int
) -> Response:
    """Too many rows to stream now: the same export as a background job. 202 with the job and where to poll."""
    runtime = request.app.state.runtime
    async with unit_of_work(runtime, principal.org_id) as session:
        job = await service.create_job(runtime, session, principal, dataset, fmt.upper(), query)
    body = service.job_to_json(runtime, job, principal)
    body["message"] = (
        f"{total} rows match, more than the {runtime.settings.export_sync_max_rows} a synchronous export takes: "
        "the export runs in the background; poll links.self, then download links.download"
    )
    return JSONResponse(body, status_code=202, headers={"Location": service.status_path(job.id)})


async def export_job_status(request: Request) -> Response:
    try:
        principal = principal_of(request)
        runtime = request.app.state.runtime
        job_id = request.path_params["job_id"]
        async with runtime.db.tenant_session(principal.org_id) as session:
            job = await service.find_job(session, principal, job_id)
        if job is None:
            raise NotFound(f"no export job {job_id!r}")
        return JSONResponse(service.job_to_json(runtime, job, principal))
    except AppError as exc:
        return error_response(exc)


async def download_export(request: Request) -> Response:
    """The export's file: Content-Type per format, Content-Length, `audit-log-{orgId}-{YYYYMMDD}.{ext}`."""
    return await download(request, request.path_params["job_id"], service.file_of)


routes = [
    Route("/api/v1/audit-logs/export", export_audit_logs, methods=["GET"]),
    Route("/api/v1/activity/export", export_activity, methods=["GET"]),
    Route("/api/v1/exports/{job_id}", export_job_status, methods=["GET"]),
    Route("/api/v1/exports/{job_id}/download", download_export, methods=["GET"]),
]
