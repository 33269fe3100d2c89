"""Operations of the audit domain: ingest, reads, trace trees, chains.

Ingest writes a whole batch in one transaction with one set-based INSERT (unnest of arrays), never one
round trip per record; secrets are masked and checksums computed before anything is written.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import orjson
import sqlalchemy as sa
from sqlmodel import col

from app.agents import service as agents
from app.alerts import writing as alert_writing
from app.alerts.models import Alert
from app.alerts.service import has_alerts_condition
from app.audit import followups, search, summaries
from app.audit.models import (
    RECORD_COLUMNS,
    TEXT_RECORD_COLUMNS,
    AuditLog,
    AuditRecord,
    AuditTrace,
    record_from_row,
)
from app.audit.traces import TraceTree, build_tree
from app.audit.validation import AuditLogDraft
from app.db import SYSTEM, AsyncSession, TenancyError, lock_chain_head, new_id, scoped_text, session_org, within
from app.errors import Forbidden, NotFound
from app.guardrails import service as guardrails
from app.integrity import AUDIT_CHAIN, GENESIS_ENTRY, chain_hashes, content_hash
from app.masking import CONTENT_FIELDS, mask_record
from app.pagination import PageRequest
from app.principal import Principal
from app.usage import quota as billing_quota

MAX_TRACE_SPANS = 10_000
INGEST_LOCK_NAMESPACE = 0x41554454  # "AUDT": ingest holds it shared per org, sealing exclusively


def _org(session: AsyncSession) -> str:
    org_id = session_org(session)
    if not org_id or org_id == SYSTEM:
        raise TenancyError("audit records are written through a tenant session")
    return org_id


_INSERT = scoped_text(
    """
    INSERT INTO audit_logs (
        id, org_id, trace_id, span_id, parent_span_id, agent_id, action, prompt, response, metadata, args,
        result, occurred_at, received_at, duration_ms, status, idempotency_key, execution_id, verb, provider,
        risk_level, governance_status, dry_run, idempotent, tenant_id, credential_masked, checksum,
        chain_index, content_hash, entry_hash)
    SELECT id, :org, trace_id, span_id, parent_span_id, agent_id, action, prompt, response,
        metadata::jsonb, args::jsonb, result::jsonb, occurred_at, :received_at, duration_ms, status,
        idempotency_key, execution_id, verb, provider, risk_level, governance_status, dry_run, idempotent,
        tenant_id, credential_masked, checksum, chain_index, content_hash, entry_hash
    FROM unnest(
        CAST(:id AS text[]), CAST(:trace_id AS text[]), CAST(:span_id AS text[]),
        CAST(:parent_span_id AS text[]), CAST(:agent_id AS text[]), CAST(:action AS text[]),
        CAST(:prompt AS text[]), CAST(:response AS text[]), CAST(:metadata AS text[]), CAST(:args AS text[]),
        CAST(:result AS text[]), CAST(:occurred_at AS timestamptz[]), CAST(:duration_ms AS float8[]),
        CAST(:status AS text[]), CAST(:idempotency_key AS text[]), CAST(:execution_id AS text[]),
        CAST(:verb AS text[]), CAST(:provider AS text[]), CAST(:risk_level AS text[]),
        CAST(:governance_status AS text[]), CAST(:dry_run AS boolean[]), CAST(:idempotent AS boolean[]),
        CAST(:tenant_id AS text[]), CAST(:credential_masked AS boolean[]), CAST(:checksum AS text[]),
        CAST(:chain_index AS bigint[]), CAST(:content_hash AS bytea[]), CAST(:entry_hash AS bytea[])
    ) AS r(id, trace_id, span_id, parent_span_id, agent_id, action, prompt, response, metadata, args, result,
           occurred_at, duration_ms, status, idempotency_key, execution_id, verb, provider, risk_level,
           governance_status, dry_run, idempotent, tenant_id, credential_masked, checksum, chain_index,
           content_hash, entry_hash)
    RETURNING id, seq
    """
)

_ARRAY_COLUMNS = (
    "id",
    "trace_id",
    "span_id",
    "parent_span_id",
    "agent_id",
    "action",
    "prompt",
    "response",
    "metadata",
    "args",
    "result",
    "occurred_at",
    "duration_ms",
    "status",
    "idempotency_key",
    "execution_id",
    "verb",
    "provider",
    "risk_level",
    "governance_status",
    "dry_run",
    "idempotent",
    "tenant_id",
    "credential_masked",
    "checksum",
    "chain_index",
    "content_hash",
    "entry_hash",
)


def _json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _prepare(draft: AuditLogDraft, org_id: str, now: datetime) -> dict[str, Any]:
    # every free-text field an agent supplies passes the masker (identifiers consistently, see app/masking)
    masked, credential_masked = mask_record(
        {
            "prompt": draft.prompt,
            "response": draft.response,
            "metadata": draft.metadata,
            "args": draft.args,
            "result": draft.result,
            "action": draft.action,
            "verb": draft.verb,
            "provider": draft.provider,
            "tenant_id": draft.tenant_id,
            "idempotency_key": draft.idempotency_key,
            "execution_id": draft.execution_id,
            "trace_id": draft.trace_id,
            "span_id": draft.span_id,
            "parent_span_id": draft.parent_span_id,
        }
    )
    record_id = new_id("log")
    row: dict[str, Any] = {
        "id": record_id,
        "org_id": org_id,
        "trace_id": masked["trace_id"] or record_id,
        "span_id": masked["span_id"] or record_id,
        "parent_span_id": masked["parent_span_id"],
        "agent_id": draft.agent_id,
        "action": masked["action"],
        "prompt": masked["prompt"],
        "response": masked["response"],
        "metadata": masked["metadata"] or {},
        "args": masked["args"],
        "result": masked["result"],
        "occurred_at": draft.occurred_at or now,
        "duration_ms": draft.duration_ms,
        "status": draft.status,
        "idempotency_key": masked["idempotency_key"],
        "execution_id": masked["execution_id"],
        "verb": masked["verb"],
        "provider": masked["provider"],
        "risk_level": draft.risk_level,
        "governance_status": draft.governance_status,
        "dry_run": draft.dry_run,
        "idempotent": draft.idempotent,
        "tenant_id": masked["tenant_id"],
        "credential_masked": credential_masked,
    }
    return row


@dataclass(slots=True)
class IngestResult:
    records: list[AuditRecord]  # in input order; a repeated idempotency key gives the first record
    created: list[AuditRecord]  # only the ones written now
    alerts: list[Alert]  # raised by the ones written now


async def ingest(session: AsyncSession, principal: Principal, drafts: Sequence[AuditLogDraft]) -> IngestResult:
    """Writes checked drafts into the caller's transaction and registers their follow-ups (live spans and
    alerts, search indexing) to run after its commit. Callers go through `app.audit.ingest.ingest`."""
    org_id = _org(session)
    if principal.org_id != org_id:
        raise TenancyError("principal and session disagree on the organisation")
    # an agentId that is not an agent id names the agent ("writer-agent-1"): found, or registered on first use
    names = {d.agent_id for d in drafts if d.agent_id and not agents.is_agent_id(d.agent_id)}
    if names:
        by_name = await agents.ensure_agents_by_name(session, principal, names, source="audit-log ingest")
        for draft in drafts:
            if draft.agent_id is not None and draft.agent_id in by_name:
                draft.agent_id = by_name[draft.agent_id]
    if principal.agent_ids is not None:  # an API key limited to agents writes only for them
        outside = {d.agent_id for d in drafts} - principal.agent_ids
        if outside:
            named = sorted(a for a in outside if a)
            raise Forbidden(
                "this API key may write records only for its agents"
                + (f"; not for {', '.join(named[:20])}" if named else "; every record must name one (agentId)"),
                field="agentId",
            )
    await agents.require_active_agent_ids(session, {d.agent_id for d in drafts if d.agent_id})

    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    first_by_key: dict[str, int] = {}
    position: list[int] = []  # input index -> index in rows
    for draft in drafts:
        key = draft.idempotency_key
        if key is not None and key in first_by_key:
            position.append(first_by_key[key])
            continue
        if key is not None:
            first_by_key[key] = len(rows)
        position.append(len(rows))
        rows.append(_prepare(draft, org_id, now))

    # rules see what will be stored (masked); BLOCK marks a row before the chain seals it
    alert_drafts = await guardrails.assess(session, rows)
    # the content's hash does not depend on the position: computed before the lock
    content_hashes = [content_hash(AUDIT_CHAIN.content(row)) for row in rows]

    # exclusive per-organisation lock until the commit: the chain is one line per organisation (each record
    # names its predecessor), and sealing, which takes it too, never seals past an uncommitted record. The head
    # comes with the lock, in the same round trip (app.db.lock_chain_head)
    head = await lock_chain_head(session, INGEST_LOCK_NAMESPACE, "audit")
    existing: dict[str | None, AuditRecord] = {}
    keys = [row["idempotency_key"] for row in rows if row["idempotency_key"] is not None]
    if keys:
        # a repeated key is answered with the stored record; under the lock, no other ingest can add it now
        found = await session.execute(sa.select(*RECORD_COLUMNS).where(col(AuditLog.idempotency_key).in_(keys)))
        existing = {r.idempotency_key: r for r in map(record_from_row, found.all())}
    fresh = [
        (row, digest)
        for row, digest in zip(rows, content_hashes, strict=True)
        if row["idempotency_key"] not in existing
    ]
    inserted: dict[str, int] = {}
    if fresh:
        index, previous = head or (0, GENESIS_ENTRY)
        for row, digest in fresh:
            index += 1
            hashes = chain_hashes(AUDIT_CHAIN, row, index, previous, content_digest=digest)
            row["checksum"] = hashes.checksum
            row["chain_index"], row["content_hash"], row["entry_hash"] = index, digest, hashes.entry_hash
            previous = hashes.entry_hash
        params: dict[str, Any] = {"received_at": now}
        for column in _ARRAY_COLUMNS:
            values = [row[column] for row, _ in fresh]
            if column in ("metadata", "args", "result"):
                values = [_json_text(v) for v in values]
            params[column] = values
        inserted = {r.id: r.seq for r in (await session.execute(_INSERT, params)).all()}
        for row, _ in fresh:
            del row["chain_index"], row["content_hash"], row["entry_hash"]

    resolved: list[AuditRecord] = []
    created: list[AuditRecord] = []
    for row in rows:
        if row["id"] in inserted:
            record = AuditRecord(seq=inserted[row["id"]], received_at=now, **row)
            created.append(record)
        else:
            record = existing[row["idempotency_key"]]
        resolved.append(record)

    alerts = await alert_writing.write_alerts(
        session, [d for d in alert_drafts if rows[d.row_index]["id"] in inserted], rows
    )
    if created:
        await agents.touch_last_seen(session, {r.agent_id: r.occurred_at for r in created if r.agent_id})
        # the traces' summaries, in this transaction: the newest traces are listed without aggregating spans
        await summaries.add_records(session, [row for row in rows if row["id"] in inserted])
    # the plan's monthly quota counts the records written now (not idempotent replays); last before the
    # commit: over the limit it raises QUOTA_EXCEEDED and the whole batch rolls back
    await billing_quota.consume_records(session, org_id, len(created))
    followups.register(session, created, alerts)
    return IngestResult(records=[resolved[i] for i in position], created=created, alerts=alerts)


async def get_record(session: AsyncSession, record_id: str) -> AuditRecord:
    row = (await session.execute(sa.select(*RECORD_COLUMNS).where(col(AuditLog.id) == record_id))).first()
    if row is None:
        raise NotFound("audit log not found", id=record_id)
    return record_from_row(row)


async def records_by_ids(session: AsyncSession, record_ids: Sequence[str]) -> list[AuditRecord]:
    """The records with these ids (those of the session's organisation), oldest first."""
    if not record_ids:
        return []
    stmt = (
        sa.select(*RECORD_COLUMNS)
        .where(col(AuditLog.id).in_(list(record_ids)))
        .order_by(col(AuditLog.occurred_at), col(AuditLog.seq))
    )
    return [record_from_row(row) for row in (await session.execute(stmt)).all()]


async def find_record(session: AsyncSession, record_id: str) -> AuditRecord | None:
    try:
        return await get_record(session, record_id)
    except NotFound:
        return None


@dataclass
class AuditLogQuery:
    agent_ids: list[str] | None = None
    actions: list[str] | None = None
    trace_id: str | None = None
    statuses: list[str] | None = None
    risk_levels: list[str] | None = None
    governance_statuses: list[str] | None = None
    providers: list[str] | None = None
    verbs: list[str] | None = None
    tenant_ids: list[str] | None = None
    execution_id: str | None = None
    occurred_from: datetime | None = None
    occurred_to: datetime | None = None
    search: str | None = None
    has_alerts: bool | None = None
    ids: list[str] | None = None  # these records only (an erasure's selection)

    def __post_init__(self) -> None:
        # refused when the query is made (a request, an export's start), not when a job runs it
        if self.search:
            search.check_query(self.search)


def _filtered(query: AuditLogQuery) -> Any:
    stmt = sa.select(*RECORD_COLUMNS)
    conditions: list[sa.ColumnElement[bool]] = []
    if query.ids is not None:
        conditions.append(col(AuditLog.id).in_(query.ids))
    if query.agent_ids:
        conditions.append(col(AuditLog.agent_id).in_(query.agent_ids))
    if query.actions:
        conditions.append(col(AuditLog.action).in_(query.actions))
    if query.trace_id:
        conditions.append(col(AuditLog.trace_id) == query.trace_id)
    if query.statuses:
        conditions.append(col(AuditLog.status).in_(query.statuses))
    if query.risk_levels:
        conditions.append(col(AuditLog.risk_level).in_(query.risk_levels))
    if query.governance_statuses:
        conditions.append(col(AuditLog.governance_status).in_(query.governance_statuses))
    if query.providers:
        conditions.append(col(AuditLog.provider).in_(query.providers))
    if query.verbs:
        conditions.append(col(AuditLog.verb).in_(query.verbs))
    if query.tenant_ids:
        conditions.append(col(AuditLog.tenant_id).in_(query.tenant_ids))
    if query.execution_id:
        conditions.append(col(AuditLog.execution_id) == query.execution_id)
    conditions += within(AuditLog.occurred_at, query.occurred_from, query.occurred_to)
    if query.search:
        conditions.append(search.matches(query.search))
    if query.has_alerts is not None:
        condition = has_alerts_condition(AuditLog.id)
        conditions.append(condition if query.has_alerts else sa.not_(condition))
    return stmt.where(*conditions)


async def list_records(
    session: AsyncSession, query: AuditLogQuery, *, page: PageRequest, offset: int = 0
) -> list[AuditRecord]:
    """Newest first; keyset pagination on (occurred_at, id), stable while records keep arriving (`offset`: the
    REST reference's offset paging, which is not)."""
    stmt = page.apply(_filtered(query), col(AuditLog.occurred_at), col(AuditLog.id))
    if offset:
        stmt = stmt.offset(offset)
    return [record_from_row(r) for r in (await session.execute(stmt)).all()]


async def unerased_ids(session: AsyncSession, query: AuditLogQuery, *, through_seq: int, limit: int) -> list[str]:
    """Ids of up to `limit` matching records not erased yet, written up to `through_seq`, oldest first (an
    erasure's next batch: app.audit.erasure)."""
    stmt = (
        _filtered(query)
        .with_only_columns(col(AuditLog.id))
        .where(col(AuditLog.erased_at).is_(None), col(AuditLog.seq) <= through_seq)
        .order_by(col(AuditLog.seq))
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars().all())


async def newest_seq(session: AsyncSession) -> int:
    """The `seq` of the organisation's newest record (0 without any)."""
    return int((await session.execute(sa.select(sa.func.max(col(AuditLog.seq))))).scalar_one() or 0)


async def count_records(session: AsyncSession, query: AuditLogQuery) -> int:
    stmt = sa.select(sa.func.count()).select_from(_filtered(query).subquery())
    return int((await session.execute(stmt)).scalar_one())


def _trace_rows(with_content: bool) -> sa.TextualSelect:
    """A trace's spans by time, as RECORD_COLUMNS (the content NULL unless `with_content`) with their types: raw SQL
    read as typed rows (values converted as the ORM converts them), without the ORM's per-row work, which was
    the largest share of reading a 10,000-span trace."""
    columns = [cast(Any, attribute).property.columns[0] for attribute in RECORD_COLUMNS]
    selected = [f"NULL AS {c.name}" if not with_content and c.name in CONTENT_FIELDS else c.name for c in columns]
    where = "WHERE org_id = :org AND trace_id = :trace_id ORDER BY occurred_at, seq LIMIT :limit"
    sql = f"SELECT {', '.join(selected)} FROM audit_logs {where}"  # noqa: S608 - the model's column names, no input
    return scoped_text(sql).columns(*[sa.column(c.name, c.type) for c in columns])


_TRACE_ROWS = {with_content: _trace_rows(with_content) for with_content in (True, False)}


async def load_trace(
    session: AsyncSession, trace_id: str, *, max_spans: int | None = None, with_content: bool = True
) -> TraceTree | None:
    """The whole trace in one indexed query, assembled in memory; the first `max_spans` by time.
    `with_content=False` leaves prompt, response, metadata, args and result out (None): for a read that shows
    the tree without them, that is most of the bytes PostgreSQL would send."""
    max_spans = max_spans or MAX_TRACE_SPANS
    params = {"trace_id": trace_id, "limit": max_spans + 1}  # :org is bound to the session's
    records = [record_from_row(r) for r in (await session.execute(_TRACE_ROWS[with_content], params)).all()]
    if not records:
        return None
    truncated = len(records) > max_spans
    return build_tree(trace_id, records[:max_spans], truncated=truncated)


# the links of traces' spans (what their trees are worked out from: ids, parents, time order), each trace's first
# :cap by time: raw SQL read as plain rows, without the ORM's per-row work for thousands of spans
_TRACE_LINKS = scoped_text(
    """
    SELECT trace_id, id, span_id, parent_span_id, occurred_at, seq FROM (
        SELECT trace_id, id, span_id, parent_span_id, occurred_at, seq,
            row_number() OVER (PARTITION BY trace_id ORDER BY occurred_at, seq) AS rank
        FROM audit_logs WHERE org_id = :org AND trace_id = ANY(CAST(:trace_ids AS text[]))
    ) ranked WHERE rank <= :cap ORDER BY trace_id, occurred_at, seq
    """
)


async def trace_roots(
    session: AsyncSession, trace_ids: Sequence[str], *, with_json: bool
) -> dict[str, list[AuditRecord]]:
    """The root spans of these traces (as `load_trace` nests them: each trace's first MAX_TRACE_SPANS spans,
    loops cut), read alone: the trees are worked out from a narrow read of ids, parents and times, then only
    the roots' rows are read; their metadata, args and result (JSON) only `with_json`."""
    params = {"trace_ids": list(trace_ids), "cap": MAX_TRACE_SPANS}  # :org is bound to the session's
    by_trace: dict[str, list[Any]] = {t: [] for t in trace_ids}
    for row in (await session.execute(_TRACE_LINKS, params)).all():
        by_trace[row.trace_id].append(row)
    # build_tree reads only span_id, parent_span_id, occurred_at and seq of what it is given: the rows have them
    root_ids = {t: [n.record.id for n in build_tree(t, links).roots] for t, links in by_trace.items() if links}
    wanted = [i for ids in root_ids.values() for i in ids]
    if not wanted:
        return {t: [] for t in trace_ids}
    columns = RECORD_COLUMNS if with_json else TEXT_RECORD_COLUMNS
    found = await session.execute(sa.select(*columns).where(col(AuditLog.id).in_(wanted)))
    by_id = {r.id: r for r in map(record_from_row, found.all())}
    return {t: [by_id[i] for i in root_ids.get(t, []) if i in by_id] for t in trace_ids}


async def children_of(
    session: AsyncSession, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], list[AuditRecord]]:
    """Children of many spans at once (DataLoader batch): keys are (trace_id, span_id)."""
    if not keys:
        return {}
    stmt = (
        sa.select(*RECORD_COLUMNS)
        .where(sa.tuple_(AuditLog.trace_id, AuditLog.parent_span_id).in_(list(set(keys))))
        .order_by(col(AuditLog.occurred_at), col(AuditLog.seq))
    )
    out: dict[tuple[str, str], list[AuditRecord]] = {key: [] for key in keys}
    for record in map(record_from_row, (await session.execute(stmt)).all()):
        if record.span_id == record.parent_span_id:
            continue  # a span naming itself as parent is a root, not its own child
        out[(record.trace_id, record.parent_span_id or "")].append(record)
    return out


async def spans_by_id(session: AsyncSession, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], AuditRecord]:
    """Spans by (trace_id, span_id) (DataLoader batch for `parent`); the earliest wins on repeats."""
    if not keys:
        return {}
    stmt = (
        sa.select(*RECORD_COLUMNS)
        .where(sa.tuple_(AuditLog.trace_id, AuditLog.span_id).in_(list(set(keys))))
        .order_by(col(AuditLog.occurred_at).desc(), col(AuditLog.seq).desc())
    )
    return {(r.trace_id, r.span_id): r for r in map(record_from_row, (await session.execute(stmt)).all())}


_CHAIN = scoped_text(
    """
    WITH RECURSIVE chain AS (
        SELECT a.id, a.trace_id, a.parent_span_id, 1 AS depth, ARRAY[a.span_id]::text[] AS path
        FROM audit_logs a WHERE a.org_id = :org AND a.id = :id
      UNION ALL
        SELECT p.id, p.trace_id, p.parent_span_id, c.depth + 1, c.path || p.span_id
        FROM chain c
        JOIN LATERAL (
            SELECT * FROM audit_logs x
            WHERE x.org_id = :org AND x.trace_id = c.trace_id AND x.span_id = c.parent_span_id
            ORDER BY x.occurred_at, x.seq LIMIT 1
        ) p ON true
        WHERE NOT p.span_id = ANY(c.path) AND c.depth < :max_depth
    )
    SELECT id, depth FROM chain WHERE depth > 1 ORDER BY depth
    """
)


async def chain(session: AsyncSession, record: AuditRecord, *, max_depth: int = 10_000) -> list[AuditRecord]:
    """Ancestors from the parent up to the root. Recursive CTE; a parent loop ends (path check)."""
    org_id = _org_for_read(session, record)
    rows = (await session.execute(_CHAIN, {"org": org_id, "id": record.id, "max_depth": max_depth})).all()
    if not rows:
        return []
    ids = [r.id for r in rows]
    by_id = {r.id: r for r in await records_by_ids(session, ids)}
    return [by_id[i] for i in ids if i in by_id]


def _org_for_read(session: AsyncSession, record: AuditRecord) -> str:
    org_id = session_org(session)
    if org_id not in (record.org_id, SYSTEM):
        raise TenancyError("record read across organisations")
    return record.org_id


@dataclass(slots=True)
class TraceSummary:
    trace_id: str
    span_count: int
    started_at: datetime
    ended_at: datetime
    error_count: int
    blocked_count: int
    agent_ids: list[str]

    @property
    def status(self) -> str:
        return "error" if self.error_count else "blocked" if self.blocked_count else "ok"

    @property
    def duration_ms(self) -> float:
        return (self.ended_at - self.started_at).total_seconds() * 1000.0


@dataclass
class TraceQuery:
    agent_ids: list[str] | None = None
    started_from: datetime | None = None
    started_to: datetime | None = None
    status: str | None = None
    has_alerts: bool | None = None


async def list_traces(session: AsyncSession, query: TraceQuery, *, page: PageRequest) -> list[TraceSummary]:
    """One row per trace, newest start first: an index scan of the summaries kept at ingest (`audit_traces`),
    flat however many spans are stored."""
    stmt = sa.select(
        col(AuditTrace.trace_id),
        col(AuditTrace.span_count),
        col(AuditTrace.started_at),
        col(AuditTrace.ended_at),
        col(AuditTrace.error_count),
        col(AuditTrace.blocked_count),
        col(AuditTrace.agent_ids),
    )
    conditions: list[Any] = []
    if query.agent_ids:
        with_agent = sa.select(col(AuditLog.trace_id)).where(col(AuditLog.agent_id).in_(query.agent_ids))
        conditions.append(col(AuditTrace.trace_id).in_(with_agent))
    if query.has_alerts is not None:
        alerted = sa.select(col(AuditLog.trace_id)).where(has_alerts_condition(col(AuditLog.id)))
        conditions.append(
            col(AuditTrace.trace_id).in_(alerted) if query.has_alerts else col(AuditTrace.trace_id).not_in(alerted)
        )
    conditions += within(AuditTrace.started_at, query.started_from, query.started_to)
    if query.status == "error":
        conditions.append(col(AuditTrace.error_count) > 0)
    elif query.status == "blocked":
        conditions.append(sa.and_(col(AuditTrace.error_count) == 0, col(AuditTrace.blocked_count) > 0))
    elif query.status == "ok":
        conditions.append(sa.and_(col(AuditTrace.error_count) == 0, col(AuditTrace.blocked_count) == 0))
    stmt = page.apply(stmt.where(*conditions), col(AuditTrace.started_at), col(AuditTrace.trace_id))
    return [TraceSummary(**row._mapping) for row in (await session.execute(stmt)).all()]


@dataclass(slots=True)
class ActivityStats:
    records: int
    traces: int
    errors: int
    blocked: int
    duration_p50: float | None
    duration_p95: float | None


async def agent_stats(
    session: AsyncSession, agent_id: str, *, occurred_from: datetime | None, occurred_to: datetime | None
) -> ActivityStats:
    """Counts and duration percentiles of one agent's records, in SQL."""
    conditions = [AuditLog.agent_id == agent_id, *within(AuditLog.occurred_at, occurred_from, occurred_to)]
    stmt = sa.select(
        sa.func.count(),
        sa.func.count(sa.distinct(col(AuditLog.trace_id))),
        sa.func.count().filter(col(AuditLog.status) == "error"),
        # blocked as metrics count it: by a rule (or as sent), or sent with status BLOCKED
        sa.func.count().filter(sa.or_(col(AuditLog.status) == "blocked", col(AuditLog.governance_status) == "blocked")),
        sa.func.percentile_cont(0.5).within_group(col(AuditLog.duration_ms)),
        sa.func.percentile_cont(0.95).within_group(col(AuditLog.duration_ms)),
    ).where(*conditions)
    row = (await session.execute(stmt)).one()
    return ActivityStats(*row)


async def trace_counts_by_agent(
    session: AsyncSession,
    *,
    occurred_from: datetime | None,
    occurred_to: datetime | None,
    agent_ids: list[str] | None = None,
) -> tuple[dict[str | None, int], int]:
    """Distinct traces each agent took part in over a window, and distinct traces in all (a trace that several
    agents share counts once there): one GROUP BY GROUPING SETS."""
    conditions = within(AuditLog.occurred_at, occurred_from, occurred_to)
    if agent_ids is not None:
        conditions.append(col(AuditLog.agent_id).in_(agent_ids))
    stmt = (
        sa.select(
            sa.func.grouping(col(AuditLog.agent_id)),
            col(AuditLog.agent_id),
            sa.func.count(sa.distinct(col(AuditLog.trace_id))),
        )
        .where(*conditions)
        .group_by(sa.func.grouping_sets(sa.tuple_(AuditLog.agent_id), sa.tuple_()))
    )
    per_agent: dict[str | None, int] = {}
    total = 0
    for is_total, agent_id, n in (await session.execute(stmt)).all():
        if is_total:
            total = int(n)
        else:
            per_agent[agent_id] = int(n)
    return per_agent, total


def export_statement(query: AuditLogQuery, columns: Sequence[Any], *, limit: int | None = None) -> Any:
    """The given columns of every matching record, newest first (at most `limit`)."""
    stmt = (
        _filtered(query).with_only_columns(*columns).order_by(col(AuditLog.occurred_at).desc(), col(AuditLog.id).desc())
    )
    return stmt if limit is None else stmt.limit(limit)


async def stream_rows(
    session: AsyncSession, query: AuditLogQuery, columns: Sequence[Any], *, batch_size: int, limit: int | None = None
) -> AsyncIterator[Sequence[Any]]:
    """The given columns (expressions over AuditLog) of every matching record, newest first, in batches of up to
    `batch_size` rows through a server-side cursor: memory stays flat whatever the row count (exports)."""
    result = await session.stream(export_statement(query, columns, limit=limit).execution_options(yield_per=batch_size))
    async for partition in result.partitions(batch_size):
        yield partition
