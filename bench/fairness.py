"""How long one big allowed read holds up everyone else: another organisation's `me` latency while a whole
10,000-span trace with every field (about 20 MB of answer) is read, against the same `me` on the idle server.

    .venv/bin/python bench/fairness.py [--reads 3]

The big reads run one after the other (with the cost budget lifted: this measures scheduling, not the
budget); the victim sends `me` every 20 ms meanwhile. Prints JSON with the CPU reference beside.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

import httpx
from _server import cpu_ref, running_server
from abuse import WITHIN_LIMIT, _percentiles, seed, victim_account


async def _me_loop(url: str, token: str, stop: asyncio.Event) -> list[float]:
    samples: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as client:
        while not stop.is_set():
            started = time.perf_counter()
            response = await client.post("/graphql", json={"query": "{ me { kind organization { id } } }"})
            samples.append((time.perf_counter() - started) * 1000)
            assert "errors" not in response.json(), response.text[:300]
            await asyncio.sleep(0.02)
    return samples


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reads", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("AGENTRAIL_QUERY_COST_BUDGET", "100000000")
    os.environ.setdefault("AGENTRAIL_PLAN_LIMITS", '{"free": {"records_per_month": 100000000}}')
    results: dict = {"benchmark": "fairness", "cpu_reference_s": cpu_ref(), "reads": args.reads}
    with running_server() as server:
        async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": server.api_key}, timeout=120) as c:
            trace_id = await seed(c, server.token)
            token, _key = await asyncio.to_thread(victim_account, server.url)
            await asyncio.to_thread(server.settle)
            stop = asyncio.Event()
            idle = asyncio.create_task(_me_loop(server.url, token, stop))
            await asyncio.sleep(5)
            stop.set()
            results["idle_me"] = _percentiles(await idle)
            stop = asyncio.Event()
            busy = asyncio.create_task(_me_loop(server.url, token, stop))
            durations = []
            for _ in range(args.reads):
                started = time.perf_counter()
                response = await c.post(
                    "/graphql", json={"query": WITHIN_LIMIT["trace_spans_all_fields"], "variables": {"t": trace_id}}
                )
                durations.append(round((time.perf_counter() - started) * 1000))
                assert response.status_code == 200 and b'"errors"' not in response.content[:100]
            stop.set()
            results["big_read_ms"] = durations
            results["me_during_big_reads"] = _percentiles(await busy)
    results["cpu_reference_after_s"] = cpu_ref()
    results["me_max_ratio"] = round(results["me_during_big_reads"]["max_ms"] / results["idle_me"]["max_ms"], 2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
