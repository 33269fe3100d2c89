"""Exports of 1,000,000 audit records as CSV, NDJSON and Parquet through the asynchronous job, run by an
`agentrail worker` in its own process; and the synchronous endpoint's time to first byte for 10,000 rows.

    .venv/bin/python bench/export.py [--records 1000000] [--formats CSV,NDJSON,PARQUET] [--reads 10]

Starts embedded PostgreSQL and Redis in a temporary folder (or uses DATABASE_URL / REDIS_URL), runs
`agentrail serve --no-worker`, seeds with set-based SQL, then, per format, starts a fresh worker process,
starts the export over GraphQL and waits for READY. Rows/s is rowCount over the job's startedAt → completedAt;
the worker's peak RSS is sampled with psutil (and read from VmHWM). Prints JSON.
Targets: ≥ 50,000 rows/s and peak RSS < 250 MB per export; time to first byte < 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import psutil
import sqlalchemy as sa
from _server import ROOT, running_server
from sqlalchemy.ext.asyncio import create_async_engine

from app.db import to_async_url
from app.runtime.embedded import EmbeddedServers

SEED_RECORDS = """
INSERT INTO audit_logs (id, org_id, trace_id, span_id, parent_span_id, action, prompt, response, metadata,
                        occurred_at, received_at, duration_ms, status, provider, risk_level, credential_masked,
                        checksum, chain_index, content_hash, entry_hash)
SELECT 'log_' || :tag || '_' || lpad(g::text, 8, '0'), :org, 'trace-' || (g / 10), 'span-' || g,
       CASE WHEN g % 10 = 0 THEN NULL ELSE 'span-' || (g - 1) END,
       (ARRAY['llm_call', 'tool_use', 'agent_invoke', 'guardrail_check'])[1 + g % 4],
       'Summarise order ' || g || ' for the customer, then check the refund policy: ' || repeat(md5(g::text), 4),
       'Order ' || g || ' shipped; refund declined: ' || repeat(md5((g + 1)::text), 2),
       jsonb_build_object('model', 'gpt-4o', 'tokens', g % 9000, 'temperature', 0.2, 'tags',
                          jsonb_build_array('prod', 'eu')),
       now() - (g * interval '50 milliseconds'), now(), (g % 3000) / 10.0,
       CASE WHEN g % 50 = 0 THEN 'error' ELSE 'ok' END, (ARRAY['openai', 'anthropic', 'stripe'])[1 + g % 3],
       (ARRAY['LOW', 'MEDIUM', 'HIGH'])[1 + g % 3], false, 'sha256:' || md5(g::text) || md5(g::text),
       COALESCE((SELECT max(x.chain_index) FROM audit_logs x WHERE x.org_id = CAST(:org AS varchar)), 0) + g,
       sha256(('c' || g)::bytea), sha256(('e' || g)::bytea)
FROM generate_series(1, :n) AS g
"""
SEED_SEARCH = """
INSERT INTO audit_search (log_id, org_id, received_at, document)
SELECT id, org_id, received_at, ''::tsvector FROM audit_logs WHERE org_id = :org AND id LIKE :prefix || '%'
"""


async def seed(database_url: str, org_id: str, records: int, tag: str) -> float:
    engine = create_async_engine(to_async_url(database_url))
    started = time.perf_counter()
    async with engine.begin() as conn:
        await conn.execute(sa.text(SEED_RECORDS), {"org": org_id, "n": records, "tag": tag})
        # seeded rows count as search-indexed (empty documents): otherwise the API's search sweeper indexes
        # the million rows during the exports and the figures measure it, not the export
        await conn.execute(sa.text(SEED_SEARCH), {"org": org_id, "prefix": f"log_{tag}_"})
    async with engine.begin() as conn:
        await conn.execute(sa.text("ANALYZE audit_logs"))
    await engine.dispose()
    return time.perf_counter() - started


class RssSampler(threading.Thread):
    """Samples a process's resident memory every 20 ms; `peak_mb` afterwards."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.02)

    @property
    def peak_mb(self) -> float:
        return round(self.peak / 1024 / 1024, 1)


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def seal() -> float:
    """Seals the seeded records now (`agentrail seal`), as the worker's minute cron does with records as they
    arrive: otherwise the first export's worker seals a million records while it exports."""
    started = time.perf_counter()
    subprocess.run(
        [str(Path(sys.executable).with_name("agentrail")), "seal"],
        cwd=ROOT,
        env={**os.environ, "AGENTRAIL_LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - started


def start_worker() -> subprocess.Popen:
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("agentrail")), "worker"],
        cwd=ROOT,
        env={**os.environ, "AGENTRAIL_LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def export_once(client: httpx.AsyncClient, fmt: str) -> dict:
    worker = start_worker()
    sampler = RssSampler(worker.pid)
    sampler.start()
    try:
        await asyncio.sleep(1.0)  # the worker connects and starts polling
        idle = psutil.Process(worker.pid).cpu_times()
        idle_cpu = idle.user + idle.system
        query = "mutation($input: StartExportInput!) { startExport(input: $input) { id } }"
        variables = {"input": {"dataset": "AUDIT_LOGS", "format": fmt}}
        body = (await client.post("/graphql", json={"query": query, "variables": variables})).json()
        job_id = body["data"]["startExport"]["id"]
        poll = "query($id: ID!) { exportJob(id: $id) { status rowCount sizeBytes startedAt completedAt error } }"
        wall = time.perf_counter()
        while True:
            job = (await client.post("/graphql", json={"query": poll, "variables": {"id": job_id}})).json()
            job = job["data"]["exportJob"]
            if job["status"] in ("READY", "FAILED"):
                break
            await asyncio.sleep(0.1)
        wall = time.perf_counter() - wall
        assert job["status"] == "READY", job
        seconds = (parse_time(job["completedAt"]) - parse_time(job["startedAt"])).total_seconds()
        hwm = vm_hwm_mb(worker.pid)
        cpu = psutil.Process(worker.pid).cpu_times()
        cpu_seconds = cpu.user + cpu.system - idle_cpu
    finally:
        sampler.stop.set()
        sampler.join()
        worker.terminate()
        worker.wait(timeout=60)
    return {
        "format": fmt,
        "rows": job["rowCount"],
        "size_mb": round(job["sizeBytes"] / 1024 / 1024, 1),
        "job_seconds": round(seconds, 2),
        "rows_per_second": round(job["rowCount"] / seconds),
        "worker_peak_rss_mb": max(sampler.peak_mb, hwm),
        # what the export cost the worker process itself, whatever else runs on the machine
        "worker_cpu_us_per_row": round(cpu_seconds / job["rowCount"] * 1e6, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


async def sync_ttfb(base_url: str, reads: int) -> dict:
    """A second organisation with exactly 10,000 records: the largest export the endpoint streams directly."""
    email = f"bench-sync-{random.randrange(10**9)}@example.com"
    register = (
        'mutation($email: String!) { register(email: $email, password: "benchmark password", name: "Bench", '
        'organizationName: "Sync") { accessToken organization { id } } }'
    )
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        body = {"query": register, "variables": {"email": email}}
        data = (await client.post("/graphql", json=body)).json()["data"]["register"]
        await seed(os.environ["DATABASE_URL"], data["organization"]["id"], 10_000, f"sync{random.randrange(10**9)}")
        headers = {"Authorization": f"Bearer {data['accessToken']}"}
        first_byte, total = [], []
        for i in range(reads + 2):
            started = time.perf_counter()
            async with client.stream("GET", "/api/v1/audit-logs/export", headers=headers) as response:
                assert response.status_code == 200, response.status_code
                size = 0
                async for chunk in response.aiter_raw():
                    if size == 0:
                        ttfb = time.perf_counter() - started
                    size += len(chunk)
            if i >= 2:  # warm-up reads excluded
                first_byte.append(ttfb * 1000)
                total.append((time.perf_counter() - started) * 1000)
    return {
        "rows": 10_000,
        "ttfb_p50_ms": round(statistics.median(first_byte), 1),
        "ttfb_max_ms": round(max(first_byte), 1),
        "full_download_p50_ms": round(statistics.median(total), 1),
        "target_ttfb_ms": 200,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--formats", default="CSV,NDJSON,PARQUET")
    parser.add_argument("--reads", type=int, default=10)
    args = parser.parse_args()
    servers = None
    if not os.environ.get("DATABASE_URL"):
        servers = EmbeddedServers(Path(tempfile.mkdtemp(prefix="agentrail-export-")))
        database_url, redis_url = servers.start()
        os.environ["DATABASE_URL"], os.environ["REDIS_URL"] = database_url, redis_url
    # the API without its in-process worker: exports run in the separate `agentrail worker` measured here
    os.environ["AGENTRAIL_RUN_WORKER"] = "false"
    os.environ.setdefault("AGENTRAIL_SECRET_KEY", "bench-secret-" + "x" * 40)
    try:
        with running_server() as server:
            headers = {"Authorization": f"Bearer {server.token}"}
            async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=120) as client:
                me = (await client.post("/graphql", json={"query": "{ me { organization { id } } }"})).json()
                org_id = me["data"]["me"]["organization"]["id"]
                tag = f"bench{random.randrange(10**9)}"  # a database used before keeps its rows
                seed_seconds = await seed(os.environ["DATABASE_URL"], org_id, args.records, tag)
                seal_seconds = await asyncio.to_thread(seal)
                exports = [await export_once(client, fmt) for fmt in args.formats.split(",")]
            ttfb = await sync_ttfb(server.url, args.reads)
        print(
            json.dumps(
                {
                    "benchmark": "exports",
                    "records": args.records,
                    "seed_seconds": round(seed_seconds, 1),
                    "seal_seconds": round(seal_seconds, 1),
                    "async_exports": exports,
                    "target_rows_per_second": 50_000,
                    "target_worker_peak_rss_mb": 250,
                    "cpus": os.cpu_count(),
                    "sync_export": ttfb,
                },
                indent=2,
            )
        )
    finally:
        if servers is not None:
            servers.stop()


if __name__ == "__main__":
    asyncio.run(main())
