"""Helpers of the export tests: set-based seeding, running a real arq worker, reading stored exports."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa

from app.exports.models import ExportJob
from app.files.models import StoredFile
from support import gql
from workers.settings import run_worker

SEED_AUDIT = """
INSERT INTO audit_logs (id, org_id, trace_id, span_id, action, prompt, response, metadata, occurred_at, received_at,
                        status, risk_level, credential_masked, checksum, chain_index, content_hash, entry_hash)
SELECT 'log_' || :tag || '_' || lpad(g::text, 8, '0'), :org, 'trace-' || g, 'span-' || g,
       CASE WHEN g % 2 = 0 THEN 'llm_call' ELSE 'tool_use' END, 'prompt ' || g, 'response ' || g,
       jsonb_build_object('n', g), CAST(:start AS timestamptz) + g * interval '1 millisecond', now(), 'ok',
       CASE WHEN g % 3 = 0 THEN 'HIGH' ELSE 'LOW' END, false, 'sha256:' || md5(g::text),
       COALESCE((SELECT max(x.chain_index) FROM audit_logs x WHERE x.org_id = CAST(:org AS varchar)), 0) + g,
       sha256(('c' || g)::bytea), sha256(('e' || g)::bytea)
FROM generate_series(1, :n) AS g
"""


async def seed_audit(runtime: Any, org_id: str, n: int, start: str = "2026-01-01T00:00:00Z") -> None:
    """`n` audit records in one statement: half llm_call / half tool_use, every third HIGH risk, one ms apart."""
    async with runtime.db.engine.begin() as conn:
        await conn.execute(
            sa.text(SEED_AUDIT),
            {"tag": secrets.token_hex(3), "org": org_id, "n": n, "start": datetime.fromisoformat(start)},
        )


async def run_jobs(runtime: Any) -> None:
    """A real arq worker in burst mode: runs what is queued, then returns."""
    await asyncio.wait_for(run_worker(runtime, burst=True), 120)


async def start_export(client: Any, account: Any, *, api_key: str | None = None, **input: Any) -> dict[str, Any]:
    result = await gql(
        client, "StartExport", {"input": input}, token=None if api_key else account.token, api_key=api_key
    )
    assert "errors" not in result, result
    return result["data"]["startExport"]


async def export_job(client: Any, account: Any, job_id: str) -> dict[str, Any] | None:
    result = await gql(client, "ExportJob", {"id": job_id}, token=account.token)
    assert "errors" not in result, result
    return result["data"]["exportJob"]


async def fetch_link(client: Any, url: str) -> Any:
    """GETs an absolute (signed) link through the in-process app."""
    parts = urlsplit(url)
    return await client.get(f"{parts.path}?{parts.query}")


async def job_row(runtime: Any, job_id: str) -> ExportJob:
    async with runtime.db.system_session() as session:
        job = await session.get(ExportJob, job_id)
    assert job is not None
    return job


async def stored_files(runtime: Any, org_id: str) -> list[StoredFile]:
    async with runtime.db.system_session() as session:
        result = await session.execute(sa.select(StoredFile).where(StoredFile.org_id == org_id))
        return list(result.scalars().all())


async def count_rows(runtime: Any, table: str, where: str = "TRUE", **params: Any) -> int:
    async with runtime.db.engine.connect() as conn:
        return int((await conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE {where}"), params)).scalar_one())


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)
