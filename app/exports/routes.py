"""Synchronous exports over HTTP: GET /api/v1/audit-logs/export and /api/v1/activity/export (CSV or JSON),
streamed, up to `export_sync_max_rows` rows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from app.activity import service as activity
from app.api.rest import error_response, require_principal
from app.audit import service as audit
from app.audit.routes import record_to_json
from app.db import iso
from app.errors import AppError, BadUserInput, PayloadTooLarge
from app.exports.formats import csv_stream, from_iterable, json_envelope_stream

AUDIT_HEADER = (
    "id",
    "timestamp",
    "traceId",
    "parentSpanId",
    "agentId",
    "action",
    "status",
    "verb",
    "provider",
    "riskLevel",
    "governanceStatus",
    "durationMs",
    "prompt",
    "response",
    "metadata",
    "checksum",
)
ACTIVITY_HEADER = (
    "id",
    "orgId",
    "actor",
    "action",
    "targetType",
    "targetId",
    "metadata",
    "occurredAt",
    "sourceIp",
    "checksum",
)


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


def _download(chunks: AsyncIterator[bytes], fmt: str, filename: str) -> StreamingResponse:
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
    return StreamingResponse(
        chunks, media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}.{fmt}"'}
    )


async def export_audit_logs(request: Request) -> Response:
    try:
        principal = await require_principal(request)
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
            execution_id=params.get("executionId"),
            occurred_from=_time(params, "from"),
            occurred_to=_time(params, "to"),
            search=params.get("search"),
            has_alerts=None if has_alerts is None else has_alerts.lower() == "true",
        )
        runtime = request.app.state.runtime
        limit = runtime.settings.export_sync_max_rows
        async with runtime.db.tenant_session(principal.org_id) as session:
            total = await audit.count_records(session, query)
        if total > limit:
            raise PayloadTooLarge(
                f"{total} records match; the synchronous export takes at most {limit}: narrow the filters"
            )
    except AppError as exc:
        return error_response(exc)

    async def records() -> AsyncIterator[audit.AuditRecord]:
        async with runtime.db.tenant_session(principal.org_id) as session:
            async for record in audit.stream_records(session, query, limit=limit):
                yield record

    filename = f"audit-log-{principal.org_id}-{datetime.now(UTC):%Y%m%d}"
    if fmt == "csv":
        rows = (
            [
                r.id,
                iso(r.occurred_at),
                r.trace_id,
                r.parent_span_id,
                r.agent_id,
                r.action,
                r.status,
                r.verb,
                r.provider,
                r.risk_level,
                r.governance_status,
                r.duration_ms,
                r.prompt,
                r.response,
                r.metadata,
                r.checksum,
            ]
            async for r in records()
        )
        return _download(csv_stream(AUDIT_HEADER, rows), fmt, filename)
    metadata = {
        "exportedAt": iso(datetime.now(UTC)),
        "from": iso(query.occurred_from),
        "to": iso(query.occurred_to),
        "totalRecords": total,
        "format": "json",
        "filters": dict(params),
    }
    return _download(
        json_envelope_stream("AuditExport", metadata, (record_to_json(r) async for r in records())), fmt, filename
    )


async def export_activity(request: Request) -> Response:
    try:
        principal = await require_principal(request)
        principal.require_user("export the activity trail")
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
        runtime = request.app.state.runtime
        limit = runtime.settings.export_sync_max_rows
        async with runtime.db.tenant_session(principal.org_id) as session:
            events = await activity.list_activity(session, query, limit=limit + 1, after=None)
        if len(events) > limit:
            raise PayloadTooLarge(f"more than {limit} events match; narrow the filters")
    except AppError as exc:
        return error_response(exc)
    filename = f"activity-{principal.org_id}-{datetime.now(UTC):%Y%m%d}"
    if fmt == "csv":
        rows = (
            [
                e.id,
                e.org_id,
                e.actor_email or e.actor_name or e.actor_id,
                e.action,
                e.target_type,
                e.target_id,
                e.metadata_,
                iso(e.occurred_at),
                e.source_ip,
                e.checksum,
            ]
            for e in events
        )
        return _download(csv_stream(ACTIVITY_HEADER, from_iterable(rows)), fmt, filename)
    records = (
        {
            "id": e.id,
            "orgId": e.org_id,
            "actor": {"type": e.actor_type, "id": e.actor_id, "name": e.actor_name, "email": e.actor_email},
            "action": e.action,
            "targetType": e.target_type,
            "targetId": e.target_id,
            "targetName": e.target_name,
            "metadata": e.metadata_,
            "occurredAt": iso(e.occurred_at),
            "sourceIp": e.source_ip,
            "userAgent": e.user_agent,
            "checksum": e.checksum,
        }
        for e in events
    )
    metadata = {
        "exportedAt": iso(datetime.now(UTC)),
        "from": iso(query.occurred_from),
        "to": iso(query.occurred_to),
        "totalRecords": len(events),
        "format": "json",
        "filters": dict(params),
    }
    return _download(json_envelope_stream("ActivityExport", metadata, from_iterable(records)), fmt, filename)


routes = [
    Route("/api/v1/audit-logs/export", export_audit_logs, methods=["GET"]),
    Route("/api/v1/activity/export", export_activity, methods=["GET"]),
]
