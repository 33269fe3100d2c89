"""Erasure of audit records' content (GDPR Art. 17), keeping every proof.

A record's chain link commits to its content through the content's own hash (app.integrity): erasing the content
(prompt, response, metadata, args, result: set to NULL) keeps its content hash, record hash, entry hash, every
Merkle root and signature. Verification then checks the erased record's header and link, reports it as erased,
and cannot recheck the content (there is none).

The privileged path: the trigger on audit_logs (migration 0027) allows one UPDATE only, content columns to NULL and
`erased_at`/`erasure_id` set, every other column unchanged, while the transaction names (`agentrail.erasure_id`)
a running erasure of the record's organisation. Nothing else changes a record.

An erasure is a row (`audit_erasures`): requested with a filter (record ids, a trace, agents, tenant ids, a
full-text match; all given conditions must hold) and a reason, by an owner. The request erases up to
`INLINE_LIMIT` records in its own transaction; what remains is erased by a job (`run_erasure`) in batches of
`BATCH_SIZE`, each its own short transaction, so that a full-text match of 100,000 records never holds a long
transaction or blocks ingest (ingest takes no lock an erasure holds). Records written after the request are not
in it (`through_seq`). Search rows of erased records are deleted, and alert excerpts replaced, in the same
transaction. The activity trail says who asked for what (`audit.erasure_requested`) and, when it is complete,
how many records it erased and a hash of their chain indexes (`audit.records_erased`), which verification
checks against the records (app.audit.sealing).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import structlog
from sqlmodel import col, select

from app import unit_of_work
from app.activity.service import record_activity
from app.alerts import service as alerts
from app.audit import search, service
from app.audit.models import AuditErasure, AuditLog, AuditSearch
from app.db import AsyncSession, global_text, lock_organisation, new_id, session_org, utcnow
from app.errors import BadUserInput
from app.pagination import PageRequest
from app.principal import Principal

log = structlog.get_logger(__name__)

INLINE_LIMIT = 1_000  # records erased within the request; more continue in the job
BATCH_SIZE = 1_000  # records per job transaction
MAX_RECORD_IDS = 10_000
MAX_REASON_CHARS = 2_000
RUN_JOB = "run_erasure"
RUNNING, DONE = "running", "done"
REQUESTED_ACTION = "audit.erasure_requested"
ERASED_ACTION = "audit.records_erased"

_SET_ERASURE = global_text("SELECT set_config('agentrail.erasure_id', :erasure, true)")


@dataclass
class ErasureFilter:
    """Which records to erase: every given condition must hold; at least one must be given."""

    record_ids: list[str] | None = None
    trace_id: str | None = None
    agent_ids: list[str] | None = None
    tenant_ids: list[str] | None = None
    search: str | None = None

    def __post_init__(self) -> None:
        if self.search is not None:
            self.search = self.search.strip() or None
        if not (self.record_ids or self.trace_id or self.agent_ids or self.tenant_ids or self.search):
            raise BadUserInput(
                "an erasure needs a filter: recordIds, traceId, agentId, tenantId or search", field="filter"
            )
        if self.record_ids is not None and len(self.record_ids) > MAX_RECORD_IDS:
            raise BadUserInput(f"at most {MAX_RECORD_IDS} record ids per erasure", field="recordIds")
        if self.search:
            search.check_query(self.search)

    def to_json(self) -> dict[str, Any]:
        fields = {
            "recordIds": self.record_ids,
            "traceId": self.trace_id,
            "agentIds": self.agent_ids,
            "tenantIds": self.tenant_ids,
            "search": self.search,
        }
        return {name: value for name, value in fields.items() if value}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ErasureFilter:
        return cls(
            record_ids=data.get("recordIds"),
            trace_id=data.get("traceId"),
            agent_ids=data.get("agentIds"),
            tenant_ids=data.get("tenantIds"),
            search=data.get("search"),
        )

    def query(self) -> service.AuditLogQuery:
        return service.AuditLogQuery(
            ids=self.record_ids,
            trace_id=self.trace_id,
            agent_ids=self.agent_ids,
            tenant_ids=self.tenant_ids,
            search=self.search,
        )


async def request_erasure(
    session: AsyncSession, principal: Principal, erasure_filter: ErasureFilter, reason: str
) -> AuditErasure:
    """Records the erasure, erases up to INLINE_LIMIT matching records in the caller's transaction, and queues the
    job for the rest (after the commit). Returns the erasure (status done, or running while the job works)."""
    reason = reason.strip()
    if not reason:
        raise BadUserInput("an erasure needs a reason", field="reason")
    if len(reason) > MAX_REASON_CHARS:
        raise BadUserInput(f"the reason must be at most {MAX_REASON_CHARS} characters", field="reason")
    erasure = AuditErasure(
        id=new_id("ers"),
        org_id=principal.org_id,
        reason=reason,
        filter=erasure_filter.to_json(),
        status=RUNNING,
        record_count=0,
        through_seq=await service.newest_seq(session),
        requested_by=principal.actor_id or None,
        requested_by_name=principal.actor_name,
        requested_at=utcnow(),
    )
    session.add(erasure)
    await session.flush()
    record_activity(
        session,
        principal,
        REQUESTED_ACTION,
        target_type="audit_erasure",
        target_id=erasure.id,
        metadata={"reason": reason, "filter": erasure.filter},
    )
    if await erase_batch(session, erasure, INLINE_LIMIT):
        await _complete(session, erasure, principal)
    else:
        org_id, erasure_id = erasure.org_id, erasure.id
        unit_of_work.after_commit(session, lambda runtime: enqueue(runtime.queue, org_id, erasure_id))
    return erasure


async def enqueue(queue: Any, org_id: str, erasure_id: str) -> None:
    await queue.enqueue_job(RUN_JOB, org_id, erasure_id, _job_id=f"erasure:{erasure_id}")


async def erase_batch(session: AsyncSession, erasure: AuditErasure, limit: int) -> bool:
    """Erases up to `limit` more records of the erasure in the caller's transaction: their content, their search
    rows and their alerts' excerpts. True when none is left."""
    # search indexing takes this lock shared: an indexing statement that read a record's content before this
    # transaction committed has committed its row before the rows are deleted below
    await lock_organisation(session, search.SEARCH_LOCK_NAMESPACE)
    ids = await service.unerased_ids(
        session, ErasureFilter.from_json(erasure.filter).query(), through_seq=erasure.through_seq, limit=limit + 1
    )
    batch = ids[:limit]
    if batch:
        await session.execute(_SET_ERASURE, {"erasure": erasure.id})
        await session.execute(
            sa.update(AuditLog)
            .where(col(AuditLog.id).in_(batch), col(AuditLog.erased_at).is_(None))
            .values(
                prompt=None,
                response=None,
                metadata_=sa.null(),
                args=sa.null(),
                result=sa.null(),
                erased_at=sa.func.now(),
                erasure_id=erasure.id,
            )
            .execution_options(synchronize_session=False)
        )
        await session.execute(_SET_ERASURE, {"erasure": ""})
        await session.execute(
            sa.delete(AuditSearch)
            .where(col(AuditSearch.log_id).in_(batch))
            .execution_options(synchronize_session=False)
        )
        await alerts.erase_excerpts(session, batch)
        erasure.record_count += len(batch)
        session.add(erasure)
        await session.flush()
    return len(ids) <= limit


async def _complete(session: AsyncSession, erasure: AuditErasure, principal: Principal) -> None:
    erasure.status = DONE
    erasure.completed_at = utcnow()
    session.add(erasure)
    indexes = await erased_chain_indexes(session, erasure.id)
    record_activity(
        session,
        principal,
        ERASED_ACTION,
        target_type="audit_erasure",
        target_id=erasure.id,
        metadata={
            "erasureId": erasure.id,
            "recordCount": len(indexes),
            "firstChainIndex": indexes[0] if indexes else None,
            "lastChainIndex": indexes[-1] if indexes else None,
            "chainIndexesHash": indexes_hash(indexes),
        },
    )
    await session.flush()


async def erased_chain_indexes(session: AsyncSession, erasure_id: str) -> list[int]:
    stmt = (
        sa.select(col(AuditLog.chain_index))
        .where(col(AuditLog.erasure_id) == erasure_id)
        .order_by(col(AuditLog.chain_index))
    )
    return [int(i) for i in (await session.execute(stmt)).scalars().all()]


def indexes_hash(indexes: Sequence[int]) -> str:
    """`sha256:` over the chain indexes of an erasure's records, ascending, comma-separated."""
    return "sha256:" + hashlib.sha256(",".join(map(str, indexes)).encode()).hexdigest()


def _requester(erasure: AuditErasure) -> Principal:
    return Principal(
        kind="user", org_id=erasure.org_id, user_id=erasure.requested_by, actor_name=erasure.requested_by_name
    )


async def continue_erasure(runtime: Any, org_id: str, erasure_id: str) -> int:
    """The job: erases the rest of a running erasure, one batch per transaction. Returns records erased."""
    erased = 0
    while True:
        async with unit_of_work.unit_of_work(runtime, org_id) as session:
            stmt = select(AuditErasure).where(col(AuditErasure.id) == erasure_id).with_for_update()
            erasure = (await session.exec(stmt)).first()
            if erasure is None or erasure.status != RUNNING:
                return erased
            before = erasure.record_count
            complete = await erase_batch(session, erasure, BATCH_SIZE)
            erased += erasure.record_count - before
            if complete:
                await _complete(session, erasure, _requester(erasure))
                log.info("erasure complete", erasure_id=erasure_id, records=erasure.record_count)
                return erased


async def sweep(runtime: Any) -> int:
    """Cron: queues running erasures again (their job was lost with Redis, or its worker died). A job that is
    still running takes the erasure's row lock per batch, so two never erase the same batch."""
    async with unit_of_work.system_unit_of_work(runtime) as session:
        stmt = sa.select(col(AuditErasure.org_id), col(AuditErasure.id)).where(col(AuditErasure.status) == RUNNING)
        running = (await session.execute(stmt)).all()
    for org_id, erasure_id in running:
        await enqueue(runtime.queue, org_id, erasure_id)
    return len(running)


async def list_erasures(session: AsyncSession, *, page: PageRequest) -> list[AuditErasure]:
    """The organisation's erasures, newest first."""
    stmt = page.apply(select(AuditErasure), col(AuditErasure.requested_at), col(AuditErasure.id))
    return list((await session.exec(stmt)).all())


async def find_erasure(session: AsyncSession, erasure_id: str) -> AuditErasure | None:
    return (await session.exec(select(AuditErasure).where(col(AuditErasure.id) == erasure_id))).first()


async def erasures_of(session: AsyncSession) -> dict[str, AuditErasure]:
    """Every erasure of the session's organisation, by id (verification checks records against them)."""
    if session_org(session) is None:
        return {}
    return {e.id: e for e in (await session.exec(select(AuditErasure))).all()}


def erasure_time(erasure: AuditErasure) -> datetime:
    return erasure.completed_at or erasure.requested_at
