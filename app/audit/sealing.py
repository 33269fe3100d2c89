"""Tamper evidence: digests that seal every record since the last one, and verification.

Every record is chained at write time (app.integrity: entry_hash = H(previous entry_hash || record hash)).
A digest (version 2) seals an organisation's records up to chain index `tree_size`: the RFC 9162 Merkle root
of the tree of all its entry hashes so far, the chain head, the previous digest's hash, signed with Ed25519
by the configured key (app.audit.signing). Version 1 digests (before the chain: seq ranges, a Merkle root
over checksums, an HMAC under a key derived from the service secret) keep verifying.

Verification walks the chain in keyset batches, recomputing every record's hashes and link, every digest's
root, head, hash, signature (by a trusted key within its validity) and link, and names the first break.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import orjson
import sqlalchemy as sa
from sqlmodel import col, select

from app import unit_of_work
from app.audit import erasure, published, retention, signing
from app.audit.models import AuditDigest, AuditMerkleNode, AuditRetentionCut
from app.audit.streams import AUDIT, ChainRow, ErasureClaim, Stream
from app.db import AsyncSession, Database, lock_organisation, new_id, tenant_org
from app.integrity import (
    GENESIS_ENTRY,
    GENESIS_HASH,
    STORED_LEVEL,
    ChainHashes,
    Frontier,
    Signer,
    canonical_json,
    chain_hashes,
    content_hash,
    digest_hash,
    digest_payload,
    digest_signing_key,
    digest_v2_payload,
    merkle_root,
    verify_digest_signature,
)
from app.runtime.isolation import each_organization
from app.webhooks import service as webhooks

MAX_RECORDS_PER_DIGEST = 100_000
VERIFY_CHUNK = 2_000
_BLOCK = 1 << STORED_LEVEL


class SealingRefused(RuntimeError):
    """The stored chain has a gap: sealing it would sign a broken trail (verification names the break)."""


def v1_payload(digest: AuditDigest) -> dict[str, Any]:
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


def v2_payload(digest: AuditDigest) -> dict[str, Any]:
    return digest_v2_payload(
        version=2,
        org_id=digest.org_id,
        sequence=digest.sequence,
        from_index=digest.from_index,
        tree_size=digest.tree_size,
        record_count=digest.record_count,
        merkle_root=digest.merkle_root,
        chain_head=digest.chain_head,
        previous_hash=digest.previous_hash,
        created_at=digest.created_at,
        key_id=digest.key_id,
    )


def payload_of(digest: AuditDigest) -> dict[str, Any]:
    return v2_payload(digest) if digest.version >= 2 else v1_payload(digest)


def digest_json(digest: AuditDigest) -> dict[str, Any]:
    """A digest as published: its signed payload, hash and signature (what a verifier needs, nothing more)."""
    payload = payload_of(digest)
    return {
        "id": digest.id,
        "stream": digest.stream,
        # as canonical JSON has it (times with microseconds and Z): canonical_json(this) is what was signed
        "payload": orjson.loads(canonical_json(payload)),
        "digestHash": digest.digest_hash,
        "signature": digest.signature,
        "keyId": digest.key_id,
    }


# ---------------------------------------------------------------------------------------------------
# Sealing


async def orgs_with_unsealed_records(db: Database, stream: Stream = AUDIT) -> list[str]:
    async with db.system_session() as session:
        return await stream.orgs_with_unsealed(session)


async def _last_digest(session: AsyncSession, stream: Stream) -> AuditDigest | None:
    stmt = (
        select(AuditDigest)
        .where(col(AuditDigest.stream) == stream.name)
        .order_by(col(AuditDigest.sequence).desc())
        .limit(1)
    )
    return (await session.exec(stmt)).first()


async def _extend(
    session: AsyncSession, stream: Stream, frontier: Frontier, upto: int, nodes: list[dict[str, Any]]
) -> bytes:
    """Appends the entry hashes of chain indexes frontier.size+1..upto to the frontier, in batches; the
    completed subtrees of level >= 8 go to `nodes` (level 8 with their leaves). Returns the last entry hash."""
    org_id = tenant_org(session)
    block_start = (frontier.size // _BLOCK) * _BLOCK  # 0-based first leaf of the block being filled
    leaves = [e for _, e in await stream.entries(session, block_start + 1, frontier.size)]
    if len(leaves) != frontier.size - block_start:
        raise SealingRefused("sealed records are missing")
    head = b""
    while frontier.size < upto:
        batch = await stream.entries(session, frontier.size + 1, min(upto, frontier.size + VERIFY_CHUNK * 5))
        if not batch:
            raise SealingRefused("the chain has a gap")
        for index, entry in batch:
            if index != frontier.size + 1:
                raise SealingRefused("the chain has a gap")
            completed: list[tuple[int, int, bytes]] = []
            frontier.append(entry, completed)
            leaves.append(entry)
            for level, idx, value in completed:
                row: dict[str, Any] = {"org_id": org_id, "stream": stream.name, "level": level, "idx": idx}
                row["hash"], row["leaves"] = value, None
                if level == STORED_LEVEL:
                    row["leaves"] = b"".join(leaves)
                    leaves = []
                nodes.append(row)
            head = entry
    return head


async def seal_organization(
    session: AsyncSession, signer: Signer, *, stream: Stream = AUDIT, max_records: int = MAX_RECORDS_PER_DIGEST
) -> AuditDigest | None:
    """Writes the next (version 2) digest of the session's organisation; None when nothing is unsealed."""
    org_id = tenant_org(session)
    # exclusive: waits for ingest transactions in flight, so every record below what we read is committed
    await lock_organisation(session, stream.lock_namespace)
    last = await _last_digest(session, stream)
    if last is not None and last.version >= 2 and last.tree_size is not None:
        frontier = Frontier.from_json(last.tree_size, last.frontier or [])
        from_index = last.tree_size + 1
    else:
        # the first signed digest: its tree covers the whole chain, records sealed by version 1 digests too
        frontier = Frontier.empty()
        from_index = 1 if last is None else await stream.index_after_seq(session, last.to_seq)
    span = await stream.span(session, from_index, from_index + max_records - 1)
    if span is None:
        return None
    nodes: list[dict[str, Any]] = []
    head = await _extend(session, stream, frontier, span.last_index, nodes)
    if span.count != span.last_index - from_index + 1:
        raise SealingRefused("the chain has a gap")
    digest = AuditDigest(
        id=new_id("dgst"),
        org_id=org_id,
        stream=stream.name,
        sequence=(last.sequence + 1) if last else 1,
        from_seq=span.first_seq,
        to_seq=span.last_seq,
        first_occurred_at=span.first_occurred_at,
        last_occurred_at=span.last_occurred_at,
        record_count=span.count,
        merkle_root=frontier.root().hex(),
        previous_hash=last.digest_hash if last else GENESIS_HASH,
        digest_hash="",
        signature="",
        created_at=datetime.now(UTC).replace(microsecond=0),
        version=2,
        key_id=signer.key_id,
        from_index=from_index,
        tree_size=span.last_index,
        chain_head=head.hex(),
        frontier=frontier.to_json(),
    )
    payload = v2_payload(digest)
    digest.digest_hash = digest_hash(payload)
    digest.signature = signer.sign(payload)
    session.add(digest)
    if nodes:
        await session.execute(sa.insert(AuditMerkleNode), nodes)
    await session.flush()
    return digest


async def seal_all(db: Database, signer: Signer, *, runtime: Any = None, streams: Sequence[Stream] = (AUDIT,)) -> int:
    """Seals every organisation with unsealed records of `streams` (the worker and `agentrail seal`: STREAMS,
    audit records and the activity trail); returns how many digests were written.
    Each digest is published as the webhook event `audit.digest_sealed` (in its transaction) and, after the
    commit, recorded as the organisation's newest published digest in Redis (app.audit.published). Without a
    `runtime` (the CLI) the deliveries are rows that the worker's sweeper sends, and nothing is recorded.
    An organisation that fails is skipped (and retried on the next run): the others are sealed still."""
    await signing.register(db, signer)
    written = 0
    for stream in streams:

        async def seal(org_id: str, stream: Stream = stream) -> int:
            count = 0
            while True:
                # one digest per transaction
                async with unit_of_work.owned(db.session(org_id=org_id), runtime) as session:
                    digest = await seal_organization(session, signer, stream=stream)
                    if digest is not None:
                        await webhooks.emit_event(session, "audit.digest_sealed", digest_json(digest))
                    if runtime is None:
                        unit_of_work.forget(session)  # no queue at hand: the delivery sweeper sends them
                if digest is None:
                    return count
                if runtime is not None:
                    await published.record(runtime.redis, digest)
                count += 1
                if digest.record_count < MAX_RECORDS_PER_DIGEST:
                    return count

        orgs = await orgs_with_unsealed_records(db, stream)
        written += sum(await each_organization(f"seal_{stream.name}_trail", orgs, seal))
    return written


# ---------------------------------------------------------------------------------------------------
# Verification


@dataclass
class Verification:
    ok: bool = True
    records_checked: int = 0
    digests_checked: int = 0
    first_broken_record_id: str | None = None
    first_broken_digest_id: str | None = None
    reason: str | None = None
    chain_length: int = 0  # the last chain index seen
    expired_through: int = 0  # records up to this chain index expired under retention (signed cuts)
    records_erased: int = 0  # records whose content was erased: header and link checked, content not
    head_digest: AuditDigest | None = field(default=None, repr=False)

    def fail(self, reason: str, *, record_id: str | None = None, digest_id: str | None = None) -> Verification:
        if self.ok:
            self.ok = False
            self.reason = reason
            self.first_broken_record_id = record_id
            self.first_broken_digest_id = digest_id
        return self

    def report(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records_checked": self.records_checked,
            "digests_checked": self.digests_checked,
            "records_erased": self.records_erased,
            "first_broken_record_id": self.first_broken_record_id,
            "first_broken_digest_id": self.first_broken_digest_id,
            "reason": self.reason,
            "expired_through_index": self.expired_through,
        }


async def digests_covering(
    session: AsyncSession,
    *,
    occurred_from: datetime | None,
    occurred_to: datetime | None,
    stream: Stream = AUDIT,
) -> list[AuditDigest]:
    """The session's organisation's digests that seal at least one record of the window, oldest first."""
    stmt = select(AuditDigest).where(col(AuditDigest.stream) == stream.name).order_by(col(AuditDigest.sequence))
    if occurred_to is not None:
        stmt = stmt.where(AuditDigest.first_occurred_at < occurred_to)
    if occurred_from is not None:
        stmt = stmt.where(AuditDigest.last_occurred_at >= occurred_from)
    return list((await session.exec(stmt)).all())


@dataclass(frozen=True)
class Keys:
    """What verification trusts: the service secret (version 1 digests' HMAC) and the configured signing
    key (the root of trust for version 2 digests)."""

    secret: str
    signer: Signer


async def verify(
    session: AsyncSession,
    keys: Keys,
    *,
    occurred_from: datetime | None = None,
    occurred_to: datetime | None = None,
    stream: Stream = AUDIT,
    published: tuple[int, str] | None = None,
) -> Verification:
    """Verifies the session's organisation: the whole digest chain, and the record chain. Without a window,
    every record from the first (and every digest's root against the records); with one, the stretch of the
    chain from the first to the last record of the window, linked to the record before it. Records are read
    in keyset batches of VERIFY_CHUNK, one short statement each, so that an organisation of any size verifies
    within the statement timeout. Digests are trusted when signed by the configured key or a key it vouches
    for (app.audit.signing.trusted_keys), within that key's validity. `published`: (sequence, hash) of the
    newest digest published (app.audit.published.floor): a digest chain without it was cut short."""
    hmac_key = digest_signing_key(keys.secret)
    trusted = await signing.trusted_keys(session, keys.signer.public_key)
    result = Verification()
    stmt = select(AuditDigest).where(col(AuditDigest.stream) == stream.name).order_by(col(AuditDigest.sequence))
    digests = list((await session.exec(stmt)).all())

    previous_hash, expected_from, expected_index = GENESIS_HASH, 1, 1
    for digest in digests:
        result.digests_checked += 1
        payload = payload_of(digest)
        if digest.previous_hash != previous_hash or digest.sequence != result.digests_checked:
            return result.fail(
                "the digest chain is broken (a digest was removed, reordered or replaced)", digest_id=digest.id
            )
        if digest_hash(payload) != digest.digest_hash:
            return result.fail("a digest's hash does not match its content", digest_id=digest.id)
        if digest.version >= 2:
            problem = signing.signature_problem(trusted, digest, payload)
            if problem:
                return result.fail(problem, digest_id=digest.id)
            if (digest.from_index != expected_index and expected_index != 1) or digest.tree_size is None:
                return result.fail("digests do not cover a contiguous range of records", digest_id=digest.id)
            if digest.record_count != digest.tree_size - (digest.from_index or 0) + 1:
                return result.fail("a digest's record count does not match its range", digest_id=digest.id)
            expected_index = digest.tree_size + 1
        else:
            if digest.from_seq != expected_from:
                return result.fail("digests do not cover a contiguous range of records", digest_id=digest.id)
            if not verify_digest_signature(hmac_key, payload, digest.signature):
                return result.fail("a digest's signature does not match its content", digest_id=digest.id)
            expected_from = digest.to_seq + 1
        previous_hash = digest.digest_hash
        result.head_digest = digest
    if published is not None:
        sequence, published_hash = published
        held = digests[sequence - 1] if 0 < sequence <= len(digests) else None
        if held is None:
            last = digests[-1].id if digests else None
            return result.fail(
                f"digest {sequence} was published but the trail ends at digest {len(digests)} (its newest records"
                " and digests were deleted, or it was truncated)",
                digest_id=last,
            )
        if held.digest_hash != published_hash:
            return result.fail("a digest differs from the one published (the trail was rewritten)", digest_id=held.id)

    cut = await _checked_cut(session, result, trusted, digests) if stream.name == AUDIT.name else None
    if not result.ok:
        return result
    start = cut.through_index + 1 if cut else 1
    low, high = start, None
    if occurred_from is not None or occurred_to is not None:
        bounds = await stream.window(session, occurred_from, occurred_to)
        if bounds is None:
            return result
        low, high = max(bounds[0], start), bounds[1]
        if high < low:
            return result
    await _Walk(session, stream, result, digests, low, high, cut).run()
    return result


async def _checked_cut(
    session: AsyncSession, result: Verification, trusted: dict[str, Any], digests: list[AuditDigest]
) -> AuditRetentionCut | None:
    """The newest retention cut, when the chain of cuts holds (each signed by a trusted key, linked to the
    previous one and to a digest of the digest chain); the verification fails otherwise."""
    stmt = select(AuditRetentionCut).order_by(col(AuditRetentionCut.sequence))
    cuts = list((await session.exec(stmt)).all())
    previous_hash, through = retention.GENESIS_CUT, 0
    for number, cut in enumerate(cuts, start=1):
        payload = retention.cut_payload(cut)
        digest = digests[cut.digest_sequence - 1] if 0 < cut.digest_sequence <= len(digests) else None
        if cut.sequence != number or cut.previous_hash != previous_hash or cut.from_index != through + 1:
            result.fail("the chain of retention cuts is broken (a cut was removed or replaced)")
        elif digest_hash(payload) != cut.cut_hash:
            result.fail("a retention cut's hash does not match its content")
        elif problem := signing.signature_problem(trusted, cast(Any, cut), payload):
            result.fail(problem.replace("digest", "retention cut"))
        elif digest is None or digest.digest_hash != cut.digest_hash or (digest.tree_size or 0) < cut.through_index:
            result.fail("a retention cut names a digest that the digest chain does not hold", digest_id=None)
        elif Frontier.from_json(cut.through_index, cut.frontier).root().hex() != cut.tree_root:
            result.fail("a retention cut's Merkle frontier does not match its root")
        if not result.ok:
            return None
        previous_hash, through = cut.cut_hash, cut.through_index
    result.expired_through = through
    return cuts[-1] if cuts else None


def _checksum_holds(record: Any, hashes: ChainHashes, stream: Stream) -> bool:
    # a record written before the chain keeps its legacy checksum (what its version 1 digest sealed)
    if record.checksum == hashes.checksum:
        return True
    return stream.legacy_checksum is not None and record.checksum == stream.legacy_checksum(record)


@dataclass
class _Walk:
    session: AsyncSession
    stream: Stream
    result: Verification
    digests: list[AuditDigest]
    low: int
    high: int | None
    cut: AuditRetentionCut | None = None  # the chain starts after it (retention removed what it covers)

    async def run(self) -> None:
        """Walks the chain from `low` to `high` (the end when None), recomputing every record's hashes and
        link; without a window also every digest's tree root and chain head (version 2) or Merkle root over
        the checksums it sealed (version 1). Stops at the first break."""
        result, stream, cut = self.result, self.stream, self.cut
        start = cut.through_index + 1 if cut else 1
        partial = self.low > start or self.high is not None
        previous, previous_id = GENESIS_ENTRY, None
        frontier = Frontier.empty()
        if cut is not None and self.low == start:
            previous, frontier = bytes.fromhex(cut.chain_head), Frontier.from_json(cut.through_index, cut.frontier)
        elif self.low > 1:
            before = await stream.entries(self.session, self.low - 1, self.low - 1)
            if not before:
                result.fail("a record is missing (the chain has a gap)")
                return
            previous = before[0][1]
        # digests of expired records: their signatures and links were checked, their records are gone
        expired_seq = (cut.last_seq or 0) if cut else 0
        v1 = iter([d for d in self.digests if d.version < 2 and d.from_seq > expired_seq])
        live = [d for d in self.digests if d.version >= 2 and (d.tree_size or 0) >= start]
        v2 = iter(live if not partial else [])
        legacy, signed = next(v1, None), next(v2, None)
        leaves: list[str] = []
        recent: list[tuple[int, str, bytes]] = []  # (index, id, recomputed entry) since the last signed digest
        first_seq: int | None = None
        expected, after = self.low, self.low - 1
        erasures = await stream.erasures(self.session) if stream.erasures is not None else {}
        erased: dict[str, list[int]] = {}  # erasure id -> chain indexes of its records seen
        while True:
            rows = await stream.chain_rows(self.session, after, VERIFY_CHUNK, self.high)
            kept = await self._sealed_leaves(rows[0].chain_index, rows[-1].chain_index) if rows else {}
            for row in rows:
                record, index = row.record, row.chain_index
                if index != expected:
                    result.fail(
                        f"records are missing before this one (chain index {expected} to {index - 1})",
                        record_id=record.id,
                    )
                    return
                erasure_id = getattr(record, "erasure_id", None)
                if erasure_id is not None:  # erased: its content cannot be rechecked, its header and link can
                    hashes = chain_hashes(stream.spec, record, index, previous, content_digest=row.content_hash)
                    problem = self._erased_problem(record, hashes, erasures)
                    if problem:
                        result.fail(problem, record_id=record.id)
                        return
                    result.records_erased += 1
                    erased.setdefault(erasure_id, []).append(index)
                else:
                    recomputed = content_hash(stream.spec.content(record))
                    hashes = chain_hashes(stream.spec, record, index, previous, content_digest=recomputed)
                    if recomputed != row.content_hash or not _checksum_holds(record, hashes, stream):
                        result.fail(
                            "a record's content does not match its hashes (it was altered)", record_id=record.id
                        )
                        return
                if hashes.entry_hash != row.entry_hash:
                    await self._broken_link(row, previous, previous_id)
                    return
                if index in kept and kept[index] != row.entry_hash:
                    result.fail(
                        "a record differs from what was sealed (altered with its hashes and every later one"
                        " recomputed, inserted or reordered)",
                        record_id=record.id,
                    )
                    return
                result.records_checked += 1
                result.chain_length = index
                # version 1 digests: seq ranges, Merkle roots over checksums
                first_seq = record.seq if first_seq is None else first_seq
                while legacy is not None and record.seq > legacy.to_seq:
                    inside = not partial or legacy.from_seq >= first_seq
                    if inside and _v1_broken(result, legacy, leaves, previous_id):
                        return
                    legacy, leaves = next(v1, None), []
                if legacy is not None and record.seq >= legacy.from_seq:
                    leaves.append(record.checksum)
                # version 2 digests: the tree of every entry so far
                if not partial:
                    frontier.append(row.entry_hash)
                    recent.append((index, record.id, row.entry_hash))
                    if signed is not None and index == signed.tree_size:
                        if await self._v2_broken(signed, frontier, row.entry_hash, recent):
                            return
                        signed, recent = next(v2, None), []
                previous, previous_id, expected, after = row.entry_hash, record.id, index + 1, index
            if len(rows) < VERIFY_CHUNK:
                break
        if partial:
            return
        if self._erasures_broken(erasures, erased, previous_id, start):
            return
        while legacy is not None:
            if _v1_broken(result, legacy, leaves, previous_id):
                return
            legacy, leaves = next(v1, None), []
        if signed is not None:
            result.fail(
                f"records sealed by a digest are missing: the chain ends at index {expected - 1}, the digest"
                f" sealed up to {signed.tree_size} (the newest records were deleted)",
                record_id=previous_id,
                digest_id=signed.id,
            )

    def _erased_problem(self, record: Any, hashes: ChainHashes, erasures: dict[str, ErasureClaim]) -> str | None:
        """What is wrong with an erased record, if anything: content left, an erasure never recorded, a header
        that does not match its record hash (a record written before the chain keeps its legacy checksum, over
        the content that is gone: only its link is checked)."""
        if any(value is not None for value in self.stream.spec.content(record).values()):
            return "an erased record still holds content (altered after its erasure)"
        claim = erasures.get(record.erasure_id)
        if claim is None or not claim.requested:
            return (
                "a record's content was removed outside any recorded erasure (it claims an erasure that does not exist)"
            )
        if record.checksum != hashes.checksum and not self.stream.legacy_checksums:
            return "a record's content does not match its hashes (it was altered)"
        return None

    def _erasures_broken(
        self, erasures: dict[str, ErasureClaim], erased: dict[str, list[int]], last_id: str | None, start: int
    ) -> bool:
        """Each complete erasure erased exactly the records its signed activity event names (their count and the
        hash of their chain indexes): records erased under its id without it, or left out, are caught. When
        retention removed the start of the chain (`start` > 1), an erasure reaching into it is checked for
        records beyond its count or outside its first..last chain index only."""
        for erasure_id, claim in erasures.items():
            if not claim.complete:
                continue
            indexes = erased.get(erasure_id, [])
            if claim.record_count is None:
                self.result.fail(
                    f"erasure {erasure_id} is complete but its activity event (audit.records_erased) is missing",
                    record_id=last_id,
                )
                return True
            if start > 1 and (claim.first_index is None or claim.first_index < start):
                # what retention left of it: no more records than it erased, none outside its first..last index
                exact = len(indexes) <= claim.record_count and all(
                    (claim.first_index or 0) <= i <= (claim.last_index or 0) for i in indexes
                )
            else:
                exact = claim.record_count == len(indexes) and claim.indexes_hash == erasure.indexes_hash(indexes)
            if not exact:
                self.result.fail(
                    f"erasure {erasure_id} recorded {claim.record_count} erased records on the activity trail, but"
                    f" {len(indexes)} records carry it (records were erased or restored outside it)",
                    record_id=last_id,
                )
                return True
        return False

    async def _broken_link(self, row: ChainRow, previous: bytes, previous_id: str | None) -> None:
        """The record's own hashes hold but its entry hash does not follow its predecessor's: either this
        record was altered (its checksum recomputed, not its entry hash) or its predecessor was (all its hashes
        recomputed). The leaves kept at sealing tell which, when these records are sealed."""
        index, record = row.chain_index, row.record
        sealed = await self._sealed_leaves(index - 1, index)
        if previous_id is None:
            self.result.fail("a record's entry hash does not follow its predecessor", record_id=record.id)
        elif index - 1 in sealed and sealed[index - 1] != previous:
            self.result.fail("a record was altered after it was sealed (its hashes recomputed)", record_id=previous_id)
        elif index in sealed:
            self.result.fail("a record was altered after it was sealed", record_id=record.id)
        else:
            self.result.fail(
                "the chain breaks after this record (it was altered and its hashes recomputed, or the records"
                " after it were reordered or replaced)",
                record_id=previous_id,
            )

    async def _v2_broken(
        self, digest: AuditDigest, frontier: Frontier, head: bytes, recent: list[tuple[int, str, bytes]]
    ) -> bool:
        if frontier.root().hex() == digest.merkle_root and head.hex() == digest.chain_head:
            return False
        # the chain was rewritten consistently from some record on: the sealed leaves name it
        sealed = await self._sealed_leaves(recent[0][0] if recent else 1, digest.tree_size or 0)
        for index, record_id, entry in recent:
            if index in sealed and sealed[index] != entry:
                self.result.fail(
                    "a sealed record was altered (its hashes and every later one recomputed)",
                    record_id=record_id,
                    digest_id=digest.id,
                )
                return True
        self.result.fail(
            "the records do not match their signed digest's Merkle root (altered after sealing)",
            record_id=recent[0][1] if recent else None,
            digest_id=digest.id,
        )
        return True

    async def _sealed_leaves(self, low: int, high: int) -> dict[int, bytes]:
        """Entry hashes kept with the level 8 nodes when sealing, by chain index (those of full blocks)."""
        if high < low or low < 1:
            return {}
        first, last = (low - 1) // _BLOCK, (high - 1) // _BLOCK
        stmt = sa.select(col(AuditMerkleNode.idx), col(AuditMerkleNode.leaves)).where(
            col(AuditMerkleNode.stream) == self.stream.name,
            col(AuditMerkleNode.level) == STORED_LEVEL,
            col(AuditMerkleNode.idx).between(first, last),
        )
        out: dict[int, bytes] = {}
        for idx, leaves in (await self.session.execute(stmt)).all():
            for i in range(len(leaves or b"") // 32):
                out[idx * _BLOCK + i + 1] = leaves[i * 32 : (i + 1) * 32]
        return out


def _v1_broken(result: Verification, digest: AuditDigest, leaves: list[str], last_id: str | None) -> bool:
    if len(leaves) != digest.record_count:
        result.fail(
            f"a digest sealed {digest.record_count} records but {len(leaves)} are there (records were removed)",
            record_id=last_id,
            digest_id=digest.id,
        )
        return True
    if merkle_root(leaves) != digest.merkle_root:
        result.fail("the sealed records do not match their digest's Merkle root", digest_id=digest.id)
        return True
    return False
