"""Webhook delivery throughput: N alert.created deliveries from a real `agentrail serve` to a local receiver.

    .venv/bin/python bench/webhooks.py [--deliveries 10000] [--batch 500]
    .venv/bin/python bench/webhooks.py --admin-url postgresql://postgres@127.0.0.1:5432/postgres \
        --redis-url redis://127.0.0.1:6379/9 [--backlog]

Without `--admin-url`: embedded servers, and the API and its in-process worker share one process (the
one-command set-up), so ingest and delivery compete for one interpreter. With `--admin-url`/`--redis-url`: a
scratch database on that PostgreSQL (dropped at the end), `agentrail serve` without a worker, and ONE separate
`agentrail worker` process (the production layout). `--backlog` starts that worker only after every event is
in the outbox: its figure is the worker's drain rate alone (first to last receipt), not limited by ingest.
`--rate R` paces the events (R per second) for latency at a sustained load rather than after a burst.

A KEYWORDS rule matches every record, so each record ingested (REST batch ingest, `--batch` records per
request, sent back to back) raises one alert and one delivery. The receiver (in this process, plain asyncio
HTTP/1.1 with keep-alive) checks every signature and notes when each message arrived. Latency is event to
receipt: from the event's `createdAt` (stamped in the ingest transaction) to the moment the receiver has read
the request. Throughput is deliveries / (last receipt - first event). Target: >= 500 deliveries/s.
Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import sqlalchemy as sa
from _server import running_server
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

RULE = (
    'mutation { createComplianceRule(input: {name: "Canary", kind: KEYWORDS, config: {keywords: ["canary"]}, '
    "severity: LOW}) { id } }"
)
ENDPOINT = (
    'mutation($url: String!) { createWebhookEndpoint(input: {url: $url, events: ["alert.created"]}) '
    "{ secret endpoint { id } } }"
)


class Receiver:
    def __init__(self, secret: str) -> None:
        self.key = base64.b64decode(secret.removeprefix("whsec_"))
        self.latencies: list[float] = []
        self.first_event: float | None = None
        self.last_receipt = 0.0
        self.first_receipt = float("inf")
        self.bad_signatures = 0
        self.ids: set[str] = set()
        self.done = asyncio.Event()
        self.expected = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                headers = {}
                while (header := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                received = time.time()
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                self.record(headers, body, received)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def record(self, headers: dict[str, str], body: bytes, received: float) -> None:
        signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
        expected = base64.b64encode(hmac.new(self.key, signed, hashlib.sha256).digest()).decode()
        if headers.get("webhook-signature", "").partition(",")[2] != expected:
            self.bad_signatures += 1
        payload = json.loads(body)
        created = datetime.fromisoformat(payload["createdAt"].replace("Z", "+00:00")).timestamp()
        self.first_event = created if self.first_event is None else min(self.first_event, created)
        self.latencies.append(received - created)
        self.last_receipt = max(self.last_receipt, received)
        self.first_receipt = min(self.first_receipt, received)
        self.ids.add(payload["id"])
        if len(self.ids) >= self.expected:
            self.done.set()


async def admin(url: str, statement: str) -> None:
    async_url = "postgresql+asyncpg://" + url.split("://", 1)[1]
    engine = create_async_engine(async_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


def start_worker() -> subprocess.Popen:
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("agentrail")), "worker"],
        env={**os.environ, "AGENTRAIL_LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deliveries", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--admin-url", help="a PostgreSQL to create a scratch database on (separate worker)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--backlog", action="store_true", help="start the worker after all events are emitted")
    parser.add_argument("--rate", type=float, help="events per second to emit (default: as fast as ingest goes)")
    args = parser.parse_args()
    os.environ["AGENTRAIL_WEBHOOK_ALLOW_PRIVATE_TARGETS"] = "true"  # the receiver is on 127.0.0.1
    scratch = None
    if args.admin_url:
        scratch = f"agentrail_bench_webhooks_{os.getpid()}"
        await admin(args.admin_url, f'CREATE DATABASE "{scratch}"')
        os.environ["DATABASE_URL"] = make_url(args.admin_url).set(database=scratch).render_as_string(False)
        os.environ["REDIS_URL"] = args.redis_url
        os.environ["AGENTRAIL_RUN_WORKER"] = "false"
        os.environ["AGENTRAIL_SECRET_KEY"] = "bench-" + "k" * 40  # the worker must read the endpoint's secret
    try:
        result = await run(args)
    finally:
        if scratch:
            await admin(args.admin_url, f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
    print(json.dumps(result, indent=2))


async def run(args: argparse.Namespace) -> dict:
    worker: subprocess.Popen | None = None
    worker_started = 0.0
    with running_server() as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            auth = {"Authorization": f"Bearer {server.token}"}
            receiver = Receiver("whsec_")  # replaced once the endpoint exists
            listener = await asyncio.start_server(receiver.handle, "127.0.0.1", 0, backlog=1024)
            port = listener.sockets[0].getsockname()[1]
            await client.post("/graphql", json={"query": RULE}, headers=auth)
            created = (
                await client.post(
                    "/graphql",
                    json={"query": ENDPOINT, "variables": {"url": f"http://127.0.0.1:{port}/hook"}},
                    headers=auth,
                )
            ).json()
            receiver.key = base64.b64decode(created["data"]["createWebhookEndpoint"]["secret"].removeprefix("whsec_"))
            receiver.expected = args.deliveries
            if args.admin_url and not args.backlog:
                worker, worker_started = start_worker(), time.time()
            try:
                started = time.perf_counter()
                sent = 0
                while sent < args.deliveries:
                    size = min(args.batch, args.deliveries - sent)
                    records = [{"action": "llm_call", "prompt": f"canary {sent + i}"} for i in range(size)]
                    response = await client.post(
                        "/api/v1/audit-logs/batch", json=records, headers={"X-API-Key": server.api_key}
                    )
                    assert response.status_code == 201, response.text
                    sent += size
                    if args.rate:  # paced: the next batch when its time comes
                        await asyncio.sleep(max(0.0, started + sent / args.rate - time.perf_counter()))
                ingest_seconds = time.perf_counter() - started
                if args.admin_url and args.backlog:
                    worker, worker_started = start_worker(), time.time()
                await asyncio.wait_for(receiver.done.wait(), 600)
            finally:
                if worker is not None:
                    worker.terminate()
                    worker.wait(timeout=60)
            listener.close()

    first = receiver.first_event or receiver.last_receipt
    if args.backlog:
        first = min(receiver.first_receipt, receiver.last_receipt)
    span = receiver.last_receipt - first
    latencies_ms = [v * 1000 for v in receiver.latencies]
    mode = "embedded, worker inside serve" if not args.admin_url else "separate worker process"
    return {
        "mode": mode + (", backlog drained" if args.backlog else ", live"),
        "emit_rate": args.rate or "unpaced",
        "deliveries": len(receiver.latencies),
        "distinct_events": len(receiver.ids),
        "bad_signatures": receiver.bad_signatures,
        "ingest_seconds": round(ingest_seconds, 2),
        "measured_seconds": round(span, 2),
        "measured_from": "first receipt" if args.backlog else "first event",
        "deliveries_per_second": round(len(receiver.latencies) / span, 1) if span else None,
        "worker_start_to_first_receipt_s": round(receiver.first_receipt - worker_started, 2)
        if worker_started
        else None,
        "event_to_receipt_ms": {
            "p50": round(statistics.median(latencies_ms), 1),
            "p99": round(percentile(latencies_ms, 0.99), 1),
            "max": round(max(latencies_ms), 1),
        },
        "target_deliveries_per_second": 500,
    }


if __name__ == "__main__":
    asyncio.run(main())
