"""REST /api/v1/audit-logs as the API reference documents it (seed 002): ingest (single and batch, the quickstart
body verbatim, snake_case records as agent runtimes write them), reads (list with limit/offset and the `auditLogs`
filters, one record, a trace, a record's parent chain). Thin adapters over the service functions GraphQL calls."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.audit import proofs, service, signing, validation
from app.audit.ingest import ingest
from app.audit.models import AuditRecord
from app.audit.streams import ACTIVITY, AUDIT, Stream
from app.db import InvalidJSON, iso, request_json
from app.errors import BadUserInput, NotFound
from app.pagination import PageRequest
from app.rest import params
from app.rest.openapi import Answer, documented
from app.rest.params import query_of
from app.rest.responses import JSONResponse, answers, principal_of
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
# records as an agent runtime writes them (seed 004): snake_case names, `timestamp`; `credential_masked` is
# the server's to decide, so a sent one is dropped
_SNAKE = {
    **{snake: camel for snake, camel in _JSON_NAMES.items() if camel in validation.FIELDS},
    "timestamp": "occurredAt",
}
_IGNORED = {"credential_masked", "credentialMasked"}


class AuditLogOut(Answer):
    """One audit record (also a span of its trace)."""

    id: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    agent_id: str | None
    action: str
    prompt: str | None
    response: str | None
    metadata: dict[str, Any]
    args: Any = None
    result: Any = None
    occurred_at: str
    received_at: str
    duration_ms: float | None
    status: str
    idempotency_key: str | None
    execution_id: str | None
    verb: str | None
    provider: str | None
    risk_level: str | None
    governance_status: str | None
    dry_run: bool | None
    idempotent: bool | None
    tenant_id: str | None
    credential_masked: bool
    checksum: str


class AuditLogPage(Answer):
    logs: list[AuditLogOut]
    total: int
    limit: int
    offset: int


class BatchRecords(Answer):
    records: list[AuditLogOut]
    count: int


class AuditLogIn(Answer):
    """An audit record to log: `action` is required; the other fields are optional. `agentId` is an agent id or
    a stable name (the agent is registered on first use). snake_case names (execution_id, risk_level, …) are
    accepted too."""

    action: str = Field(min_length=1, max_length=validation.MAX_ACTION_LENGTH)
    prompt: str | None = None
    response: str | None = None
    agent_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    metadata: dict[str, Any] | None = None
    occurred_at: str | None = None
    duration_ms: float | None = None
    status: str | None = None
    idempotency_key: str | None = None
    execution_id: str | None = None
    verb: str | None = None
    provider: str | None = None
    risk_level: str | None = None
    governance_status: str | None = None
    dry_run: bool | None = None
    idempotent: bool | None = None
    args: Any = None
    result: Any = None
    tenant_id: str | None = None


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
    return out


async def _read_json(request: Request) -> Any:
    if "json" not in request.headers.get("content-type", "application/json").lower():  # media types: any case
        raise BadUserInput("send the body as application/json")
    try:
        return request_json(await request.body())
    except InvalidJSON as exc:
        raise BadUserInput(exc.message) from None


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
    body = await _read_json(request)
    records = await _ingest(request, [body], batch=False)
    return JSONResponse(record_to_json(records[0]), status_code=201)


@documented(
    "Log up to 1,000 events in one request",
    body=list[AuditLogIn],
    responses={201: list[str]},
    graphql="Mutation.logEvents",
    tag="audit-logs",
)
@params.accepts(params.boolean("full"))
@answers
async def create_audit_logs_batch(request: Request) -> Response:
    """Returns an array of the created log ids in the same order as the input (`?full=true`: the records,
    `{"records": [...], "count": n}`). A JSON array, or `{"records": [...]}`."""
    body = await _read_json(request)
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


@documented("Retrieve logs, newest first", responses={200: AuditLogPage}, graphql="Query.auditLogs", tag="audit-logs")
@params.accepts(
    params.integer("limit", minimum=1, maximum=MAX_LIMIT, default=50),
    params.integer("offset", minimum=0, maximum=MAX_OFFSET, default=0),
    *FILTERS,
)
@answers
async def list_audit_logs(request: Request) -> Response:
    principal = principal_of(request)
    values = query_of(request)
    query = audit_log_query(values)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        page = PageRequest(values["limit"])
        records = (await service.list_records(session, query, page=page, offset=values["offset"]))[: page.size]
        total = await service.count_records(session, query)
    return JSONResponse(
        {
            "logs": [record_to_json(r) for r in records],
            "total": total,
            "limit": values["limit"],
            "offset": values["offset"],
        }
    )


@documented("One audit record", responses={200: AuditLogOut}, graphql="Query.auditLog", tag="audit-logs")
@answers
async def get_audit_log(request: Request) -> Response:
    principal = principal_of(request)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        record = await service.find_record(session, request.path_params["log_id"][:64])
    if record is None:
        raise NotFound("audit log not found")
    return JSONResponse(record_to_json(record))


@documented(
    "All logs with this traceId, in time order",
    responses={200: list[AuditLogOut]},
    graphql="Query.trace",
    tag="audit-logs",
)
@answers
async def get_trace(request: Request) -> Response:
    principal = principal_of(request)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        tree = await service.load_trace(session, request.path_params["trace_id"][:64])
    if tree is None:
        raise NotFound("trace not found")
    return JSONResponse([record_to_json(n.record) for n in tree.spans])


@documented(
    "A record's parent chain: its parent, then each ancestor up to the root",
    responses={200: list[AuditLogOut]},
    graphql="AuditLog.chain",
    tag="audit-logs",
)
@answers
async def get_chain(request: Request) -> Response:
    principal = principal_of(request)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        record = await service.find_record(session, request.path_params["log_id"][:64])
        if record is None:
            raise NotFound("audit log not found")
        ancestors = await service.chain(session, record)
    return JSONResponse([record_to_json(r) for r in ancestors])


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
        keys.append({_camel(k): v for k, v in fields.items()})
    return JSONResponse({"keys": keys, "current": runtime.signer.key_id})


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


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
]
