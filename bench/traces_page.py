"""The newest-traces page as the table grows: p50/p95 and CPU per read of `traces(first: 50)`.

    .venv/bin/python bench/traces_page.py [--stages 10000,50000,115000] [--reads 24]

Stores traces of 51 spans (a tree of fan-out 3, realistic records with prompts of 200–2,000 characters) through
`POST /api/v1/audit-logs/batch` until each stage's span count, then reads the page two ways: the summary alone
(`traceId spanCount startedAt durationMs status`) and with `rootSpans { id action prompt response }` (the page of
issue 18). CPU per read is the server process's plus its PostgreSQL's. Target: flat as the table grows, and
≤ 0.5× Phoenix's p50 in the same run (see ../shared/peer). Every figure has the CPU reference taken just before.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time

import httpx
import orjson
from _server import Server, cpu_ref, realistic_record, running_server

SUMMARY = "traceId spanCount startedAt durationMs status"
PAGES = {
    "summary": f"{{ traces(first: 50) {{ edges {{ node {{ {SUMMARY} }} }} }} }}",
    "with_root_spans": (
        f"{{ traces(first: 50) {{ edges {{ node {{ {SUMMARY} rootSpans {{ id action prompt response }} }} }} }} }}"
    ),
}
SPANS_PER_TRACE = 51


async def store(client: httpx.AsyncClient, rng: random.Random, first_trace: int, traces: int) -> None:
    per_request = 19  # 969 spans per request (a batch holds at most 1,000)
    for start in range(first_trace, first_trace + traces, per_request):
        records = [
            realistic_record(rng, f"page-{t}", i)
            for t in range(start, min(start + per_request, first_trace + traces))
            for i in range(SPANS_PER_TRACE)
        ]
        response = await client.post(
            "/api/v1/audit-logs/batch", content=orjson.dumps(records), headers={"content-type": "application/json"}
        )
        assert response.status_code == 201, response.text[:300]


async def reads(client: httpx.AsyncClient, server: Server, query: str, n: int) -> dict:
    for _ in range(2):  # warm-up
        assert "errors" not in (await client.post("/graphql", json={"query": query})).json()
    ref = cpu_ref()
    timings = []
    cpu_before = sum(server.cpu_split())
    for _ in range(n):
        started = time.perf_counter()
        body = (await client.post("/graphql", json={"query": query})).json()
        timings.append((time.perf_counter() - started) * 1000)
        assert "errors" not in body, str(body)[:300]
        assert len(body["data"]["traces"]["edges"]) == 50
    cpu = sum(server.cpu_split()) - cpu_before
    timings.sort()
    return {
        "p50_ms": round(statistics.median(timings), 1),
        "p95_ms": round(timings[int(len(timings) * 0.95) - 1], 1),
        "cpu_ms_per_read": round(cpu * 1000 / n, 1),
        "cpu_ref_s": ref,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stages", default="10000,50000,115000", help="span counts at which the page is read")
    parser.add_argument("--reads", type=int, default=24)
    args = parser.parse_args()
    stages = [int(s) for s in args.stages.split(",")]
    # this measures read speed, not the query cost limits: a page of 50 traces' rootSpans is weighed as up to
    # 10,000 roots each, far above the default per-operation maximum
    os.environ.setdefault("AGENTRAIL_MAX_QUERY_COST", "100000000")
    os.environ.setdefault("AGENTRAIL_QUERY_COST_BUDGET", "100000000")
    os.environ.setdefault("AGENTRAIL_QUERY_COST_REFILL_PER_SECOND", "1000000")
    results: dict = {"benchmark": "traces_page", "spans_per_trace": SPANS_PER_TRACE, "reads_per_case": args.reads}
    rng = random.Random(18)
    with running_server() as server:
        async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": server.api_key}, timeout=300) as client:
            traces = 0
            for stage in stages:
                wanted = -(-stage // SPANS_PER_TRACE)
                await store(client, rng, traces, wanted - traces)
                traces = wanted
                await asyncio.to_thread(server.settle)  # the worker has indexed what was just stored
                results[f"spans_{traces * SPANS_PER_TRACE}"] = {
                    name: await reads(client, server, query, args.reads) for name, query in PAGES.items()
                }
        results["server_peak_rss_mb"] = server.peak_rss_mb()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
