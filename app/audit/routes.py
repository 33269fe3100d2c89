"""REST ingest for existing SDKs and curl: POST /api/v1/audit-logs and /api/v1/audit-logs/batch."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.audit import proofs, signing
from app.audit.ingest import ingest
from app.audit.models import AuditRecord
from app.db import InvalidJSON, iso, request_json
from app.errors import AppError, BadUserInput
from app.rest import params
from app.rest.responses import JSONResponse, error_response, principal_of
from app.unit_of_work import system_unit_of_work, unit_of_work

_JSON_NAMES = {
    "trace_id": "traceId",
    "span_id": "spanId",
    "parent_span_id": "parentSpanId",
    "agent_id": "agentId",
    "occurred_at": "occurredAt",
    "received_at": "receivedAt",
    "duration_ms": "durationMs",
    "idempotency_key": "idempotencyKey",
    "execution_id": "executionId",
    "risk_level": "riskLevel",
    "governance_status": "governanceStatus",
    "dry_run": "dryRun",
    "tenant_id": "tenantId",
    "credential_masked": "credentialMasked",
}
_HIDDEN = {"org_id", "seq"}


def record_to_json(record: AuditRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in record.__slots__:
        if name in _HIDDEN:
            continue
        value = getattr(record, name)
        if name in ("occurred_at", "received_at"):
            value = iso(value)
        out[_JSON_NAMES.get(name, name)] = value
    return out


async def _read_json(request: Request) -> Any:
    if "json" not in request.headers.get("content-type", "application/json"):
        raise BadUserInput("send the body as application/json")
    try:
        return request_json(await request.body())
    except InvalidJSON as exc:
        raise BadUserInput(exc.message) from None


async def _ingest(request: Request, raws: list[Any], *, batch: bool) -> list[AuditRecord]:
    principal = principal_of(request)
    return (await ingest(request.app.state.runtime, principal, raws, batch=batch)).records


async def create_audit_log(request: Request) -> Response:
    try:
        body = await _read_json(request)
        records = await _ingest(request, [body], batch=False)
    except AppError as exc:
        return error_response(exc)
    return JSONResponse(record_to_json(records[0]), status_code=201)


async def create_audit_logs_batch(request: Request) -> Response:
    try:
        body = await _read_json(request)
        raws = body.get("records", body.get("logs")) if isinstance(body, dict) else body
        if not isinstance(raws, list):
            raise BadUserInput('send a JSON array of records, or {"records": [...]}')
        records = await _ingest(request, raws, batch=True)
    except AppError as exc:
        return error_response(exc)
    return JSONResponse({"records": [record_to_json(r) for r in records], "count": len(records)}, status_code=201)


@params.accepts(params.text("digestId", max_length=40))
async def audit_proof(request: Request) -> Response:
    """The record's inclusion proof in the newest signed digest (or `?digestId=`), with that digest."""
    runtime = request.app.state.runtime
    try:
        principal = principal_of(request)
        digest_id = params.query_of(request)["digestId"]
        async with unit_of_work(runtime, principal.org_id) as session:
            proof = await proofs.inclusion_proof(session, request.path_params["record_id"], digest_id=digest_id)
            body = proofs.inclusion_json(proof)
    except AppError as exc:
        return error_response(exc)
    return JSONResponse(body)


async def signing_keys(request: Request) -> Response:
    """Public: every key that signs or signed digests, with its validity (auditors pin one)."""
    runtime = request.app.state.runtime
    async with system_unit_of_work(runtime) as session:
        rows = await signing.list_keys(session)
    keys = []
    for row in rows:
        fields = signing.key_fields(row)
        fields["valid_from"], fields["valid_to"] = iso(row.valid_from), iso(row.valid_to) if row.valid_to else None
        keys.append({_camel(k): v for k, v in fields.items()})
    return JSONResponse({"keys": keys, "current": runtime.signer.key_id})


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


routes = [
    Route("/api/v1/audit-logs", create_audit_log, methods=["POST"]),
    Route("/api/v1/audit-logs/batch", create_audit_logs_batch, methods=["POST"]),
    Route("/api/v1/audit-logs/{record_id}/proof", audit_proof, methods=["GET"]),
    Route("/.well-known/agentrail-audit-keys.json", signing_keys, methods=["GET"]),
]
