"""GraphQL types and operations of the audit domain: records, spans, traces, ingest, live spans."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, cast

import strawberry

from app.audit import erasure, live, models, proofs, published, retention, sealing, service, signing
from app.audit.ingest import ingest
from app.audit.models import AuditRecord
from app.audit.streams import ACTIVITY
from app.audit.traces import SpanNode, TraceTree
from app.cost import Cost
from app.db import session_org
from app.direct import direct
from app.info import Info, RequestInfo
from app.masking import CONTENT_FIELDS
from app.pagination import (
    After,
    Before,
    Connection,
    First,
    Last,
    build_connection,
    page_request,
    selects_any,
)
from app.runtime.redis import Gap
from app.scalars import JSON, stored

if TYPE_CHECKING:
    from app.agents.schema import Agent
    from app.alerts.schema import Alert


CONTENT = Cost(weight=1)


@strawberry.enum(description="Risk of an action, as the agent runtime judged it.")
class RiskLevel(Enum):
    LOW = strawberry.enum_value("LOW", description="Low risk.")
    MEDIUM = strawberry.enum_value("MEDIUM", description="Medium risk.")
    HIGH = strawberry.enum_value("HIGH", description="High risk.")
    CRITICAL = strawberry.enum_value("CRITICAL", description="Critical risk: the highest level.")


@strawberry.enum(description="Outcome of a span.")
class SpanStatus(Enum):
    OK = strawberry.enum_value("ok", description="It succeeded.")
    ERROR = strawberry.enum_value("error", description="It failed.")
    BLOCKED = strawberry.enum_value("blocked", description="A guardrail stopped it.")


# the members by stored value: a dict look-up, where calling the enum costs microseconds a span
_STATUS: dict[str, SpanStatus] = {cast(str, member.value): member for member in SpanStatus}
_RISK: dict[str, RiskLevel] = {cast(str, member.value): member for member in RiskLevel}


@strawberry.type(description="One action an agent took: an immutable audit record, and a span of its trace.")
class AuditLog:
    """Scalar fields are plain attributes (filled by `of`), so that reading thousands of spans does not pay
    for a resolver call per field; relations are resolvers that batch through DataLoaders."""

    record: strawberry.Private[AuditRecord]
    node: strawberry.Private[SpanNode | None]
    id: strawberry.ID = strawberry.field(description="Record id (`log_…`).")
    trace_id: str = strawberry.field(
        description="The trace this span belongs to (the record's own id when sent without one)."
    )
    span_id: str = strawberry.field(description="This span's id: the sender's span id, or the record id.")
    parent_span_id: str | None = strawberry.field(
        description="The parent span's id as sent (the parent may not have arrived yet)."
    )
    depth: int | None = strawberry.field(
        description="Depth in the trace tree (0 for roots); set when read through a Trace."
    )
    agent_id: str | None = strawberry.field(description="Id of the agent that acted.")
    action: str = strawberry.field(description="What happened, e.g. llm_call, tool_use, guardrail_block.")
    # the content fields (up to 1 MB of text or 256 KB of JSON each) weigh as much as a node each
    prompt: str | None = strawberry.field(description="The prompt sent, with secrets masked.", directives=[CONTENT])
    response: str | None = strawberry.field(
        description="The response received, with secrets masked.", directives=[CONTENT]
    )
    metadata: JSON | None = strawberry.field(
        description="Free-form metadata (JSON object), with secrets masked; null once erased.", directives=[CONTENT]
    )
    args: JSON | None = strawberry.field(
        description="Arguments of the executed call (JSON), with secrets masked.", directives=[CONTENT]
    )
    result: JSON | None = strawberry.field(
        description="Result of the executed call (JSON), with secrets masked.", directives=[CONTENT]
    )
    occurred_at: datetime = strawberry.field(description="When the action happened (sender's clock).")
    received_at: datetime = strawberry.field(description="When Agentrail received the record.")
    duration_ms: float | None = strawberry.field(description="How long the action took, in milliseconds.")
    status: SpanStatus = strawberry.field(description="Outcome: OK, ERROR or BLOCKED.")
    idempotency_key: str | None = strawberry.field(description="The sender's idempotency key, if any.")
    execution_id: str | None = strawberry.field(description="Execution id of the agent runtime.")
    verb: str | None = strawberry.field(description="The executed verb, e.g. stripe:create_refund.")
    provider: str | None = strawberry.field(description="The provider called, e.g. openai, stripe.")
    risk_level: RiskLevel | None = strawberry.field(description="Risk level as sent.")
    governance_status: str | None = strawberry.field(
        description="Governance decision: approved, blocked, pending, dry_run …"
    )
    dry_run: bool | None = strawberry.field(description="True when the action was a dry run.")
    idempotent: bool | None = strawberry.field(description="True when the action is safe to repeat.")
    tenant_id: str | None = strawberry.field(description="The sender's own tenant id, if it serves several.")
    credential_masked: bool = strawberry.field(
        description="True when secrets were found and replaced with [REDACTED] before writing."
    )
    checksum: str = strawberry.field(
        description='"sha256:…" over the canonical serialisation of the record\'s content.'
    )
    erased_at: datetime | None = strawberry.field(
        description="When its content (prompt, response, metadata, args, result) was erased; null while it is kept. "
        "An erased record keeps its place in the chain and every proof (see auditErasures)."
    )
    erasure_id: str | None = strawberry.field(description="The erasure that removed its content (`ers_…`).")

    @classmethod
    def of(cls, record: AuditRecord, node: SpanNode | None = None) -> AuditLog:
        return cls(
            record=record,
            node=node,
            id=strawberry.ID(record.id),
            trace_id=record.trace_id,
            span_id=record.span_id,
            parent_span_id=record.parent_span_id,
            depth=node.depth if node is not None else None,
            agent_id=record.agent_id,
            action=record.action,
            prompt=record.prompt,
            response=record.response,
            metadata=record.metadata,
            args=record.args,
            result=record.result,
            occurred_at=record.occurred_at,
            received_at=record.received_at,
            duration_ms=record.duration_ms,
            status=_STATUS[record.status],
            idempotency_key=record.idempotency_key,
            execution_id=record.execution_id,
            verb=record.verb,
            provider=record.provider,
            risk_level=_RISK[record.risk_level] if record.risk_level else None,
            governance_status=record.governance_status,
            dry_run=record.dry_run,
            idempotent=record.idempotent,
            tenant_id=record.tenant_id,
            credential_masked=record.credential_masked,
            checksum=record.checksum,
            erased_at=record.erased_at,
            erasure_id=record.erasure_id,
        )

    @strawberry.field(description="The parent span, when it has arrived.")
    async def parent(self, info: Info) -> AuditLog | None:
        if self.record.parent_span_id is None or self.record.parent_span_id == self.record.span_id:
            return None
        parent = await info.context.loaders.span.load((self.record.trace_id, self.record.parent_span_id))
        return AuditLog.of(parent) if parent is not None else None

    @strawberry.field(
        description="Child spans, in time order.",
        graphql_type=list["AuditLog"],
        directives=[Cost(list_size=service.MAX_TRACE_SPANS, scope="trace")],
        metadata=direct(lambda span: span._assembled_children()),
    )
    def children(self, info: Info) -> Any:  # list[AuditLog], or an awaitable of it
        # Synchronous when the span came from an assembled trace (its children are known): a tree of
        # thousands of spans then costs no coroutine per node. Otherwise one batched query per level.
        return self._assembled_children() if self.node is not None else self._load_children(info)

    def _assembled_children(self) -> list[AuditLog] | None:
        """The children of a span of an assembled trace (None for a span read alone: they must be loaded)."""
        node = self.node
        if node is None:
            return None
        of = AuditLog.of
        return [of(c.record, c) for c in node.children]

    async def _load_children(self, info: Info) -> list[AuditLog]:
        children = await info.context.loaders.children.load((self.record.trace_id, self.record.span_id))
        return [AuditLog.of(c) for c in children]

    # one recursive query per span, up to the deepest trace
    @strawberry.field(
        description="Ancestors from the parent up to the root.",
        directives=[Cost(weight=10, list_size=service.MAX_TRACE_SPANS)],
    )
    async def chain(self, info: Info) -> list[AuditLog]:
        session = await info.context.db()
        return [AuditLog.of(r) for r in await service.chain(session, self.record)]

    @strawberry.field(description="The whole trace this span belongs to.", directives=[Cost(weight=10)])
    async def trace(self, info: Info) -> Trace:
        return Trace(trace_id=self.record.trace_id)

    @strawberry.field(description="Alerts this record raised.")
    async def alerts(self, info: Info) -> list[Annotated[Alert, strawberry.lazy("app.alerts.schema")]]:
        from app.alerts.schema import Alert

        rows = await info.context.loaders.alerts_by_record.load(self.record.id)
        return [Alert.from_model(a) for a in rows]

    @strawberry.field(description="The agent that acted (shown even after the agent was deleted).")
    async def agent(self, info: Info) -> Annotated[Agent, strawberry.lazy("app.agents.schema")] | None:
        if self.record.agent_id is None:
            return None
        from app.agents.schema import Agent

        agent = await info.context.loaders.agent.load(self.record.agent_id)
        return Agent.from_model(agent) if agent is not None else None


CONTENT_FIELD_NAMES = frozenset(CONTENT_FIELDS)
_CHILDREN = frozenset({"children"})
_JSON_FIELD_NAMES = frozenset({"metadata", "args", "result"})


@strawberry.type(description="A trace: the spans of one agent run, as a tree and as a flat list.")
class Trace:
    trace_id: str = strawberry.field(description="Trace id.")
    summary: strawberry.Private[service.TraceSummary | None] = None
    tree: strawberry.Private[TraceTree | None] = None

    async def _figure(self, info: Info, name: str) -> Any:
        """A figure that the trace summary and the whole tree both have: the summary's when it is loaded."""
        if self.summary is not None:
            return getattr(self.summary, name)
        tree = await self._tree(info)
        return getattr(tree, name) if tree else None

    async def _tree(self, info: Info) -> TraceTree | None:
        if self.tree is None:
            self.tree = await info.context.loaders.trace.load(self.trace_id)
        return self.tree

    @strawberry.field(
        description="Spans without a parent in this trace, each nested through `children`.",
        directives=[Cost(list_size=service.MAX_TRACE_SPANS, scope="trace")],
    )
    async def root_spans(self, info: Info) -> list[AuditLog]:
        if self.tree is None and not selects_any(info.selected_fields, _CHILDREN):
            # the roots alone (a page of traces): no other span is read whole, no unselected JSON decoded
            with_json = selects_any(info.selected_fields, _JSON_FIELD_NAMES)
            roots = await info.context.loaders.trace_roots.load((self.trace_id, with_json))
            return [AuditLog.of(r, SpanNode(record=r)) for r in roots]
        tree = await self._tree(info)
        return [AuditLog.of(n.record, n) for n in tree.roots] if tree else []

    @strawberry.field(
        description="Every span in time order, each with `parentSpanId` and `depth`.",
        directives=[Cost(list_size=service.MAX_TRACE_SPANS, scope="trace")],
    )
    async def spans(self, info: Info) -> list[AuditLog]:
        tree = await self._tree(info)
        return [AuditLog.of(n.record, n) for n in tree.spans] if tree else []

    @strawberry.field(description="Number of spans (all of them, also when `truncated`).")
    async def span_count(self, info: Info) -> int:
        if self.summary is not None:
            return self.summary.span_count
        tree = await self._tree(info)
        if tree is None:
            return 0
        if tree.truncated:
            query = service.AuditLogQuery(trace_id=self.trace_id)
            return await service.count_records(await info.context.db(), query)
        return len(tree.spans)

    @strawberry.field(description="True when the trace has more than 10,000 spans and only the first are shown.")
    async def truncated(self, info: Info) -> bool:
        if self.summary is not None and self.summary.span_count <= service.MAX_TRACE_SPANS:
            return False
        tree = await self._tree(info)
        return bool(tree and tree.truncated)

    @strawberry.field(description="Start of the earliest span.")
    async def started_at(self, info: Info) -> datetime | None:
        return await self._figure(info, "started_at")

    @strawberry.field(description="End of the latest span (its start plus its duration).")
    async def ended_at(self, info: Info) -> datetime | None:
        return await self._figure(info, "ended_at")

    @strawberry.field(description="From the first start to the last end, in milliseconds.")
    async def duration_ms(self, info: Info) -> float | None:
        return await self._figure(info, "duration_ms")

    @strawberry.field(description="ERROR if any span errored, else BLOCKED if any was blocked, else OK.")
    async def status(self, info: Info) -> SpanStatus:
        if self.summary is not None:
            return SpanStatus(self.summary.status)
        tree = await self._tree(info)
        return SpanStatus(tree.status if tree else "ok")

    @strawberry.field(description="How many alerts the trace's spans raised.")
    async def alert_count(self, info: Info) -> int:
        return await info.context.loaders.alert_count.load(self.trace_id)

    @strawberry.field(description="The agents that took part.")
    async def agents(self, info: Info) -> list[Annotated[Agent, strawberry.lazy("app.agents.schema")]]:
        from app.agents.schema import Agent

        if self.summary is not None:
            ids = self.summary.agent_ids
        else:
            tree = await self._tree(info)
            ids = tree.agent_ids if tree else []
        found = await info.context.loaders.agent.load_many(ids)
        return [Agent.from_model(a) for a in found if a is not None]


@strawberry.input(description="Which audit records to list. All conditions must hold.")
class AuditLogFilter:
    agent_id: list[strawberry.ID] | None = strawberry.field(default=None, description="Any of these agents.")
    action: list[str] | None = strawberry.field(default=None, description="Any of these actions.")
    trace_id: str | None = strawberry.field(default=None, description="Only this trace.")
    status: list[SpanStatus] | None = strawberry.field(default=None, description="Any of these outcomes.")
    risk_level: list[RiskLevel] | None = strawberry.field(default=None, description="Any of these risk levels.")
    governance_status: list[str] | None = strawberry.field(default=None, description="Any of these decisions.")
    provider: list[str] | None = strawberry.field(default=None, description="Any of these providers.")
    verb: list[str] | None = strawberry.field(default=None, description="Any of these verbs.")
    tenant_id: list[str] | None = strawberry.field(
        default=None, description="Any of these tenants (the `tenantId` the agent sent)."
    )
    execution_id: str | None = strawberry.field(default=None, description="Only this execution.")
    from_: datetime | None = strawberry.field(default=None, name="from", description="Occurred at or after.")
    to: datetime | None = strawberry.field(default=None, description="Occurred before.")
    search: str | None = strawberry.field(
        default=None,
        description="Full-text search over prompt and response (at most 32 terms, 1,000 characters).",
        directives=[Cost(weight=1_000)],
    )
    has_alerts: bool | None = strawberry.field(default=None, description="Only records that raised alerts (or not).")

    def to_query(self) -> service.AuditLogQuery:
        return service.AuditLogQuery(
            agent_ids=[str(a) for a in self.agent_id] if self.agent_id else None,
            actions=self.action,
            trace_id=self.trace_id,
            statuses=[stored(s) for s in self.status] if self.status else None,
            risk_levels=[stored(r) for r in self.risk_level] if self.risk_level else None,
            governance_statuses=self.governance_status,
            providers=self.provider,
            verbs=self.verb,
            tenant_ids=self.tenant_id,
            execution_id=self.execution_id,
            occurred_from=self.from_,
            occurred_to=self.to,
            search=self.search.strip() if self.search and self.search.strip() else None,
            has_alerts=self.has_alerts,
        )


@strawberry.input(description="Which traces to list.")
class TraceFilter:
    agent_id: list[strawberry.ID] | None = strawberry.field(
        default=None, description="Traces any of these agents took part in."
    )
    from_: datetime | None = strawberry.field(default=None, name="from", description="Started at or after.")
    to: datetime | None = strawberry.field(default=None, description="Started before.")
    status: SpanStatus | None = strawberry.field(default=None, description="Rolled-up status.")
    has_alerts: bool | None = strawberry.field(default=None, description="Only traces with alerts (or without).")

    def to_query(self) -> service.TraceQuery:
        return service.TraceQuery(
            agent_ids=[str(a) for a in self.agent_id] if self.agent_id else None,
            started_from=self.from_,
            started_to=self.to,
            status=stored(self.status) if self.status else None,
            has_alerts=self.has_alerts,
        )


async def audit_log_page(
    info: Info,
    query: service.AuditLogQuery,
    first: int | None,
    after: str | None,
    last: int | None = None,
    before: str | None = None,
) -> AuditLogConnection:
    """One page of audit records (shared by `auditLogs` and `Agent.auditLogs`)."""
    page = page_request(first, after, last, before, types=(datetime, str))
    records = await service.list_records(
        await info.context.db(),
        query,
        page=page,
    )
    return build_connection(records, page=page, to_node=AuditLog.of, sort_key=lambda r: (r.occurred_at, r.id))


async def trace_page(
    info: Info,
    query: service.TraceQuery,
    first: int | None,
    after: str | None,
    last: int | None = None,
    before: str | None = None,
) -> TraceConnection:
    """One page of trace summaries (shared by `traces` and `Agent.traces`)."""
    page = page_request(first, after, last, before, types=(datetime, str))
    summaries = await service.list_traces(
        await info.context.db(),
        query,
        page=page,
    )
    return build_connection(
        summaries,
        page=page,
        to_node=lambda s: Trace(trace_id=s.trace_id, summary=s),
        sort_key=lambda s: (s.started_at, s.trace_id),
    )


@strawberry.input(description="An action an agent took. Only `action` is required.")
class AuditLogInput:
    action: str = strawberry.field(description="What happened (1–128 characters), e.g. llm_call, tool_use.")
    prompt: str | None = strawberry.field(default=None, description="Prompt sent (≤ 1 MB).")
    response: str | None = strawberry.field(default=None, description="Response received (≤ 1 MB).")
    agent_id: strawberry.ID | None = strawberry.field(default=None, description="An agent of your organisation.")
    trace_id: str | None = strawberry.field(default=None, description="Groups spans into a trace.")
    span_id: str | None = strawberry.field(default=None, description="This span's id (default: the record id).")
    parent_span_id: str | None = strawberry.field(default=None, description="Parent span; may arrive later.")
    metadata: JSON | None = strawberry.field(default=None, description="JSON object (≤ 256 KB serialised).")
    occurred_at: datetime | None = strawberry.field(default=None, description="When it happened (default: now).")
    duration_ms: float | None = strawberry.field(default=None, description="Duration in milliseconds.")
    status: SpanStatus | None = strawberry.field(default=None, description="Outcome (default OK).")
    idempotency_key: str | None = strawberry.field(default=None, description="Same key again returns the first record.")
    execution_id: str | None = strawberry.field(default=None, description="Execution id of the agent runtime.")
    verb: str | None = strawberry.field(default=None, description="Executed verb, e.g. stripe:create_refund.")
    provider: str | None = strawberry.field(default=None, description="Provider called.")
    risk_level: RiskLevel | None = strawberry.field(default=None, description="Risk level.")
    governance_status: str | None = strawberry.field(default=None, description="approved, blocked, pending, dry_run …")
    dry_run: bool | None = strawberry.field(default=None, description="True for a dry run.")
    idempotent: bool | None = strawberry.field(default=None, description="True when safe to repeat.")
    args: JSON | None = strawberry.field(default=None, description="Arguments (JSON, ≤ 256 KB).")
    result: JSON | None = strawberry.field(default=None, description="Result (JSON, ≤ 256 KB).")
    tenant_id: str | None = strawberry.field(default=None, description="The sender's own tenant id.")


def _raw_audit_input(_cls: type, value: Any, _context: Any) -> dict[str, Any]:
    """Strawberry's `from_input` hook: keep graphql-core's coerced value (keyed by the GraphQL names,
    exactly the REST body's shape) instead of building a dataclass per record. Ingest validates both
    the same way, and a 1,000-record batch skips about 0.4 s of per-field type resolution."""
    return {k: (v.value if isinstance(v, Enum) else v) for k, v in value.items() if v is not None}


AuditLogInput.__strawberry_definition__.from_input = _raw_audit_input  # type: ignore[attr-defined]


@strawberry.type(description="The outcome of recomputing checksums, Merkle roots, digest signatures and the chain.")
class VerificationResult:
    ok: bool = strawberry.field(description="True when nothing was altered, removed or reordered.")
    records_checked: int = strawberry.field(description="Records whose checksum was recomputed.")
    digests_checked: int = strawberry.field(description="Digests whose hash, signature and chain link were checked.")
    records_erased: int = strawberry.field(
        description="Of the records checked, those whose content was erased (see auditErasures): their place, "
        "header and link are verified; their content, which is gone, cannot be."
    )
    first_broken_record_id: str | None = strawberry.field(description="The first record found altered or missing.")
    first_broken_digest_id: str | None = strawberry.field(description="The first digest that does not hold.")
    reason: str | None = strawberry.field(description="What broke, in words.")
    expired_through_index: int = strawberry.field(
        default=0,
        description="Records up to this chain index expired under the retention (signed retention cuts): "
        "verification starts after them. 0 when none has expired.",
    )


@strawberry.type(description="A public key that signs (or signed) audit digests, and when.")
class AuditSigningKey:
    key_id: str = strawberry.field(description="`ed25519:` and the first 16 bytes of SHA-256(public key), hex.")
    algorithm: str = strawberry.field(description="Always `Ed25519`.")
    public_key: str = strawberry.field(description="The raw 32-byte public key, base64.")
    public_key_pem: str = strawberry.field(description="The public key as a PEM SubjectPublicKeyInfo.")
    valid_from: datetime = strawberry.field(description="From when it signs.")
    valid_to: datetime | None = strawberry.field(description="Until when it signed; null for the current key.")
    previous_key_id: str | None = strawberry.field(description="The key it replaced.")
    previous_key_signature: str | None = strawberry.field(
        description="This key's signature over the statement about the key it replaced (id, key, validity)."
    )
    endorsement: str | None = strawberry.field(
        description="The replaced key's signature over the statement about this key, when it was at hand."
    )

    @classmethod
    def of(cls, row: Any) -> AuditSigningKey:
        return cls(**signing.key_fields(row))


@strawberry.type(description="A signed digest: what it seals, its signature and the exact payload signed.")
class AuditDigest:
    id: strawberry.ID = strawberry.field(description="Digest id.")
    stream: str = strawberry.field(description="`audit` (records) or `activity` (the activity trail).")
    sequence: int = strawberry.field(description="Its place in the organisation's digest chain, from 1.")
    payload: JSON = strawberry.field(
        description="The signed content: canonical JSON of this object is what the signature covers."
    )
    digest_hash: str = strawberry.field(description="`sha256:` of the canonical payload: the next digest names it.")
    signature: str = strawberry.field(description="`ed25519:` and the base64 signature over the canonical payload.")
    key_id: str | None = strawberry.field(description="The signing key (see auditSigningKeys).")

    @classmethod
    def of(cls, digest: Any) -> AuditDigest:
        data = proofs.digest_json(digest)
        return cls(
            id=strawberry.ID(data["id"]),
            stream=data["stream"],
            sequence=digest.sequence,
            payload=data["payload"],
            digest_hash=data["digestHash"],
            signature=data["signature"],
            key_id=data["keyId"],
        )


@strawberry.type(description="A record's RFC 9162 inclusion proof in a signed digest's Merkle tree.")
class AuditInclusionProof:
    record_id: strawberry.ID = strawberry.field(description="The record.")
    chain_index: int = strawberry.field(description="Its place in the organisation's chain, from 1.")
    leaf_index: int = strawberry.field(description="Its leaf in the tree: chainIndex - 1.")
    tree_size: int = strawberry.field(description="Leaves of the digest's tree.")
    entry_hash: str = strawberry.field(description="The leaf: the record's entry hash, hex.")
    audit_path: list[str] = strawberry.field(description="Sibling subtree hashes, nearest first, hex.")
    digest: AuditDigest = strawberry.field(description="The signed digest whose root the path leads to.")


@strawberry.type(description="An RFC 9162 consistency proof: the newer digest's tree extends the older one's.")
class AuditConsistencyProof:
    from_digest: AuditDigest = strawberry.field(description="The older digest.")
    to_digest: AuditDigest = strawberry.field(description="The newer digest.")
    proof: list[str] = strawberry.field(description="Subtree hashes, hex, in RFC 9162 order.")

    @classmethod
    def of(cls, proof: proofs.ConsistencyProof) -> AuditConsistencyProof:
        return cls(
            from_digest=AuditDigest.of(proof.old),
            to_digest=AuditDigest.of(proof.new),
            proof=[h.hex() for h in proof.proof],
        )


AuditLogConnection = Connection[AuditLog]
TraceConnection = Connection[Trace]


@strawberry.type
class AuditQuery:
    @strawberry.field(description="Audit records, newest first.")
    async def audit_logs(
        self,
        info: Info,
        filter: Annotated[AuditLogFilter | None, strawberry.argument(description="Conditions.")] = None,
        first: First = None,
        after: After = None,
        last: Last = None,
        before: Before = None,
    ) -> AuditLogConnection:
        return await audit_log_page(info, (filter or AuditLogFilter()).to_query(), first, after, last, before)

    @strawberry.field(description="One audit record; null when it does not exist in your organisation.")
    async def audit_log(
        self, info: Info, id: Annotated[strawberry.ID, strawberry.argument(description="Record id.")]
    ) -> AuditLog | None:
        record = await service.find_record(await info.context.db(), str(id))
        return AuditLog.of(record) if record else None

    @strawberry.field(
        description="A whole trace, nested; null when no span of it exists in your organisation.",
        directives=[Cost(weight=10)],
    )
    async def trace(
        self, info: Info, trace_id: Annotated[str, strawberry.argument(description="Trace id.")]
    ) -> Trace | None:
        # the tree is this field's own (not shared through a DataLoader), so it may leave out what is not asked for
        with_content = selects_any(info.selected_fields, CONTENT_FIELD_NAMES)
        tree = await service.load_trace(await info.context.db(), trace_id, with_content=with_content)
        return Trace(trace_id=trace_id, tree=tree) if tree else None

    @strawberry.field(
        description="Recompute the organisation's audit trail: every record's checksum in the window, and the "
        "whole digest chain. Reports the first break.",
        directives=[Cost(weight=25_000)],  # reads and hashes every record of the window
    )
    async def verify_audit_trail(
        self,
        info: Info,
        from_: Annotated[datetime | None, strawberry.argument(name="from", description="Records from.")] = None,
        to: Annotated[datetime | None, strawberry.argument(description="Records before.")] = None,
    ) -> VerificationResult:
        runtime = info.context.runtime
        session = await info.context.db()
        outcome = await sealing.verify(
            session,
            sealing.Keys(runtime.secret_key, runtime.signer),
            occurred_from=from_,
            occurred_to=to,
            published=await published.floor(runtime.redis, session_org(session) or ""),
        )
        return VerificationResult(
            ok=outcome.ok,
            records_checked=outcome.records_checked,
            digests_checked=outcome.digests_checked,
            records_erased=outcome.records_erased,
            first_broken_record_id=outcome.first_broken_record_id,
            first_broken_digest_id=outcome.first_broken_digest_id,
            reason=outcome.reason,
            expired_through_index=outcome.expired_through,
        )

    @strawberry.field(
        description="Recompute the organisation's activity trail (who changed what): every event's hashes and "
        "link, and its signed digests, as verifyAuditTrail does for records. Reports the first break.",
        directives=[Cost(weight=25_000)],
    )
    async def verify_activity_trail(
        self,
        info: Info,
        from_: Annotated[datetime | None, strawberry.argument(name="from", description="Events from.")] = None,
        to: Annotated[datetime | None, strawberry.argument(description="Events before.")] = None,
    ) -> VerificationResult:
        runtime = info.context.runtime
        session = await info.context.db()
        outcome = await sealing.verify(
            session,
            sealing.Keys(runtime.secret_key, runtime.signer),
            occurred_from=from_,
            occurred_to=to,
            stream=ACTIVITY,
            published=await published.floor(runtime.redis, session_org(session) or "", "activity"),
        )
        return VerificationResult(
            ok=outcome.ok,
            records_checked=outcome.records_checked,
            digests_checked=outcome.digests_checked,
            records_erased=outcome.records_erased,
            first_broken_record_id=outcome.first_broken_record_id,
            first_broken_digest_id=outcome.first_broken_digest_id,
            reason=outcome.reason,
        )

    @strawberry.field(description="The public keys that sign audit digests, oldest first, with their validity.")
    async def audit_signing_keys(self, info: Info) -> list[AuditSigningKey]:
        from app.audit.signing import list_keys

        return [AuditSigningKey.of(row) for row in await list_keys(await info.context.db())]

    @strawberry.field(
        description="A record's inclusion proof in a signed digest (default: the newest), with the digest. "
        "NOT_FOUND until the record is sealed (within a minute of its ingest)."
    )
    async def audit_proof(
        self,
        info: Info,
        record_id: Annotated[strawberry.ID, strawberry.argument(description="The record.")],
        digest_id: Annotated[
            strawberry.ID | None, strawberry.argument(description="The digest (default: the newest signed one).")
        ] = None,
    ) -> AuditInclusionProof:
        proof = await proofs.inclusion_proof(await info.context.db(), str(record_id), digest_id=digest_id)
        return AuditInclusionProof(
            record_id=strawberry.ID(proof.record_id),
            chain_index=proof.chain_index,
            leaf_index=proof.leaf_index,
            tree_size=proof.tree_size,
            entry_hash=proof.entry_hash.hex(),
            audit_path=[h.hex() for h in proof.audit_path],
            digest=AuditDigest.of(proof.digest),
        )

    @strawberry.field(
        description="An activity event's inclusion proof in a signed digest of the activity trail (default: the "
        "newest), with the digest. NOT_FOUND until the event is sealed."
    )
    async def activity_proof(
        self,
        info: Info,
        event_id: Annotated[strawberry.ID, strawberry.argument(description="The activity event.")],
        digest_id: Annotated[
            strawberry.ID | None, strawberry.argument(description="The digest (default: the newest signed one).")
        ] = None,
    ) -> AuditInclusionProof:
        proof = await proofs.inclusion_proof(
            await info.context.db(), str(event_id), digest_id=digest_id, stream=ACTIVITY
        )
        return AuditInclusionProof(
            record_id=strawberry.ID(proof.record_id),
            chain_index=proof.chain_index,
            leaf_index=proof.leaf_index,
            tree_size=proof.tree_size,
            entry_hash=proof.entry_hash.hex(),
            audit_path=[h.hex() for h in proof.audit_path],
            digest=AuditDigest.of(proof.digest),
        )

    @strawberry.field(description="A consistency proof between two signed digests (default second: the newest).")
    async def audit_consistency_proof(
        self,
        info: Info,
        from_digest_id: Annotated[strawberry.ID, strawberry.argument(description="The older digest.")],
        to_digest_id: Annotated[
            strawberry.ID | None, strawberry.argument(description="The newer digest (default: the newest).")
        ] = None,
    ) -> AuditConsistencyProof:
        proof = await proofs.consistency_proof(await info.context.db(), str(from_digest_id), to_digest_id)
        return AuditConsistencyProof.of(proof)

    @strawberry.field(
        description="A consistency proof between two signed digests of the activity trail (default second: the newest)."
    )
    async def activity_consistency_proof(
        self,
        info: Info,
        from_digest_id: Annotated[strawberry.ID, strawberry.argument(description="The older digest.")],
        to_digest_id: Annotated[
            strawberry.ID | None, strawberry.argument(description="The newer digest (default: the newest).")
        ] = None,
    ) -> AuditConsistencyProof:
        proof = await proofs.consistency_proof(
            await info.context.db(), str(from_digest_id), to_digest_id, stream=ACTIVITY
        )
        return AuditConsistencyProof.of(proof)

    @strawberry.field(description="Traces with their summary, newest start first.")
    async def traces(
        self,
        info: Info,
        filter: Annotated[TraceFilter | None, strawberry.argument(description="Conditions.")] = None,
        first: First = None,
        after: After = None,
        last: Last = None,
        before: Before = None,
    ) -> TraceConnection:
        return await trace_page(info, (filter or TraceFilter()).to_query(), first, after, last, before)


async def _ingest(info: Info, raws: list[Any], *, batch: bool) -> list[AuditRecord]:
    # raws: the inputs as graphql-core coerced them, dicts (see _raw_audit_input), not AuditLogInput objects
    ctx = info.context
    principal = await ctx.principal()
    return (await ingest(ctx.runtime, principal, raws, batch=batch, session=await ctx.db())).records


@strawberry.type
class AuditMutation:
    @strawberry.mutation(
        description="Record one action. API key or user. Same idempotencyKey returns the first record."
    )
    async def log_event(
        self, info: Info, input: Annotated[AuditLogInput, strawberry.argument(description="The record.")]
    ) -> AuditLog:
        records = await _ingest(info, [input], batch=False)  # a dict: see _raw_audit_input
        return AuditLog.of(records[0])

    @strawberry.mutation(
        description="Record a batch (≤ 1,000) in one transaction; results in input order. One invalid record "
        "rejects the whole batch, listing every problem in `extensions.problems`."
    )
    async def log_events(
        self,
        info: Info,
        input: Annotated[list[AuditLogInput], strawberry.argument(description="The records.")],
    ) -> list[AuditLog]:
        records = await _ingest(info, list(input), batch=True)
        return [AuditLog.of(r) for r in records]


@strawberry.type
class AuditSubscription:
    @strawberry.subscription(description="Spans of a trace: those already written, then each new one as it arrives.")
    async def trace_spans(
        self, info: Info, trace_id: Annotated[str, strawberry.argument(description="Trace id.")]
    ) -> AsyncGenerator[AuditLog, None]:
        ctx = info.context
        principal = await ctx.principal()
        channel = live.trace_channel(principal.org_id, trace_id)
        seen: set[str] = set()
        # subscribe first, then replay: a span written in between arrives through both and is sent once
        async with ctx.runtime.broadcaster.subscribe(channel, gaps=True) as messages:
            async with ctx.runtime.db.tenant_session(principal.org_id) as session:
                tree = await service.load_trace(session, trace_id)
            for node in tree.spans if tree else []:
                seen.add(node.record.id)
                yield AuditLog.of(node.record)
            async for message in messages:
                if isinstance(message, Gap):  # Redis was lost: the spans written meanwhile, from the rows
                    async with ctx.runtime.db.tenant_session(principal.org_id) as session:
                        tree = await service.load_trace(session, trace_id)
                    for node in tree.spans if tree else []:
                        if node.record.id not in seen:
                            seen.add(node.record.id)
                            yield AuditLog.of(node.record)
                    continue
                new_ids = [record_id for record_id in live.decode(message) if record_id not in seen]
                if not new_ids:
                    continue
                async with ctx.runtime.db.tenant_session(principal.org_id) as session:
                    records = await service.records_by_ids(session, new_ids)
                for record in records:
                    seen.add(record.id)
                    yield AuditLog.of(record)


@strawberry.type(description="How long the organisation's audit records are kept, and the oldest kept.")
class AuditRetention:
    retention_days: int = strawberry.field(description="The retention in force: records older than this go.")
    plan_retention_days: int = strawberry.field(description="The plan's retention.")
    override_days: int | None = strawberry.field(description="The owner's shorter retention; null: the plan's.")
    grace_until: datetime | None = strawberry.field(
        description="After a decrease (a downgrade, a shorter override), the previous retention stays in force "
        "until then; null when no decrease is pending."
    )
    pending_retention_days: int | None = strawberry.field(
        description="The retention that applies once `graceUntil` has passed; null when none is pending."
    )
    cutoff: datetime = strawberry.field(description="Records received before this are past the retention now.")
    oldest_record_at: datetime | None = strawberry.field(
        description="When the oldest record still kept was received; null when there is none."
    )

    @classmethod
    async def of(cls, session: Any, settings: Any) -> AuditRetention:
        now = datetime.now(UTC)
        view = await retention.retention_in_force(session, settings, now)
        return cls(
            retention_days=view.days,
            plan_retention_days=view.plan_days,
            override_days=view.override_days,
            grace_until=view.grace_until,
            pending_retention_days=view.pending_days,
            cutoff=view.cutoff(now),
            oldest_record_at=await retention.oldest_record_at(session),
        )


@strawberry.type
class RetentionQuery:
    @strawberry.field(description="The audit record retention in force, and the oldest record kept.")
    async def audit_retention(self, info: Info) -> AuditRetention:
        return await AuditRetention.of(await info.context.db(), info.context.runtime.settings)


@strawberry.type
class RetentionMutation:
    @strawberry.mutation(
        description="Keep audit records for fewer days than the plan does (owners only); null returns to the "
        "plan's retention. A decrease takes effect after the grace period (`AuditRetention.graceUntil`)."
    )
    async def set_audit_retention(
        self,
        info: RequestInfo,
        retention_days: Annotated[
            int | None, strawberry.argument(description="Days, from 1 to the plan's retention; null: the plan's.")
        ],
    ) -> AuditRetention:
        principal = await info.context.principal()
        session = await info.context.db()
        settings = info.context.runtime.settings
        await retention.set_override(
            session, principal, retention_days, settings=settings, source_ip=info.context.source_ip
        )
        return await AuditRetention.of(session, settings)


# --- erasure (GDPR Art. 17) ---------------------------------------------------------------------------
@strawberry.enum(description="How far an erasure went.")
class ErasureStatus(Enum):
    RUNNING = strawberry.enum_value("running", description="Records are being erased, in batches, by a job.")
    DONE = strawberry.enum_value("done", description="Every matching record is erased.")


@strawberry.input(
    description="Which records to erase. Every given condition must hold; at least one must be given. Records "
    "written after the request are not included."
)
class ErasureFilter:
    record_ids: list[strawberry.ID] | None = strawberry.field(
        default=None, description="These records (at most 10,000)."
    )
    trace_id: str | None = strawberry.field(default=None, description="Every record of this trace.")
    agent_id: list[strawberry.ID] | None = strawberry.field(default=None, description="Records of these agents.")
    tenant_id: list[str] | None = strawberry.field(
        default=None, description="Records with these tenant ids (the `tenantId` the agent sent)."
    )
    search: str | None = strawberry.field(
        default=None,
        description="Records whose prompt or response matches this full-text search (as auditLogs' search; "
        "records are searchable about a second after ingest).",
    )

    def to_filter(self) -> erasure.ErasureFilter:
        return erasure.ErasureFilter(
            record_ids=[str(i) for i in self.record_ids] if self.record_ids is not None else None,
            trace_id=self.trace_id,
            agent_ids=[str(a) for a in self.agent_id] if self.agent_id else None,
            tenant_ids=self.tenant_id,
            search=self.search,
        )


@strawberry.type(
    description="An erasure of audit records' content (GDPR Art. 17): the records keep their place in the chain "
    "and every proof; their content is gone."
)
class AuditErasure:
    id: strawberry.ID = strawberry.field(description="Erasure id (`ers_…`).")
    reason: str = strawberry.field(description="Why, as the requester gave it.")
    filter: JSON = strawberry.field(description="The filter as requested (recordIds, traceId, agentIds, …).")
    status: ErasureStatus = strawberry.field(description="Running or done.")
    record_count: int = strawberry.field(description="Records erased so far.")
    requested_by: str | None = strawberry.field(description="The user who asked for it (`usr_…`).")
    requested_by_name: str | None = strawberry.field(description="Their name at the time.")
    requested_at: datetime = strawberry.field(description="When it was asked for.")
    completed_at: datetime | None = strawberry.field(description="When the last record was erased.")

    @classmethod
    def of(cls, row: models.AuditErasure) -> AuditErasure:
        return cls(
            id=strawberry.ID(row.id),
            reason=row.reason,
            filter=row.filter,
            status=ErasureStatus(row.status),
            record_count=row.record_count,
            requested_by=row.requested_by,
            requested_by_name=row.requested_by_name,
            requested_at=row.requested_at,
            completed_at=row.completed_at,
        )


AuditErasureConnection = Connection[AuditErasure]


@strawberry.type
class ErasureQuery:
    @strawberry.field(description="The organisation's erasures, newest first.")
    async def audit_erasures(
        self, info: Info, first: First = None, after: After = None, last: Last = None, before: Before = None
    ) -> AuditErasureConnection:
        page = page_request(first, after, last, before, types=(datetime, str))
        rows = await erasure.list_erasures(await info.context.db(), page=page)
        return build_connection(rows, page=page, to_node=AuditErasure.of, sort_key=lambda r: (r.requested_at, r.id))

    @strawberry.field(description="One erasure; null when it does not exist in your organisation.")
    async def audit_erasure(
        self, info: Info, id: Annotated[strawberry.ID, strawberry.argument(description="Erasure id.")]
    ) -> AuditErasure | None:
        row = await erasure.find_erasure(await info.context.db(), str(id))
        return AuditErasure.of(row) if row is not None else None


@strawberry.type
class ErasureMutation:
    @strawberry.mutation(
        description="Erase the content (prompt, response, metadata, args, result) of matching records, and their "
        "search rows and alert excerpts; the records, their chain links and every proof stay verifiable, and "
        "say erasedAt. Owners only; on the activity trail. Up to 1,000 records are erased at once (status DONE); "
        "more continue in a job (status RUNNING, then DONE)."
    )
    async def erase_records(
        self,
        info: Info,
        filter: Annotated[ErasureFilter, strawberry.argument(description="Which records.")],
        reason: Annotated[str, strawberry.argument(description="Why (kept with the erasure, at most 2,000 chars).")],
    ) -> AuditErasure:
        principal = await info.context.principal()
        row = await erasure.request_erasure(await info.context.db(), principal, filter.to_filter(), reason)
        return AuditErasure.of(row)
