"""Tamper evidence: app.integrity (canonical JSON, checksums, Merkle roots, signed digests)."""

import hashlib
import json
import uuid
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from app.integrity import (
    DIGEST_FIELDS,
    GENESIS_HASH,
    RECORD_CHECKSUM_FIELDS,
    canonical_json,
    checksum_content,
    digest_hash,
    digest_payload,
    digest_signing_key,
    legacy_canonical_json,
    merkle_root,
    record_checksum,
    sign_digest,
    verify_digest_signature,
)

WHEN = datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def record(**overrides: object) -> dict:
    content = {
        "id": "log_01HX3K9Z8Q7W6E5R4T3Y2U1I0O",
        "org_id": "org_01HX3K9Z8Q7W6E5R4T3Y2U1I0A",
        "occurred_at": WHEN,
        "action": "tool_use",
        "agent_id": "agent_01HX3K9Z8Q7W6E5R4T3Y2U1I0B",
        "trace_id": "trace-1",
        "span_id": "span-2",
        "parent_span_id": "span-1",
        "prompt": "Summarise the ticket — café ☕",
        "response": None,
        "metadata": {"model": "gpt-4o", "nested": {"b": 1, "a": [1, 2.5, {"z": None, "y": True}]}},
        "args": ["--limit", 10],
        "result": {"ok": True},
        "status": "ok",
        "duration_ms": 12.5,
        "idempotency_key": "retry-1",
        "execution_id": "exec-9",
        "verb": "orders.refund",
        "provider": "stripe",
        "risk_level": "HIGH",
        "governance_status": "approved",
        "dry_run": False,
        "idempotent": True,
        "tenant_id": None,
        "credential_masked": False,
    }
    content.update(overrides)
    return content


# ---------------------------------------------------------------------------------------------------
# canonical_json


def test_keys_sorted_at_every_level_without_whitespace() -> None:
    value = {"b": {"z": 1, "a": {"d": 4, "c": 3}}, "a": [{"y": 1, "x": 2}]}
    assert canonical_json(value) == b'{"a":[{"x":2,"y":1}],"b":{"a":{"c":3,"d":4},"z":1}}'


def test_key_order_does_not_matter() -> None:
    one = {"a": 1, "b": {"c": [1, {"e": 5, "d": 4}], "f": None}}
    two = {"b": {"f": None, "c": [1, {"d": 4, "e": 5}]}, "a": 1}
    assert canonical_json(one) == canonical_json(two)


def test_utf8_not_escaped() -> None:
    assert canonical_json({"s": "café ☕ 日本"}) == '{"s":"café ☕ 日本"}'.encode()


def test_datetimes_are_utc_with_microseconds_and_z() -> None:
    paris = timezone(timedelta(hours=2))
    assert canonical_json(WHEN) == b'"2024-05-01T10:00:00.123456Z"'
    assert canonical_json(datetime(2024, 5, 1, 12, 0, tzinfo=paris)) == b'"2024-05-01T10:00:00.000000Z"'
    assert canonical_json(datetime(2024, 5, 1, 10, 0)) == b'"2024-05-01T10:00:00.000000Z"'  # naive = UTC
    assert canonical_json({"d": date(2024, 5, 1)}) == b'{"d":"2024-05-01"}'
    # the same instant in two zones is one value
    assert canonical_json(WHEN) == canonical_json(WHEN.astimezone(paris))


def test_other_native_types() -> None:
    assert canonical_json(uuid.UUID(int=1)) == b'"00000000-0000-0000-0000-000000000001"'
    assert canonical_json((1, "a")) == canonical_json([1, "a"])
    assert canonical_json([True, False, None]) == b"[true,false,null]"


def test_numbers_hash_as_postgres_jsonb_returns_them() -> None:
    # JSONB returns 1e16 as 10000000000000000 and 2.0 as 2.0 (NUMERIC): integral floats hash as ints.
    assert canonical_json(2.0) == canonical_json(2) == b"2"
    assert canonical_json(1e16) == canonical_json(10**16) == b"10000000000000000"
    assert canonical_json({"x": -3.0}) == b'{"x":-3}'
    assert canonical_json(0.1) == b"0.1"
    assert canonical_json(1e-7) == canonical_json(float("1e-7"))
    assert canonical_json(1.5e20) == canonical_json(150000000000000000000)
    assert canonical_json(2**64 + 1) == b"18446744073709551617"  # every integer exactly
    assert canonical_json(2**64 - 1) == b"18446744073709551615" != canonical_json(str(2**64 - 1))
    assert canonical_json(True) != canonical_json(1)
    # the legacy checksums' form: beyond 63 bits a float, or the decimal string when no float equals it
    assert legacy_canonical_json(2**64 + 1) == b'"18446744073709551617"'
    assert legacy_canonical_json(2**64) == b"1.8446744073709552e+19"


def test_read_back_from_json_gives_the_same_bytes() -> None:
    value = {"f": 1e16, "g": 2.0, "h": 0.30000000000000004, "big": 1.5e20, "t": WHEN.isoformat()}
    # what PostgreSQL would hand back: numbers without exponent, read by a JSON parser
    stored = '{"f": 10000000000000000, "g": 2.0, "h": 0.30000000000000004, "big": 150000000000000000000, '
    stored += f'"t": "{WHEN.isoformat()}"}}'
    assert canonical_json(json.loads(stored)) == canonical_json(value)


def test_deterministic_across_calls() -> None:
    content = record()
    assert len({canonical_json(content) for _ in range(5)}) == 1


def test_unsupported_values_raise_type_error() -> None:
    with pytest.raises(TypeError):
        canonical_json({1: "int key"})
    with pytest.raises(TypeError):
        canonical_json({"s": {1, 2}})
    with pytest.raises(TypeError):
        canonical_json(b"bytes")


# ---------------------------------------------------------------------------------------------------
# record_checksum


def test_checksum_format_and_known_value() -> None:
    assert record_checksum({}) == "sha256:" + hashlib.sha256(b"{}").hexdigest()
    checksum = record_checksum(record())
    assert checksum.startswith("sha256:")
    assert len(checksum) == 7 + 64
    int(checksum[7:], 16)
    assert checksum == "sha256:" + hashlib.sha256(legacy_canonical_json(record())).hexdigest()


def test_checksum_is_deterministic_and_order_independent() -> None:
    content = record()
    reordered = dict(reversed(list(content.items())))
    reordered["metadata"] = {"nested": {"a": [1, 2.5, {"y": True, "z": None}], "b": 1}, "model": "gpt-4o"}
    assert record_checksum(content) == record_checksum(reordered) == record_checksum(record())


CHANGES = {
    "id": "log_other",
    "org_id": "org_other",
    "occurred_at": WHEN + timedelta(microseconds=1),
    "action": "llm_call",
    "agent_id": None,
    "trace_id": "trace-2",
    "span_id": "span-3",
    "parent_span_id": None,
    "prompt": "Summarise the ticket — cafe ☕",
    "response": "",
    "metadata": {"model": "gpt-4o", "nested": {"b": 1, "a": [1, 2.5, {"z": None, "y": False}]}},
    "args": ["--limit", 11],
    "result": {"ok": False},
    "status": "error",
    "duration_ms": 12.6,
    "idempotency_key": None,
    "execution_id": "exec-10",
    "verb": "orders.cancel",
    "provider": "paypal",
    "risk_level": "LOW",
    "governance_status": "blocked",
    "dry_run": True,
    "idempotent": False,
    "tenant_id": "tenant-1",
    "credential_masked": True,
}


def test_changes_cover_every_checksum_field() -> None:
    assert set(CHANGES) == set(RECORD_CHECKSUM_FIELDS) == set(record())


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_checksum_changes_with_any_field(field: str) -> None:
    assert record_checksum(record(**{field: CHANGES[field]})) != record_checksum(record())


def test_missing_and_null_differ() -> None:
    content = record()
    del content["tenant_id"]
    assert record_checksum(content) != record_checksum(record())


def test_checksum_content_from_mapping_and_from_row() -> None:
    full = record()
    partial = {key: value for key, value in full.items() if value is not None} | {"seq": 7, "extra": 1}
    assert checksum_content(partial) == full  # absent fields are None, others ignored

    class MetaData:  # what a SQLModel class exposes as `metadata`
        pass

    class Row:
        metadata = MetaData()

        def __init__(self, values: dict) -> None:
            for key, value in values.items():
                setattr(self, "metadata_" if key == "metadata" else key, value)

    row = Row(full)
    assert checksum_content(row) == full
    assert record_checksum(checksum_content(row)) == record_checksum(full)


# ---------------------------------------------------------------------------------------------------
# merkle_root


def leaf_checksums(count: int) -> list[str]:
    return [record_checksum({"i": i}) for i in range(count)]


def rfc6962_root(leaves: list[bytes]) -> bytes:
    """Reference: RFC 6962 section 2.1, splitting at the largest power of two below n."""
    if len(leaves) == 1:
        return sha(b"\x00" + leaves[0])
    split = 1
    while split * 2 < len(leaves):
        split *= 2
    return sha(b"\x01" + rfc6962_root(leaves[:split]) + rfc6962_root(leaves[split:]))


def raw(checksum: str) -> bytes:
    return bytes.fromhex(checksum.removeprefix("sha256:"))


def test_merkle_root_of_nothing() -> None:
    assert merkle_root([]) == hashlib.sha256(b"").hexdigest()


def test_merkle_root_of_one_two_three() -> None:
    a, b, c = leaf_checksums(3)
    la, lb, lc = (sha(b"\x00" + raw(x)) for x in (a, b, c))
    assert merkle_root([a]) == la.hex()
    assert merkle_root([a, b]) == sha(b"\x01" + la + lb).hex()
    assert merkle_root([a, b, c]) == sha(b"\x01" + sha(b"\x01" + la + lb) + lc).hex()


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 33, 100, 1000])
def test_merkle_root_matches_rfc6962(count: int) -> None:
    leaves = leaf_checksums(count)
    assert merkle_root(leaves) == rfc6962_root([raw(x) for x in leaves]).hex()


def test_merkle_root_accepts_bare_hex_and_iterables() -> None:
    leaves = leaf_checksums(5)
    bare = [x.removeprefix("sha256:") for x in leaves]
    assert merkle_root(bare) == merkle_root(leaves) == merkle_root(iter(leaves))
    assert len(merkle_root(leaves)) == 64


def test_merkle_root_detects_change_order_and_omission() -> None:
    leaves = leaf_checksums(7)
    root = merkle_root(leaves)
    for index in range(len(leaves)):
        changed = list(leaves)
        changed[index] = record_checksum({"i": "tampered"})
        assert merkle_root(changed) != root
    swapped = [leaves[1], leaves[0], *leaves[2:]]
    assert merkle_root(swapped) != root
    assert merkle_root(leaves[:-1]) != root
    # no second preimage from an inner node presented as a leaf
    inner = sha(b"\x01" + sha(b"\x00" + raw(leaves[0])) + sha(b"\x00" + raw(leaves[1]))).hex()
    assert merkle_root([inner]) != merkle_root(leaves[:2])


MALFORMED_LEAVES = ["", "sha256:", "zz" * 32, "ab" * 31, "sha256:" + "ab" * 33, "md5:" + "ab" * 32]


@pytest.mark.parametrize("bad", MALFORMED_LEAVES)
def test_merkle_root_rejects_malformed_leaves(bad: str) -> None:
    with pytest.raises(ValueError):
        merkle_root([record_checksum({}), bad])


# ---------------------------------------------------------------------------------------------------
# Digests

KEY = digest_signing_key("app-secret-key-for-tests")


def payload(**overrides: object) -> dict:
    values = {
        "org_id": "org_01HX3K9Z8Q7W6E5R4T3Y2U1I0A",
        "sequence": 42,
        "from_seq": 1001,
        "to_seq": 1500,
        "first_occurred_at": WHEN,
        "last_occurred_at": WHEN + timedelta(minutes=1),
        "record_count": 500,
        "merkle_root": merkle_root(leaf_checksums(4)),
        "previous_hash": "sha256:" + "ab" * 32,
        "created_at": WHEN + timedelta(minutes=2),
    }
    values.update(overrides)
    return digest_payload(**values)


def test_digest_payload_fields() -> None:
    assert tuple(payload()) == DIGEST_FIELDS


def test_sign_and_verify() -> None:
    signature = sign_digest(KEY, payload())
    assert signature.startswith("hmac-sha256:") and len(signature) == 12 + 64
    assert verify_digest_signature(KEY, payload(), signature)
    assert signature == sign_digest(KEY, dict(reversed(list(payload().items()))))


DIGEST_CHANGES = {
    "org_id": "org_other",
    "sequence": 43,
    "from_seq": 1000,
    "to_seq": 1501,
    "first_occurred_at": WHEN - timedelta(microseconds=1),
    "last_occurred_at": None,
    "record_count": 499,
    "merkle_root": merkle_root(leaf_checksums(5)),
    "previous_hash": GENESIS_HASH,
    "created_at": WHEN,
}


def test_digest_changes_cover_every_field() -> None:
    assert set(DIGEST_CHANGES) == set(DIGEST_FIELDS)


@pytest.mark.parametrize("field", sorted(DIGEST_CHANGES))
def test_signature_fails_on_any_field_change(field: str) -> None:
    signature = sign_digest(KEY, payload())
    changed = payload(**{field: DIGEST_CHANGES[field]})
    assert not verify_digest_signature(KEY, changed, signature)
    assert digest_hash(changed) != digest_hash(payload())


def test_signature_fails_with_another_key_or_a_forged_value() -> None:
    signature = sign_digest(KEY, payload())
    assert not verify_digest_signature(digest_signing_key("another-secret"), payload(), signature)
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    hex_part = signature.removeprefix("hmac-sha256:")
    for forged in (flipped, "", "hmac-sha256:", signature.upper(), hex_part, "sha256:" + hex_part):
        assert not verify_digest_signature(KEY, payload(), forged)
    assert not verify_digest_signature(KEY, payload(), "hmac-sha256:é")


def test_signing_key_derivation() -> None:
    assert digest_signing_key("s") == digest_signing_key(b"s")
    assert digest_signing_key("s") != digest_signing_key("t")
    assert len(KEY) == 32 and KEY != b"app-secret-key-for-tests"
    with pytest.raises(ValueError):
        sign_digest(b"", payload())


def test_digest_hash_chains() -> None:
    first = payload(sequence=1, previous_hash=GENESIS_HASH)
    second = payload(sequence=2, previous_hash=digest_hash(first))
    assert digest_hash(first).startswith("sha256:") and len(digest_hash(first)) == 71
    assert second["previous_hash"] == digest_hash(first)
    assert digest_hash(first) == "sha256:" + hashlib.sha256(canonical_json(first)).hexdigest()
    assert GENESIS_HASH == "sha256:" + "0" * 64
