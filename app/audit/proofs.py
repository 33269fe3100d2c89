"""Inclusion and consistency proofs (RFC 9162) over an organisation's sealed tree, from the kept nodes.

The tree of a stream has the records' entry hashes as leaves, in chain order (leaf i = chain index i + 1).
Sealing keeps every perfect subtree of 256 leaves and more (`audit_merkle_nodes`, level 8 with its leaves), so
that a proof reads O(log n) rows plus at most one block of 255 records, whatever the organisation's size.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlmodel import col, select

from app.audit import retention, signing
from app.audit.models import AuditDigest, AuditMerkleNode
from app.audit.sealing import digest_json
from app.audit.streams import AUDIT, Stream
from app.db import AsyncSession, tenant_org
from app.errors import BadUserInput, NotFound
from app.integrity import (
    GENESIS_ENTRY,
    STORED_LEVEL,
    canonical_json,
    consistency_ranges,
    inclusion_ranges,
    leaf_hash,
    node_hash,
    root_from_inclusion,
    verify_consistency,
)

_BLOCK = 1 << STORED_LEVEL


def _perfect(a: int, b: int) -> int | None:
    """The level of [a, b) when it is an aligned perfect subtree, else None."""
    size = b - a
    if size & (size - 1) or a % size:
        return None
    return size.bit_length() - 1


class _Tree:
    """Subtree hashes of ranges of one stream's tree, from the kept nodes and the records of the last block."""

    def __init__(self, session: AsyncSession, stream: Stream) -> None:
        self.session, self.stream = session, stream
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.leaves: dict[int, bytes] = {}  # 0-based leaf index -> entry hash

    def _needs(self, a: int, b: int, nodes: set[tuple[int, int]], blocks: set[int], loose: set[int]) -> None:
        level = _perfect(a, b)
        if level is not None and level >= STORED_LEVEL:
            nodes.add((level, a >> level))
        elif b - a <= _BLOCK and a // _BLOCK == (b - 1) // _BLOCK:
            blocks.add(a // _BLOCK)
            loose.update(range(a, b))
        else:
            k = 1 << ((b - a - 1).bit_length() - 1)
            self._needs(a, a + k, nodes, blocks, loose)
            self._needs(a + k, b, nodes, blocks, loose)

    async def load(self, ranges: list[tuple[int, int]]) -> None:
        nodes: set[tuple[int, int]] = set()
        blocks: set[int] = set()
        loose: set[int] = set()
        for a, b in ranges:
            self._needs(a, b, nodes, blocks, loose)
        wanted = nodes | {(STORED_LEVEL, block) for block in blocks}
        if wanted:
            stmt = sa.select(
                col(AuditMerkleNode.level),
                col(AuditMerkleNode.idx),
                col(AuditMerkleNode.hash),
                col(AuditMerkleNode.leaves),
            ).where(
                col(AuditMerkleNode.stream) == self.stream.name,
                sa.tuple_(col(AuditMerkleNode.level), col(AuditMerkleNode.idx)).in_(sorted(wanted)),
            )
            for level, idx, value, leaves in (await self.session.execute(stmt)).all():
                self.nodes[(level, idx)] = bytes(value)
                if leaves:
                    for i in range(len(leaves) // 32):
                        self.leaves[idx * _BLOCK + i] = bytes(leaves[i * 32 : (i + 1) * 32])
        missing = sorted(i for i in loose if i not in self.leaves)
        if missing:
            for index, entry in await self.stream.entries(self.session, missing[0] + 1, missing[-1] + 1):
                self.leaves[index - 1] = entry
        if any((level, idx) not in self.nodes for level, idx in nodes) or any(i not in self.leaves for i in loose):
            raise NotFound("the sealed tree is incomplete (records or kept nodes are missing)")

    def hash(self, a: int, b: int) -> bytes:
        level = _perfect(a, b)
        if level is not None and (level, a >> level) in self.nodes:
            return self.nodes[(level, a >> level)]
        if b - a == 1:
            return leaf_hash(self.leaves[a])
        k = 1 << ((b - a - 1).bit_length() - 1)
        return node_hash(self.hash(a, a + k), self.hash(a + k, b))


@dataclass
class InclusionProof:
    record_id: str
    chain_index: int
    entry_hash: bytes
    leaf_index: int
    tree_size: int
    audit_path: list[bytes]
    digest: AuditDigest


async def _latest_signed(session: AsyncSession, stream: Stream) -> AuditDigest | None:
    stmt = (
        select(AuditDigest)
        .where(col(AuditDigest.stream) == stream.name, col(AuditDigest.version) >= 2)
        .order_by(col(AuditDigest.sequence).desc())
        .limit(1)
    )
    return (await session.exec(stmt)).first()


async def _digest(session: AsyncSession, stream: Stream, digest_id: str) -> AuditDigest:
    stmt = select(AuditDigest).where(col(AuditDigest.id) == digest_id, col(AuditDigest.stream) == stream.name)
    digest = (await session.exec(stmt)).first()
    if digest is None:
        raise NotFound("digest not found", id=digest_id)
    if digest.version < 2 or digest.tree_size is None:
        raise BadUserInput("only signed (version 2) digests have proofs")
    return digest


async def inclusion_proof(
    session: AsyncSession, record_id: str, *, digest_id: str | None = None, stream: Stream = AUDIT
) -> InclusionProof:
    """The record's audit path in the tree of `digest_id` (default: the newest signed digest). NotFound when
    the record is not sealed yet by that digest (seal first; proofs follow within a minute)."""
    row = await stream.record(session, record_id)
    if row is None:
        raise NotFound("record not found", id=record_id)
    digest = await _digest(session, stream, digest_id) if digest_id else await _latest_signed(session, stream)
    if digest is None or digest.tree_size is None or row.chain_index > digest.tree_size:
        raise NotFound("the record is not sealed by a signed digest yet", id=record_id)
    tree = _Tree(session, stream)
    ranges = inclusion_ranges(row.chain_index - 1, digest.tree_size)
    await tree.load(ranges)
    path = [tree.hash(a, b) for a, b in ranges]
    return InclusionProof(
        record_id=record_id,
        chain_index=row.chain_index,
        entry_hash=row.entry_hash,
        leaf_index=row.chain_index - 1,
        tree_size=digest.tree_size,
        audit_path=path,
        digest=digest,
    )


def inclusion_holds(proof: InclusionProof) -> bool:
    root = root_from_inclusion(proof.leaf_index, proof.tree_size, proof.entry_hash, proof.audit_path)
    return root.hex() == proof.digest.merkle_root


@dataclass
class ConsistencyProof:
    old: AuditDigest
    new: AuditDigest
    proof: list[bytes]


async def consistency_proof(
    session: AsyncSession, old_digest_id: str, new_digest_id: str | None = None, *, stream: Stream = AUDIT
) -> ConsistencyProof:
    """That the tree of `new_digest_id` (default: the newest) extends the tree of `old_digest_id`."""
    old = await _digest(session, stream, old_digest_id)
    new = await _digest(session, stream, new_digest_id) if new_digest_id else await _latest_signed(session, stream)
    if new is None or new.tree_size is None or old.tree_size is None:
        raise NotFound("digest not found")
    if old.tree_size > new.tree_size:
        raise BadUserInput("the first digest must not be newer than the second")
    ranges = consistency_ranges(old.tree_size, new.tree_size)
    tree = _Tree(session, stream)
    await tree.load(ranges)
    return ConsistencyProof(old=old, new=new, proof=[tree.hash(a, b) for a, b in ranges])


def consistency_holds(proof: ConsistencyProof) -> bool:
    assert proof.old.tree_size is not None and proof.new.tree_size is not None
    return verify_consistency(
        proof.old.tree_size,
        proof.new.tree_size,
        bytes.fromhex(proof.old.merkle_root),
        bytes.fromhex(proof.new.merkle_root),
        proof.proof,
    )


def inclusion_json(proof: InclusionProof) -> dict[str, Any]:
    """The REST (and bundle) form of an inclusion proof: hashes in hex."""
    return {
        "recordId": proof.record_id,
        "chainIndex": proof.chain_index,
        "leafIndex": proof.leaf_index,
        "treeSize": proof.tree_size,
        "entryHash": proof.entry_hash.hex(),
        "auditPath": [h.hex() for h in proof.audit_path],
        "digest": digest_json(proof.digest),
    }


def consistency_json(proof: ConsistencyProof) -> dict[str, Any]:
    return {
        "fromDigest": digest_json(proof.old),
        "toDigest": digest_json(proof.new),
        "proof": [h.hex() for h in proof.proof],
    }


# ---------------------------------------------------------------------------------------------------
# Proof bundles: what the offline verifier (sdk/verify, `agentrail-verify`) checks

BUNDLE_FORMAT = "agentrail-proof-bundle/1"
BUNDLE_CHUNK = 2_000


def _canonical_time(value: Any) -> Any:
    return orjson.loads(canonical_json(value)) if value is not None else None


@dataclass(slots=True)
class BundleRecord:
    """One record of a proof bundle: its canonical header and content, and the entry hash as sealed."""

    chain_index: int
    header: bytes
    content: bytes
    sealed: bytes  # the kept leaf (hex), or "entry:record hash" (hex) as stored


async def bundle_parts(
    session: AsyncSession,
    *,
    occurred_from: datetime | None = None,
    occurred_to: datetime | None = None,
    stream: Stream = AUDIT,
) -> AsyncGenerator[dict[str, Any] | list[BundleRecord], None]:
    """The proof bundle of the session's organisation (format: sdk/verify/src/agentrail_verify/bundle.py): first
    its header (a dict: every signed digest and signing key, where the records start), then lists of the records
    of the chain from the first to the last one of the window (all records in between: a chain is checked whole),
    each with its canonical header, canonical content and the entry hash as sealed (the kept leaf, else the
    stored one)."""
    stmt = (
        select(AuditDigest)
        .where(col(AuditDigest.stream) == stream.name, col(AuditDigest.version) >= 2)
        .order_by(col(AuditDigest.sequence))
    )
    digests = list((await session.exec(stmt)).all())
    low, high = 1, None  # without a window: to the end of the chain (unsealed records are checked by their links)
    if occurred_from is not None or occurred_to is not None:
        bounds = await stream.window(session, occurred_from, occurred_to)
        low, high = bounds if bounds else (1, 0)
    sealed_to = digests[-1].tree_size or 0 if digests else 0
    keys = []
    for key in await signing.list_keys(session):
        fields = signing.key_fields(key)
        keys.append(
            {
                "keyId": fields["key_id"],
                "publicKey": fields["public_key"],
                "validFrom": _canonical_time(key.valid_from),
                "validTo": _canonical_time(key.valid_to),
                "previousKeyId": key.previous_key_id,
                "previousKeySignature": key.previous_key_signature,
                "endorsement": key.endorsement,
            }
        )
    # records retention removed are not in the bundle: it starts after the newest retention cut, from the cut's
    # chain head and frontier, and carries the signed cut (the verifier tells retention from removal by it)
    cut = await retention.last_cut(session) if stream.name == AUDIT.name else None
    if cut is not None and low <= cut.through_index:
        low = cut.through_index + 1
    # the tree before the first record: its perfect subtrees, largest first
    ranges, start, size = [], 0, low - 1
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            ranges.append((level, start, start + (1 << level)))
            start += 1 << level
    previous = GENESIS_ENTRY
    if cut is not None and low == cut.through_index + 1:
        previous, frontier = bytes.fromhex(cut.chain_head), [list(node) for node in cut.frontier]
    else:
        tree = _Tree(session, stream)
        await tree.load([(a, b) for _, a, b in ranges])
        frontier = [[level, tree.hash(a, b).hex()] for level, a, b in ranges]
        if low > 1:
            before = await stream.entries(session, low - 1, low - 1)
            previous = before[0][1] if before else GENESIS_ENTRY
    yield {
        "format": BUNDLE_FORMAT,
        "organizationId": tenant_org(session),
        "stream": stream.name,
        "firstIndex": low,
        "previousEntryHash": previous.hex(),
        "frontier": frontier,
        # the third field of records up to here is the leaf kept at sealing; after, "entry:record hash" as stored
        "keptThrough": (sealed_to // _BLOCK) * _BLOCK,
        "digests": [digest_json(d) for d in digests],
        "keys": keys,
        "retention": retention.cut_json(cut) if cut is not None else None,
        # the erasures records may name (their records' content field is empty): not signed themselves, the
        # activity trail records them (audit.erasure_requested, audit.records_erased)
        "erasures": [
            {
                "id": claim_id,
                "complete": claim.complete,
                "recordCount": claim.record_count,
                "chainIndexesHash": claim.indexes_hash,
            }
            for claim_id, claim in (await stream.erasures(session) if stream.erasures is not None else {}).items()
        ],
    }
    after = low - 1
    while high is None or after < high:
        rows = await stream.chain_rows(session, after, BUNDLE_CHUNK, high)
        if not rows:
            break
        kept = await _kept_leaves(session, stream, rows[0].chain_index, rows[-1].chain_index)
        out = []
        for row in rows:
            # an erased record's content is gone: the field is empty, the header still names the content's hash
            erased = getattr(row.record, "erasure_id", None) is not None
            leaf = kept.get(row.chain_index)
            sealed = (
                leaf.hex()
                if leaf is not None
                else f"{row.entry_hash.hex()}:{row.record.checksum.removeprefix('sha256:')}"
            )
            out.append(
                BundleRecord(
                    row.chain_index,
                    canonical_json(stream.spec.header(row.record, row.chain_index, row.content_hash)),
                    b"" if erased else canonical_json(stream.spec.content(row.record)),
                    sealed.encode(),
                )
            )
        yield out
        after = rows[-1].chain_index


def bundle_ndjson(part: dict[str, Any] | list[BundleRecord]) -> bytes:
    """A piece of `bundle_parts` in the bundle's line form (the header's line, then a line per record)."""
    if isinstance(part, dict):
        return orjson.dumps(part) + b"\n"
    return b"".join(r.header + b"\t" + r.content + b"\t" + r.sealed + b"\n" for r in part)


class BundleJson:
    """A piece of `bundle_parts` in the bundle's JSON form: `{"apiVersion", "kind", "metadata", "bundle": <its
    header>, "records": [[header, content, sealed], ...]}`, a record per line; header and content are the
    canonical JSON texts as strings (their UTF-8 bytes are what is hashed)."""

    def __init__(self, kind: str, metadata: dict[str, Any]) -> None:
        self.kind, self.metadata, self._more = kind, metadata, False

    def convert(self, part: dict[str, Any] | list[BundleRecord]) -> bytes:
        if isinstance(part, dict):
            head = {"apiVersion": "agentrail/v1", "kind": self.kind, "metadata": self.metadata, "bundle": part}
            return orjson.dumps(head)[:-1] + b',"records":[\n'
        if not part:
            return b""
        items = b",\n".join(orjson.dumps([r.header.decode(), r.content.decode(), r.sealed.decode()]) for r in part)
        if self._more:
            items = b",\n" + items
        self._more = True
        return items

    @staticmethod
    def end() -> bytes:
        return b"\n]}"


async def bundle_lines(
    session: AsyncSession,
    *,
    occurred_from: datetime | None = None,
    occurred_to: datetime | None = None,
    stream: Stream = AUDIT,
) -> AsyncIterator[bytes]:
    """The proof bundle in its line form (`agentrail-verify` reads it as it comes)."""
    async for part in bundle_parts(session, occurred_from=occurred_from, occurred_to=occurred_to, stream=stream):
        yield bundle_ndjson(part)


async def _kept_leaves(session: AsyncSession, stream: Stream, low: int, high: int) -> dict[int, bytes]:
    first, last = (low - 1) // _BLOCK, (high - 1) // _BLOCK
    stmt = sa.select(col(AuditMerkleNode.idx), col(AuditMerkleNode.leaves)).where(
        col(AuditMerkleNode.stream) == stream.name,
        col(AuditMerkleNode.level) == STORED_LEVEL,
        col(AuditMerkleNode.idx).between(first, last),
    )
    out: dict[int, bytes] = {}
    for idx, leaves in (await session.execute(stmt)).all():
        for i in range(len(leaves or b"") // 32):
            out[idx * _BLOCK + i + 1] = bytes(leaves[i * 32 : (i + 1) * 32])
    return out
