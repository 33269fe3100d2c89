"""Ingest throughput and latency against a real `agentrail serve` (one uvicorn worker).

    .venv/bin/python bench/ingest.py [--records 20000] [--concurrency 4]

Prints JSON: records/s through `POST /api/v1/audit-logs/batch` and `logEvents` for batches of 100 and
1,000 realistic records (prompts of 200–2,000 characters), p50/p99 of a single `logEvent`, and the
server's peak RSS, each figure with the CPU reference taken just before it (`…_cpu_ref_s`).
Targets: ≥ 5,000 records/s in batches; single logEvent p99 < 25 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time

import httpx
import orjson
from _server import cpu_ref, realistic_record, running_server

LOG_EVENTS = "mutation($input: [AuditLogInput!]!) { logEvents(input: $input) { id } }"
JSON = {"content-type": "application/json"}
LOG_EVENT = "mutation($input: AuditLogInput!) { logEvent(input: $input) { id } }"


async def throughput(url: str, key: str, *, via: str, batch: int, total: int, concurrency: int) -> float:
    rng = random.Random(batch)
    batches = []
    for b in range(total // batch):
        trace = f"bench-{via}-{batch}-{b}"
        batches.append([realistic_record(rng, trace, i) for i in range(batch)])
    queue: asyncio.Queue = asyncio.Queue()
    for item in batches:
        # bodies are encoded up front: the client shares this machine, and its JSON encoding is not ours
        body = item if via == "rest" else {"query": LOG_EVENTS, "variables": {"input": item}}
        queue.put_nowait(orjson.dumps(body))

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            records = queue.get_nowait()
            if via == "rest":
                response = await client.post("/api/v1/audit-logs/batch", content=records, headers=JSON)
                assert response.status_code == 201, response.text[:300]
            else:
                response = await client.post("/graphql", content=records, headers=JSON)
                assert b'"errors"' not in response.content[:20], response.text[:300]

    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=120) as client:
        await worker_warmup(client)
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return round(len(batches) * batch / elapsed)


async def worker_warmup(client: httpx.AsyncClient) -> None:
    await client.post("/api/v1/audit-logs", json={"action": "warmup"})


async def single_latency(url: str, key: str, n: int) -> dict:
    rng = random.Random(7)
    timings = []
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=30) as client:
        for i in range(n + 20):
            record = realistic_record(rng, f"single-{i}", 0)
            started = time.perf_counter()
            response = await client.post("/graphql", json={"query": LOG_EVENT, "variables": {"input": record}})
            elapsed = (time.perf_counter() - started) * 1000
            assert "errors" not in response.json()
            if i >= 20:  # warm-up excluded
                timings.append(elapsed)
    timings.sort()
    return {
        "p50_ms": round(statistics.median(timings), 2),
        "p95_ms": round(timings[int(len(timings) * 0.95) - 1], 2),
        "p99_ms": round(timings[int(len(timings) * 0.99) - 1], 2),
        "max_ms": round(timings[-1], 2),
        "requests": n,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000, help="records per throughput run")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent client requests")
    parser.add_argument("--singles", type=int, default=500, help="single logEvent requests for latency")
    parser.add_argument("--packs", action="store_true", help="install the hipaa, gdpr and finance packs first")
    args = parser.parse_args()
    with running_server() as server:
        results: dict = {
            "benchmark": "ingest",
            "records_per_run": args.records,
            "concurrency": args.concurrency,
            "packs_installed": args.packs,
        }
        if args.packs:
            async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}) as c:
                for pack in ("hipaa", "gdpr", "finance"):
                    mutation = f'mutation {{ installCompliancePack(packId: "{pack}") {{ id }} }}'
                    assert "errors" not in (await c.post("/graphql", json={"query": mutation})).json()
        # first, on a quiet server: the throughput runs leave the worker indexing their records for a while
        results["single_logEvent_cpu_ref_s"] = cpu_ref()
        results["single_logEvent"] = await single_latency(server.url, server.api_key, args.singles)
        for via in ("rest", "graphql"):
            for batch in (100, 1000):
                # each run from the same state: the worker has indexed the previous run's records
                await asyncio.to_thread(server.settle)
                results[f"{via}_batch{batch}_cpu_ref_s"] = cpu_ref()
                rate = await throughput(
                    server.url, server.api_key, via=via, batch=batch, total=args.records, concurrency=args.concurrency
                )
                results[f"{via}_batch{batch}_records_per_s"] = rate
        results["server_peak_rss_mb"] = server.peak_rss_mb()
        results["targets"] = {"batch_records_per_s": 5000, "single_logEvent_p99_ms": 25}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
