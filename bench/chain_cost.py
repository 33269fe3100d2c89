"""The CPU the chain adds to ingest, per record, in process (no server: robust to a loaded machine).

    .venv/bin/python bench/chain_cost.py [--records 5000]

Prints JSON: µs per realistic record (bench/_server.py) for the checks and preparation ingest does anyway
(`check_records`, masking in `_prepare`), the legacy checksum the previous version computed, and what the chain
computes instead (content hash before the lock, record and entry hash under it); and the difference as a share
of the checks+preparation time (the server's Python work per record is larger still: HTTP, GraphQL, SQL).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from datetime import UTC, datetime

from _server import cpu_ref, realistic_record

from app.audit.service import _prepare
from app.audit.validation import check_records
from app.integrity import AUDIT_CHAIN, GENESIS_ENTRY, chain_hashes, checksum_content, content_hash, record_checksum


def _per_record_us(work, rows) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        work(rows)
        best = min(best, time.process_time() - started)
    return round(best / len(rows) * 1e6, 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=5000)
    args = parser.parse_args()
    rng = random.Random(7)
    raws = [realistic_record(rng, f"t{i // 50}", i % 50) for i in range(args.records)]
    now = datetime.now(UTC)
    reference = cpu_ref()
    drafts = check_records(raws, max_batch=len(raws) + 1, batch=True)
    rows = [_prepare(d, "org_bench", now) for d in drafts]

    def prepare(_rows):
        for draft in check_records(raws, max_batch=len(raws) + 1, batch=True):
            _prepare(draft, "org_bench", now)

    def legacy(rows):
        for row in rows:
            record_checksum(checksum_content(row))

    def chain(rows):
        previous = GENESIS_ENTRY
        for index, row in enumerate(rows, 1):
            digest = content_hash(AUDIT_CHAIN.content(row))
            previous = chain_hashes(AUDIT_CHAIN, row, index, previous, content_digest=digest).entry_hash

    figures = {
        "records": args.records,
        "check_and_prepare_us": _per_record_us(prepare, rows),
        "legacy_checksum_us": _per_record_us(legacy, rows),
        "chain_hashes_us": _per_record_us(chain, rows),
        "cpu_ref_s": reference,
    }
    figures["chain_minus_legacy_us"] = round(figures["chain_hashes_us"] - figures["legacy_checksum_us"], 2)
    figures["extra_over_check_and_prepare"] = round(
        figures["chain_minus_legacy_us"] / (figures["check_and_prepare_us"] + figures["legacy_checksum_us"]), 4
    )
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
