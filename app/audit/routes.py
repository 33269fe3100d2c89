"""REST /api/v1/audit-logs as the API reference documents it (seed 002): ingest (single and batch, the quickstart
body verbatim, snake_case records as agent runtimes write them), reads (list with limit/offset and the `auditLogs`
filters, one record, a trace, a record's parent chain). Thin adapters over the service functions GraphQL calls."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, get_type_hints

from pydantic import BaseModel, Field, create_model
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.audit import proofs, service, signing, validation
from app.audit.ingest import ingest
from app.audit.models import AuditRecord
from app.audit.streams import ACTIVITY, AUDIT, Stream
from app.db import iso
from app.errors import BadUserInput, NotFound
from app.pagination import PageRequest, cursor_page, next_page
from app.rest import params
from app.rest.handler import Call, endpoint
from app.rest.openapi import Answer, documented, read_json
from app.rest.params import query_of
from app.rest.responses import JSONResponse, answers, camel, principal_of, row_json
from app.unit_of_work import system_unit_of_work, unit_of_work

_HIDDEN = ("org_id", "seq")
# records as an agent runtime writes them (seed 004): snake_case names, `timestamp`; `credential_masked` is
# the server's to decide, so a sent one is dropped
_SNAKE = {
    **{f.name: camel(f.name) for f in dataclasses.fields(validation.AuditLogDraft) if camel(f.name) != f.name},
    "timestamp": "occurredAt",
}
_IGNORED = {"credential_masked", "credentialMasked"}
RUNTIME_ACTION = "tool_use"


def _wire_type(annotation: Any) -> Any:
    """A read model's field type as JSON carries it (times are ISO 8601 strings)."""
    if annotation is datetime:
        return str
    if annotation == datetime | None:
        return str | None
    return annotation


def _model(name: str, base: type[BaseModel], source: type, doc: str, **fields: Any) -> Any:
    """A pydantic model of a dataclass's fields (the read model or the draft: their names are written once),
    `fields` overriding or adding."""
    hints = get_type_hints(source)
    derived: dict[str, Any] = {}
    for f in dataclasses.fields(source):
        if f.name in _HIDDEN:
            continue
        wire = _wire_type(hints[f.name])
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        derived[f.name] = (wire, ...) if required and base is Answer else (wire | None, None)
    derived.update(fields)
    return create_model(name, __base__=base, __doc__=doc, **derived)


AuditLogOut = _model("AuditLogOut", Answer, AuditRecord, "One audit record (also a span of its trace).")
# what ingest accepts (the one ingest entry checks it: app/audit/validation.py); documented, not parsed here
AuditLogIn = _model(
    "AuditLogIn",
    Answer,
    validation.AuditLogDraft,
    "An audit record to log: `action` is required; the other fields are optional. `agentId` is an agent id or "
    "a stable name (the agent is registered on first use). snake_case names (execution_id, risk_level, …) are "
    "accepted too.",
    action=(str, Field(min_length=1, max_length=validation.MAX_ACTION_LENGTH)),
    args=(Any, None),
    result=(Any, None),
)


AuditLogList = list[AuditLogOut]  # type: ignore[valid-type]


class AuditLogPage(Answer):
    logs: list[AuditLogOut]  # type: ignore[valid-type]
    total: int
    limit: int
    offset: int


def record_to_json(record: AuditRecord) -> dict[str, Any]:
    return row_json(record, hide=_HIDDEN)


def _as_record(raw: Any) -> Any:
    """Snake_case keys renamed to the API's; the rest is checked by the one ingest entry."""
    if not isinstance(raw, dict):
        return raw
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _IGNORED:
            continue
        name: str = _SNAKE.get(str(key), str(key))
        if name in out:
            raise BadUserInput(f"{key} and {name} are the same field: send one", field=name)
        out[name] = value
    if "action" not in out and isinstance(out.get("verb"), str):
        # an agent runtime's execution record names the call by its verb and has no action: it is a tool call
        # (as OTLP's execute_tool spans map: app/otel/mapping.py)
        out["action"] = RUNTIME_ACTION
    return out


async def _ingest(request: Request, raws: list[Any], *, batch: bool) -> list[AuditRecord]:
    principal = principal_of(request)
    records = [_as_record(raw) for raw in raws]
    return (await ingest(request.app.state.runtime, principal, records, batch=batch)).records


@documented(
    "Log a single event",
    body=AuditLogIn,
    responses={201: AuditLogOut},
    graphql="Mutation.logEvent",
    tag="audit-logs",
)
@answers
async def create_audit_log(request: Request) -> Response:
    body = await read_json(request)
    records = await _ingest(request, [body], batch=False)
    return JSONResponse(record_to_json(records[0]), status_code=201)


@documented(
    "Log up to 1,000 events in one request",
    body=list[AuditLogIn],  # type: ignore[valid-type]
    responses={201: list[str]},
    graphql="Mutation.logEvents",
    tag="audit-logs",
)
@params.accepts(params.boolean("full"))
@answers
async def create_audit_logs_batch(request: Request) -> Response:
    """Returns an array of the created log ids in the same order as the input (`?full=true`: the records,
    `{"records": [...], "count": n}`). A JSON array, or `{"records": [...]}`."""
    body = await read_json(request)
    raws = body.get("records", body.get("logs")) if isinstance(body, dict) else body
    if not isinstance(raws, list):
        raise BadUserInput('send a JSON array of records, or {"records": [...]}')
    records = await _ingest(request, raws, batch=True)
    if query_of(request)["full"]:
        return JSONResponse({"records": [record_to_json(r) for r in records], "count": len(records)}, status_code=201)
    return JSONResponse([r.id for r in records], status_code=201)


def audit_log_query(values: dict[str, Any]) -> service.AuditLogQuery:
    """The `auditLogs` filter from the parsed query parameters (the export's declarations)."""
    search = values.get("search")
    return service.AuditLogQuery(
        agent_ids=values.get("agentId"),
        actions=values.get("action"),
        trace_id=values.get("traceId"),
        statuses=values.get("status"),
        risk_levels=values.get("riskLevel"),
        governance_statuses=values.get("governanceStatus"),
        providers=values.get("provider"),
        verbs=values.get("verb"),
        tenant_ids=values.get("tenantId"),
        execution_id=values.get("executionId"),
        occurred_from=values.get("from"),
        occurred_to=values.get("to"),
        search=search.strip() if search and search.strip() else None,
        has_alerts=values.get("hasAlerts"),
    )


FILTERS = (
    params.text("agentId", many=True),
    params.text("action", many=True),
    params.text("traceId"),
    params.choice("status", {s.upper(): s for s in validation.STATUSES}, many=True),
    params.choice("riskLevel", {r: r for r in validation.RISK_LEVELS}, many=True),
    params.pattern(
        "governanceStatus",
        validation.GOVERNANCE_STATUS.pattern.strip("^$"),
        "decisions such as approved, blocked, pending, dry_run",
        many=True,
    ),
    params.text("provider", many=True),
    params.text("verb", many=True),
    params.text("tenantId", many=True),
    params.text("executionId"),
    params.timestamp("from"),
    params.timestamp("to"),
    params.text("search"),
    params.boolean("hasAlerts"),
)
MAX_LIMIT = 500
MAX_OFFSET = 100_000
MAX_TRACE_EVENTS = 200  # seed 000: "200 max per page"


@params.accepts(
    params.integer("limit", minimum=1, maximum=MAX_LIMIT, default=50),
    params.integer("offset", minimum=0, maximum=MAX_OFFSET, default=0),
    *FILTERS,
)
@endpoint(responses={200: AuditLogPage}, graphql="Query.auditLogs", tag="audit-logs")
async def list_audit_logs(call: Call) -> Any:
    """Retrieve logs, newest first"""
    values = call.query
    query = audit_log_query(values)
    page = PageRequest(values["limit"])
    records = (await service.list_records(call.session, query, page=page, offset=values["offset"]))[: page.size]
    total = await service.count_records(call.session, query)
    return {
        "logs": [record_to_json(r) for r in records],
        "total": total,
        "limit": values["limit"],
        "offset": values["offset"],
    }


async def _record(call: Call) -> AuditRecord:
    record = await service.find_record(call.session, call.path("log_id"))
    if record is None:
        raise NotFound("audit log not found")
    return record


@endpoint(responses={200: AuditLogOut}, graphql="Query.auditLog", tag="audit-logs")
async def get_audit_log(call: Call) -> Any:
    """One audit record"""
    return record_to_json(await _record(call))


@endpoint(responses={200: AuditLogList}, graphql="Query.trace", tag="audit-logs")
async def get_trace(call: Call) -> Any:
    """All logs with this traceId, in time order"""
    tree = await service.load_trace(call.session, call.path("trace_id"))
    if tree is None:
        raise NotFound("trace not found")
    return [record_to_json(n.record) for n in tree.spans]


@endpoint(responses={200: AuditLogList}, graphql="AuditLog.chain", tag="audit-logs")
async def get_chain(call: Call) -> Any:
    """A record's parent chain: its parent, then each ancestor up to the root"""
    return [record_to_json(r) for r in await service.chain(call.session, await _record(call))]


class DigestOut(Answer):
    """A signed digest as published: its payload (canonical_json of it is what was signed), hash, signature, key."""

    id: str
    stream: str
    payload: dict[str, Any]
    digest_hash: str
    signature: str | None
    key_id: str | None


class InclusionProofOut(Answer):
    """A record's (or activity event's) RFC 9162 audit path to the Merkle root of a signed digest."""

    record_id: str
    chain_index: int
    leaf_index: int
    tree_size: int
    entry_hash: str
    audit_path: list[str]
    digest: DigestOut


class ConsistencyProofOut(Answer):
    """An RFC 9162 consistency proof: the tree of `toDigest` extends the tree of `fromDigest`."""

    from_digest: DigestOut
    to_digest: DigestOut
    proof: list[str]


async def _inclusion(request: Request, path_param: str, stream: Stream) -> Response:
    runtime = request.app.state.runtime
    principal = principal_of(request)
    digest_id = params.query_of(request)["digestId"]
    async with unit_of_work(runtime, principal.org_id) as session:
        proof = await proofs.inclusion_proof(
            session, request.path_params[path_param][:64], digest_id=digest_id, stream=stream
        )
        body = proofs.inclusion_json(proof)
    return JSONResponse(body)


class TraceEvent(AuditLogOut):  # type: ignore[misc,valid-type]
    """An audit record (a span of its trace) as a trace event: `type` is its action."""

    type: str


class TraceEventPage(Answer):
    events: list[TraceEvent]
    next_cursor: str | None


@params.accepts(
    params.integer("limit", minimum=1, maximum=MAX_TRACE_EVENTS, default=MAX_TRACE_EVENTS),
    params.text("type", many=True),
    params.timestamp("since"),
    params.text("cursor", max_length=200),
)
@endpoint(responses={200: TraceEventPage}, graphql="Query.auditLogs", tag="data-export")
async def trace_events(call: Call) -> Any:
    """Trace events (audit records), newest first, by cursor: {events, nextCursor}

    At most 200 a page; `type` is the action (comma-separated: any of them), `since` an ISO 8601 time. Pass
    `nextCursor` back as `?cursor=` for the next page; it is null on the last."""
    q = call.query
    page = cursor_page(q["limit"], q["cursor"], (datetime, str))
    query = service.AuditLogQuery(actions=q["type"], occurred_from=q["since"])
    kept, cursor = next_page(await service.list_records(call.session, query, page=page), page, _position)
    return {"events": [{**record_to_json(r), "type": r.action} for r in kept], "nextCursor": cursor}


def _position(record: AuditRecord) -> tuple[datetime, str]:
    return record.occurred_at, record.id


async def _consistency(request: Request, stream: Stream) -> Response:
    runtime = request.app.state.runtime
    principal = principal_of(request)
    to_digest_id = params.query_of(request)["toDigestId"]
    async with unit_of_work(runtime, principal.org_id) as session:
        proof = await proofs.consistency_proof(
            session, request.path_params["digest_id"][:64], to_digest_id, stream=stream
        )
        body = proofs.consistency_json(proof)
    return JSONResponse(body)


_DIGEST_ID = params.text("digestId", max_length=40)
_TO_DIGEST_ID = params.text("toDigestId", max_length=40)


@documented(
    "A record's inclusion proof in a signed digest (default: the newest)",
    responses={200: InclusionProofOut},
    graphql="Query.auditProof",
    tag="audit-logs",
)
@params.accepts(_DIGEST_ID)
@answers
async def audit_proof(request: Request) -> Response:
    """The record's RFC 9162 audit path in the tree of the newest signed digest (or `?digestId=`), with that
    digest. 404 until the record is sealed (about a minute after it was written)."""
    return await _inclusion(request, "record_id", AUDIT)


@documented(
    "An activity event's inclusion proof in a signed digest of the activity trail",
    responses={200: InclusionProofOut},
    graphql="Query.activityProof",
    tag="activity",
)
@params.accepts(_DIGEST_ID)
@answers
async def activity_proof(request: Request) -> Response:
    """The event's RFC 9162 audit path in the tree of the newest signed digest of the activity trail (or
    `?digestId=`), with that digest. 404 until the event is sealed."""
    return await _inclusion(request, "event_id", ACTIVITY)


@documented(
    "A consistency proof from a signed digest to a newer one (default: the newest)",
    responses={200: ConsistencyProofOut},
    graphql="Query.auditConsistencyProof",
    tag="audit-logs",
)
@params.accepts(_TO_DIGEST_ID)
@answers
async def audit_consistency_proof(request: Request) -> Response:
    """That the tree of `?toDigestId=` (default: the newest signed digest) extends the tree of the digest in the
    path: a verifier holding the older digest checks that nothing it sealed was changed or removed."""
    return await _consistency(request, AUDIT)


@documented(
    "A consistency proof between two signed digests of the activity trail",
    responses={200: ConsistencyProofOut},
    graphql="Query.activityConsistencyProof",
    tag="activity",
)
@params.accepts(_TO_DIGEST_ID)
@answers
async def activity_consistency_proof(request: Request) -> Response:
    """As for audit records, over the activity trail's digests."""
    return await _consistency(request, ACTIVITY)


async def signing_keys(request: Request) -> Response:
    """Public: every key that signs or signed digests, with its validity (auditors pin one)."""
    runtime = request.app.state.runtime
    async with system_unit_of_work(runtime) as session:
        rows = await signing.list_keys(session)
    keys = []
    for row in rows:
        fields = signing.key_fields(row)
        fields["valid_from"], fields["valid_to"] = iso(row.valid_from), iso(row.valid_to) if row.valid_to else None
        keys.append({camel(k): v for k, v in fields.items()})
    return JSONResponse({"keys": keys, "current": runtime.signer.key_id})


routes = [
    Route("/api/v1/audit-logs", create_audit_log, methods=["POST"]),
    Route("/api/v1/audit-logs", list_audit_logs, methods=["GET"]),
    Route("/api/v1/audit-logs/batch", create_audit_logs_batch, methods=["POST"]),
    Route("/api/v1/audit-logs/trace/{trace_id}", get_trace, methods=["GET"]),
    Route("/api/v1/audit-logs/{log_id}", get_audit_log, methods=["GET"]),
    Route("/api/v1/audit-logs/{log_id}/chain", get_chain, methods=["GET"]),
    Route("/api/v1/audit-logs/{record_id}/proof", audit_proof, methods=["GET"]),
    Route("/api/v1/audit-logs/digests/{digest_id}/consistency", audit_consistency_proof, methods=["GET"]),
    Route("/api/v1/activity/{event_id}/proof", activity_proof, methods=["GET"]),
    Route("/api/v1/activity/digests/{digest_id}/consistency", activity_consistency_proof, methods=["GET"]),
    Route("/.well-known/agentrail-audit-keys.json", signing_keys, methods=["GET"]),
    Route("/v1/traces", trace_events, methods=["GET"]),  # beside OTLP's POST /v1/traces (app/otel/routes.py)
]
