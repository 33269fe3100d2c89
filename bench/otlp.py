"""OpenTelemetry ingest throughput against a real `agentrail serve` (one uvicorn worker).

    .venv/bin/python bench/otlp.py [--spans 20480] [--batch 512] [--concurrency 1 2 4] [--no-worker | --separate-worker]

Prints JSON: spans/s through `POST /v1/traces` (OTLP/HTTP protobuf, what the SDK's exporter sends) with
batches of 512 GenAI spans (prompts of 200–2,000 characters, model, token counts, a dozen attributes,
trees of 64 spans), uncompressed and gzip; one exporter at a time (the SDK's BatchSpanProcessor exports
sequentially) and several at once (several processes or services); and the time from the last export's
response until its trace is complete through `trace(traceId)`; the CPU the API process and its PostgreSQL
and Redis spent per span (a figure that holds however busy the machine is). Target: ≥ 5,000 spans/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from _server import WORDS, running_server, text
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

PROTOBUF = {"content-type": "application/x-protobuf"}
SPANS_PER_TRACE = 64
TRACE_QUERY = "query($t: String!) { trace(traceId: $t) { spanCount rootSpans { spanId } } }"


def _kv(key: str, value: str | int | float) -> KeyValue:
    if isinstance(value, str):
        return KeyValue(key=key, value=AnyValue(string_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(double_value=value))


def build_batch(rng: random.Random, run: str, index: int, size: int) -> tuple[bytes, list[str]]:
    """One export of `size` spans: trees of SPANS_PER_TRACE spans (parents before children)."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(
        [
            _kv("service.name", "bench-agent"),
            _kv("service.version", "1.4.2"),
            _kv("deployment.environment", "production"),
            _kv("telemetry.sdk.name", "opentelemetry"),
            _kv("telemetry.sdk.language", "python"),
            _kv("telemetry.sdk.version", "1.45.2"),
        ]
    )
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "opentelemetry.instrumentation.openai_v2"
    scope_spans.scope.version = "2.1b0"
    now = time.time_ns()
    traces = []
    for i in range(size):
        position = i % SPANS_PER_TRACE
        if position == 0:
            trace_id = rng.randbytes(16)
            traces.append(trace_id.hex())
            span_ids = []
        span = scope_spans.spans.add()
        span.trace_id = trace_id
        span_ids.append(rng.randbytes(8))
        span.span_id = span_ids[-1]
        if position:
            span.parent_span_id = span_ids[(position - 1) // 4]
        start = now - rng.randint(10**9, 60 * 10**9)
        span.start_time_unix_nano = start
        span.end_time_unix_nano = start + rng.randint(5, 3000) * 10**6
        span.kind = Span.SPAN_KIND_CLIENT
        operation = rng.choice(["chat", "chat", "execute_tool", "invoke_agent"])
        span.name = f"{operation} {rng.choice(WORDS)}"
        attributes = [
            _kv("gen_ai.operation.name", operation),
            _kv("gen_ai.provider.name", rng.choice(["openai", "anthropic"])),
            _kv("gen_ai.request.model", "gpt-4o"),
            _kv("gen_ai.response.model", "gpt-4o-2024-08-06"),
            _kv("gen_ai.usage.input_tokens", rng.randint(100, 9000)),
            _kv("gen_ai.usage.output_tokens", rng.randint(10, 2000)),
            _kv("gen_ai.request.temperature", 0.2),
            _kv("gen_ai.response.id", f"chatcmpl-{rng.randrange(10**12)}"),
            _kv("server.address", "api.openai.com"),
            _kv("user.id", f"user-{rng.randrange(10**6)}"),
            _kv("session.id", f"{run}-{index}"),
        ]
        if operation == "execute_tool":
            attributes.append(_kv("gen_ai.tool.name", rng.choice(["search", "refund", "lookup"])))
            attributes.append(_kv("gen_ai.tool.call.arguments", json.dumps({"q": text(rng, 20, 80)})))
        else:
            attributes.append(_kv("gen_ai.prompt", text(rng, 200, 2000)))
            attributes.append(_kv("gen_ai.completion", text(rng, 100, 1000)))
        span.attributes.extend(attributes)
        if rng.random() < 0.03:
            span.status.code = Status.STATUS_CODE_ERROR
            span.status.message = "upstream timeout"
    return request.SerializeToString(), traces


async def run(
    url: str, key: str, *, batches: list[tuple[bytes, list[str]]], concurrency: int, gzipped: bool
) -> tuple[float, float, str]:
    """(seconds of the run, perf_counter when the last response arrived, last trace id of that export)."""
    headers = {**PROTOBUF, **({"content-encoding": "gzip"} if gzipped else {})}
    queue: asyncio.Queue = asyncio.Queue()
    for body, traces in batches:
        queue.put_nowait((gzip.compress(body, compresslevel=6) if gzipped else body, traces[-1]))
    last = (0.0, "")

    async def exporter(client: httpx.AsyncClient) -> None:
        nonlocal last
        while not queue.empty():
            body, trace_id = queue.get_nowait()
            response = await client.post("/v1/traces", content=body, headers=headers)
            assert response.status_code == 200, (response.status_code, response.content[:300])
            assert response.content == b"", response.content[:300]  # no partial_success
            last = (time.perf_counter(), trace_id)

    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=120) as client:
        started = time.perf_counter()
        await asyncio.gather(*(exporter(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return elapsed, *last


async def queryable_after(url: str, key: str, trace_id: str, expected: int, since: float) -> float:
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=30) as client:
        while True:
            response = await client.post("/graphql", json={"query": TRACE_QUERY, "variables": {"t": trace_id}})
            trace = response.json()["data"]["trace"]
            if trace and trace["spanCount"] == expected and len(trace["rootSpans"]) == 1:
                return round((time.perf_counter() - since) * 1000, 1)
            await asyncio.sleep(0.005)


@contextlib.contextmanager
def separate_worker(wanted: bool) -> Iterator[None]:
    if not wanted:
        yield
        return
    for name in ("DATABASE_URL", "REDIS_URL"):
        if not os.environ.get(name):
            raise SystemExit(f"--separate-worker needs {name}")
    worker = subprocess.Popen(
        [str(Path(sys.executable).with_name("agentrail")), "worker"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        worker.send_signal(signal.SIGINT)
        worker.wait(timeout=60)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=20_480, help="spans per run")
    parser.add_argument("--batch", type=int, default=512, help="spans per export request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4], help="concurrent exporters")
    parser.add_argument(
        "--no-worker",
        action="store_true",
        help="serve without the in-process worker (production runs `agentrail worker` elsewhere): search "
        "indexing then does not compete with ingest for this machine's cores",
    )
    parser.add_argument(
        "--separate-worker",
        action="store_true",
        help="the production layout: `serve` without a worker plus one `agentrail worker` process beside it "
        "(needs DATABASE_URL and REDIS_URL, e.g. the local servers)",
    )
    args = parser.parse_args()
    if args.no_worker or args.separate_worker:
        os.environ["AGENTRAIL_RUN_WORKER"] = "false"  # read by `agentrail serve`, which inherits the environment
    rng = random.Random(42)
    with running_server() as server, separate_worker(args.separate_worker):
        results: dict = {
            "benchmark": "otlp",
            "spans_per_run": args.spans,
            "spans_per_export": args.batch,
            "worker": "separate process" if args.separate_worker else "none" if args.no_worker else "in process",
            "runs": [],
        }
        warm = build_batch(rng, "warmup", 0, args.batch)
        await run(server.url, server.api_key, batches=[warm], concurrency=1, gzipped=False)
        spans_in_last = args.batch % SPANS_PER_TRACE or SPANS_PER_TRACE
        for concurrency in args.concurrency:
            for gzipped in (False, True):
                name = f"c{concurrency}-{'gzip' if gzipped else 'plain'}"
                batches = [build_batch(rng, name, i, args.batch) for i in range(args.spans // args.batch)]
                await asyncio.to_thread(server.settle)  # the worker has indexed the previous run's spans
                cpu_before = server.cpu_split()
                elapsed, last, last_trace = await run(
                    server.url, server.api_key, batches=batches, concurrency=concurrency, gzipped=gzipped
                )
                cpu_after = server.cpu_split()
                spans = len(batches) * args.batch
                results["runs"].append(
                    {
                        "concurrency": concurrency,
                        "compression": "gzip" if gzipped else "none",
                        "spans_per_s": round(spans / elapsed),
                        # CPU the server used per span, whatever else ran on the machine: the API process
                        # (one core at most), and its PostgreSQL and Redis (the embedded servers' processes)
                        "api_process_cpu_us_per_span": round((cpu_after[0] - cpu_before[0]) / spans * 1e6, 1),
                        "api_process_bound_spans_per_s": round(spans / max(cpu_after[0] - cpu_before[0], 1e-9)),
                        "postgres_redis_cpu_us_per_span": round((cpu_after[1] - cpu_before[1]) / spans * 1e6, 1),
                        "export_avg_ms": round(elapsed / len(batches) * concurrency * 1000, 1),
                        "request_mb": round(sum(len(b) for b, _ in batches) / len(batches) / 1e6, 2),
                        "last_trace_complete_after_last_response_ms": await queryable_after(
                            server.url, server.api_key, last_trace, spans_in_last, last
                        ),
                    }
                )
        results["server_peak_rss_mb"] = server.peak_rss_mb()
        results["target_spans_per_s"] = 5000
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
