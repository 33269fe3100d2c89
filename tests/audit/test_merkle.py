"""RFC 9162 trees, audit paths and consistency proofs (app.integrity), and Ed25519 digest signatures."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from app.audit.signing import trust_from
from app.integrity import (
    EMPTY_ROOT,
    Frontier,
    Signer,
    consistency_ranges,
    inclusion_ranges,
    key_statement,
    leaf_hash,
    merkle_root,
    node_hash,
    root_from_inclusion,
    tree_root,
    verify_consistency,
    verify_ed25519,
)

ENTRIES = [hashlib.sha256(str(i).encode()).digest() for i in range(70)]


def mth(entries: list[bytes]) -> bytes:
    """RFC 9162 2.1.1, literally."""
    n = len(entries)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaf_hash(entries[0])
    k = 1 << ((n - 1).bit_length() - 1)
    return node_hash(mth(entries[:k]), mth(entries[k:]))


def subtree(a: int, b: int, entries: list[bytes] = ENTRIES) -> bytes:
    return mth(entries[a:b])


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 7, 8, 9, 31, 32, 33, 64, 70])
def test_frontier_root_is_the_rfc_tree_hash(size: int) -> None:
    assert tree_root(ENTRIES[:size]) == mth(ENTRIES[:size])
    # and the same as the version 1 root over the same leaves
    if size:
        assert tree_root(ENTRIES[:size]).hex() == merkle_root([e.hex() for e in ENTRIES[:size]])
    assert tree_root([]) == EMPTY_ROOT


def test_frontier_survives_json_and_reports_completed_subtrees() -> None:
    many = [hashlib.sha256(str(i).encode()).digest() for i in range(600)]
    frontier, completed = Frontier.empty(), []
    for entry in many[:300]:
        frontier.append(entry, completed)
    frontier = Frontier.from_json(frontier.size, frontier.to_json())
    for entry in many[300:]:
        frontier.append(entry, completed)
    assert frontier.root() == mth(many)
    assert [(level, idx) for level, idx, _ in completed] == [(8, 0), (8, 1), (9, 0)]
    assert completed[0][2] == mth(many[:256]) and completed[2][2] == mth(many[:512])


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 70])
def test_inclusion_proofs_verify_for_every_leaf(size: int) -> None:
    root = mth(ENTRIES[:size])
    for index in range(size):
        path = [subtree(a, b) for a, b in inclusion_ranges(index, size)]
        assert root_from_inclusion(index, size, ENTRIES[index], path) == root
        if path:
            forged = [hashlib.sha256(b"x").digest(), *path[1:]]
            assert root_from_inclusion(index, size, ENTRIES[index], forged) != root
        assert root_from_inclusion(index, size, hashlib.sha256(b"other").digest(), path) != root


def test_inclusion_path_of_the_rfc_example() -> None:
    # RFC 9162 2.1.5: the path for d0 in a tree of 7 leaves is [b, h, l]: leaf 1, leaves 2-3, leaves 4-6
    assert inclusion_ranges(0, 7) == [(1, 2), (2, 4), (4, 7)]
    assert inclusion_ranges(3, 7) == [(2, 3), (0, 2), (4, 7)]
    assert inclusion_ranges(6, 7) == [(4, 6), (0, 4)]


def test_consistency_proofs_of_the_rfc_example() -> None:
    assert consistency_ranges(3, 7) == [(2, 3), (3, 4), (0, 2), (4, 7)]
    assert consistency_ranges(4, 7) == [(4, 7)]
    assert consistency_ranges(6, 7) == [(4, 6), (6, 7), (0, 4)]


def test_consistency_proofs_verify_between_any_two_sizes() -> None:
    for old in range(1, 40):
        for new in range(old, 40):
            proof = [subtree(a, b) for a, b in consistency_ranges(old, new)]
            old_root, new_root = mth(ENTRIES[:old]), mth(ENTRIES[:new])
            assert verify_consistency(old, new, old_root, new_root, proof), (old, new)
            if new > old:
                # a tree whose old part was rewritten is not consistent with the old root
                rewritten = [hashlib.sha256(b"evil").digest(), *ENTRIES[1:new]]
                assert not verify_consistency(old, new, old_root, mth(rewritten), proof)


def test_ed25519_signatures_and_key_statements() -> None:
    signer = Signer(bytes(range(32)))
    payload = {"a": 1, "when": datetime(2026, 1, 1, tzinfo=UTC)}
    signature = signer.sign(payload)
    assert signature.startswith("ed25519:") and verify_ed25519(signer.public_key, payload, signature)
    assert not verify_ed25519(signer.public_key, {**payload, "a": 2}, signature)
    assert not verify_ed25519(Signer(bytes(32)).public_key, payload, signature)
    assert not verify_ed25519(signer.public_key, payload, "ed25519:not base64!")
    assert signer.key_id.startswith("ed25519:") and len(signer.key_id) == 40
    assert "ed25519:" in repr(signer) and str(bytes(range(32))) not in repr(signer)


def _row(signer: Signer, **fields):
    base = {
        "id": signer.key_id,
        "public_key": signer.public_key,
        "valid_from": datetime(2026, 1, 1, tzinfo=UTC),
        "valid_to": None,
        "previous_key_id": None,
        "previous_key_signature": None,
        "endorsement": None,
    }
    return SimpleNamespace(**(base | fields))


def test_trust_follows_rotation_statements_and_nothing_else() -> None:
    old, new, evil = Signer(b"\x01" * 32), Signer(b"\x02" * 32), Signer(b"\x03" * 32)
    t0, t1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
    old_row = _row(old, valid_from=t0, valid_to=t1)
    new_row = _row(
        new,
        valid_from=t1,
        previous_key_id=old.key_id,
        previous_key_signature=new.sign(key_statement(old.key_id, old.public_key, t0, t1)),
        endorsement=old.sign(key_statement(new.key_id, new.public_key, t1, None)),
    )
    evil_row = _row(evil, valid_from=t1, previous_key_id=old.key_id)
    rows = [old_row, new_row, evil_row]
    assert set(trust_from(rows, new.public_key)) == {new.key_id, old.key_id}  # backwards
    assert set(trust_from(rows, old.public_key)) == {old.key_id, new.key_id}  # forwards (endorsed)
    assert set(trust_from(rows, evil.public_key)) == {evil.key_id}
    # a statement over altered validity no longer vouches
    old_row.valid_to = datetime(2027, 1, 1, tzinfo=UTC)
    assert set(trust_from(rows, new.public_key)) == {new.key_id}
