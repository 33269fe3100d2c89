"""Tamper evidence: digests that seal every record since the last one, and verification.

A digest covers a contiguous `seq` range of one organisation's records: their count, the Merkle root of
their checksums, the previous digest's hash (a chain), and an HMAC signature with a key derived from the
service secret. Verification recomputes each record's checksum from its content, each digest's root,
hash and signature, and the chain, and reports the first break.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select

from app.audit.models import RECORD_COLUMNS, AuditDigest, AuditLog, record_from_row
from app.audit.service import INGEST_LOCK_NAMESPACE
from app.db import AsyncSession, Database, lock_organisation, new_id, tenant_org, within
from app.integrity import (
    GENESIS_HASH,
    checksum_content,
    digest_hash,
    digest_payload,
    digest_signing_key,
    merkle_root,
    record_checksum,
    sign_digest,
    verify_digest_signature,
)
from app.runtime.isolation import each_organization
from app.unit_of_work import transaction

MAX_RECORDS_PER_DIGEST = 100_000
VERIFY_CHUNK = 2_000


def _payload(digest: AuditDigest) -> dict[str, Any]:
    return digest_payload(
        org_id=digest.org_id,
        sequence=digest.sequence,
        from_seq=digest.from_seq,
        to_seq=digest.to_seq,
        first_occurred_at=digest.first_occurred_at,
        last_occurred_at=digest.last_occurred_at,
        record_count=digest.record_count,
        merkle_root=digest.merkle_root,
        previous_hash=digest.previous_hash,
        created_at=digest.created_at,
    )


async def orgs_with_unsealed_records(db: Database) -> list[str]:
    query = sa.text(
        """
        SELECT o.id FROM organizations o
        WHERE EXISTS (
            SELECT 1 FROM audit_logs a
            WHERE a.org_id = o.id
              AND a.seq > COALESCE((SELECT max(d.to_seq) FROM audit_digests d WHERE d.org_id = o.id), 0)
        )
        ORDER BY o.id
        """
    )
    async with db.system_session() as session:
        return list((await session.execute(query)).scalars().all())


async def seal_organization(
    session: AsyncSession, key: bytes, *, max_records: int = MAX_RECORDS_PER_DIGEST
) -> AuditDigest | None:
    """Writes the next digest of the session's organisation; None when nothing is unsealed."""
    org_id = tenant_org(session)
    # exclusive: waits for ingest transactions in flight (they hold it shared), so every record with a
    # seq below what we read is committed and none can appear later below our upper bound
    await lock_organisation(session, INGEST_LOCK_NAMESPACE)
    last = (await session.exec(select(AuditDigest).order_by(col(AuditDigest.sequence).desc()).limit(1))).first()
    after_seq = last.to_seq if last else 0
    rows = (
        await session.execute(
            sa.select(col(AuditLog.seq), col(AuditLog.checksum), col(AuditLog.occurred_at))
            .where(col(AuditLog.seq) > after_seq)
            .order_by(col(AuditLog.seq))
            .limit(max_records)
        )
    ).all()
    if not rows:
        return None
    digest = AuditDigest(
        id=new_id("dgst"),
        org_id=org_id,
        sequence=(last.sequence + 1) if last else 1,
        from_seq=after_seq + 1,
        to_seq=rows[-1].seq,
        first_occurred_at=min(r.occurred_at for r in rows),
        last_occurred_at=max(r.occurred_at for r in rows),
        record_count=len(rows),
        merkle_root=merkle_root([r.checksum for r in rows]),
        previous_hash=last.digest_hash if last else GENESIS_HASH,
        digest_hash="",
        signature="",
        created_at=datetime.now(UTC).replace(microsecond=0),
    )
    payload = _payload(digest)
    digest.digest_hash = digest_hash(payload)
    digest.signature = sign_digest(key, payload)
    session.add(digest)
    await session.flush()
    return digest


async def seal_all(db: Database, secret: str) -> int:
    """Seals every organisation with unsealed records; returns how many digests were written. An
    organisation that fails is skipped (and retried on the next run): the others are sealed still."""
    key = digest_signing_key(secret)

    async def seal(org_id: str) -> int:
        written = 0
        while True:
            async with transaction(db, org_id) as session:  # one digest per transaction
                digest = await seal_organization(session, key)
            if digest is None:
                return written
            written += 1
            if digest.record_count < MAX_RECORDS_PER_DIGEST:
                return written

    return sum(await each_organization("seal_audit_trail", await orgs_with_unsealed_records(db), seal))


@dataclass
class Verification:
    ok: bool = True
    records_checked: int = 0
    digests_checked: int = 0
    first_broken_record_id: str | None = None
    first_broken_digest_id: str | None = None
    reason: str | None = None

    def fail(self, reason: str, *, record_id: str | None = None, digest_id: str | None = None) -> Verification:
        if self.ok:
            self.ok = False
            self.reason = reason
            self.first_broken_record_id = record_id
            self.first_broken_digest_id = digest_id
        return self


async def digests_covering(
    session: AsyncSession, *, occurred_from: datetime | None, occurred_to: datetime | None
) -> list[AuditDigest]:
    """The session's organisation's digests that seal at least one record of the window, oldest first."""
    stmt = select(AuditDigest).order_by(col(AuditDigest.sequence))
    if occurred_to is not None:
        stmt = stmt.where(AuditDigest.first_occurred_at < occurred_to)
    if occurred_from is not None:
        stmt = stmt.where(AuditDigest.last_occurred_at >= occurred_from)
    return list((await session.exec(stmt)).all())


async def verify(
    session: AsyncSession,
    secret: str,
    *,
    occurred_from: datetime | None = None,
    occurred_to: datetime | None = None,
) -> Verification:
    """Verifies the session's organisation: the whole digest chain, and every record in the window."""
    key = digest_signing_key(secret)
    result = Verification()
    digests = list((await session.exec(select(AuditDigest).order_by(col(AuditDigest.sequence)))).all())

    previous_hash, expected_from = GENESIS_HASH, 1
    for digest in digests:
        result.digests_checked += 1
        payload = _payload(digest)
        if digest.previous_hash != previous_hash or digest.sequence != result.digests_checked:
            return result.fail(
                "the digest chain is broken (a digest was removed, reordered or replaced)", digest_id=digest.id
            )
        if digest.from_seq != expected_from:
            return result.fail("digests do not cover a contiguous range of records", digest_id=digest.id)
        if digest_hash(payload) != digest.digest_hash or not verify_digest_signature(key, payload, digest.signature):
            return result.fail("a digest's signature does not match its content", digest_id=digest.id)
        previous_hash, expected_from = digest.digest_hash, digest.to_seq + 1

    for digest in digests:
        if occurred_to is not None and digest.first_occurred_at >= occurred_to:
            continue
        if occurred_from is not None and digest.last_occurred_at < occurred_from:
            continue
        broken = await _verify_range(session, result, digest.from_seq, digest.to_seq, digest)
        if broken:
            return result

    # records written since the last digest: their checksums can already be checked
    await _verify_range(
        session, result, expected_from, None, None, occurred_from=occurred_from, occurred_to=occurred_to
    )
    return result


async def _verify_range(
    session: AsyncSession,
    result: Verification,
    from_seq: int,
    to_seq: int | None,
    digest: AuditDigest | None,
    *,
    occurred_from: datetime | None = None,
    occurred_to: datetime | None = None,
) -> bool:
    """Streams the records with a server-side cursor (constant memory). True when a break was found."""
    stmt = sa.select(*RECORD_COLUMNS).where(col(AuditLog.seq) >= from_seq).order_by(col(AuditLog.seq))
    if to_seq is not None:
        stmt = stmt.where(col(AuditLog.seq) <= to_seq)
    stmt = stmt.where(*within(AuditLog.occurred_at, occurred_from, occurred_to))
    leaves: list[str] = []
    last_id: str | None = None
    stream = await session.stream(stmt.execution_options(yield_per=VERIFY_CHUNK))
    async for partition in stream.partitions(VERIFY_CHUNK):
        for row in partition:
            record = record_from_row(row)
            result.records_checked += 1
            last_id = record.id
            recomputed = record_checksum(checksum_content(record))
            if recomputed != record.checksum:
                await stream.close()
                result.fail("a record's content does not match its checksum (it was altered)", record_id=record.id)
                return True
            leaves.append(recomputed)
    if digest is None:
        return False
    if len(leaves) != digest.record_count:
        result.fail(
            f"a digest sealed {digest.record_count} records but {len(leaves)} are there (records were removed)",
            record_id=last_id,
            digest_id=digest.id,
        )
        return True
    if merkle_root(leaves) != digest.merkle_root:
        result.fail(
            "the sealed records do not match their digest's Merkle root",
            digest_id=digest.id,
            record_id=last_id,
        )
        return True
    return False
