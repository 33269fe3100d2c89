"""The CPU ingest costs per record, server and database apart: robust where wall-clock latency is not (a machine
shared by several sessions). Against a real `agentrail serve` (embedded PostgreSQL, the worker in-process).

    .venv/bin/python bench/ingest_cpu.py [--singles 300] [--batches 20]
    .venv/bin/python bench/side_by_side.py --old <checkout> --runs 2 ingest_cpu.py

Sends `--singles` sequential single `logEvent`s, then `--batches` sequential `logEvents` of 100 realistic records,
each after the server settled, and prints per request and per record the CPU milliseconds of the API process
(`api_cpu_ms_…`) and of PostgreSQL's processes (`db_cpu_ms_…`), with the wall-clock p50 and the CPU reference.
The follow-ups the requests cause (indexing by the in-process worker) fall in the same window on both sides.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time

import httpx
from _server import cpu_ref, realistic_record, running_server

LOG_EVENT = "mutation($input: AuditLogInput!) { logEvent(input: $input) { id } }"
LOG_EVENTS = "mutation($input: [AuditLogInput!]!) { logEvents(input: $input) { id } }"


async def _send(url: str, key: str, bodies: list[dict]) -> list[float]:
    timings = []
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=60) as client:
        for body in bodies:
            started = time.perf_counter()
            response = await client.post("/graphql", json=body)
            timings.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200 and "errors" not in response.json(), response.text[:300]
    return timings


def _measure(server, name: str, bodies: list[dict], records: int, results: dict) -> None:
    server.settle()
    results[f"{name}_cpu_ref_s"] = cpu_ref()
    api0, db0 = server.cpu_split()
    timings = asyncio.run(_send(server.url, server.api_key, bodies))
    api1, db1 = server.cpu_split()
    requests = len(bodies)
    results[f"api_cpu_ms_per_{name}"] = round((api1 - api0) * 1000 / requests, 3)
    results[f"db_cpu_ms_per_{name}"] = round((db1 - db0) * 1000 / requests, 3)
    results[f"total_cpu_ms_per_{name}"] = round((api1 - api0 + db1 - db0) * 1000 / requests, 3)
    results[f"total_cpu_us_per_record_{name}"] = round((api1 - api0 + db1 - db0) * 1e6 / records, 1)
    results[f"wall_p50_ms_{name}"] = round(statistics.median(timings), 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--singles", type=int, default=300)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    rng = random.Random(5)
    singles = [
        {"query": LOG_EVENT, "variables": {"input": realistic_record(rng, f"s{i}", 0)}} for i in range(args.singles)
    ]
    batches = [
        {"query": LOG_EVENTS, "variables": {"input": [realistic_record(rng, f"b{b}", i) for i in range(100)]}}
        for b in range(args.batches)
    ]
    results: dict = {"benchmark": "ingest_cpu", "singles": args.singles, "batches_of_100": args.batches}
    with running_server() as server:
        asyncio.run(_send(server.url, server.api_key, singles[:20]))  # warm-up
        _measure(server, "single", singles, args.singles, results)
        _measure(server, "batch100", batches, args.batches * 100, results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
