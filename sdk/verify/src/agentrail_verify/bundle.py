"""Verification of an Agentrail proof bundle, with the standard library and `cryptography` only.

A bundle is a text file of lines. The first is a JSON object:

    {"format": "agentrail-proof-bundle/1", "organizationId", "stream", "firstIndex", "frontier", "digests", "keys"}

`previousEntryHash`: the entry hash of the record before the first (zeros from the first record).
`frontier`: the tree of the `firstIndex - 1` records before the bundle's first, as its perfect subtrees
([level, hex hash], largest first; [] from the first record). `digests`: the organisation's signed digests
({payload, digestHash, signature, keyId}), oldest first. `keys`: the signing keys with their rotation statements.
Every further line is one record, in chain order from `firstIndex`, as three tab-separated fields:

    <canonical header JSON> TAB <canonical content JSON, or empty once erased> TAB <sealed>

<sealed>: for a record in a full block of 256 sealed ones, its entry hash as kept at sealing (hex); for the others,
its stored entry hash and record hash, `entry:record` (hex), which tell which record a broken link comes from.

What is checked (each break is reported, naming the record or the digest):
  content_hash = SHA-256(content) is the one the header names        (the content was not altered)
  record_hash  = SHA-256(header); entry = SHA-256(previous entry || record_hash), equal to the sealed entry
  the RFC 9162 root of the entries up to each digest's tree_size, and its chain head
  each digest's hash (SHA-256 of its canonical payload), its Ed25519 signature by a trusted key within its
  validity, its link to the previous digest, and contiguous ranges
  the digests the auditor kept (--known-digest) are in the bundle unchanged (no cut tail, no rewrite)
  with `retention` (the signed retention cut, when records expired): its hash and signature, and that the bundle
  starts right after it, from its chain hash and tree (reported as expiredThroughIndex, not as a break)
Trust starts at the auditor's public key and follows the keys' rotation statements (either direction).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

FORMAT = "agentrail-proof-bundle/1"
_sha = hashlib.sha256
GENESIS_ENTRY = bytes(32)


def canonical(value: Any) -> bytes:
    """Canonical JSON of what digests and key statements hold (strings, integers, null): keys sorted, no spaces,
    UTF-8. Identical to the server's form for these values."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_id(public_key: bytes) -> str:
    return "ed25519:" + _sha(public_key).hexdigest()[:32]


def load_public_key(text: str) -> bytes:
    """A raw Ed25519 public key from base64 (32 bytes), hex, or a PEM SubjectPublicKeyInfo."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_public_key(text.encode())
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    for decode in (lambda t: base64.b64decode(t, validate=True), bytes.fromhex):
        try:
            raw = decode(text)
        except ValueError:
            continue
        if len(raw) == 32:
            return raw
    raise ValueError("not an Ed25519 public key (base64 or hex of 32 bytes, or PEM)")


def signature_holds(public_key: bytes, payload: Any, signature: str) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not isinstance(signature, str) or not signature.startswith("ed25519:"):
        return False
    try:
        raw = base64.b64decode(signature[8:], validate=True)
        Ed25519PublicKey.from_public_bytes(public_key).verify(raw, canonical(payload))
    except (InvalidSignature, ValueError):
        return False
    return True


def _statement(key: dict[str, Any], *, with_end: bool) -> dict[str, Any]:
    return {
        "key_id": key["keyId"],
        "public_key": base64.b64decode(key["publicKey"]).hex(),
        "valid_from": key["validFrom"],
        "valid_to": key["validTo"] if with_end else None,
    }


def trusted_keys(keys: list[dict[str, Any]], root: bytes) -> dict[str, tuple[bytes, str | None, str | None]]:
    """key id -> (public key, valid from, valid to) for every key `root` vouches for, through the rotation
    statements: a successor's signature over its predecessor (backwards), a predecessor's endorsement of its
    successor (forwards)."""
    root_id = key_id(root)
    rows = {k["keyId"]: k for k in keys}
    listed = rows.get(root_id)
    if listed is not None and base64.b64decode(listed["publicKey"]) != root:
        listed = None
    trusted = {root_id: (root, listed["validFrom"] if listed else None, listed["validTo"] if listed else None)}
    changed = True
    while changed:
        changed = False
        for kid, row in rows.items():
            if kid in trusted:
                continue
            public = base64.b64decode(row["publicKey"])
            if key_id(public) != kid:
                continue
            vouched = any(
                s.get("previousKeyId") == kid
                and s["keyId"] in trusted
                and s.get("previousKeySignature")
                and signature_holds(trusted[s["keyId"]][0], _statement(row, with_end=True), s["previousKeySignature"])
                for s in rows.values()
            )
            previous = row.get("previousKeyId")
            if not vouched and previous in trusted and row.get("endorsement"):
                vouched = signature_holds(trusted[previous][0], _statement(row, with_end=False), row["endorsement"])
            if vouched:
                trusted[kid] = (public, row["validFrom"], row["validTo"])
                changed = True
    return trusted


@dataclass
class Report:
    records: int = 0
    digests: int = 0
    roots_checked: int = 0
    expired_through: int = 0  # records up to this chain index expired under a signed retention cut
    breaks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaks

    def broke(
        self, reason: str, *, record: str | None = None, index: int | None = None, digest: str | None = None
    ) -> None:
        self.breaks.append({"reason": reason, "recordId": record, "chainIndex": index, "digestId": digest})

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "recordsChecked": self.records,
            "digestsChecked": self.digests,
            "rootsChecked": self.roots_checked,
            "expiredThroughIndex": self.expired_through,
            "breaks": self.breaks,
        }


def _record_id(header: bytes) -> str | None:
    try:
        return json.loads(header).get("id")
    except ValueError:
        return None


def verify_lines(lines: Iterable[bytes], public_key: bytes, *, known_digests: Iterable[dict[str, Any]] = ()) -> Report:
    """Verifies a bundle given as its lines (bytes, newline optional). Never raises on bad content: every
    problem is a break in the report (a malformed bundle is one break naming the line)."""
    report = Report()
    source: Iterator[bytes] = iter(lines)
    try:
        meta = json.loads(next(source))
    except (StopIteration, ValueError):
        report.broke("not a proof bundle (its first line is not the bundle's JSON header)")
        return report
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        report.broke(f"not a proof bundle of format {FORMAT}")
        return report
    digests: list[dict[str, Any]] = list(meta.get("digests") or [])
    trusted = trusted_keys(list(meta.get("keys") or []), public_key)
    _check_digests(report, digests, trusted, known_digests)

    # the records: hashes, links, and the tree up to each digest's size
    first = int(meta.get("firstIndex") or 1)
    nodes: list[tuple[int, bytes]] = [(int(lv), bytes.fromhex(h)) for lv, h in meta.get("frontier") or []]
    size = first - 1
    if sum(1 << lv for lv, _ in nodes) != size:
        report.broke("the bundle's frontier does not describe the tree before its first record")
        return report
    if meta.get("retention"):
        _check_retention(report, meta, trusted, digests, nodes)
        if not report.ok:
            return report
    roots = {}
    for d in digests:
        tree = (d.get("payload") or {}).get("tree_size")
        if isinstance(tree, int) and tree >= first:
            roots[tree] = d
    # the entry before the first record (zeros from the first): pinned by the signed roots, as its successor's
    # entry, a leaf under them, is SHA-256 of it
    try:
        previous = bytes.fromhex(meta.get("previousEntryHash") or GENESIS_ENTRY.hex())
    except ValueError:
        report.broke("the bundle's previousEntryHash is not hex")
        return report
    index = size
    sha, leaf_prefix, node_prefix, unhexlify = _sha, b"\x00", b"\x01", binascii.unhexlify
    marker = b'"content_hash":"'
    last_header = b""
    for line in source:
        # fields by position, the content hashed through a memoryview: a record's bytes are never copied
        end = len(line)
        if end and line[end - 1] == 10:
            end -= 1
            if end and line[end - 1] == 13:
                end -= 1
        if not end:
            continue
        index += 1
        first_tab = line.find(b"\t", 0, end)
        last_tab = line.rfind(b"\t", 0, end)
        if first_tab < 0 or last_tab == first_tab:
            report.broke("malformed record line (three tab-separated fields expected)", index=index)
            return report
        header = line[:first_tab]
        sealed_hex = line[last_tab + 1 : end]
        record_digest = sha(header).digest()
        if last_tab > first_tab + 1:
            content = memoryview(line)[first_tab + 1 : last_tab]
            if header.find(marker + sha(content).hexdigest().encode() + b'"') < 0:
                report.broke(
                    "the record's content does not match its hash (altered)", record=_record_id(header), index=index
                )
                return report
        elif header.find(marker) < 0:
            report.broke("the record names no content hash", record=_record_id(header), index=index)
            return report
        if header.find(b'"chain_index":%d,' % index) < 0:
            report.broke(
                "the record is not at its place in the chain (records before it were removed, or it was moved)",
                record=_record_id(header),
                index=index,
            )
            return report
        if len(sealed_hex) == 64:  # the usual case: a kept leaf
            stored_hex, colon, stored_record_hex = sealed_hex, b"", b""
        else:
            stored_hex, colon, stored_record_hex = sealed_hex.partition(b":")
        try:
            sealed = unhexlify(stored_hex)
        except (ValueError, binascii.Error):
            report.broke("malformed record line", index=index)
            return report
        entry = sha(previous + record_digest).digest()
        if entry != sealed:
            if not colon:  # the leaf kept at sealing: this record is not what was sealed
                report.broke(
                    "the record differs from what was sealed (altered, inserted or reordered, its hashes"
                    " recomputed or not)",
                    record=_record_id(header),
                    index=index,
                )
            elif stored_record_hex.decode() != record_digest.hex() or last_header == b"":
                report.broke(
                    "the record was altered (its hashes do not match it)", record=_record_id(header), index=index
                )
            else:
                # its own stored hashes hold: the link from its predecessor broke (the predecessor was altered
                # with its hashes recomputed, or records were removed, inserted or reordered)
                report.broke(
                    "the chain breaks after this record (it was altered and its hashes recomputed, or the records"
                    " after it were reordered or replaced)",
                    record=_record_id(last_header),
                    index=index - 1,
                )
            return report
        # append the leaf (RFC 9162): merge equal neighbours
        level, value = 0, sha(leaf_prefix + entry).digest()
        while nodes and nodes[-1][0] == level:
            value = sha(node_prefix + nodes.pop()[1] + value).digest()
            level += 1
        nodes.append((level, value))
        previous = entry
        last_header = header
        report.records += 1
        digest = roots.get(index)
        if digest is not None:
            root = nodes[-1][1]
            for _, left in reversed(nodes[:-1]):
                root = sha(node_prefix + left + root).digest()
            payload = digest["payload"]
            report.roots_checked += 1
            if root.hex() != payload.get("merkle_root") or entry.hex() != payload.get("chain_head"):
                report.broke(
                    "the records do not match the signed digest's Merkle root (altered, removed, inserted or"
                    " reordered before it)",
                    record=_record_id(header),
                    index=index,
                    digest=digest.get("id"),
                )
                return report
    if roots and max(roots) > index:
        missing = min(t for t in roots if t > index)
        report.broke(
            f"a signed digest seals records up to chain index {missing}, the bundle ends at {index} (records missing)",
            record=_record_id(last_header) if last_header else None,
            index=index,
            digest=roots[missing].get("id"),
        )
    return report


def _check_retention(
    report: Report,
    meta: dict[str, Any],
    trusted: dict[str, tuple[bytes, str | None, str | None]],
    digests: list[dict[str, Any]],
    nodes: list[tuple[int, bytes]],
) -> None:
    """The bundle starts after records that expired under the organisation's retention: the signed retention cut
    says which (chain indexes up to `through_index`), with the chain hash and the tree at the cut, which must be
    the bundle's starting point; and it names a digest of the digest chain."""
    cut = meta["retention"]
    payload, cid = cut.get("payload") or {}, cut.get("id")
    if payload.get("kind") != "retention" or "sha256:" + _sha(canonical(payload)).hexdigest() != cut.get("cutHash"):
        report.broke("the retention cut's hash does not match its content (forged or altered)", digest=cid)
        return
    key = trusted.get(payload.get("key_id") or "")
    if key is None or not signature_holds(key[0], payload, cut.get("signature") or ""):
        report.broke("the retention cut is not signed by a trusted key (forged)", digest=cid)
        return
    through = payload.get("through_index")
    root = b""
    if nodes:
        root = nodes[-1][1]
        for _, left in reversed(nodes[:-1]):
            root = _sha(b"\x01" + left + root).digest()
    if (
        through != int(meta.get("firstIndex") or 1) - 1
        or payload.get("chain_head") != meta.get("previousEntryHash")
        or root.hex() != payload.get("tree_root")
    ):
        report.broke("the bundle does not start where the retention cut ends (records missing)", digest=cid)
        return
    named = [d for d in digests if (d.get("payload") or {}).get("sequence") == payload.get("digest_sequence")]
    if not named or named[0].get("digestHash") != payload.get("digest_hash"):
        report.broke("the retention cut names a digest that the digest chain does not hold", digest=cid)
        return
    report.expired_through = int(through)


def _check_digests(
    report: Report,
    digests: list[dict[str, Any]],
    trusted: dict[str, tuple[bytes, str | None, str | None]],
    known: Iterable[dict[str, Any]],
) -> None:
    previous: dict[str, Any] | None = None
    for digest in digests:
        payload = digest.get("payload") or {}
        did = digest.get("id")
        report.digests += 1
        if "sha256:" + _sha(canonical(payload)).hexdigest() != digest.get("digestHash"):
            report.broke("the digest's hash does not match its content (forged or altered)", digest=did)
            continue
        key = trusted.get(payload.get("key_id") or "")
        if key is None:
            report.broke("the digest is signed by a key that no trusted key vouches for", digest=did)
        elif not signature_holds(key[0], payload, digest.get("signature") or ""):
            report.broke("the digest's signature does not hold (forged)", digest=did)
        elif (key[1] and payload.get("created_at", "") < key[1]) or (key[2] and payload.get("created_at", "") > key[2]):
            report.broke("the digest was signed outside its key's validity", digest=did)
        if previous is not None:
            prev = previous["payload"]
            if (
                payload.get("previous_hash") != previous.get("digestHash")
                or payload.get("sequence") != prev.get("sequence", 0) + 1
            ):
                report.broke("the digest chain is broken here (a digest removed, reordered or replaced)", digest=did)
            elif payload.get("from_index") != prev.get("tree_size", 0) + 1:
                report.broke("the digest does not continue its predecessor's range", digest=did)
        if payload.get("record_count") != (payload.get("tree_size") or 0) - (payload.get("from_index") or 0) + 1:
            report.broke("the digest's count does not match its range", digest=did)
        previous = digest
    by_sequence = {(d.get("payload") or {}).get("sequence"): d for d in digests}
    for kept in known:
        sequence = (kept.get("payload") or {}).get("sequence")
        held = by_sequence.get(sequence)
        if held is None:
            report.broke(
                f"digest {sequence}, which you kept, is not in the bundle (the trail was cut short or truncated)",
                digest=kept.get("id"),
            )
        elif held.get("digestHash") != kept.get("digestHash"):
            report.broke(
                f"digest {sequence} differs from the one you kept (the trail was rewritten)", digest=kept.get("id")
            )


def verify_file(path: str, public_key: bytes, *, known_digests: Iterable[dict[str, Any]] = ()) -> Report:
    with open(path, "rb") as handle:
        return verify_lines(handle, public_key, known_digests=known_digests)
