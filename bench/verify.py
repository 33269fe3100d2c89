"""Offline verifier speed: records per second that `agentrail_verify` checks in a proof bundle.

    .venv/bin/python bench/verify.py [--records 200000] [--digest-every 10000]

Builds a bundle in memory as the server writes it (realistic records of bench/_server.py, chained, sealed every
`--digest-every` records into Ed25519-signed digests, kept leaves for full blocks), then times the verifier over it
(best of 3): in memory with the default workers (one per idle CPU: `records_per_s`), in this process alone
(`one_process_records_per_s`), with a worker per CPU (`all_cpus_records_per_s`), and from a file as
`agentrail-verify` reads it (`file_records_per_s`; `file_one_process_records_per_s`). Prints JSON
with records/s and the CPU reference taken just before. Target: >= 200,000 records/s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
from _server import cpu_ref, realistic_record

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sdk" / "verify" / "src"))

from agentrail_verify import verify_file, verify_lines
from agentrail_verify.bundle import default_workers

from app.integrity import (
    AUDIT_CHAIN,
    GENESIS_ENTRY,
    GENESIS_HASH,
    Frontier,
    Signer,
    canonical_json,
    chain_hashes,
    digest_hash,
    digest_v2_payload,
)


def build(records: int, every: int) -> tuple[list[bytes], bytes]:
    rng = random.Random(1)
    signer = Signer(b"\x05" * 32)
    now = datetime(2026, 12, 3, tzinfo=UTC)
    lines, digests = [], []
    frontier, previous, previous_digest, from_index = Frontier.empty(), GENESIS_ENTRY, GENESIS_HASH, 1
    for index in range(1, records + 1):
        raw = realistic_record(rng, f"t{index // 40}", index % 40)
        record = {f: None for f in AUDIT_CHAIN.header_fields + AUDIT_CHAIN.content_fields}
        record |= {
            "id": f"log_{index:012d}",
            "org_id": "org_bench",
            "occurred_at": now,
            "action": raw["action"],
            "trace_id": raw["traceId"],
            "span_id": raw["spanId"],
            "parent_span_id": raw["parentSpanId"],
            "prompt": raw["prompt"],
            "response": raw["response"],
            "metadata": raw["metadata"],
            "duration_ms": raw["durationMs"],
            "provider": raw["provider"],
            "risk_level": raw["riskLevel"],
            "status": "ok",
            "credential_masked": False,
        }
        hashes = chain_hashes(AUDIT_CHAIN, record, index, previous)
        header = canonical_json(AUDIT_CHAIN.header(record, index, hashes.content_hash))
        content = canonical_json(AUDIT_CHAIN.content(record))
        lines.append(header + b"\t" + content + b"\t" + hashes.entry_hash.hex().encode())
        frontier.append(hashes.entry_hash)
        previous = hashes.entry_hash
        if index % every == 0 or index == records:
            payload = digest_v2_payload(
                version=2, org_id="org_bench", sequence=len(digests) + 1, from_index=from_index, tree_size=index,
                record_count=index - from_index + 1, merkle_root=frontier.root().hex(), chain_head=previous.hex(),
                previous_hash=previous_digest, created_at=now, key_id=signer.key_id,
            )  # fmt: skip
            digests.append(
                {
                    "id": f"dgst_{len(digests) + 1}",
                    "stream": "audit",
                    "payload": orjson.loads(canonical_json(payload)),
                    "digestHash": digest_hash(payload),
                    "signature": signer.sign(payload),
                    "keyId": signer.key_id,
                }
            )
            previous_digest, from_index = digest_hash(payload), index + 1
    meta = {
        "format": "agentrail-proof-bundle/1",
        "organizationId": "org_bench",
        "stream": "audit",
        "firstIndex": 1,
        "previousEntryHash": GENESIS_ENTRY.hex(),
        "frontier": [],
        "keptThrough": records,
        "digests": digests,
        "keys": [],
    }
    return [orjson.dumps(meta), *lines], signer.public_key


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--digest-every", type=int, default=10_000)
    args = parser.parse_args()
    lines, public_key = build(args.records, args.digest_every)
    size = sum(len(line) + 1 for line in lines)
    reference = cpu_ref()

    def timed(check) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            report = check()
            best = min(best, time.perf_counter() - started)
            assert report.ok and report.records == args.records, report.breaks[:3]
        return best

    best = timed(lambda: verify_lines(lines, public_key))
    alone = timed(lambda: verify_lines(lines, public_key, workers=1))
    cpus = len(os.sched_getaffinity(0))
    every_cpu = timed(lambda: verify_lines(lines, public_key, workers=cpus))
    with tempfile.NamedTemporaryFile(suffix=".ndjson") as handle:
        handle.write(b"\n".join(lines) + b"\n")
        handle.flush()
        from_file = timed(lambda: verify_file(handle.name, public_key))
        file_alone = timed(lambda: verify_file(handle.name, public_key, workers=1))
    print(
        json.dumps(
            {
                "records": args.records,
                "bundle_mb": round(size / 1e6, 1),
                "digests": len(orjson.loads(lines[0])["digests"]),
                "workers": default_workers(),
                "seconds": round(best, 3),
                "records_per_s": round(args.records / best),
                "mb_per_s": round(size / 1e6 / best, 1),
                "one_process_records_per_s": round(args.records / alone),
                "all_cpus_records_per_s": round(args.records / every_cpu),
                "cpus": cpus,
                "file_records_per_s": round(args.records / from_file),
                "file_one_process_records_per_s": round(args.records / file_alone),
                "cpu_ref_s": reference,
                "target_records_per_s": 200_000,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
