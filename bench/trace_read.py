"""Reading whole traces over HTTP: p50/p95 of `trace(traceId)` for traces of 50, 2,000 and 10,000 spans.

    .venv/bin/python bench/trace_read.py [--reads 30]

Each trace is a realistic tree (every span has up to 8 children, so all spans lie within 6 levels).
Two shapes are read, selecting ~8 fields per span: nested (rootSpans → children to depth 6 through the fragment chain in
graphql/traces.graphql) and flat (`spans` with `depth`). Targets (issue 18): nested p50 < 200 ms for 10,000 spans,
< 50 ms for 2,000. CPU per read is the API process's plus its PostgreSQL's.
Prints JSON, including the server's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
from pathlib import Path

import httpx
import orjson
from _server import Server, cpu_ref, realistic_record, running_server

ROOT = Path(__file__).resolve().parents[1]
SPAN = "id traceId spanId parentSpanId action status occurredAt durationMs"


def nested_query(levels: int = 6) -> str:
    inner = SPAN
    for _ in range(levels - 1):
        inner = f"{SPAN} children {{ {inner} }}"
    return f"query($t: String!) {{ trace(traceId: $t) {{ traceId spanCount rootSpans {{ {inner} }} }} }}"


FLAT = f"query($t: String!) {{ trace(traceId: $t) {{ traceId spanCount spans {{ {SPAN} depth }} }} }}"


async def seed(client: httpx.AsyncClient, trace_id: str, spans: int) -> None:
    rng = random.Random(spans)
    # fanout 8: every span of even 10,000 lies within the 6 levels the nested query selects
    records = [realistic_record(rng, trace_id, i, fanout=8) for i in range(spans)]
    for start in range(0, spans, 1000):
        response = await client.post(
            "/api/v1/audit-logs/batch",
            content=orjson.dumps(records[start : start + 1000]),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 201, response.text[:200]


async def timed_reads(client: httpx.AsyncClient, server: Server, query: str, trace_id: str, reads: int) -> dict:
    timings = []
    cpu_before = 0.0
    for i in range(reads + 3):
        if i == 3:
            cpu_before = sum(server.cpu_split())
        started = time.perf_counter()
        response = await client.post("/graphql", json={"query": query, "variables": {"t": trace_id}})
        elapsed = (time.perf_counter() - started) * 1000
        body = response.json()
        assert "errors" not in body, str(body)[:300]
        if i >= 3:
            timings.append(elapsed)
    cpu = sum(server.cpu_split()) - cpu_before
    timings.sort()
    return {
        "p50_ms": round(statistics.median(timings), 1),
        "p95_ms": round(timings[int(len(timings) * 0.95) - 1], 1),
        "cpu_ms_per_read": round(cpu * 1000 / reads, 1),  # the API process's and its PostgreSQL's
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reads", type=int, default=30)
    args = parser.parse_args()
    # this measures read speed, not the query cost budget: a nested 10,000-span read costs ~60,000 points, so the
    # default budget (200,000) would refuse the repeated reads
    os.environ.setdefault("AGENTRAIL_QUERY_COST_BUDGET", "100000000")
    os.environ.setdefault("AGENTRAIL_QUERY_COST_REFILL_PER_SECOND", "1000000")
    results: dict = {"benchmark": "trace_read", "reads_per_case": args.reads}
    with running_server() as server:
        async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": server.api_key}, timeout=120) as client:
            for spans in (50, 2000, 10_000):
                trace_id = f"read-{spans}"
                await seed(client, trace_id, spans)
                await asyncio.to_thread(server.settle)  # let the worker index what was just written
                results[f"spans_{spans}"] = {
                    "cpu_ref_s": cpu_ref(),
                    "nested": await timed_reads(client, server, nested_query(), trace_id, args.reads),
                    "flat": await timed_reads(client, server, FLAT, trace_id, args.reads),
                }
        results["server_peak_rss_mb"] = server.peak_rss_mb()
    results["target"] = {"spans_2000_nested_p50_ms": 50, "spans_10000_nested_p50_ms": 200}  # issue 18
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
