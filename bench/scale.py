"""Speed at scale (issue 21.5): reads, export, ingest and retention as audit records grow, per stage.

    .venv/bin/python bench/scale.py [--stages 100000,1000000] [--reads 20] [--ingest 10000]

Each stage (10,000,000 is allowed, not the default: ~10x the 1M stage's disk and time) starts embedded PostgreSQL
and Redis in a fresh temporary folder (`--data-dir`, default the system's), `agentrail serve` (bench/_server.py),
and seeds the stage's records across 1,000 organisations: the bench's own organisation (business plan) holds 20 %,
four large ones 5 % each, a long tail of 995 the rest (weights 1/rank); one in ten of the tail is on pro, one in
fifty on business, the rest free. Records are received over the last 15 months (oldest first in each chain), in
traces of 1-40 spans (the bench organisation also has one trace of 2,000 spans, in the last hour), with prompts of
200-2,000 characters, responses of 100-1,000, small JSON metadata, 1 % carrying the word "zebra" and an alert.

Seeding is fast and valid: the chain columns (content hash, record hash, entry hash, chain index) are computed in
this process with the ingest path's own functions (app.integrity.chain_hashes over the row ingest would store),
records and alerts go in with COPY (asyncpg copy_records_to_table) into monthly partitions made by
app.audit.partitions, search rows and trace summaries are computed set-based by PostgreSQL with the app's
expressions, then the server's worker seals them (real signed digests and Merkle nodes) and the bench waits until
it is quiet; `verifyAuditTrail` over the last day must answer ok.

Then, as the bench organisation's API key, p50/p95 over `--reads` reads of: `auditLogs(first: 50)` with no filter,
by agent, by action, by a one-day window, full-text search; `traces(first: 50)`; `trace(traceId)` of the
2,000-span trace; `alerts(first: 50)`; `metrics` over 30 days; the synchronous export's time to first byte (last
hour's records); batch ingest throughput (REST, batches of 100, 4 clients); bytes per record
(pg_total_relation_size of audit_logs, audit_search, audit_traces, alerts, audit_merkle_nodes over the records);
the retention job (app.audit.retention.run over every organisation, the free and pro orgs' old records expire)
duration, and ingest throughput during it against without. One JSON object per stage (each with its CPU
reference, df before/after and the database size), then a table of every figure at the last stage against the
first (target: reads within 1.5x; ingest during retention >= 80 % of without).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import shutil
import statistics
import string
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from _server import ROOT, cpu_ref, running_server, server_env, text
from ingest import throughput

from app.audit import partitions
from app.audit.search import MAX_INDEXED_CHARS, TEXT_CONFIG
from app.db import new_id
from app.integrity import AUDIT_CHAIN, GENESIS_ENTRY, chain_hashes
from app.runtime.embedded import EmbeddedServers

ORGS = 1_000
MONTHS = 15
BIG_TRACE = "scale-big-trace"
BIG_TRACE_SPANS = 2_000
CHUNK = 20_000
ACTIONS = ["llm_call", "tool_use", "agent_invoke", "guardrail_check"]
LOG_COLUMNS = [
    "id",
    "org_id",
    "trace_id",
    "span_id",
    "parent_span_id",
    "agent_id",
    "action",
    "prompt",
    "response",
    "metadata",
    "occurred_at",
    "received_at",
    "duration_ms",
    "status",
    "provider",
    "risk_level",
    "credential_masked",
    "checksum",
    "chain_index",
    "content_hash",
    "entry_hash",
]
ALERT_COLUMNS = [
    "id",
    "org_id",
    "rule_id",
    "rule_name",
    "rule_kind",
    "severity",
    "action",
    "message",
    "field",
    "excerpt",
    "audit_log_id",
    "trace_id",
    "agent_id",
    "created_at",
]
SEARCH_SQL = f"""
INSERT INTO audit_search (log_id, org_id, received_at, document)
SELECT a.id, a.org_id, a.received_at, to_tsvector('{TEXT_CONFIG}', left(coalesce(a.prompt, ''), {MAX_INDEXED_CHARS})
       || ' ' || left(coalesce(a.response, ''), {MAX_INDEXED_CHARS}))
FROM audit_logs a ON CONFLICT (log_id, received_at) DO NOTHING
"""
# the aggregate of app.audit.summaries (and migration 0015), over every seeded record
TRACES_SQL = """
INSERT INTO audit_traces (org_id, trace_id, span_count, started_at, ended_at, error_count, blocked_count, agent_ids)
SELECT org_id, trace_id, count(*), min(occurred_at),
       max(occurred_at + make_interval(secs => coalesce(duration_ms, 0) / 1000.0)),
       count(*) FILTER (WHERE status = 'error'), count(*) FILTER (WHERE status = 'blocked'),
       array_remove(array_agg(DISTINCT agent_id ORDER BY agent_id), NULL)
FROM audit_logs GROUP BY org_id, trace_id ON CONFLICT DO NOTHING
"""
PROGRESS_SQL = """
INSERT INTO audit_search_progress (org_id, swept_seq) SELECT org_id, max(seq) FROM audit_logs GROUP BY org_id
ON CONFLICT (org_id) DO UPDATE SET swept_seq = greatest(audit_search_progress.swept_seq, EXCLUDED.swept_seq)
"""
SIZE_TABLES = ("audit_logs", "audit_search", "audit_traces", "alerts", "audit_merkle_nodes")


def shares(total: int) -> list[int]:
    """Records per organisation: index 0 is the bench's, 1-4 the large ones, the rest a 1/rank tail."""
    tail = [1 / rank for rank in range(1, ORGS - 4)]
    weights = [0.20] + [0.05] * 4 + [0.60 * w / sum(tail) for w in tail]
    counts = [max(1, int(total * w)) for w in weights]
    counts[0] += total - sum(counts)
    return counts


def plan_of(index: int) -> str:
    if index == 0 or index % 50 == 2:
        return "business"
    return "pro" if index % 10 == 1 or index < 5 else "free"


class Seeder:
    def __init__(self, rng: random.Random, now: datetime) -> None:
        self.rng, self.now = rng, now
        self.prompts = [text(rng, 200, 2000) for _ in range(500)]
        self.responses = [text(rng, 100, 1000) for _ in range(500)]

    def org_rows(self, org_id: str, agents: list[str], n: int, big_trace: bool) -> Any:
        """Yields (log rows, alert rows) in chunks, in chain order (oldest first), with the chain hashes."""
        rng, span = self.rng, timedelta(days=MONTHS * 30.4)
        ages = sorted((rng.random() * span for _ in range(n - (BIG_TRACE_SPANS if big_trace else 0))), reverse=True)
        if big_trace:
            ages += [timedelta(minutes=30) - timedelta(milliseconds=100 * i) for i in range(BIG_TRACE_SPANS)]
        previous = GENESIS_ENTRY
        logs: list[tuple] = []
        alerts: list[tuple] = []
        trace, left, position = "", 0, 0
        for number, age in enumerate(ages):
            if big_trace and number >= n - BIG_TRACE_SPANS:
                if trace != BIG_TRACE:
                    trace, position = BIG_TRACE, 0
            elif left == 0:
                trace, left, position = f"t-{new_id('tr')}", rng.randint(1, 40), 0
            left = max(left - 1, 0)
            received = self.now - age
            prompt = self.prompts[rng.randrange(500)]
            if rng.random() < 0.01:
                prompt = f"zebra {prompt}"
            row: dict[str, Any] = {
                "id": new_id("log"),
                "org_id": org_id,
                "occurred_at": received - timedelta(milliseconds=rng.randint(0, 2000)),
                "action": rng.choice(ACTIONS),
                "agent_id": rng.choice(agents),
                "trace_id": trace,
                "span_id": f"{trace}-{position}",
                "parent_span_id": f"{trace}-{(position - 1) // 3}" if position else None,
                "prompt": prompt,
                "response": self.responses[rng.randrange(500)],
                "metadata": {
                    "model": "gpt-4o",
                    "tokens": rng.randint(100, 9000),
                    "user": "".join(rng.choices(string.ascii_lowercase, k=8)),
                    "tags": ["prod", "eu"],
                },
                "args": None,
                "result": None,
                "status": "error" if rng.random() < 0.02 else "ok",
                "duration_ms": round(rng.uniform(5, 3000), 1),
                "idempotency_key": None,
                "execution_id": None,
                "verb": None,
                "provider": rng.choice(["openai", "anthropic", "stripe"]),
                "risk_level": rng.choice(["LOW", "MEDIUM", "HIGH"]),
                "governance_status": None,
                "dry_run": None,
                "idempotent": None,
                "tenant_id": None,
                "credential_masked": False,
            }
            position += 1
            index = number + 1
            hashes = chain_hashes(AUDIT_CHAIN, row, index, previous)  # as app.audit.service.ingest does
            previous = hashes.entry_hash
            logs.append(
                (
                    *(row[c] for c in LOG_COLUMNS[:9]),
                    orjson.dumps(row["metadata"]).decode(),
                    row["occurred_at"],
                    received,
                    row["duration_ms"],
                    row["status"],
                    row["provider"],
                    row["risk_level"],
                    False,
                    hashes.checksum,
                    index,
                    hashes.content_hash,
                    hashes.entry_hash,
                )
            )
            if prompt.startswith("zebra"):
                alerts.append(
                    (new_id("alrt"), org_id, "rule_scale", "Zebra mentioned", "keywords", "HIGH", "alert",
                     "prompt mentions a zebra", "prompt", "zebra", row["id"], trace, row["agent_id"], received)
                )  # fmt: skip
            if len(logs) >= CHUNK:
                yield logs, alerts
                logs, alerts = [], []
        if logs:
            yield logs, alerts


async def seed(database_url: str, bench_org: str, records: int, now: datetime) -> dict[str, Any]:
    started = time.perf_counter()
    rng = random.Random(21)
    seeder = Seeder(rng, now)
    conn = await asyncpg.connect(database_url)
    try:
        for table in partitions.PARTITIONED_TABLES:
            first = partitions.month_of(now - timedelta(days=MONTHS * 31 + 31))
            for month in partitions.months(first, partitions.month_of(now)):
                await conn.execute(partitions.Partition(table, month).create_sql())
        orgs = [bench_org] + [new_id("org") for _ in range(ORGS - 1)]
        await conn.executemany(
            "INSERT INTO organizations (id, name, created_at, sso_required) VALUES ($1, $2, $3, false)",
            [(o, f"scale {i}", now) for i, o in enumerate(orgs) if i],
        )
        await conn.executemany(
            "INSERT INTO billing_accounts (org_id, plan, created_at, updated_at) VALUES ($1, $2, $3, $3) "
            "ON CONFLICT (org_id) DO UPDATE SET plan = EXCLUDED.plan",
            [(o, plan_of(i), now) for i, o in enumerate(orgs) if plan_of(i) != "free"],
        )
        agents: dict[str, list[str]] = {}
        agent_rows = []
        for i, org in enumerate(orgs):
            agents[org] = [new_id("agt") for _ in range(8 if i < 5 else 2)]
            agent_rows += [(a, org, f"agent-{k}", "", "{}", now) for k, a in enumerate(agents[org])]
        await conn.executemany(
            "INSERT INTO agents (id, org_id, name, description, metadata, created_at, updated_at) "
            "VALUES ($1, $2, $3, $4, $5::jsonb, $6, $6)",
            agent_rows,
        )
        hashing = 0.0
        for i, (org, n) in enumerate(zip(orgs, shares(records), strict=True)):
            chunks = seeder.org_rows(org, agents[org], n, big_trace=i == 0)
            while True:
                mark = time.perf_counter()
                chunk = next(chunks, None)
                hashing += time.perf_counter() - mark
                if chunk is None:
                    break
                logs, alerts = chunk
                async with conn.transaction():
                    await conn.copy_records_to_table("audit_logs", records=logs, columns=LOG_COLUMNS)
                    if alerts:
                        await conn.copy_records_to_table("alerts", records=alerts, columns=ALERT_COLUMNS)
        copied = time.perf_counter() - started
        for sql in (SEARCH_SQL, TRACES_SQL, PROGRESS_SQL, "ANALYZE"):
            await conn.execute(sql)
    finally:
        await conn.close()
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "generate_and_hash_s": round(hashing, 1),
        "copy_s": round(copied - hashing, 1),
        "agents": agents[bench_org],
    }


def progress(message: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S} {message}", file=sys.stderr, flush=True)


def percentiles(timings: list[float]) -> dict[str, float]:
    timings.sort()
    return {"p50_ms": round(statistics.median(timings), 1), "p95_ms": round(timings[int(len(timings) * 0.95) - 1], 1)}


async def graphql(client: httpx.AsyncClient, query: str) -> dict:
    body = (await client.post("/graphql", json={"query": query})).json()
    assert "errors" not in body, str(body)[:400]
    return body["data"]


async def timed(client: httpx.AsyncClient, query: str, reads: int) -> dict[str, float]:
    for _ in range(2):
        await graphql(client, query)
    timings = []
    for _ in range(reads):
        started = time.perf_counter()
        await graphql(client, query)
        timings.append((time.perf_counter() - started) * 1000)
    return percentiles(timings)


def read_queries(now: datetime, agent: str) -> dict[str, str]:
    node = "id action occurredAt agentId prompt"
    window = f'from: "{(now - timedelta(days=10)).isoformat()}", to: "{(now - timedelta(days=9)).isoformat()}"'
    page = "{ auditLogs(first: 50%s) { edges { node { " + node + " } } } }"
    return {
        "auditLogs": page % "",
        "auditLogs_by_agent": page % f', filter: {{agentId: ["{agent}"]}}',
        "auditLogs_by_action": page % ', filter: {action: ["tool_use"]}',
        "auditLogs_window": page % f", filter: {{{window}}}",
        "auditLogs_search": page % ', filter: {search: "zebra"}',
        "traces": "{ traces(first: 50) { edges { node { traceId spanCount startedAt durationMs status } } } }",
        "trace_2000_spans": f'{{ trace(traceId: "{BIG_TRACE}") {{ spanCount spans {{ id action }} }} }}',
        "alerts": "{ alerts(first: 50) { edges { node { id ruleName severity message } } } }",
        "metrics_30d": f'{{ metrics(from: "{(now - timedelta(days=30)).isoformat()}") {{ count errors }} }}',
    }


async def export_ttfb(client: httpx.AsyncClient, now: datetime, reads: int) -> dict[str, float]:
    params = {"from": (now - timedelta(hours=1)).isoformat()}
    timings = []
    for i in range(reads + 2):
        started = time.perf_counter()
        async with client.stream("GET", "/api/v1/audit-logs/export", params=params) as response:
            assert response.status_code == 200, response.status_code
            first = None
            async for _ in response.aiter_raw():
                first = first or time.perf_counter() - started
        if i >= 2:
            timings.append((first or 0) * 1000)
    return percentiles(timings)


def folder_gb(path: Path) -> float:
    """What the stage's databases take (PostgreSQL's data with its WAL, Redis): the file system's `used` also
    moves with the other sessions' writes on a shared machine."""
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 1e9, 2)


def disk(path: str) -> dict[str, float]:
    usage = shutil.disk_usage(path)
    return {"used_gb": round(usage.used / 1e9, 2), "free_gb": round(usage.free / 1e9, 2)}


async def sizes(database_url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(database_url)
    try:
        records = await conn.fetchval("SELECT count(*) FROM audit_logs")
        total = 0
        for table in SIZE_TABLES:  # a partitioned table's size is its partitions'
            total += await conn.fetchval(
                "SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree($1::regclass)", table
            )
        return {
            "records": records,
            "bytes_per_record": round(total / records),
            "database_mb": round(await conn.fetchval("SELECT pg_database_size(current_database())") / 1e6),
        }
    finally:
        await conn.close()


async def stage(records: int, args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="agentrail-scale-", dir=args.data_dir))
    result: dict[str, Any] = {"stage": records, "disk_before": disk(str(folder))}
    servers = EmbeddedServers(folder)
    database_url, redis_url = servers.start()
    os.environ["DATABASE_URL"], os.environ["REDIS_URL"] = database_url, redis_url
    try:
        with running_server() as server:
            conn = await asyncpg.connect(database_url)
            bench_org = await conn.fetchval("SELECT id FROM organizations ORDER BY created_at DESC LIMIT 1")
            await conn.close()
            now = datetime.now(UTC)
            seeded = await seed(database_url, bench_org, records, now)
            agents = seeded.pop("agents")
            result["seed"] = seeded
            progress(f"seeded {records} records: {seeded}")
            settle = time.perf_counter()
            await asyncio.to_thread(server.settle, timeout=1800)  # the worker seals the seeded chains
            result["seed"]["worker_settle_s"] = round(time.perf_counter() - settle, 1)
            async with httpx.AsyncClient(
                base_url=server.url, headers={"X-API-Key": server.api_key}, timeout=600
            ) as client:
                check = await graphql(
                    client, f'{{ verifyAuditTrail(from: "{(now - timedelta(days=1)).isoformat()}") {{ ok reason }} }}'
                )
                result["verify_last_day"] = check["verifyAuditTrail"]
                progress(f"settled in {result['seed']['worker_settle_s']} s, verified {check}; reading")
                result["cpu_ref_s"] = cpu_ref()
                result["reads"] = {
                    name: await timed(client, query, args.reads) for name, query in read_queries(now, agents[0]).items()
                }
                result["reads"]["export_ttfb"] = await export_ttfb(client, now, args.reads)
            result["size"] = await sizes(database_url)
            ref = cpu_ref()
            alone = await throughput(
                server.url, server.api_key, via="rest", batch=100, total=args.ingest, concurrency=4
            )
            result["ingest"] = {"records_per_s": alone, "cpu_ref_s": ref}
            progress(f"ingest {alone} records/s; retention")
            result["retention"] = await retention_run(server, args, alone)
            result["stage_folder_gb"] = folder_gb(folder)
        result["disk_after"] = disk(str(folder))
        result["disk_used_gb"] = round(result["disk_after"]["used_gb"] - result["disk_before"]["used_gb"], 2)
    finally:
        servers.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return result


# the retention job in a process of its own (as the worker runs it, beside the API): the bench's event loop
# drives the ingest clients and must not share the CPU with it
RETENTION = """
import asyncio, json, os, sys, time
import app.models
from app.audit import retention
from app.db import Database
from app.integrity import Signer
from app.runtime.secrets import signing_seed
from app.settings import Settings

async def main():
    url = os.environ["DATABASE_URL"]
    db = Database(url)
    started = time.perf_counter()
    signer = Signer(signing_seed(os.environ["AGENTRAIL_AUDIT_SIGNING_KEY"]))
    summary = await retention.run(db, Settings(database_url=url), signer)
    summary["seconds"] = time.perf_counter() - started
    await db.engine.dispose()
    print(json.dumps(summary))

asyncio.run(main())
"""


async def retention_run(server: Any, args: argparse.Namespace, alone: float) -> dict[str, Any]:
    ref = cpu_ref()
    job = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RETENTION, stdout=asyncio.subprocess.PIPE, cwd=str(ROOT), env=server_env()
    )
    await asyncio.sleep(1.0)  # the process has started, the cuts are being written
    during = await throughput(server.url, server.api_key, via="rest", batch=100, total=args.ingest, concurrency=4)
    overlapped = job.returncode is None
    out, _ = await job.communicate()
    assert job.returncode == 0, "the retention run failed"
    summary = json.loads(out.decode().strip().splitlines()[-1])
    return {
        "duration_s": round(summary["seconds"], 1),
        "removed": summary["removed"],
        "organizations": summary["organizations"],
        "partitions_dropped": len(summary["partitionsDropped"]),
        "ingest_during_records_per_s": during,
        "ingest_alone_records_per_s": alone,
        "ratio": round(during / alone, 3),
        "ingest_wholly_during_run": overlapped,
        "cpu_ref_s": ref,
    }


def table(results: list[dict[str, Any]]) -> str:
    first, last = results[0], results[-1]
    lines = [f"{'figure':28} {first['stage']:>14} {last['stage']:>14} {'ratio':>7} target"]
    for name in first["reads"]:
        a, b = first["reads"][name], last["reads"][name]
        p = f"{a['p50_ms']}/{a['p95_ms']}", f"{b['p50_ms']}/{b['p95_ms']}"
        lines.append(f"{name + ' p50/p95 ms':28} {p[0]:>14} {p[1]:>14} {b['p50_ms'] / a['p50_ms']:>7.2f} <= 1.5")
    for label, key in (
        ("ingest records/s", ("ingest", "records_per_s")),
        ("bytes/record", ("size", "bytes_per_record")),
    ):
        a, b = first[key[0]][key[1]], last[key[0]][key[1]]
        lines.append(f"{label:28} {a:>14} {b:>14} {b / a:>7.2f}")
    for label, key in (("retention s", "duration_s"), ("ingest during/alone", "ratio")):
        a, b = first["retention"][key], last["retention"][key]
        lines.append(f"{label:28} {a:>14} {b:>14} {'':>7} {'>= 0.8' if key == 'ratio' else ''}")
    lines.append(f"{'disk used GB (df)':28} {first['disk_used_gb']:>14} {last['disk_used_gb']:>14}")
    lines.append(f"{'stage folder GB':28} {first['stage_folder_gb']:>14} {last['stage_folder_gb']:>14}")
    lines.append(f"{'cpu ref s':28} {first['cpu_ref_s']:>14} {last['cpu_ref_s']:>14}")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stages", default="100000,1000000", help="records per stage (10000000 allowed)")
    parser.add_argument("--reads", type=int, default=20)
    parser.add_argument("--ingest", type=int, default=10_000, help="records per ingest throughput measurement")
    parser.add_argument("--data-dir", default=None, help="where each stage's databases live (default: the temp dir)")
    args = parser.parse_args()
    # this measures read speed, not the query cost limits (a 2,000-span trace weighs more than the default maximum)
    os.environ.setdefault("AGENTRAIL_MAX_QUERY_COST", "100000000")
    os.environ.setdefault("AGENTRAIL_QUERY_COST_BUDGET", "100000000")
    os.environ.setdefault("AGENTRAIL_QUERY_COST_REFILL_PER_SECOND", "1000000")
    os.environ.setdefault("AGENTRAIL_SECRET_KEY", "bench-secret-" + "x" * 40)
    os.environ.setdefault("AGENTRAIL_AUDIT_SIGNING_KEY", base64.b64encode(os.urandom(32)).decode())
    results = []
    for records in (int(s) for s in args.stages.split(",")):
        results.append(await stage(records, args))
        print(json.dumps(results[-1]), flush=True)
    if len(results) > 1:
        print(table(results))


if __name__ == "__main__":
    asyncio.run(main())
