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
from app.audit import proofs
from app.audit import routes as audit_routes
from app.db import iso
from app.errors import AppError, BadUserInput, NotFound
from app.exports import service
from app.exports.datasets import ACTIVITY, AUDIT_LOGS, Dataset
from app.exports.formats import JsonArrayItems, csv_header, json_envelope_head
from app.principal import Principal
from app.rest import params
from app.rest.downloads import SIGNED_LINK, download
from app.rest.openapi import FILE, documented
from app.rest.responses import JSONResponse, error_response, principal_of
from app.unit_of_work import unit_of_work

FORMAT = params.choice("format", {"csv": "csv", "json": "json"}, default="csv")
AUDIT_LOG_FILTERS = (FORMAT, *audit_routes.FILTERS)  # the same filters as GET /api/v1/audit-logs
ACTIVITY_FILTERS = (
    FORMAT,
    params.pattern("targetType", r"[a-z][a-z0-9_]{0,63}", "target types such as agent, policy, api_key", many=True),
    params.text("action", many=True),
    params.text("actorId"),
    params.text("targetId"),
    params.timestamp("from"),
    params.timestamp("to"),
    params.text("search"),
)


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


async def _proof_bundle(request: Request, principal: Principal, q: dict[str, Any], dataset: Dataset) -> Response:
    """`includeProofs=true`: the proof bundle of the window (every record of the chain between its first and last
    record, with the digests and keys) for `agentrail-verify`, in its line form or (`format=json`) as one JSON
    document; other filters would cut the chain. Streamed whatever its size (export jobs write it too)."""
    stream, kind = dataset.proof_stream, dataset.kind
    other = [
        name
        for name, value in q.items()
        if name not in ("from", "to", "includeProofs", "format") and value not in (None, [], False)
    ]
    if other:
        raise BadUserInput(
            f"includeProofs exports the whole chain of a window: only from and to apply, not {other[0]}",
            field=other[0],
        )
    runtime = request.app.state.runtime
    now = datetime.now(UTC)
    as_json = q["format"] == "json"  # else (csv, the default) the bundle's line form
    encode: Any = proofs.bundle_ndjson
    if as_json:
        metadata = {"exportedAt": iso(now), "from": iso(q["from"]), "to": iso(q["to"]), "includeProofs": True}
        encode = proofs.BundleJson(kind, metadata).convert

    async def chunks() -> AsyncIterator[bytes]:
        async with runtime.db.tenant_session(principal.org_id) as session:
            async for part in proofs.bundle_parts(session, occurred_from=q["from"], occurred_to=q["to"], stream=stream):
                yield encode(part)
        if as_json:
            yield proofs.BundleJson.end()

    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    filename = f"{stream.name}-proof-bundle-{principal.org_id}-{stamp}.{'json' if as_json else 'ndjson'}"
    return StreamingResponse(
        chunks(),
        media_type="application/json" if as_json else "application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@documented(
    "Export logs as CSV or JSON (a 202 job above the synchronous limit)",
    responses={200: FILE},
    graphql="Mutation.startExport",
)
@params.accepts(*AUDIT_LOG_FILTERS, params.boolean("includeProofs"))
async def export_audit_logs(request: Request) -> Response:
    try:
        principal = principal_of(request)
        q = params.query_of(request)
        if q["includeProofs"]:
            return await _proof_bundle(request, principal, q, AUDIT_LOGS)
        query = audit_routes.audit_log_query(q)
        return await _sync_export(request, principal, AUDIT_LOGS, q["format"], query)
    except AppError as exc:
        return error_response(exc)


@documented("Export the activity trail as CSV or JSON", responses={200: FILE}, graphql="Mutation.startExport")
@params.accepts(*ACTIVITY_FILTERS, params.boolean("includeProofs"))
async def export_activity(request: Request) -> Response:
    try:
        principal = principal_of(request)
        q = params.query_of(request)
        if q["includeProofs"]:
            return await _proof_bundle(request, principal, q, ACTIVITY)
        query = activity.ActivityQuery(
            target_types=q["targetType"],
            actions=q["action"],
            actor_id=q["actorId"],
            target_id=q["targetId"],
            occurred_from=q["from"],
            occurred_to=q["to"],
            search=q["search"],
        )
        return await _sync_export(request, principal, ACTIVITY, q["format"], query)
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


@documented("An export job's status", graphql="Query.exportJob")
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


@documented("Download an export job's file", responses={200: FILE})
@params.accepts(*SIGNED_LINK)
async def download_export(request: Request) -> Response:
    """The export's file: Content-Type per format, Content-Length, `audit-log-{orgId}-{YYYYMMDD}.{ext}`."""
    return await download(request, request.path_params["job_id"], service.file_of)


routes = [
    Route("/api/v1/audit-logs/export", export_audit_logs, methods=["GET"]),
    Route("/api/v1/activity/export", export_activity, methods=["GET"]),
    Route("/api/v1/exports/{job_id}", export_job_status, methods=["GET"]),
    Route("/api/v1/exports/{job_id}/download", download_export, methods=["GET"]),
]
