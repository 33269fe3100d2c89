"""Tamper evidence for audit records: canonical JSON, record checksums, Merkle roots, signed digests.

Public API
    canonical_json(obj) -> bytes                     one byte string per value, the same on every run
    record_checksum(content) -> "sha256:<hex>"       legacy checksums (records written before the chain)
    AUDIT_CHAIN, ChainSpec, chain_hashes(...)       the chain every record joins at write time (see below)
    content_hash / record_hash / chain_link          its three hashes, GENESIS_ENTRY before the first record
    RECORD_CHECKSUM_FIELDS, checksum_content(record) the fields to hash, picked from a dict or a row
    merkle_root(leaves) -> "<hex>"                   RFC 6962-style root over record checksums
    digest_payload(...) -> dict                      the signed content of one digest
    digest_hash(payload) -> "sha256:<hex>"           what the next digest's `previous_hash` holds
    digest_signing_key(secret_key) -> bytes          a key for digests only, derived from the app secret
    sign_digest(key, payload) -> "hmac-sha256:<hex>"
    verify_digest_signature(key, payload, signature) -> bool   (constant-time comparison)
    GENESIS_HASH                                     `previous_hash` of an organisation's first digest

Canonical JSON: object keys sorted at every level, no whitespace, UTF-8 (not \\u-escaped), datetimes as
UTC ISO 8601 with microseconds and `Z` (`2024-05-01T10:00:00.000000Z`; naive datetimes are taken as
UTC), dates as `YYYY-MM-DD`. Numbers are normalised so that a value hashes the same before it is
written and after it is read back from PostgreSQL: JSONB keeps numbers as NUMERIC and returns an integral
float such as 1e16 or 2.0 without its exponent or fraction (`10000000000000000`), so integral floats
hash as integers (2.0 and 2 give one checksum; beyond 2**53 the integer of the float's shortest decimal
text, as JSONB stores it). Every integer is written exactly, as its decimal digits (2**64-1 and the string
"18446744073709551615" differ). Legacy record checksums (`record_checksum`, before the chain) wrote integers
beyond 63 bits as the float they equal or their decimal string: kept so that those checksums verify.
Keys must be strings; other types raise TypeError.
NaN and infinities cannot come from JSON and serialise as null.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import orjson

_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
_INT64 = 2**63
_UINT64 = 2**64
_EXACT = 2**53  # integral floats up to here are exactly their shortest decimal text


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        # orjson drops a zero microsecond part and keeps offsets: spell one fixed form instead.
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, time):
        return value.isoformat(timespec="microseconds")
    raise TypeError(f"{type(value).__name__} has no canonical JSON form")


_PLAIN = frozenset({str, bool, type(None)})  # leaves that JSONB gives back unchanged: the bulk of a record


def _integer(value: int) -> Any:
    # orjson writes 64-bit integers (signed and unsigned); any other is written as its exact decimal digits
    return value if -_INT64 <= value < _UINT64 else orjson.Fragment(str(value).encode())


def _normalise(value: Any) -> Any:
    """Numbers as PostgreSQL JSONB would give them back (see the module docstring); containers copied."""
    kind = type(value)
    if kind is dict:
        return {key: item if type(item) in _PLAIN else _normalise(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [item if type(item) in _PLAIN else _normalise(item) for item in value]
    if kind is float:
        if value.is_integer():
            # the integer JSONB gives back is the float's shortest decimal text, which beyond 2**53 is not
            # the float's exact binary value (4.611051665908075e16 reads back as 46110516659080750)
            return _integer(int(value) if -_EXACT <= value <= _EXACT else int(Decimal(repr(value))))
        return value
    if kind is int:
        return _integer(value)
    if kind not in _PLAIN and isinstance(value, dict):
        return {key: _normalise(item) for key, item in value.items()}
    if kind not in _PLAIN and isinstance(value, list | tuple):
        return [_normalise(item) for item in value]
    return value


def _legacy_normalise(value: Any) -> Any:
    """`_normalise` as record checksums before the chain had it: integers beyond 63 bits as a float or a string."""
    kind = type(value)
    if kind is dict:
        return {key: item if type(item) in _PLAIN else _legacy_normalise(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [item if type(item) in _PLAIN else _legacy_normalise(item) for item in value]
    if kind is float:
        if value.is_integer() and -_INT64 <= value < _INT64:
            # the integer JSONB gives back is the float's shortest decimal text, which beyond 2**53 is not
            # the float's exact binary value (4.611051665908075e16 reads back as 46110516659080750)
            return int(value) if -_EXACT <= value <= _EXACT else int(Decimal(repr(value)))
        return value
    if kind is int and not -_INT64 <= value < _INT64:
        try:
            as_float = float(value)
        except OverflowError:
            return str(value)
        return as_float if as_float == value else str(value)
    if kind not in _PLAIN and isinstance(value, dict):
        return {key: _legacy_normalise(item) for key, item in value.items()}
    if kind not in _PLAIN and isinstance(value, list | tuple):
        return [_legacy_normalise(item) for item in value]
    return value


def canonical_json(obj: Any) -> bytes:
    """The canonical serialisation of a JSON-like value (rules in the module docstring)."""
    return orjson.dumps(_normalise(obj), default=_default, option=_OPTIONS)


def legacy_canonical_json(obj: Any) -> bytes:
    """The form record checksums written before the chain used: integers from 2**63 to 2**64-1 as the float
    they equal or their decimal string (so 2**64-1 and "18446744073709551615" hashed alike). Only
    `record_checksum` uses it, to verify those checksums."""
    return orjson.dumps(_legacy_normalise(obj), default=_default, option=_OPTIONS)


# ---------------------------------------------------------------------------------------------------
# Record checksums

# What the ingest path hashes, computed after masking (so the checksum covers what is stored). Every
# field is present, None when unset: a missing key and a null one hash differently. `credential_masked`
# is included so that flipping the flag is caught too. The server-assigned `seq` and `received_at` are
# not: they do not exist when the checksum is computed.
RECORD_CHECKSUM_FIELDS: tuple[str, ...] = (
    "id",
    "org_id",
    "occurred_at",
    "action",
    "agent_id",
    "trace_id",
    "span_id",
    "parent_span_id",
    "prompt",
    "response",
    "metadata",
    "args",
    "result",
    "status",
    "duration_ms",
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
)


def checksum_content(record: Any, fields: Iterable[str] = RECORD_CHECKSUM_FIELDS) -> dict[str, Any]:
    """Pick `fields` from a mapping or from a row object (a field `metadata` is also looked up as the
    attribute `metadata_`, the name SQLAlchemy models must use); absent fields are None."""
    if isinstance(record, Mapping):
        return {name: record.get(name) for name in fields}
    # `name_` first: on a SQLModel row, `metadata` is the class's SQLAlchemy MetaData, not the column.
    return {
        name: getattr(record, name + "_") if hasattr(record, name + "_") else getattr(record, name, None)
        for name in fields
    }


def record_checksum(content: Mapping[str, Any]) -> str:
    """`sha256:` + hex SHA-256 of canonical_json(content). Generic over the dict: the caller decides the
    fields (RECORD_CHECKSUM_FIELDS is what ingest and verification use, via checksum_content)."""
    return "sha256:" + hashlib.sha256(legacy_canonical_json(content)).hexdigest()


# ---------------------------------------------------------------------------------------------------
# Merkle root

_LEAF = b"\x00"
_NODE = b"\x01"


def _leaf_bytes(leaf: str) -> bytes:
    digest = leaf.removeprefix("sha256:")
    try:
        raw = bytes.fromhex(digest)
    except ValueError:
        raise ValueError(f"not a sha256 hex digest: {leaf!r}") from None
    if len(raw) != 32:
        raise ValueError(f"not a sha256 hex digest: {leaf!r}")
    return raw


def merkle_root(leaves: Iterable[str]) -> str:
    """Hex SHA-256 Merkle root over record checksums ("sha256:<hex>" or bare hex), in the given order.

    Leaves are hashed as H(0x00 || digest bytes) and inner nodes as H(0x01 || left || right), so a leaf
    can never pass for a node (RFC 6962). A level with an odd count promotes its last node unchanged
    rather than duplicating it, which gives exactly the RFC 6962 tree shape. No leaves: H("").
    """
    level = [hashlib.sha256(_LEAF + _leaf_bytes(leaf)).digest() for leaf in leaves]
    if not level:
        return hashlib.sha256(b"").hexdigest()
    while len(level) > 1:
        lefts = range(0, len(level) - 1, 2)
        paired = [hashlib.sha256(_NODE + level[i] + level[i + 1]).digest() for i in lefts]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0].hex()


# ---------------------------------------------------------------------------------------------------
# Digests

# The first digest of an organisation chains to this.
GENESIS_HASH = "sha256:" + "0" * 64
DIGEST_FIELDS: tuple[str, ...] = (
    "org_id",
    "sequence",
    "from_seq",
    "to_seq",
    "first_occurred_at",
    "last_occurred_at",
    "record_count",
    "merkle_root",
    "previous_hash",
    "created_at",
)
_SIGNATURE_SCHEME = "hmac-sha256:"
_KEY_PURPOSE = b"agentrail audit digest signing v1"


def digest_payload(
    *,
    org_id: str,
    sequence: int,
    from_seq: int,
    to_seq: int,
    first_occurred_at: datetime | None,
    last_occurred_at: datetime | None,
    record_count: int,
    merkle_root: str,
    previous_hash: str,
    created_at: datetime,
) -> dict[str, Any]:
    """The content a digest hashes and signs, with the names of the audit_digests columns: the
    organisation, the digest's position in its chain, the bounds of the records it seals (ingest `seq`
    range and time range), how many, their Merkle root, the previous digest's hash and when it was made."""
    return {
        "org_id": org_id,
        "sequence": sequence,
        "from_seq": from_seq,
        "to_seq": to_seq,
        "first_occurred_at": first_occurred_at,
        "last_occurred_at": last_occurred_at,
        "record_count": record_count,
        "merkle_root": merkle_root,
        "previous_hash": previous_hash,
        "created_at": created_at,
    }


def digest_hash(payload: Mapping[str, Any]) -> str:
    """`sha256:` + hex SHA-256 of canonical_json(payload): the chain link, checkable without the key."""
    return "sha256:" + hashlib.sha256(canonical_json(payload)).hexdigest()


def digest_signing_key(secret_key: str | bytes) -> bytes:
    """A key used for digests only, derived from the application secret (never the secret itself)."""
    raw = secret_key.encode() if isinstance(secret_key, str) else secret_key
    return hmac.new(raw, _KEY_PURPOSE, hashlib.sha256).digest()


def sign_digest(secret: bytes, payload: Mapping[str, Any]) -> str:
    """`hmac-sha256:` + hex HMAC-SHA256(secret, canonical_json(payload))."""
    if not secret:
        raise ValueError("the digest signing key is empty")
    return _SIGNATURE_SCHEME + hmac.new(secret, canonical_json(payload), hashlib.sha256).hexdigest()


def verify_digest_signature(secret: bytes, payload: Mapping[str, Any], signature: str) -> bool:
    """Whether `signature` is sign_digest(secret, payload), compared in constant time."""
    expected = sign_digest(secret, payload)
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogatepass"))


# ---------------------------------------------------------------------------------------------------
# The chain: every record commits to its predecessor in its organisation's stream, at write time
#
#   content_hash = SHA-256(canonical_json({content fields}))          prompt, response, metadata, args, result
#   header       = canonical_json({header fields, chain_index, content_hash: hex})
#   record_hash  = SHA-256(header)                                      stored as `checksum` ("sha256:<hex>")
#   entry_hash   = SHA-256(previous entry_hash || record_hash)         32 + 32 raw bytes; GENESIS_ENTRY first
#
# The content is committed to through its own hash, so that erasing it later (the content only) keeps every
# record hash, entry hash, Merkle root and signature valid: the header still names the content's hash.


@dataclass(frozen=True, slots=True)
class ChainSpec:
    """Which fields of a stream's records are header (kept for ever) and which are content (erasable)."""

    header_fields: tuple[str, ...]
    content_fields: tuple[str, ...]

    def content(self, record: Any) -> dict[str, Any]:
        return checksum_content(record, self.content_fields)

    def header(self, record: Any, chain_index: int, content_digest: bytes) -> dict[str, Any]:
        header = checksum_content(record, self.header_fields)
        header["chain_index"] = chain_index
        header["content_hash"] = content_digest.hex()
        return header


GENESIS_ENTRY = bytes(32)  # the predecessor of an organisation's first record
AUDIT_CONTENT_FIELDS: tuple[str, ...] = ("prompt", "response", "metadata", "args", "result")
AUDIT_CHAIN = ChainSpec(
    header_fields=tuple(f for f in RECORD_CHECKSUM_FIELDS if f not in AUDIT_CONTENT_FIELDS),
    content_fields=AUDIT_CONTENT_FIELDS,
)


# the activity trail (app.activity): who changed what; its metadata is the content
ACTIVITY_CHAIN = ChainSpec(
    header_fields=(
        "id",
        "org_id",
        "actor_type",
        "actor_id",
        "actor_name",
        "actor_email",
        "action",
        "target_type",
        "target_id",
        "target_name",
        "occurred_at",
        "source_ip",
        "user_agent",
    ),
    content_fields=("metadata",),
)


def content_hash(content: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(canonical_json(content)).digest()


def record_hash(header: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(canonical_json(header)).digest()


def chain_link(previous_entry: bytes, record_digest: bytes) -> bytes:
    """entry_hash = SHA-256(previous entry_hash || record_hash)."""
    return hashlib.sha256(previous_entry + record_digest).digest()


@dataclass(frozen=True, slots=True)
class ChainHashes:
    content_hash: bytes
    record_hash: bytes
    entry_hash: bytes

    @property
    def checksum(self) -> str:
        return "sha256:" + self.record_hash.hex()


def chain_hashes(
    spec: ChainSpec, record: Any, chain_index: int, previous_entry: bytes, *, content_digest: bytes | None = None
) -> ChainHashes:
    """The three hashes of `record` at position `chain_index` (1-based) after `previous_entry`.
    `content_digest`: the content's hash when known (computed outside the ingest lock, or kept after erasure)."""
    if content_digest is None:
        content_digest = content_hash(spec.content(record))
    digest = record_hash(spec.header(record, chain_index, content_digest))
    return ChainHashes(content_digest, digest, chain_link(previous_entry, digest))


# ---------------------------------------------------------------------------------------------------
# RFC 9162 Merkle trees over an organisation's whole chain (section 2.1): leaves are the records' entry
# hashes, in chain order (leaf 0 = chain index 1). A signed digest names the root of the tree of every record
# up to its last one, so that any two digests are linked by a consistency proof and any record by an
# inclusion proof, as in Certificate Transparency.


def leaf_hash(entry_hash: bytes) -> bytes:
    return hashlib.sha256(_LEAF + entry_hash).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


EMPTY_ROOT = hashlib.sha256(b"").digest()
STORED_LEVEL = 8  # perfect subtrees of 2**8 leaves and above are kept at sealing (their leaves with level 8)


@dataclass(slots=True)
class Frontier:
    """The perfect subtrees that make up a tree of `size` leaves, largest first: (level, hash). Appending a
    leaf merges equal neighbours; each merge that completes a subtree of level >= STORED_LEVEL is reported,
    so that sealing can keep it for proofs. The root folds them from the right (RFC 9162 MTH)."""

    size: int
    nodes: list[tuple[int, bytes]]

    @classmethod
    def empty(cls) -> Frontier:
        return cls(0, [])

    def append(self, entry_hash: bytes, completed: list[tuple[int, int, bytes]] | None = None) -> None:
        """`completed`, when given, receives (level, index, hash) of each subtree of level >= STORED_LEVEL
        completed (index = its first leaf // 2**level)."""
        nodes = self.nodes
        level, value = 0, hashlib.sha256(_LEAF + entry_hash).digest()
        self.size += 1
        while nodes and nodes[-1][0] == level:
            value = hashlib.sha256(_NODE + nodes.pop()[1] + value).digest()
            level += 1
            if completed is not None and level >= STORED_LEVEL:
                completed.append((level, (self.size - 1) >> level, value))
        nodes.append((level, value))

    def root(self) -> bytes:
        if not self.nodes:
            return EMPTY_ROOT
        value = self.nodes[-1][1]
        for _, left in reversed(self.nodes[:-1]):
            value = hashlib.sha256(_NODE + left + value).digest()
        return value

    def to_json(self) -> list[list[Any]]:
        return [[level, value.hex()] for level, value in self.nodes]

    @classmethod
    def from_json(cls, size: int, data: list[list[Any]]) -> Frontier:
        return cls(size, [(int(level), bytes.fromhex(value)) for level, value in data])


def tree_root(entry_hashes: Iterable[bytes]) -> bytes:
    frontier = Frontier.empty()
    for entry in entry_hashes:
        frontier.append(entry)
    return frontier.root()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1): RFC 9162's k."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges [start, end) whose subtree hashes form the audit path of leaf `index` (0-based) in a
    tree of `size` leaves, nearest first (RFC 9162 2.1.3.1)."""
    if not 0 <= index < size:
        raise ValueError("the leaf is not in the tree")
    path: list[tuple[int, int]] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append((start + k, end))
            end = start + k
        else:
            path.append((start, start + k))
            start += k
    return list(reversed(path))


def consistency_ranges(old: int, new: int) -> list[tuple[int, int]]:
    """The leaf ranges whose subtree hashes form the consistency proof from a tree of `old` leaves to one of
    `new` (RFC 9162 2.1.4.1), in proof order."""
    if not 0 < old <= new:
        raise ValueError("a consistency proof needs 0 < old size <= new size")
    if old == new:
        return []

    def subproof(m: int, start: int, end: int, whole: bool) -> list[tuple[int, int]]:
        n = end - start
        if m == n:
            return [] if whole else [(start, end)]
        k = _split(n)
        if m <= k:
            return [*subproof(m, start, start + k, whole), (start + k, end)]
        return [*subproof(m - k, start + k, end, False), (start, start + k)]

    return subproof(old, 0, new, True)


def root_from_inclusion(index: int, size: int, leaf: bytes, path: list[bytes]) -> bytes:
    """The root an audit path leads to (RFC 9162 2.1.3.2); `leaf` is the entry hash."""
    if not 0 <= index < size:
        raise ValueError("the leaf is not in the tree")
    fn, sn, value = index, size - 1, leaf_hash(leaf)
    for sibling in path:
        if sn == 0:
            raise ValueError("the audit path is too long")
        if fn & 1 or fn == sn:
            value = node_hash(sibling, value)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            value = node_hash(value, sibling)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ValueError("the audit path is too short")
    return value


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 2.1.4.2."""
    if not 0 < old <= new:
        return False
    if old == new:
        return not proof and old_root == new_root
    path = list(proof)
    if old & (old - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old_root and sr == new_root


# ---------------------------------------------------------------------------------------------------
# Signed digests (version 2): Ed25519 over the canonical payload

DIGEST_V2_FIELDS: tuple[str, ...] = (
    "version",
    "org_id",
    "sequence",
    "from_index",
    "tree_size",
    "record_count",
    "merkle_root",
    "chain_head",
    "previous_hash",
    "created_at",
    "key_id",
)


def digest_v2_payload(**fields: Any) -> dict[str, Any]:
    """The signed content of a version 2 digest: this digest's place in the organisation's digest chain
    (sequence, previous digest's hash), the records it adds (chain indexes from_index..tree_size, their
    count), the RFC 9162 root of the tree of every record up to tree_size, the chain head (entry hash of
    record tree_size), when, and the id of the key that signs it."""
    if set(fields) != set(DIGEST_V2_FIELDS):
        raise ValueError("a version 2 digest has exactly the fields DIGEST_V2_FIELDS")
    return {name: fields[name] for name in DIGEST_V2_FIELDS}


def key_id(public_key: bytes) -> str:
    """`ed25519:` + the first 16 bytes of SHA-256(raw public key), hex: 40 characters."""
    return "ed25519:" + hashlib.sha256(public_key).hexdigest()[:32]


class Signer:
    """An Ed25519 private key (from its 32-byte seed) that signs canonical payloads."""

    def __init__(self, seed: bytes) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key = public_key_bytes(self._key.public_key())
        self.key_id = key_id(self.public_key)

    def sign(self, payload: Mapping[str, Any]) -> str:
        """`ed25519:` + base64 of the signature over canonical_json(payload)."""
        return _ED25519 + base64.b64encode(self._key.sign(canonical_json(payload))).decode()

    def __repr__(self) -> str:  # never the private half
        return f"Signer({self.key_id})"


_ED25519 = "ed25519:"


def public_key_bytes(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def verify_ed25519(public_key: bytes, payload: Mapping[str, Any], signature: str) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not signature.startswith(_ED25519):
        return False
    try:
        raw = base64.b64decode(signature[len(_ED25519) :], validate=True)
        Ed25519PublicKey.from_public_bytes(public_key).verify(raw, canonical_json(payload))
    except (InvalidSignature, ValueError):
        return False
    return True


def key_statement(key_id_: str, public_key: bytes, valid_from: datetime, valid_to: datetime | None) -> dict[str, Any]:
    """What one key signs about another when the signing key changes (see the README's auditor section)."""
    return {"key_id": key_id_, "public_key": public_key.hex(), "valid_from": valid_from, "valid_to": valid_to}
