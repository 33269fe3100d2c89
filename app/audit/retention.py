"""Retention: each organisation's records older than its retention are removed, and the removal is proved.

The retention in force is the plan's (app.usage.plans: free 7 days, pro 90, business 365), or the owner's
shorter override (`setAuditRetention`). A decrease (a downgrade, a shorter override) is not applied at once:
the previous, longer retention stays in force for AGENTRAIL_RETENTION_GRACE_DAYS (14) from the run that first
sees it, so that a mistaken downgrade can be undone before anything is lost.

The worker runs `run` daily. Per organisation:
 1. one transaction writes a **retention cut** (AuditRetentionCut), signed with the digest signing key: the
    chain indexes that expire (`from_index..through_index`, a prefix of the chain, never past the newest
    signed digest), how many, the cutoff, the chain head and Merkle frontier at the cut, the newest digest, the
    previous cut's hash; and the activity event `audit.records_expired`;
 2. then short transactions of at most AGENTRAIL_RETENTION_BATCH_SIZE records each remove the records (with
    their search rows and alerts) and refresh their traces' summaries, pausing between batches so that removal
    works AGENTRAIL_RETENTION_DUTY (a fifth) of the time and ingest keeps the machine. Only these transactions set
    `agentrail.retention`, and the trigger on audit_logs lets a DELETE through only with it, for a record that
    a cut of its organisation covers. Ingest is never waited for: the removed records are old, ingest appends.
`run` writes every organisation's cut first; a past month that every organisation's retention has passed and
that the cuts wholly cover is then dropped whole (records and search rows; its alerts deleted, its traces'
summaries recomputed) instead of deleted row by row; the batches remove the rest; months left empty are dropped.

Verification (app.audit.sealing) starts each organisation's chain after its newest cut, from the cut's chain
head and frontier: retention reads as retention; records missing without a cut read as tampering.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import structlog
from sqlmodel import col, select

from app import unit_of_work
from app.activity.service import record_activity
from app.audit import partitions, summaries
from app.audit.models import AuditDigest, AuditRetentionCut, AuditRetentionSetting
from app.db import AsyncSession, Database, global_text, lock_organisation, new_id, scoped_text, tenant_org
from app.errors import BadUserInput
from app.files.store import expire_made_before
from app.integrity import STORED_LEVEL, Frontier, Signer, canonical_json, digest_hash
from app.principal import Principal
from app.runtime.isolation import each_organization
from app.settings import Settings
from app.usage import plans
from app.usage.quota import current_plan

log = structlog.get_logger(__name__)

MIN_DAYS, MAX_DAYS = 1, 3650
RETENTION_LOCK_NAMESPACE = 0x52544E44  # "RTND": one retention run per organisation at a time
_BLOCK = 1 << STORED_LEVEL
GENESIS_CUT = "sha256:" + "0" * 64

CUT_FIELDS = (
    "kind",
    "org_id",
    "sequence",
    "from_index",
    "through_index",
    "record_count",
    "cutoff",
    "retention_days",
    "chain_head",
    "tree_root",
    "digest_sequence",
    "digest_hash",
    "previous_hash",
    "created_at",
    "key_id",
)


def cut_payload(cut: Any) -> dict[str, Any]:
    """What a retention cut signs (canonical JSON of this, app.integrity)."""
    payload = {name: getattr(cut, name) for name in CUT_FIELDS if name != "kind"}
    return {"kind": "retention", **payload}


def cut_json(cut: AuditRetentionCut) -> dict[str, Any]:
    """A cut as proof bundles carry it: its signed payload (as canonical JSON has it), hash and signature."""
    return {
        "id": cut.id,
        "payload": orjson.loads(canonical_json(cut_payload(cut))),
        "cutHash": cut.cut_hash,
        "signature": cut.signature,
    }


# ---------------------------------------------------------------------------------------------------
# the retention in force


@dataclass(frozen=True)
class Retention:
    plan_days: int  # the plan's
    override_days: int | None  # the owner's, when set
    days: int  # in force now
    grace_until: datetime | None  # a decrease waits until then (days is the previous, longer one meanwhile)
    pending_days: int | None  # what applies after the grace

    def cutoff(self, now: datetime) -> datetime:
        return now - timedelta(days=self.days)


def _resolve(
    plan_days: int, row: AuditRetentionSetting | None, now: datetime, grace_days: int
) -> tuple[Retention, dict[str, Any]]:
    """The retention in force and what the settings row must say for it (applied days, grace)."""
    override = row.retention_days if row else None
    wanted = min(override, plan_days) if override else plan_days
    applied = row.applied_days if row else None
    grace_until, grace_from = (row.grace_until, row.grace_days) if row else (None, None)
    if grace_until is not None:
        if now >= grace_until or grace_from is None or wanted >= grace_from:
            grace_until, grace_from = None, None  # the grace is over (it never starts again), or the decrease undone
    elif applied is not None and wanted < applied and grace_days > 0:
        grace_until, grace_from = now + timedelta(days=grace_days), applied
    days = grace_from if grace_until is not None and grace_from is not None else wanted
    retention = Retention(plan_days, override, days, grace_until, wanted if grace_until else None)
    return retention, {"applied_days": days, "grace_days": grace_from, "grace_until": grace_until}


async def _setting(session: AsyncSession) -> AuditRetentionSetting | None:
    return (await session.exec(select(AuditRetentionSetting))).first()


async def retention_in_force(session: AsyncSession, settings: Settings, now: datetime | None = None) -> Retention:
    """The session's organisation's retention (read only: a decrease shows the grace it will get)."""
    org_id = tenant_org(session)
    plan_days = plans.limits_for(await current_plan(session, org_id), settings).retention_days
    retention, _ = _resolve(plan_days, await _setting(session), now or datetime.now(UTC), settings.retention_grace_days)
    return retention


_OLDEST = scoped_text(
    "SELECT received_at FROM audit_logs WHERE org_id = :org ORDER BY chain_index LIMIT 1"  # the chain's start
)


async def oldest_record_at(session: AsyncSession) -> datetime | None:
    """When the oldest record still kept was received."""
    return (await session.execute(_OLDEST, {})).scalar()


async def set_override(
    session: AsyncSession, principal: Principal, days: int | None, *, settings: Settings, source_ip: str | None = None
) -> Retention:
    """Sets (or, with None, clears) the owner's retention override: at least MIN_DAYS, at most the plan's."""
    org_id = tenant_org(session)
    plan_days = plans.limits_for(await current_plan(session, org_id), settings).retention_days
    if days is not None and not MIN_DAYS <= days <= plan_days:
        raise BadUserInput(
            f"retentionDays must be between {MIN_DAYS} and the plan's {plan_days} days (or null: the plan's)",
            field="retentionDays",
        )
    row = await _setting(session)
    previous = row.retention_days if row else None
    now = datetime.now(UTC)
    if row is None:
        row = AuditRetentionSetting(org_id=org_id, retention_days=days, updated_at=now)
        session.add(row)
    else:
        row.retention_days, row.updated_at = days, now
    record_activity(
        session,
        principal,
        "audit.retention_changed",
        target_type="organization",
        target_id=org_id,
        metadata={"retentionDays": days, "previousRetentionDays": previous, "planRetentionDays": plan_days},
        source_ip=source_ip,
    )
    await session.flush()
    return await retention_in_force(session, settings, now)


# ---------------------------------------------------------------------------------------------------
# the run


_RECEIVED_AT = scoped_text("SELECT received_at FROM audit_logs WHERE org_id = :org AND chain_index = :i")
_ENTRIES = scoped_text(
    "SELECT chain_index, entry_hash FROM audit_logs WHERE org_id = :org AND chain_index BETWEEN :low AND :high "
    "ORDER BY chain_index"
)
_FIRST_KEPT = scoped_text("SELECT min(chain_index) FROM audit_logs WHERE org_id = :org")
_EXPIRING = scoped_text(
    "SELECT count(*), min(seq), max(seq) FROM audit_logs WHERE org_id = :org AND chain_index BETWEEN :low AND :high "
    "AND received_at < :cutoff"
)
_REMOVE = scoped_text(
    """
    DELETE FROM audit_logs WHERE org_id = :org AND chain_index BETWEEN :low AND :high AND received_at < :cutoff
    RETURNING id, trace_id, received_at
    """
)
_REMOVE_SEARCH = scoped_text(
    """
    DELETE FROM audit_search s USING unnest(CAST(:ids AS text[]), CAST(:received AS timestamptz[])) AS r(id, at)
    WHERE s.org_id = :org AND s.log_id = r.id AND s.received_at = r.at
    """
)
_REMOVE_ALERTS = scoped_text("DELETE FROM alerts WHERE org_id = :org AND audit_log_id = ANY(CAST(:ids AS text[]))")


@dataclass
class Outcome:
    org_id: str
    retention_days: int
    cutoff: datetime
    expired: int = 0  # records the new cut covers
    removed: int = 0  # records removed in this run (the new cut's and any an interrupted run left)
    cut_id: str | None = None
    files_expired: int = 0  # exports and reports made before the cutoff, handed to the file cron


async def _last_digest(session: AsyncSession, *, at_most: int | None = None) -> AuditDigest | None:
    stmt = select(AuditDigest).where(col(AuditDigest.stream) == "audit", col(AuditDigest.version) >= 2)
    if at_most is not None:
        stmt = stmt.where(col(AuditDigest.tree_size) <= at_most)
    return (await session.exec(stmt.order_by(col(AuditDigest.sequence).desc()).limit(1))).first()


async def last_cut(session: AsyncSession) -> AuditRetentionCut | None:
    stmt = select(AuditRetentionCut).order_by(col(AuditRetentionCut.sequence).desc()).limit(1)
    return (await session.exec(stmt)).first()


async def _expired_through(session: AsyncSession, low: int, high: int, cutoff: datetime) -> int:
    """The last chain index in low..high received before the cutoff (ingest order is chain order, so the chain
    is split by a binary search of index probes): low - 1 when none is."""
    while low <= high:
        middle = (low + high) // 2
        received = (await session.execute(_RECEIVED_AT, {"i": middle})).scalar()
        if received is None:
            raise RuntimeError(f"chain index {middle} is missing: verify the trail before retention runs")
        if received < cutoff:
            low = middle + 1
        else:
            high = middle - 1
    return high


async def _entries(session: AsyncSession, low: int, high: int) -> list[bytes]:
    rows = (await session.execute(_ENTRIES, {"low": low, "high": high})).all()
    if len(rows) != max(0, high - low + 1):
        raise RuntimeError(f"records {low}..{high} are not all there: verify the trail before retention runs")
    return [bytes(entry) for _, entry in rows]


async def _frontier_at(
    session: AsyncSession, through: int, previous: AuditRetentionCut | None
) -> tuple[Frontier, bytes]:
    """The Merkle frontier of the chain at `through`, and the entry hashes of its last incomplete block."""
    digest = await _last_digest(session, at_most=through)
    if previous is not None and (digest is None or (digest.tree_size or 0) <= previous.through_index):
        frontier, start = Frontier.from_json(previous.through_index, previous.frontier), previous.through_index
    elif digest is not None:
        frontier, start = Frontier.from_json(digest.tree_size or 0, digest.frontier or []), digest.tree_size or 0
    else:
        frontier, start = Frontier.empty(), 0
    for entry in await _entries(session, start + 1, through):
        frontier.append(entry)
    block_start = (through // _BLOCK) * _BLOCK
    kept = b""
    if previous is not None and previous.through_index >= block_start:
        kept = previous.leaves[: (previous.through_index - block_start) * 32]
        block_start = previous.through_index
    return frontier, kept + b"".join(await _entries(session, block_start + 1, through))


async def write_cut(
    session: AsyncSession, signer: Signer, retention: Retention, now: datetime
) -> AuditRetentionCut | None:
    """Writes the next retention cut of the session's organisation (None: nothing has expired)."""
    org_id = tenant_org(session)
    cutoff = retention.cutoff(now)
    previous = await last_cut(session)
    sealed = await _last_digest(session)
    if sealed is None or sealed.tree_size is None:
        return None  # nothing signed yet: records expire once a digest covers them
    low = previous.through_index + 1 if previous else 1
    through = await _expired_through(session, low, sealed.tree_size, cutoff)
    if through < low:
        return None
    expiring = await session.execute(_EXPIRING, {"low": low, "high": through, "cutoff": cutoff})
    count, first_seq, last_seq = expiring.one()
    frontier, leaves = await _frontier_at(session, through, previous)
    chain_head = (await _entries(session, through, through))[0]
    cut = AuditRetentionCut(
        id=new_id("rcut"),
        org_id=org_id,
        sequence=(previous.sequence + 1) if previous else 1,
        from_index=low,
        through_index=through,
        record_count=int(count),
        first_seq=first_seq,
        last_seq=last_seq,
        cutoff=cutoff,
        retention_days=retention.days,
        chain_head=chain_head.hex(),
        tree_root=frontier.root().hex(),
        frontier=frontier.to_json(),
        leaves=leaves,
        digest_sequence=sealed.sequence,
        digest_hash=sealed.digest_hash,
        previous_hash=previous.cut_hash if previous else GENESIS_CUT,
        cut_hash="",
        signature="",
        key_id=signer.key_id,
        created_at=now.replace(microsecond=0),
    )
    payload = cut_payload(cut)
    cut.cut_hash, cut.signature = digest_hash(payload), signer.sign(payload)
    session.add(cut)
    record_activity(
        session,
        None,
        "audit.records_expired",
        target_type="audit_trail",
        target_id=cut.id,
        metadata={
            "fromIndex": low,
            "throughIndex": through,
            "recordCount": cut.record_count,
            "cutoff": cutoff.isoformat(),
            "retentionDays": retention.days,
            "chainHead": cut.chain_head,
        },
    )
    await session.flush()
    return cut


async def _remove_batch(session: AsyncSession, low: int, high: int, cutoff: datetime) -> int:
    await session.execute(global_text("SET LOCAL agentrail.retention = 'on'"))
    removed = (await session.execute(_REMOVE, {"low": low, "high": high, "cutoff": cutoff})).all()
    if not removed:
        return 0
    ids = [r.id for r in removed]
    await session.execute(_REMOVE_SEARCH, {"ids": ids, "received": [r.received_at for r in removed]})
    await session.execute(_REMOVE_ALERTS, {"ids": ids})
    await summaries.recompute(session, sorted({r.trace_id for r in removed}))
    return len(removed)


async def expire_organization(
    db: Database, org_id: str, settings: Settings, signer: Signer, now: datetime | None = None
) -> Outcome:
    """One organisation's run: the cut, then the removal in batches (see the module docstring)."""
    outcome, latest = await _cut_organization(db, org_id, settings, signer, now or datetime.now(UTC))
    if latest is not None:
        await _remove_covered(db, org_id, latest, settings, outcome)
    return outcome


async def _cut_organization(
    db: Database, org_id: str, settings: Settings, signer: Signer, now: datetime
) -> tuple[Outcome, AuditRetentionCut | None]:
    async with unit_of_work.transaction(db, org_id) as session:
        await lock_organisation(session, RETENTION_LOCK_NAMESPACE)
        plan_days = plans.limits_for(await current_plan(session, org_id), settings).retention_days
        row = await _setting(session)
        retention, values = _resolve(plan_days, row, now, settings.retention_grace_days)
        if row is None:
            row = AuditRetentionSetting(org_id=org_id, updated_at=now)
            session.add(row)
        for name, value in values.items():
            setattr(row, name, value)
        row.last_run_at = now
        cut = await write_cut(session, signer, retention, now)
        latest = cut or await last_cut(session)
        # exports and reports made before the cutoff hold only records past it: they go too (the file cron)
        files_expired = await expire_made_before(session, retention.cutoff(now))
    outcome = Outcome(org_id, retention.days, retention.cutoff(now), cut.record_count if cut else 0, 0)
    outcome.cut_id, outcome.files_expired = (cut.id if cut else None), files_expired
    return outcome, latest


async def _remove_covered(
    db: Database, org_id: str, latest: AuditRetentionCut, settings: Settings, outcome: Outcome
) -> None:
    """Removes the records the cuts cover, from the first still there (an interrupted run's too), in short
    transactions paced by AGENTRAIL_RETENTION_DUTY."""
    async with db.tenant_session(org_id) as session:
        low = (await session.execute(_FIRST_KEPT, {})).scalar()
    batch, rest = settings.retention_batch_size, 1 / settings.retention_duty - 1
    while low is not None and low <= latest.through_index:
        high = min(low + batch - 1, latest.through_index)
        started = time.perf_counter()
        async with unit_of_work.transaction(db, org_id) as session:
            outcome.removed += await _remove_batch(session, low, high, latest.cutoff)
        low = high + 1
        if rest and low <= latest.through_index:
            await asyncio.sleep((time.perf_counter() - started) * rest)  # ingest's turn


# a past month whose every record a cut covers, with a cutoff at or after the month's end: what a DROP may take
_COVERED = """
SELECT count(*) AS records, NOT EXISTS (
    SELECT 1 FROM (SELECT org_id, max(chain_index) AS top FROM "{p}" GROUP BY org_id) m
    WHERE NOT EXISTS (
        SELECT 1 FROM audit_retention_cuts c
        WHERE c.org_id = m.org_id AND c.through_index >= m.top AND c.cutoff >= CAST(:end AS timestamptz))
) AS covered FROM "{p}"
"""
_PARTITION_ALERTS = """
DELETE FROM alerts a USING "{p}" l WHERE a.org_id = l.org_id AND a.audit_log_id = l.id
"""
_PARTITION_TRACES = 'SELECT org_id, array_agg(DISTINCT trace_id) FROM "{p}" GROUP BY org_id'


async def _drop_covered_partitions(db: Database, month: date, passed: datetime) -> tuple[list[str], int]:
    """Drops, instead of deleting row by row, each past month of records (with its search rows) that every
    organisation's retention has passed (it ends by `passed`, the earliest cutoff of the run) and that retention
    cuts wholly cover: its alerts go first, its traces' summaries are recomputed after. Returns the partitions
    dropped and the records they held."""
    dropped, records = [], 0
    for name in sorted(await partitions.existing(db)):
        partition = partitions.parse_name(name)
        if partition is None or partition.table != "audit_logs" or partition.month >= month or partition.end > passed:
            continue
        async with db.engine.connect() as conn:
            row = (await conn.execute(global_text(_COVERED.format(p=name)), {"end": partition.end})).one()
        if not row.records or not row.covered:
            continue
        async with db.engine.begin() as conn:
            await conn.execute(global_text(_PARTITION_ALERTS.format(p=name)))
            traces = (await conn.execute(global_text(_PARTITION_TRACES.format(p=name)))).all()
        names = [name, partitions.Partition("audit_search", partition.month).name]
        if not await partitions.drop(db, names):
            continue
        for org_id, trace_ids in traces:
            for start in range(0, len(trace_ids), 5_000):
                async with unit_of_work.transaction(db, org_id) as session:
                    await summaries.recompute(session, sorted(trace_ids[start : start + 5_000]))
        dropped += names
        records += int(row.records)
    return dropped, records


async def orgs_to_check(db: Database) -> list[str]:
    async with db.system_session() as session:
        found = await session.execute(
            global_text(
                "SELECT o.id FROM organizations o WHERE EXISTS (SELECT 1 FROM audit_logs a WHERE a.org_id = o.id) "
                "ORDER BY o.id"
            )
        )
        return list(found.scalars().all())


async def run(db: Database, settings: Settings, signer: Signer, now: datetime | None = None) -> dict[str, Any]:
    """The daily job: every organisation with records, then the partitions retention emptied."""
    now = now or datetime.now(UTC)

    latest: dict[str, AuditRetentionCut] = {}

    async def cut(org_id: str) -> Outcome:
        outcome, last = await _cut_organization(db, org_id, settings, signer, now)
        if last is not None:
            latest[org_id] = last
        return outcome

    async def remove(outcome: Outcome) -> None:
        await _remove_covered(db, outcome.org_id, latest[outcome.org_id], settings, outcome)

    # every organisation's cut first, so that whole months its cuts cover are dropped, not deleted row by row
    outcomes = await each_organization("audit_retention", await orgs_to_check(db), cut)
    passed = min((o.cutoff for o in outcomes), default=now)
    dropped, dropped_records = await _drop_covered_partitions(db, partitions.month_of(now), passed)
    by_org = {o.org_id: o for o in outcomes if o.org_id in latest}
    await each_organization("audit_retention_removal", list(by_org), lambda org_id: remove(by_org[org_id]))
    dropped += await partitions.drop_empty_before(db, partitions.month_of(now))
    expired = sum(o.expired for o in outcomes if o is not None)
    removed = sum(o.removed for o in outcomes if o is not None)
    files = sum(o.files_expired for o in outcomes if o is not None)
    log.info("audit retention", organizations=len(outcomes), expired=expired, removed=removed, dropped=dropped)
    return {
        "organizations": len(outcomes),
        "expired": expired,
        "removed": removed,
        "filesExpired": files,
        "partitionsDropped": dropped,
        "recordsInDroppedPartitions": dropped_records,
    }
