"""Inclusion and consistency proofs (RFC 9162) over an organisation's sealed tree, from the kept nodes.

The tree of a stream has the records' entry hashes as leaves, in chain order (leaf i = chain index i + 1).
Sealing keeps every perfect subtree of 256 leaves and more (`audit_merkle_nodes`, level 8 with its leaves), so
that a proof reads O(log n) rows plus at most one block of 255 records, whatever the organisation's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select

from app.audit.models import AuditDigest, AuditMerkleNode
from app.audit.sealing import digest_json
from app.audit.streams import AUDIT, Stream
from app.db import AsyncSession
from app.errors import BadUserInput, NotFound
from app.integrity import (
    STORED_LEVEL,
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
