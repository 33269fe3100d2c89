"""Bytes stored per span, split by table and index: what the database holds after OTLP ingest.

    .venv/bin/python bench/bytes_per_span.py [--spans 51200]

Sends GenAI spans through `POST /v1/traces` (bench/otlp.py's requests of 512 spans: prompts of 200–2,000
characters, answers of 100–1,000, a dozen attributes), waits until the worker has indexed them for search,
then reads from PostgreSQL `pg_total_relation_size` of every table (heap, TOAST, indexes) and
`pg_relation_size` of every index, and prints bytes per span for each and in all (`pg_database_size`, the
figure Phoenix is compared on, see ../shared/peer). Target (issue 18): ≤ Phoenix's for the same spans.
Runs against the embedded PostgreSQL of the `agentrail serve` it starts (found through its socket).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from pathlib import Path

import asyncpg
import httpx
import psutil
from _server import Server, cpu_ref, running_server
from otlp import PROTOBUF, build_batch

SIZES = """
    SELECT c.relname AS name, c.relkind AS kind, pg_total_relation_size(c.oid) AS total,
           pg_relation_size(c.oid) AS main, coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0) AS toast,
           CASE WHEN c.relkind = 'r' THEN pg_indexes_size(c.oid) ELSE 0 END AS indexes
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND c.relkind IN ('r', 'i')
    ORDER BY pg_total_relation_size(c.oid) DESC
"""


def _database_socket(server: Server) -> tuple[str, int]:
    command = psutil.Process(server.pid).cmdline()
    folder = Path(command[command.index("--data-dir") + 1]) / "postgres"
    socket = next(folder.glob(".s.PGSQL.*"))
    return str(folder), int(socket.name.rsplit(".", 1)[1])


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=51_200)
    args = parser.parse_args()
    rng = random.Random(18)
    results: dict = {"benchmark": "bytes_per_span"}
    with running_server() as server:
        async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": server.api_key}, timeout=300) as client:
            for index in range(args.spans // 512):
                body, _ = build_batch(rng, "bytes", index, 512)
                response = await client.post("/v1/traces", content=body, headers=PROTOBUF)
                assert response.status_code == 200, response.text[:300]
        await asyncio.to_thread(server.settle)
        results["cpu_ref_s"] = cpu_ref()
        host, port = _database_socket(server)
        connection = await asyncpg.connect(host=host, port=port, user="postgres", database="agentrail")
        try:
            await connection.execute("CHECKPOINT")
            spans = await connection.fetchval("SELECT count(*) FROM audit_logs")
            database = await connection.fetchval("SELECT pg_database_size(current_database())")
            rows = await connection.fetch(SIZES)
            searched = await connection.fetchval(
                "SELECT count(*) FROM audit_search WHERE document @@ websearch_to_tsquery('simple', 'refund')"
            )
        finally:
            await connection.close()
    results["spans"] = spans
    results["search_matches_refund"] = searched
    results["database_bytes_per_span"] = round(database / spans)
    results["tables"] = {
        r["name"]: {
            "bytes_per_span": round(r["total"] / spans),
            "heap": round(r["main"] / spans),
            "toast": round(r["toast"] / spans),
            "indexes": round(r["indexes"] / spans),
        }
        for r in rows
        if r["kind"] in ("r", b"r") and r["total"] > 1_000_000  # asyncpg reads the "char" relkind as bytes
    }
    results["indexes"] = {
        r["name"]: round(r["total"] / spans) for r in rows if r["kind"] in ("i", b"i") and r["total"] > 1_000_000
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
