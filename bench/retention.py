"""Ingest throughput while the retention job removes records, against ingest alone (target: ≥ 80 %).

    .venv/bin/python bench/retention.py [--expired 200000] [--records 20000] [--runs 2]

Starts embedded PostgreSQL and Redis in a temporary folder (or uses DATABASE_URL / REDIS_URL) and
`agentrail serve`. Per run: seeds `--expired` records received 30 days ago into a second organisation (set-based
SQL, with a signed-looking digest over them so that retention may cut them), measures batch ingest
(`POST /api/v1/audit-logs/batch`, batches of 100, 4 clients) alone, then the same ingest while
`app.audit.retention.expire_organization` removes the seeded records (free plan: 7 days). Prints JSON: records/s
without and during (medians over the runs), their ratio, the retention run's duration and records removed per
second, each with the CPU reference.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from _server import cpu_ref, running_server
from ingest import throughput
from sqlalchemy.ext.asyncio import create_async_engine

import app.models  # noqa: F401  every table known, so foreign keys resolve
from app.audit import retention
from app.db import Database, new_id, to_async_url
from app.integrity import Signer
from app.runtime.embedded import EmbeddedServers
from app.settings import Settings

SEED = """
INSERT INTO audit_logs (id, org_id, trace_id, span_id, action, prompt, response, metadata, occurred_at, received_at,
                        status, credential_masked, checksum, chain_index, content_hash, entry_hash)
SELECT 'log_' || :tag || '_' || lpad(g::text, 8, '0'), :org, 'trace-' || (g / 10), 'span-' || g, 'llm_call',
       'Summarise order ' || g || ' for the customer: ' || repeat(md5(g::text), 8), 'Order ' || g || ' shipped',
       jsonb_build_object('model', 'gpt-4o', 'tokens', g % 9000), now() - interval '30 days' + g * interval '1 ms',
       now() - interval '30 days' + g * interval '1 ms', 'ok', false, 'sha256:' || md5(g::text) || md5(g::text), g,
       sha256(('c' || g)::bytea), sha256(('e' || g)::bytea)
FROM generate_series(1, :n) AS g
"""
SEED_SEARCH = """
INSERT INTO audit_search (log_id, org_id, received_at, document)
SELECT id, org_id, received_at, to_tsvector('simple', prompt) FROM audit_logs WHERE org_id = :org
"""
# what retention needs to cut: a version 2 digest over the records (the bench does not verify)
SEED_DIGEST = """
INSERT INTO audit_digests (id, org_id, stream, sequence, from_seq, to_seq, first_occurred_at, last_occurred_at,
    record_count, merkle_root, previous_hash, digest_hash, signature, created_at, version, key_id, from_index,
    tree_size, chain_head, frontier)
VALUES (:id, :org, 'audit', 1, 1, 1, now(), now(), :n, 'x', 'x', 'x', 'x', now(), 2, 'bench', 1, :size, 'x', '[]')
"""


async def seed(database_url: str, records: int) -> str:
    org_id, tag = new_id("org"), f"r{random.randrange(10**9)}"
    engine = create_async_engine(to_async_url(database_url))
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("INSERT INTO organizations (id, name, created_at, sso_required) VALUES (:o, 'old', now(), false)"),
            {"o": org_id},
        )
        await conn.execute(sa.text(SEED), {"org": org_id, "n": records, "tag": tag})
        await conn.execute(sa.text(SEED_SEARCH), {"org": org_id})
        await conn.execute(sa.text(SEED_DIGEST), {"id": new_id("dgst"), "org": org_id, "n": records, "size": records})
    async with engine.begin() as conn:
        await conn.execute(sa.text("ANALYZE audit_logs"))
    await engine.dispose()
    return org_id


async def one_run(server, args, database_url: str) -> dict:
    old_org = await seed(database_url, args.expired)
    alone = await throughput(server.url, server.api_key, via="rest", batch=100, total=args.records, concurrency=4)
    db = Database(database_url)
    settings = Settings(database_url=database_url)
    signer = Signer(os.urandom(32))
    try:
        started = time.perf_counter()
        task = asyncio.create_task(retention.expire_organization(db, old_org, settings, signer))
        await asyncio.sleep(0.5)  # the cut is written, the batches are under way
        during = await throughput(server.url, server.api_key, via="rest", batch=100, total=args.records, concurrency=4)
        overlapped = not task.done()
        outcome = await task
        seconds = time.perf_counter() - started
    finally:
        await db.engine.dispose()
    return {
        "alone": alone,
        "during": during,
        "retention_s": round(seconds, 2),
        "removed": outcome.removed,
        "retention_whole_ingest": overlapped,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--expired", type=int, default=200_000)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    servers = None
    if not os.environ.get("DATABASE_URL"):
        servers = EmbeddedServers(Path(tempfile.mkdtemp(prefix="agentrail-retention-")))
        database_url, redis_url = servers.start()
        os.environ["DATABASE_URL"], os.environ["REDIS_URL"] = database_url, redis_url
    os.environ.setdefault("AGENTRAIL_SECRET_KEY", "bench-secret-" + "x" * 40)
    try:
        with running_server() as server:
            runs = []
            for _ in range(args.runs):
                ref = cpu_ref()
                runs.append({**await one_run(server, args, os.environ["DATABASE_URL"]), "cpu_ref_s": ref})
    finally:
        if servers is not None:
            servers.stop()
    alone = statistics.median(r["alone"] for r in runs)
    during = statistics.median(r["during"] for r in runs)
    print(
        json.dumps(
            {
                "benchmark": "retention",
                "expired_records": args.expired,
                "ingest_records": args.records,
                "ingest_alone_records_per_s": round(alone),
                "ingest_during_retention_records_per_s": round(during),
                "ratio": round(during / alone, 3),
                "target_ratio": 0.8,
                "retention_run_s": statistics.median(r["retention_s"] for r in runs),
                "removed_per_s": round(statistics.median(r["removed"] / r["retention_s"] for r in runs)),
                "runs": runs,
                "cpu_ref_s": cpu_ref(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
