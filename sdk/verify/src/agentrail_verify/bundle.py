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
  content_hash = SHA-256(content) is the one the header names        (the content was not altered; an erased
                 record has no content: it is reported as erased, and everything below is still checked)
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
import mmap
import os
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


MAX_LISTED_ERASED = 1_000


@dataclass
class Report:
    records: int = 0
    digests: int = 0
    roots_checked: int = 0
    expired_through: int = 0  # records up to this chain index expired under a signed retention cut
    erased: int = 0  # records whose content was erased: place, header and link checked, content not
    erased_ids: list[str] = field(default_factory=list)  # the first MAX_LISTED_ERASED of them
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
            "recordsErased": self.erased,
            "erasedRecordIds": self.erased_ids,
            "breaks": self.breaks,
        }


def _record_id(header: bytes) -> str | None:
    try:
        return json.loads(header).get("id")
    except ValueError:
        return None


def _line_id(line: bytes) -> str | None:
    tab = line.find(b"\t")
    return _record_id(line[:tab] if tab >= 0 else line)


# --- the records -------------------------------------------------------------------------------------------
# Each record is checked on its own and against the entry hash sealed on the line before it, so consecutive runs of
# records can be checked apart (in parallel, see `_start_pool`) and their results joined in chain order. A run keeps
# the tree of its leaves as aligned perfect subtrees (hashes only; their levels follow from the positions, see
# `_blocks`), and the joining folds them onto the tree before the run.

_MARKER = b'"content_hash":"'
_PLACE = "the record is not at its place in the chain (records before it were removed, or it was moved)"


@dataclass(slots=True)
class _Run:
    start: int  # chain index before the run's first record
    index: int  # chain index of its last record read
    records: int = 0
    erased: list[str] = field(default_factory=list)  # ids of its erased records (content field empty)
    stack: list[bytes] = field(default_factory=list)  # aligned subtrees of its leaves, left to right
    boundaries: list[tuple[int, list[bytes], bytes, str | None]] = field(default_factory=list)  # at digests' sizes
    last_id: str | None = None  # id of the last record read (before the run's first: the one before it)
    first_id: str | None = None  # id of the run's first record (a run that is not the bundle's first)
    broken: tuple[str, str | None, int] | None = None  # the first break: reason, record id, chain index


def _blocks(base: int, size: int) -> list[int]:
    """The levels of the aligned perfect subtrees that cover leaves [base, size), left to right (what `_check`
    keeps for a run that starts at leaf `base`)."""
    out = []
    while base < size:
        level = (size - base).bit_length() - 1
        if base:
            level = min(level, (base & -base).bit_length() - 1)
        out.append(level)
        base += 1 << level
    return out


def _join(nodes: list[tuple[int, bytes]], stack: list[bytes], levels: list[int]) -> list[tuple[int, bytes]]:
    """The frontier (levels descending) of a tree followed by a run's aligned subtrees."""
    out = list(nodes)
    sha = _sha
    for level, value in zip(levels, stack, strict=True):
        while out and out[-1][0] == level:
            value = sha(b"\x01" + out.pop()[1] + value).digest()
            level += 1
        out.append((level, value))
    return out


def _root(nodes: list[tuple[int, bytes]]) -> bytes:
    root = nodes[-1][1]
    for _, left in reversed(nodes[:-1]):
        root = _sha(b"\x01" + left + root).digest()
    return root


def _sealed_entry(line: bytes) -> bytes:
    """The entry hash a record line says was sealed (zeros when it is malformed: that line's own check says so)."""
    field_ = line.rstrip(b"\r\n").rpartition(b"\t")[2].partition(b":")[0]
    try:
        return binascii.unhexlify(field_)
    except (ValueError, binascii.Error):
        return GENESIS_ENTRY


def _claimed_index(line: bytes) -> int | None:
    at = line.find(b'"chain_index":')
    if at < 0:
        return None
    digits = line[at + 14 : at + 40].partition(b",")[0].partition(b"}")[0]
    return int(digits) if digits.isdigit() else None


def _check(
    lines: Iterable[bytes],
    start: int,
    previous: bytes,
    previous_id: str | None,
    stack: list[bytes],
    base: int,
    roots: frozenset[int],
) -> _Run:
    """Checks consecutive record lines, the first at chain index `start + 1`, after the entry `previous` (of the
    record `previous_id`, None for the bundle's first); `stack`: the subtrees of leaves [base, start) so far."""
    run = _Run(start=start, index=start, stack=stack, last_id=previous_id)
    sha, unhexlify, leaf_prefix, node_prefix, marker = _sha, binascii.unhexlify, b"\x00", b"\x01", _MARKER
    index, last_line, count = start, b"", 0
    for line in lines:
        # fields by position, hashed through the line's own bytes (found, compared in place: few copies)
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
            run.broken = ("malformed record line (three tab-separated fields expected)", None, index)
            break
        record_digest = sha(line[:first_tab]).digest()
        at = line.find(marker, 0, first_tab)
        if last_tab > first_tab + 1:
            content = sha(memoryview(line)[first_tab + 1 : last_tab]).hexdigest().encode()
            if at < 0 or not line.startswith(content, at + 16) or line[at + 80] != 34:
                run.broken = ("the record's content does not match its hash (altered)", _line_id(line), index)
                break
        elif at < 0:
            run.broken = ("the record names no content hash", _line_id(line), index)
            break
        else:  # erased: no content to hash; the header (which names the content's hash) and the link still are
            run.erased.append(_line_id(line) or "")
        if line.find(b'"chain_index":%d,' % index, 0, first_tab) < 0:
            run.broken = (_PLACE, _line_id(line), index)
            break
        sealed_hex = line[last_tab + 1 : end]
        kept = len(sealed_hex) == 64  # the usual case: a kept leaf
        try:
            sealed = unhexlify(sealed_hex if kept else sealed_hex.partition(b":")[0])
        except (ValueError, binascii.Error):
            run.broken = ("malformed record line", None, index)
            break
        entry = sha(previous + record_digest).digest()
        if entry != sealed:
            stored_record = sealed_hex.partition(b":")[2]
            previous_id = _line_id(last_line) if last_line else run.last_id
            if kept:  # the leaf kept at sealing: this record is not what was sealed
                run.broken = (
                    "the record differs from what was sealed (altered, inserted or reordered, its hashes"
                    " recomputed or not)",
                    _line_id(line),
                    index,
                )
            elif stored_record != record_digest.hex().encode() or (not last_line and run.last_id is None):
                run.broken = ("the record was altered (its hashes do not match it)", _line_id(line), index)
            else:
                # its own stored hashes hold: the link from its predecessor broke (the predecessor was altered
                # with its hashes recomputed, or records were removed, inserted or reordered)
                run.broken = (
                    "the chain breaks after this record (it was altered and its hashes recomputed, or the records"
                    " after it were reordered or replaced)",
                    previous_id,
                    index - 1,
                )
            break
        # append the leaf (RFC 9162), merging the aligned subtrees it completes
        value = sha(leaf_prefix + entry).digest()
        if not index & 1:
            merges = min((index & -index).bit_length(), (index - base).bit_length()) - 1
            for _ in range(merges):
                value = sha(node_prefix + stack.pop() + value).digest()
        stack.append(value)
        previous, last_line = entry, line
        count += 1
        if index in roots:
            run.boundaries.append((index, list(stack), entry, _line_id(line)))
    run.records, run.index = count, index - (1 if run.broken else 0)
    if last_line:
        run.last_id = _line_id(last_line)
    return run


def _join_runs(
    report: Report, runs: Iterable[_Run], nodes: list[tuple[int, bytes]], roots: dict[int, Any]
) -> tuple[int, str | None] | None:
    """Joins the runs' results, in chain order, into the report: the roots of the digests they reach, the first
    break. Returns the chain index and id of the last record checked, None after a break."""
    expected: int | None = None
    last_id: str | None = None
    for run in runs:
        if expected is not None and run.start != expected:
            report.broke(_PLACE, record=run.first_id, index=expected + 1)
            return None
        base = 0 if expected is None else run.start
        for size, stack, entry, record in run.boundaries:
            digest = roots[size]
            payload = digest["payload"]
            report.roots_checked += 1
            root = _root(_join(nodes, stack, _blocks(base, size)))
            if root.hex() != payload.get("merkle_root") or entry.hex() != payload.get("chain_head"):
                report.broke(
                    "the records do not match the signed digest's Merkle root (altered, removed, inserted or"
                    " reordered before it)",
                    record=record,
                    index=size,
                    digest=digest.get("id"),
                )
                return None
        report.records += run.records
        report.erased += len(run.erased)
        report.erased_ids.extend(run.erased[: max(0, MAX_LISTED_ERASED - len(report.erased_ids))])
        if run.broken is not None:
            reason, record, index = run.broken
            report.broke(reason, record=record, index=index)
            return None
        nodes = _join(nodes, run.stack, _blocks(base, run.index))
        expected, last_id = run.index, run.last_id
    return (expected or 0), last_id


# --- in parallel: runs of records in worker processes (fork: the bundle's lines are shared, not sent) -------
PARALLEL_MIN_RECORDS = 40_000
_RUN_RECORDS = 16_384
_shared: Any = None  # what the forked workers read: the list of record lines, or the bundle file's path


def default_workers() -> int:
    """One process per idle CPU (the CPUs this process may use, less the load average), at least one: on a busy
    machine more processes only add the cost of sharing the work (measured: slower than one)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):
        busy = 0.0
    return max(1, min(cpus, round(cpus - busy)))


def _fork_context() -> Any:
    import multiprocessing

    return multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None


def _run_of(lines: list[bytes], before: bytes, roots: frozenset[int]) -> _Run:
    """A run that is not the bundle's first: its place and predecessor from its own first line and the line
    before it (the place is checked when the runs are joined)."""
    first = next((line for line in lines if line.strip(b"\r\n")), b"")
    claimed = _claimed_index(first[: first.find(b"\t")]) if first else None
    start = claimed - 1 if claimed is not None else -1
    run = _check(lines, start, _sealed_entry(before), _line_id(before), [], start, roots)
    run.first_id = _line_id(first) if first else None
    return run


def _list_run(task: tuple[int, int, frozenset[int]]) -> _Run:
    low, high, roots = task
    lines = _shared
    before = next((lines[i] for i in range(low - 1, -1, -1) if lines[i].strip(b"\r\n")), b"")
    return _run_of(lines[low:high], before, roots)


def _file_run(task: tuple[int, int, frozenset[int]]) -> _Run:
    low, high, roots = task
    with open(_shared, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        before = data[data.rfind(b"\n", 0, low - 1) + 1 : low]
        lines = data[low:high].split(b"\n")
    return _run_of(lines, before, roots)


def _start_pool(worker: Any, shared: Any, tasks: list[tuple[int, int]], roots: frozenset[int], workers: int) -> Any:
    """Forks the workers (they inherit `shared`) and hands them the runs at once; returns the pool (the caller
    shuts it down) and the runs' results in chain order. A worker that dies raises BrokenProcessPool: never a
    wait without end."""
    from concurrent.futures import ProcessPoolExecutor

    global _shared
    _shared = shared
    try:
        pool = ProcessPoolExecutor(workers, mp_context=_fork_context())
        futures = [pool.submit(worker, (low, high, roots)) for low, high in tasks]  # forks at the first
    finally:
        _shared = None
    return pool, (future.result() for future in futures)


def verify_lines(
    lines: Iterable[bytes],
    public_key: bytes,
    *,
    known_digests: Iterable[dict[str, Any]] = (),
    workers: int | None = None,
) -> Report:
    """Verifies a bundle given as its lines (bytes, newline optional). Never raises on bad content: every
    problem is a break in the report (a malformed bundle is one break naming the line). A list of many lines is
    checked by `workers` processes (default: one per CPU; 1: in this process)."""
    source: Iterator[bytes] = iter(lines)
    head = next(source, None)
    if isinstance(lines, list) and head is not None:
        records: Iterable[bytes] = lines[1:] if len(lines) > 1 else []
        total = len(lines) - 1
    else:
        records, total = source, 0
    return _verify(head, records, total, public_key, known_digests, workers, _list_run)


def verify_file(
    path: str, public_key: bytes, *, known_digests: Iterable[dict[str, Any]] = (), workers: int | None = None
) -> Report:
    """Verifies the bundle in a file: its line form (a large one read in byte ranges by `workers` processes), or
    an export with includeProofs as JSON or Parquet (Parquet needs pyarrow: `pip install agentrail-verify[parquet]`)."""
    with open(path, "rb") as handle:
        head = handle.readline()
        if head.startswith(PARQUET_MAGIC):
            return verify_lines(parquet_lines(path), public_key, known_digests=known_digests, workers=workers)
        if _is_document(head):
            handle.seek(0)
            return verify_lines(json_lines(handle.read()), public_key, known_digests=known_digests, workers=workers)
        size = os.fstat(handle.fileno()).st_size
        if size - len(head) < PARALLEL_MIN_RECORDS * 256 or (workers or default_workers()) < 2 or not _fork_context():
            return _verify(head, _read_lines(handle), 0, public_key, known_digests, 1, _file_run)
    return _verify(head, (path, len(head), size), 0, public_key, known_digests, workers, _file_run)


# --- the other containers of a bundle: an export's JSON document, a Parquet file -------------------------------
PARQUET_MAGIC = b"PAR1"
PARQUET_KEY = b"agentrail-proof-bundle"


def _is_document(head: bytes) -> bool:
    """Whether the file's first line opens a JSON document (an export's JSON form), not the bundle's header."""
    try:
        meta = json.loads(head)
    except ValueError:
        return head.lstrip().startswith(b"{")
    return isinstance(meta, dict) and "bundle" in meta and "format" not in meta


def json_lines(document: bytes) -> list[bytes]:
    """The lines of a bundle in its JSON form: {"bundle": <header>, "records": [[header, content, sealed], ...]}."""
    try:
        value = json.loads(document)
        lines = [json.dumps(value["bundle"]).encode()]
        lines += [("\t".join(fields)).encode() for fields in value["records"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a proof bundle in JSON form ({exc})") from exc
    return lines


def parquet_lines(path: str) -> list[bytes]:
    """The lines of a bundle written as Parquet (a row per record: chain_index, header, content, sealed; the
    bundle's header in the file's key-value metadata)."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ValueError("reading a Parquet bundle needs pyarrow: pip install 'agentrail-verify[parquet]'") from exc
    table = pq.read_table(path)
    meta = (table.schema.metadata or {}).get(PARQUET_KEY)
    if meta is None:
        raise ValueError("not a proof bundle in Parquet form (no agentrail-proof-bundle metadata)")
    columns = [table.column(name).to_pylist() for name in ("header", "content", "sealed")]
    return [meta, *(f"{h}\t{c or ''}\t{s}".encode() for h, c, s in zip(*columns, strict=True))]


def _verify(
    head: bytes | None,
    records: Any,
    total: int,
    public_key: bytes,
    known_digests: Iterable[dict[str, Any]],
    workers: int | None,
    worker: Any,
) -> Report:
    report = Report()
    try:
        meta = json.loads(head) if head is not None else None
    except ValueError:
        meta = None
    if meta is None:
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
    sizes = frozenset(roots)
    workers = workers or default_workers()
    tasks = _tasks(records, total, workers) if workers > 1 and _fork_context() else None
    stack = [h for _, h in nodes]
    pool = None
    if tasks:
        # the first run, from the bundle's start, in this process while the workers check the others
        pool, others = _start_pool(
            worker, records if isinstance(records, list) else records[0], tasks[1:], sizes, workers
        )
        low, high = tasks[0]
        head_lines = records[low:high] if isinstance(records, list) else _file_lines(records[0], low, high)
        runs: Iterable[_Run] = _chain([_check(head_lines, size, previous, None, stack, 0, sizes)], others)
    else:
        lines = records if not isinstance(records, tuple) else _file_lines(*records)
        runs = [_check(lines, size, previous, None, stack, 0, sizes)]
    try:
        joined = _join_runs(report, runs, [], roots)
    finally:
        if pool is not None:
            # wait for runs already started: a worker still reading a file's map when the caller goes on (and,
            # say, rewrites the file) would die of SIGBUS
            pool.shutdown(wait=True, cancel_futures=True)
    if joined is None:
        return report
    index, last_id = joined
    index = index or size
    if roots and max(roots) > index:
        missing = min(t for t in roots if t > index)
        report.broke(
            f"a signed digest seals records up to chain index {missing}, the bundle ends at {index} (records missing)",
            record=last_id,
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


def _read_lines(handle: Any, block: int = 1 << 23) -> Iterator[bytes]:
    """The file's lines, read in large blocks (a line at a time costs as much as checking it)."""
    rest = b""
    while chunk := handle.read(block):
        lines = chunk.split(b"\n")
        lines[0] = rest + lines[0]
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


def _chain(head: list[_Run], rest: Iterable[_Run]) -> Iterator[_Run]:
    yield from head
    yield from rest


def _file_lines(path: str, low: int, high: int) -> list[bytes]:
    with open(path, "rb") as handle:
        handle.seek(low)
        return handle.read(high - low).split(b"\n")


def _tasks(records: Any, total: int, workers: int) -> list[tuple[int, int]] | None:
    """Ranges of record lines (list positions, or byte offsets in the file) for the runs; None: too few."""
    if isinstance(records, list):
        if total < PARALLEL_MIN_RECORDS:
            return None
        step = max(_RUN_RECORDS, -(-total // (workers * 4)))
        return [(low, min(low + step, total)) for low in range(0, total, step)]
    if not isinstance(records, tuple):
        return None
    path, low, size = records
    step = max(1 << 22, -(-(size - low) // (workers * 4)))
    tasks = []
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        while low < size:
            high = data.find(b"\n", min(low + step, size) - 1)
            high = size if high < 0 else high + 1
            tasks.append((low, high))
            low = high
    return tasks


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
