"""Tamper evidence for audit records: canonical JSON, record checksums, Merkle roots, signed digests.

Public API
    canonical_json(obj) -> bytes                     one byte string per value, the same on every run
    record_checksum(content) -> "sha256:<hex>"       over canonical_json(content)
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
text, as JSONB stores it), and integers beyond 64 bits hash as the float they equal
(or as their decimal string when no float does). Keys must be strings; other types raise TypeError.
NaN and infinities cannot come from JSON and serialise as null.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import orjson

_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
_INT64 = 2**63
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


def _normalise(value: Any) -> Any:
    """Numbers as PostgreSQL JSONB would give them back (see the module docstring); containers copied."""
    kind = type(value)
    if kind is dict:
        return {key: item if type(item) in _PLAIN else _normalise(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [item if type(item) in _PLAIN else _normalise(item) for item in value]
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
        return {key: _normalise(item) for key, item in value.items()}
    if kind not in _PLAIN and isinstance(value, list | tuple):
        return [_normalise(item) for item in value]
    return value


def canonical_json(obj: Any) -> bytes:
    """The canonical serialisation of a JSON-like value (rules in the module docstring)."""
    return orjson.dumps(_normalise(obj), default=_default, option=_OPTIONS)


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
    return "sha256:" + hashlib.sha256(canonical_json(content)).hexdigest()


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
