"""`metrics` over 30 days × 1,000,000 records: p50/p95 over HTTP, and how long the rollup takes.

    .venv/bin/python bench/metrics.py [--records 1000000] [--days 30] [--reads 30]
        [--admin-url postgresql://postgres@127.0.0.1:5432/postgres] [--redis-url redis://127.0.0.1:6379/9]

Creates a scratch database on the given PostgreSQL (dropped at the end) and runs `agentrail serve` on it
without the in-process worker (so sealing and search indexing of a million records do not compete with
the reads). Seeds one organisation with set-based SQL (INSERT … SELECT generate_series; the checksum is
a placeholder, the immutability trigger only blocks UPDATE and DELETE): 5 agents, 4 actions, statuses
ok/error/blocked, governance approved/blocked/none, metadata.tokens, log-normal durations, spread evenly
over the last `days` up to now (so the current hour is a live tail read from the raw records). Then runs
the rollup (what the cron job calls) and times `metrics` over the whole range for several groupings.
Target: p50 < 200 ms. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _server import running_server  # noqa: E402

import app.models  # noqa: E402, F401  every table known before the first session
from app.db import Database, to_async_url  # noqa: E402
from app.metrics import service  # noqa: E402

QUERY = """
query($from: DateTime!, $to: DateTime, $groupBy: [MetricDimension!]) {
  metrics(from: $from, to: $to, groupBy: $groupBy) {
    start dimensions { agentId action status governanceStatus }
    count errors blocked alerts tokens durationP50 durationP95
  }
}
"""
CASES = {
    "total": [],
    "by_day": ["DAY"],
    "by_agent_action_status": ["AGENT", "ACTION", "STATUS"],
    "by_hour": ["HOUR"],
    "by_day_agent": ["DAY", "AGENT"],
}

SEED = """
INSERT INTO audit_logs (id, org_id, trace_id, span_id, agent_id, action, metadata, occurred_at, received_at,
    duration_ms, status, governance_status, credential_masked, checksum, chain_index, content_hash, entry_hash)
SELECT 'log_bench' || lpad(g::text, 10, '0'), :org, 'trace-' || (g / 20), 'span-' || g,
    (CAST(:agents AS text[]))[1 + g % 5],
    (ARRAY['llm_call', 'tool_use', 'agent_invoke', 'guardrail_check'])[1 + (g / 5) % 4],
    CASE WHEN g % 3 = 0 THEN jsonb_build_object('tokens', 100 + g % 9000, 'model', 'gpt-4o')
         ELSE '{"model": "gpt-4o"}'::jsonb END,
    t.at, t.at,
    CASE WHEN g % 10 = 0 THEN NULL ELSE round(exp(3 + 2.5 * random())::numeric, 1)::float8 END,
    CASE WHEN g % 50 = 0 THEN 'error' WHEN g % 97 = 0 THEN 'blocked' ELSE 'ok' END,
    (ARRAY['approved', 'blocked', NULL])[1 + g % 3],
    false,
    'sha256:' || md5(g::text) || md5(g::text || 'x'),
       COALESCE((SELECT max(x.chain_index) FROM audit_logs x WHERE x.org_id = CAST(:org AS varchar)), 0) + g,
       sha256(('c' || g)::bytea), sha256(('e' || g)::bytea)
FROM generate_series(1, :n) g
CROSS JOIN LATERAL (SELECT CAST(:start AS timestamptz) + (CAST(:span AS interval) * g / :n) AS at) t
"""


async def admin(url: str, statement: str) -> None:
    engine = create_async_engine(to_async_url(url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


async def seed(database_url: str, org_id: str, agents: list[str], records: int, days: int) -> dict:
    end = datetime.now(UTC)
    start = end - timedelta(days=days)
    engine = create_async_engine(to_async_url(database_url))
    started = time.perf_counter()
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(SEED),
            {"org": org_id, "agents": agents, "n": records, "start": start, "span": end - start},
        )
    async with engine.begin() as conn:
        await conn.execute(sa.text("ANALYZE audit_logs"))
    await engine.dispose()
    return {"seed_s": round(time.perf_counter() - started, 1)}


async def rollup(database_url: str, org_id: str) -> dict:
    db = Database(database_url)
    try:
        started = time.perf_counter()
        result = await service.rollup_organization(db, org_id)
        elapsed = time.perf_counter() - started
        async with db.engine.begin() as conn:
            await conn.execute(sa.text("ANALYZE metric_rollups"))
            rows = (await conn.execute(sa.text("SELECT count(*) FROM metric_rollups"))).scalar_one()
        started = time.perf_counter()
        again = await service.rollup_organization(db, org_id)
        return {
            "rollup_full_s": round(elapsed, 2),
            "rollup_hours": result.hours,
            "rollup_rows": rows,
            "rollup_noop_ms": round((time.perf_counter() - started) * 1000, 1),
            "rollup_noop_hours": again.hours,
        }
    finally:
        await db.dispose()


async def timed(client: httpx.AsyncClient, variables: dict, reads: int) -> dict:
    timings = []
    buckets = 0
    for i in range(reads + 3):
        started = time.perf_counter()
        response = await client.post("/graphql", json={"query": QUERY, "variables": variables})
        elapsed = (time.perf_counter() - started) * 1000
        body = response.json()
        assert "errors" not in body, str(body)[:300]
        buckets = len(body["data"]["metrics"])
        total = sum(b["count"] for b in body["data"]["metrics"])
        if i >= 3:
            timings.append(elapsed)
    timings.sort()
    return {
        "p50_ms": round(statistics.median(timings), 1),
        "p95_ms": round(timings[max(0, int(len(timings) * 0.95) - 1)], 1),
        "buckets": buckets,
        "records_counted": total,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--reads", type=int, default=30)
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database (to inspect plans)")
    args = parser.parse_args()

    name = f"agentrail_bench_metrics_{os.getpid()}"
    database_url = make_url(to_async_url(args.admin_url)).set(database=name).render_as_string(hide_password=False)
    await admin(args.admin_url, f'CREATE DATABASE "{name}"')
    os.environ.update({"DATABASE_URL": database_url, "REDIS_URL": args.redis_url, "AGENTRAIL_RUN_WORKER": "false"})
    results: dict = {"benchmark": "metrics", "records": args.records, "days": args.days, "reads": args.reads}
    try:
        with running_server() as server:
            headers = {"Authorization": f"Bearer {server.token}"}
            async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=120) as client:
                me = (await client.post("/graphql", json={"query": "{ me { organization { id } } }"})).json()
                org_id = me["data"]["me"]["organization"]["id"]
                agents = []
                for i in range(5):
                    created = await client.post(
                        "/graphql",
                        json={
                            "query": "mutation($n: String!) { createAgent(input: {name: $n}) { id } }",
                            "variables": {"n": f"agent-{i}"},
                        },
                    )
                    agents.append(created.json()["data"]["createAgent"]["id"])
                results.update(await seed(database_url, org_id, agents, args.records, args.days))
                results.update(await rollup(database_url, org_id))
                now = datetime.now(UTC)
                span = {
                    "from": (now - timedelta(days=args.days, minutes=5)).isoformat(),
                    "to": (now + timedelta(minutes=5)).isoformat(),
                }
                for case, group_by in CASES.items():
                    results[case] = await timed(client, {**span, "groupBy": group_by}, args.reads)
                # from = 30 days back with a ragged start: the first partial hour is read from raw records
                results["total_ragged_from"] = await timed(
                    client, {"from": (now - timedelta(days=args.days, minutes=-17)).isoformat()}, args.reads
                )
            results["server_peak_rss_mb"] = server.peak_rss_mb()
    finally:
        if args.keep:
            results["kept_database"] = name
        else:
            await admin(args.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    results["target_p50_ms"] = 200
    results["target_met"] = all(v["p50_ms"] < 200 for v in results.values() if isinstance(v, dict))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
