"""Exports over HTTP. GET /api/v1/audit-logs/export and /api/v1/activity/export stream CSV or JSON directly up to
`export_sync_max_rows` rows; above it they answer 202 with an export job. GET /api/v1/exports/{id} shows a job,
GET /api/v1/exports/{id}/download serves its file (owner credentials or a signed link)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field, field_validator
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from app.activity import service as activity
from app.audit import proofs
from app.audit import routes as audit_routes
from app.db import iso
from app.errors import AppError, BadUserInput, Conflict, NotFound
from app.exports import service
from app.exports.datasets import (
    ACTIVITY,
    AUDIT_LOGS,
    GATEWAY,
    OPERATIONS_AUDIT,
    ORGANIZATION_AUDIT_LOG,
    Dataset,
    envelope_metadata,
)
from app.exports.formats import JsonArrayItems, csv_header, json_envelope_head
from app.exports.service import PENDING, READY, RUNNING
from app.principal import Principal
from app.rest import params
from app.rest.downloads import SIGNED_LINK, download
from app.rest.openapi import FILE, Answer, Body, body_of, documented, one_of
from app.rest.responses import JSONResponse, answers, error_response, principal_of
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


def _streamed(chunks: AsyncIterator[bytes], fmt: str, filename: str) -> StreamingResponse:
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
    return StreamingResponse(
        chunks, media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )


def _rows(
    request: Request,
    principal: Principal,
    dataset: Dataset,
    fmt: str,
    query: Any,
    *,
    limit: int | None,
    head: bytes = b"[",
    tail: bytes = b"]",
) -> AsyncIterator[bytes]:
    """The data set's rows, up to `limit`, read by its own readers (those of the export job, so both give the
    same bytes): CSV after its header, JSON as the items of an array between `head` and `tail`."""
    runtime = request.app.state.runtime

    async def csv_chunks() -> AsyncIterator[bytes]:
        yield csv_header(dataset.header)
        async with runtime.db.tenant_session(principal.org_id) as session:
            async for _, lines in dataset.csv_rows(session, query, limit=limit):
                yield lines

    async def json_chunks() -> AsyncIterator[bytes]:
        yield head
        items = JsonArrayItems()
        async with runtime.db.tenant_session(principal.org_id) as session:
            async for _, lines in dataset.json_lines(session, query, limit=limit):
                yield items.convert(lines)
        yield tail

    return csv_chunks() if fmt == "csv" else json_chunks()


async def _sync_export(
    request: Request, principal: Principal, dataset: Dataset, fmt: str, query: Any, *, job_body: Any = None
) -> Response:
    """Up to `export_sync_max_rows` rows streamed now; above it, the same export as a background job (202,
    answered by `job_body` when the document has its own shape)."""
    runtime = request.app.state.runtime
    limit = runtime.settings.export_sync_max_rows
    async with runtime.db.tenant_session(principal.org_id) as session:
        total = await dataset.count(session, query)
    if total > limit:
        return await _start_job(request, principal, dataset.name, fmt, query, total, job_body=job_body)
    now = datetime.now(UTC)
    metadata = envelope_metadata(
        dataset, exported_at=now, query=query, total=total, fmt=fmt, filters=dict(request.query_params)
    )
    head = json_envelope_head(dataset.kind, metadata, dataset.api_version)
    chunks = _rows(request, principal, dataset, fmt, query, limit=limit, head=head, tail=b"]}")
    return _streamed(chunks, fmt, dataset.filename(principal.org_id, now, fmt))


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
    request: Request,
    principal: Principal,
    dataset: str,
    fmt: str,
    query: Any,
    total: int,
    *,
    job_body: Any = None,
) -> Response:
    """Too many rows to stream now: the same export as a background job. 202 with the job and where to poll
    (`job_body(runtime, job, total)`: the body a document gives that answer)."""
    runtime = request.app.state.runtime
    async with unit_of_work(runtime, principal.org_id) as session:
        job = await service.create_job(runtime, session, principal, dataset, fmt.upper(), query)
    if job_body is not None:
        return JSONResponse(job_body(runtime, job, total), status_code=202)
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


# --- seed 000: POST /v1/audit/export (the activity trail: every dashboard mutation) -------------------------------
class GatewayExportIn(Body):
    format: str = Field(default="json", description="json (the default) or csv (an attachment)")

    @field_validator("format")
    @classmethod
    def _format(cls, value: Any) -> Any:
        return one_of(("json", "csv"), value)


@documented(
    "The activity trail as JSON rows or CSV", body=GatewayExportIn, responses={200: FILE}, graphql="Query.activity"
)
@answers
async def gateway_audit_export(request: Request) -> Response:
    """Every event of the calling organisation, newest first: JSON, an array of
    `{id, orgId, actor, action, target, metadata, occurredAt}`; CSV, those columns (actor: email, else name,
    else id; target: `type:id`; metadata: its JSON text). Scoped to the caller's organisation."""
    principal = principal_of(request)
    fmt = (await body_of(request, GatewayExportIn)).format
    chunks = _rows(request, principal, GATEWAY, fmt, activity.ActivityQuery(), limit=None)
    return _streamed(chunks, fmt, GATEWAY.filename(principal.org_id, datetime.now(UTC), fmt))


# --- seed 001: GET /v1/organizations/{organization_id}/audit-log/export --------------------------------------------
ORGANIZATION_EXPORT_MAX_ROWS = 10_000
# the document's entity types Agentrail has no notion of, and why (its own target types are accepted as they are)
_NO_ENTITY = {
    "department": "Agentrail has no departments",
    "department_membership": "Agentrail has no departments",
    "role": "roles are fixed in Agentrail (owner, admin, member, viewer), not entities; a role change is a `user` "
    "event (action member.role_changed)",
    "role_assignment": "a role change is a `user` event in Agentrail (action member.role_changed)",
    "permission": "permissions are declared in code in Agentrail, not entities",
    "knowledge_slice": "Agentrail has no knowledge bases",
    "vector_store": "Agentrail has no vector stores",
    "knowledge_grant": "Agentrail has no knowledge bases",
    "knowledge_composite": "Agentrail has no knowledge bases",
}
_NO_ACTION = {
    "deactivated": "Agentrail does not deactivate users: members are removed (action_type=removed)",
    "reactivated": "Agentrail does not deactivate users: members are removed and invited again",
    "reparented": "Agentrail has no departments to reparent",
    "membership_added": "Agentrail has no departments: people join the organisation (action_type=joined)",
    "membership_removed": "Agentrail has no departments: members are removed (action_type=removed)",
}
_ACTION_ALIASES = {"assigned": "attached", "unassigned": "detached"}  # a policy to an agent


def _vocabulary(name: str, refused: dict[str, str], accepted: str, aliases: dict[str, str]) -> params.Param:
    """An open lower-case vocabulary (`[a-z][a-z0-9_]*`) in which the values of `refused` are a 400 saying why."""
    base = params.pattern(name, r"[a-z][a-z0-9_]{0,63}", accepted)

    def convert(param: str, value: str) -> str:
        word = base.convert(param, value)
        if word in refused:
            raise BadUserInput(f"{param}={word!r} is not supported: {refused[word]}", field=param, accepted=accepted)
        return aliases.get(word, word)

    return dataclasses.replace(base, convert=convert)


ORGANIZATION_EXPORT_FILTERS = (
    _vocabulary(
        "entity_type",
        _NO_ENTITY,
        "user, agent, policy, compliance_rule, api_key, webhook_endpoint, report, export, alert, organization, "
        "invitation, … (the activity trail's target types)",
        {},
    ),
    _vocabulary(
        "action_type",
        _NO_ACTION,
        "created, updated, deleted, invited, removed, assigned (attached), unassigned (detached), joined, "
        "revoked, role_changed, … (the last part of the activity trail's actions)",
        _ACTION_ALIASES,
    ),
    params.text("actor_id", max_length=80),
    params.text("target_id", max_length=80),
    params.refused("department_id", "Agentrail has no departments"),
    params.timestamp("from_date"),
    params.timestamp("to_date", through_day=True),
    params.text("search_term", max_length=200),
)


@params.accepts(*ORGANIZATION_EXPORT_FILTERS)
@documented("The organisation's audit log as CSV (≤ 10,000 rows)", responses={200: FILE}, graphql="Query.activity")
@answers
async def organization_audit_log_export(request: Request) -> Response:
    """Timestamp, Entity Type, Entity Name, Action, Actor Name, Actor Email, Target Name, Previous Value, New
    Value; newest first. Another organisation's id is 404. `to_date` as a date includes that day."""
    principal = principal_of(request)
    organization_id = str(request.path_params["organization_id"])[:64]
    if organization_id != principal.org_id:
        raise NotFound(f"organization {organization_id!r} not found")
    q = params.query_of(request)
    query = activity.ActivityQuery(
        target_types=[q["entity_type"]] if q["entity_type"] else None,
        action_verbs=[q["action_type"]] if q["action_type"] else None,
        actor_id=q["actor_id"],
        target_id=q["target_id"],
        occurred_from=q["from_date"],
        occurred_to=q["to_date"],
        search=q["search_term"],
    )
    dataset = ORGANIZATION_AUDIT_LOG
    chunks = _rows(request, principal, dataset, "csv", query, limit=ORGANIZATION_EXPORT_MAX_ROWS)
    return _streamed(chunks, "csv", dataset.filename(principal.org_id, datetime.now(UTC), "csv"))


# --- seed 003: GET /api/v1/audit/export ------------------------------------------------------------------------------
OPERATIONS_EXPORT_FILTERS = (
    params.choice("format", {"json": "json", "csv": "csv"}, default="json"),
    params.timestamp("from"),
    params.timestamp("to"),
    params.text("action", many=True),
    params.text("user", max_length=320),
    params.refused("namespace", "Agentrail has no namespaces: an organisation's trail is one"),
)
_JOB_STATES = {PENDING: "processing", RUNNING: "processing", READY: "completed"}


def operations_download_path(job_id: str) -> str:
    return f"/api/v1/audit/export/download/{job_id}"


def _operations_job(runtime: Any, job: Any, estimated: int | None) -> dict[str, Any]:
    """The 202 body of seed 003: {apiVersion, kind: AuditExportJob, metadata: {jobId}, status: {state,
    estimatedRecords, downloadUrl, expiresAt}}; until the file is made, it expires a retention after the request."""
    expires = job.expires_at or job.created_at + timedelta(hours=runtime.settings.export_retention_hours)
    return {
        "apiVersion": "v1",
        "kind": "AuditExportJob",
        "metadata": {"jobId": job.id},
        "status": {
            "state": _JOB_STATES.get(job.status, job.status.lower()),
            "estimatedRecords": estimated if estimated is not None else job.row_count,
            "downloadUrl": operations_download_path(job.id),
            "expiresAt": iso(expires),
        },
    }


class OperationsJobStatus(Answer):
    state: str
    estimated_records: int | None
    download_url: str
    expires_at: str


class OperationsJobMetadata(Answer):
    job_id: str


class OperationsJob(Answer):
    api_version: str
    kind: str
    metadata: OperationsJobMetadata
    status: OperationsJobStatus


SYNC_OR_JOB = {200: FILE, 202: OperationsJob}


@params.accepts(*OPERATIONS_EXPORT_FILTERS)
@documented("The audit log as JSON or CSV (a 202 job above 10,000)", responses=SYNC_OR_JOB, graphql="Query.activity")
@answers
async def operations_audit_export(request: Request) -> Response:
    """JSON: `{apiVersion: "v1", kind: "AuditExport", metadata: {exportedAt, from, to, totalRecords, format},
    records: [{id, timestamp, action, user, role, resource, resourceType, namespace, sourceIP, checksum}]}`; CSV:
    those columns, `audit-export-YYYYMMDD.csv`. `user` is the actor's email or id; `action` exact or `agent.*`."""
    principal = principal_of(request)
    q = params.query_of(request)
    query = activity.ActivityQuery(actions=q["action"], actor=q["user"], occurred_from=q["from"], occurred_to=q["to"])
    return await _sync_export(request, principal, OPERATIONS_AUDIT, q["format"], query, job_body=_operations_job)


@documented("Download a large audit export (202 while it is made)", responses=SYNC_OR_JOB, graphql="Query.exportJob")
@answers
async def download_operations_export(request: Request) -> Response:
    principal = principal_of(request)
    runtime = request.app.state.runtime
    job_id = str(request.path_params["job_id"])[:64]
    async with runtime.db.tenant_session(principal.org_id) as session:
        job = await service.find_job(session, principal, job_id)
    if job is None or job.dataset != OPERATIONS_AUDIT.name:
        raise NotFound(f"no audit export {job_id!r}")
    if job.status in (PENDING, RUNNING):
        return JSONResponse(_operations_job(runtime, job, None), status_code=202)
    if job.status != READY:
        raise Conflict(f"audit export {job_id!r} is {job.status.lower()}: start a new one")
    return await download(request, job_id, service.file_of)


routes = [
    Route("/api/v1/audit-logs/export", export_audit_logs, methods=["GET"]),
    Route("/api/v1/activity/export", export_activity, methods=["GET"]),
    Route("/api/v1/exports/{job_id}", export_job_status, methods=["GET"]),
    Route("/api/v1/exports/{job_id}/download", download_export, methods=["GET"]),
    Route("/v1/audit/export", gateway_audit_export, methods=["POST"]),
    Route("/v1/organizations/{organization_id}/audit-log/export", organization_audit_log_export, methods=["GET"]),
    Route("/api/v1/audit/export", operations_audit_export, methods=["GET"]),
    Route("/api/v1/audit/export/download/{job_id}", download_operations_export, methods=["GET"]),
]
