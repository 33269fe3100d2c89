"""Organisation analytics over 1,000,000 records and 20,000 alerts: p50 of `policyAnalytics` for 30 days.

    .venv/bin/python bench/analytics.py [--records 1000000] [--alerts 20000] [--reads 15]

Starts embedded PostgreSQL and Redis in a temporary folder (or uses DATABASE_URL / REDIS_URL), runs
`agentrail serve` on them, seeds with set-based SQL, then times the query over HTTP. Prints JSON.
Target p50 < 500 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import sqlalchemy as sa
from _server import running_server
from sqlalchemy.ext.asyncio import create_async_engine

import app.models  # noqa: F401  every table known before the first session
from app.db import to_async_url
from app.runtime.embedded import EmbeddedServers

QUERY = (
    "query { policyAnalytics { recordsEvaluated violations violationRate blockRate "
    "byRule { ruleName count } bySeverity { key count } byAgent { key count } daily { day records violations } } }"
)

SEED_RECORDS = """
INSERT INTO audit_logs (id, org_id, trace_id, span_id, agent_id, action, metadata, occurred_at, received_at, status,
                        governance_status, credential_masked, checksum, chain_index, content_hash, entry_hash)
SELECT 'log_bench_' || g, :org, 'trace-' || (g / 10), 'span-' || g, :agent, (ARRAY['llm_call', 'tool_use'])[1 + g % 2],
       '{}'::jsonb, now() - ((g % 43200) * interval '1 minute'), now(),
       CASE WHEN g % 50 = 0 THEN 'error' ELSE 'ok' END, CASE WHEN g % 100 = 0 THEN 'blocked' END, false,
       'sha256:' || md5(g::text),
       COALESCE((SELECT max(x.chain_index) FROM audit_logs x WHERE x.org_id = CAST(:org AS varchar)), 0) + g,
       sha256(('c' || g)::bytea), sha256(('e' || g)::bytea)
FROM generate_series(1, :n) AS g
"""

SEED_ALERTS = """
INSERT INTO alerts (id, org_id, rule_id, rule_name, rule_kind, severity, action, message, field, excerpt,
                    audit_log_id, trace_id, agent_id, created_at)
SELECT 'alrt_bench_' || g, :org, 'rule_' || (g % 7), 'Rule ' || (g % 7), 'pii',
       (ARRAY['LOW', 'MEDIUM', 'HIGH', 'CRITICAL'])[1 + g % 4], 'alert', 'bench', 'prompt', '***',
       'log_bench_' || (g * (:n / :alerts)), 'trace-' || (g * (:n / :alerts) / 10), :agent,
       now() - ((g * (:n / :alerts) % 43200) * interval '1 minute')
FROM generate_series(1, :alerts) AS g
"""


async def seed(database_url: str, org_id: str, agent_id: str, records: int, alerts: int) -> float:
    engine = create_async_engine(to_async_url(database_url))
    started = time.perf_counter()
    async with engine.begin() as conn:
        await conn.execute(sa.text(SEED_RECORDS), {"org": org_id, "agent": agent_id, "n": records})
        await conn.execute(sa.text(SEED_ALERTS), {"org": org_id, "agent": agent_id, "n": records, "alerts": alerts})
    async with engine.begin() as conn:
        await conn.execute(sa.text("ANALYZE audit_logs"))
        await conn.execute(sa.text("ANALYZE alerts"))
    await engine.dispose()
    return time.perf_counter() - started


async def roll_up(database_url: str) -> None:
    """What the worker's minute cron does: roll the seeded hours up into the metrics tables."""
    from app.db import Database
    from app.metrics.service import rollup_all

    db = Database(database_url, pool_size=2, max_overflow=0)
    try:
        await rollup_all(db)
    finally:
        await db.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--alerts", type=int, default=20_000)
    parser.add_argument("--reads", type=int, default=15)
    args = parser.parse_args()
    servers = None
    if not os.environ.get("DATABASE_URL"):
        servers = EmbeddedServers(Path(tempfile.mkdtemp(prefix="agentrail-analytics-")))
        database_url, redis_url = servers.start()
        os.environ["DATABASE_URL"], os.environ["REDIS_URL"] = database_url, redis_url
    try:
        with running_server() as server:
            headers = {"Authorization": f"Bearer {server.token}"}
            async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=120) as client:
                me = (await client.post("/graphql", json={"query": "{ me { organization { id } } }"})).json()
                org_id = me["data"]["me"]["organization"]["id"]
                agent = await client.post(
                    "/graphql", json={"query": 'mutation { createAgent(input: {name: "bench"}) { id } }'}
                )
                agent_id = agent.json()["data"]["createAgent"]["id"]
                seed_seconds = await seed(os.environ["DATABASE_URL"], org_id, agent_id, args.records, args.alerts)
                rollup_started = time.perf_counter()
                await roll_up(os.environ["DATABASE_URL"])
                rollup_seconds = time.perf_counter() - rollup_started
                timings = []
                for i in range(args.reads + 2):
                    started = time.perf_counter()
                    body = (await client.post("/graphql", json={"query": QUERY})).json()
                    elapsed = (time.perf_counter() - started) * 1000
                    assert "errors" not in body, body
                    if i >= 2:
                        timings.append(elapsed)
            result = body["data"]["policyAnalytics"]
            timings.sort()
            print(
                json.dumps(
                    {
                        "benchmark": "policy_analytics",
                        "records": args.records,
                        "alerts": args.alerts,
                        "seed_seconds": round(seed_seconds, 1),
                        "rollup_seconds": round(rollup_seconds, 1),
                        "records_evaluated_30d": result["recordsEvaluated"],
                        "violations_30d": result["violations"],
                        "p50_ms": round(statistics.median(timings), 1),
                        "p95_ms": round(timings[int(len(timings) * 0.95) - 1], 1),
                        "target_p50_ms": 500,
                    },
                    indent=2,
                )
            )
    finally:
        if servers is not None:
            servers.stop()


if __name__ == "__main__":
    asyncio.run(main())
