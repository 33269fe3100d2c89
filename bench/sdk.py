"""The Python SDK: what `log()` costs the calling thread, and records/s end to end, against a real `agentrail serve`.

    .venv/bin/python bench/sdk.py [--calls 50000] [--records 20000]

Prints JSON, each figure with the CPU reference taken just before it (`…_cpu_ref_s`):
- `log_call_us`: p50 / p99 / p99.9 / max of one `client.log(...)` on the calling thread (perf_counter_ns around
  each call), for small records (action, a short prompt, a small metadata dict) and realistic ones (prompts of
  200–2,000 characters, responses of 100–1,000, metadata, trace ids), while the SDK's sender thread is sending
  them to the server (it competes for the GIL, as in an application). Targets: p50 < 10 µs, p99 < 100 µs.
- `end_to_end_records_per_s`: realistic records logged as fast as one thread can, until `flush()` says the server
  acknowledged all of them; beside it `server_batch_records_per_s`, the same records posted in batches of 500 on
  one connection by plain httpx (what the server ingests at the SDK's concurrency: one request in flight).
"""

from __future__ import annotations

import argparse
import json
import random
import time

import httpx
import orjson
from _server import cpu_ref, realistic_record, running_server

from agentrail import Agentrail


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    samples = sorted(samples_ns)
    n = len(samples)

    def at(q: float) -> float:
        return round(samples[min(n - 1, int(q * n))] / 1000, 2)

    return {"p50": at(0.5), "p99": at(0.99), "p99_9": at(0.999), "max": round(samples[-1] / 1000, 1), "n": n}


def call_cost(url: str, key: str, records: list[dict], calls: int) -> dict[str, float]:
    client = Agentrail(api_key=key, base_url=url, max_queue_records=10**7, max_queue_bytes=10**10)
    client.log("warmup")
    client.flush(30)
    samples: list[int] = []
    clock = time.perf_counter_ns
    m = len(records)
    for i in range(calls):
        r = records[i % m]
        started = clock()
        client.log(
            r["action"],
            prompt=r.get("prompt"),
            response=r.get("response"),
            metadata=r.get("metadata"),
            trace_id=r.get("traceId"),
            parent_span_id=r.get("parentSpanId"),
            duration_ms=r.get("durationMs"),
            provider=r.get("provider"),
            risk_level=r.get("riskLevel"),
        )
        samples.append(clock() - started)
    assert client.flush(300), client.stats()
    client.close()
    return percentiles(samples)


def end_to_end(url: str, key: str, records: list[dict]) -> tuple[int, float]:
    client = Agentrail(api_key=key, base_url=url, max_queue_records=10**7, max_queue_bytes=10**10)
    client.log("warmup")
    client.flush(30)
    started = time.perf_counter()
    for r in records:
        client.log(
            r["action"],
            prompt=r["prompt"],
            response=r["response"],
            metadata=r["metadata"],
            trace_id=r["traceId"],
            parent_span_id=r["parentSpanId"],
            duration_ms=r["durationMs"],
            provider=r["provider"],
            risk_level=r["riskLevel"],
        )
    assert client.flush(600), client.stats()
    elapsed = time.perf_counter() - started
    stats = client.stats()
    client.close()
    return round(len(records) / elapsed), round(len(records) / max(stats.batches - 1, 1), 1)


def server_batches(url: str, key: str, records: list[dict], batch: int = 500) -> int:
    bodies = [orjson.dumps(records[i : i + batch]) for i in range(0, len(records), batch)]
    with httpx.Client(base_url=url, headers={"X-API-Key": key, "content-type": "application/json"}, timeout=120) as h:
        h.post("/api/v1/audit-logs", json={"action": "warmup"})
        started = time.perf_counter()
        for body in bodies:
            response = h.post("/api/v1/audit-logs/batch", content=body)
            assert response.status_code == 201, response.text[:300]
        return round(len(records) / (time.perf_counter() - started))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--records", type=int, default=20_000)
    args = parser.parse_args()
    rng = random.Random(22)
    realistic = [realistic_record(rng, f"sdk-bench-{i // 50}", i % 50) for i in range(2000)]
    small = [{"action": "llm_call", "prompt": "hello", "metadata": {"model": "gpt", "tokens": i}} for i in range(100)]
    results: dict[str, object] = {}
    with running_server() as server:
        results["log_call_us_small_cpu_ref_s"] = cpu_ref()
        results["log_call_us_small"] = call_cost(server.url, server.api_key, small, args.calls)
        server.settle()
        results["log_call_us_realistic_cpu_ref_s"] = cpu_ref()
        results["log_call_us_realistic"] = call_cost(server.url, server.api_key, realistic, args.calls)
        server.settle()
        e2e = [realistic_record(rng, f"sdk-e2e-{i // 50}", i % 50) for i in range(args.records)]
        results["end_to_end_cpu_ref_s"] = cpu_ref()
        results["end_to_end_records_per_s"], results["end_to_end_records_per_batch"] = end_to_end(
            server.url, server.api_key, e2e
        )
        server.settle()
        again = [realistic_record(rng, f"sdk-raw-{i // 50}", i % 50) for i in range(args.records)]
        results["server_batch_cpu_ref_s"] = cpu_ref()
        results["server_batch_records_per_s"] = server_batches(server.url, server.api_key, again)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
