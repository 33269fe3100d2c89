"""Live alert fan-out: N WebSocket subscribers of one organisation, alerts ingested at R per second.

    .venv/bin/python bench/alerts_fanout.py [--subscribers 1000] [--rate 100] [--seconds 10]

Latency is measured from the moment the ingest request's response arrives to the delivery of the alert at
each subscriber (negative when the alert arrives before the response: it is published at commit), and
from the start of the ingest request (all on this machine, one API process). Prints JSON with p50/p99
and how many deliveries arrived. Target: p99 < 100 ms for 1,000 subscribers at 100 alerts/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httpx
import websockets
from _server import running_server

SUBSCRIPTION = "subscription { alerts { id auditLogId severity excerpt createdAt } }"
RULE = """mutation { createComplianceRule(input: {name: "Email", kind: PII, config: {types: ["email"]}}) { id } }"""
LOG = 'mutation($p: String!) { logEvent(input: {action: "llm_call", prompt: $p}) { id } }'


async def subscriber(url: str, token: str, ready: asyncio.Event, counter: list[int], arrivals: dict) -> None:
    async with websockets.connect(f"ws://{url}/graphql", subprotocols=["graphql-transport-ws"], max_queue=None) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
        await ws.recv()
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}}))
        counter[0] += 1
        if counter[0] == counter[1]:
            ready.set()
        while True:
            message = json.loads(await ws.recv())
            if message.get("type") == "next":
                now = time.perf_counter()
                arrivals.setdefault(message["payload"]["data"]["alerts"]["auditLogId"], []).append(now)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="alerts ingested per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with running_server() as server:
        base = server.url.removeprefix("http://")
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=60
        ) as client:
            await client.post("/graphql", json={"query": RULE})
            ready, counter, arrivals = asyncio.Event(), [0, args.subscribers], {}
            tasks = [
                asyncio.create_task(subscriber(base, server.token, ready, counter, arrivals))
                for _ in range(args.subscribers)
            ]
            await asyncio.wait_for(ready.wait(), 120)
            await asyncio.sleep(1.0)
            sent: dict[str, float] = {}
            sent_start: dict[str, float] = {}
            interval = 1.0 / args.rate
            started = time.perf_counter()
            n = 0
            while time.perf_counter() - started < args.seconds:
                request_started = time.perf_counter()
                response = await client.post(
                    "/graphql", json={"query": LOG, "variables": {"p": f"mail user{n}@example.com"}}
                )
                log_id = response.json()["data"]["logEvent"]["id"]
                sent[log_id] = time.perf_counter()
                sent_start[log_id] = request_started
                n += 1
                await asyncio.sleep(max(0.0, started + n * interval - time.perf_counter()))
            await asyncio.sleep(5.0)  # let deliveries drain
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        latencies = sorted(
            (t - sent[log_id]) * 1000 for log_id, times in arrivals.items() if log_id in sent for t in times
        )
        from_request = sorted(
            (t - sent_start[log_id]) * 1000 for log_id, times in arrivals.items() if log_id in sent for t in times
        )
        expected = len(sent) * args.subscribers
        print(
            json.dumps(
                {
                    "benchmark": "alerts_fanout",
                    "subscribers": args.subscribers,
                    "alerts_sent": len(sent),
                    "achieved_rate_per_s": round(len(sent) / args.seconds, 1),
                    "deliveries": len(latencies),
                    "deliveries_expected": expected,
                    "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
                    "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 1) if latencies else None,
                    "from_request_start_p50_ms": round(statistics.median(from_request), 1) if from_request else None,
                    "from_request_start_p99_ms": round(from_request[int(len(from_request) * 0.99) - 1], 1)
                    if from_request
                    else None,
                    "server_peak_rss_mb": server.peak_rss_mb(),
                    "target_p99_ms": 100,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    asyncio.run(main())
