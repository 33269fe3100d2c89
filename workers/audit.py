"""Audit jobs: sealing the trail into signed digests, and full-text indexing."""

from __future__ import annotations

from typing import Any

from app.audit import erasure, partitions, retention, sealing, search
from app.audit.streams import STREAMS


async def seal_audit_trail(ctx: dict[str, Any]) -> int:
    """Every minute (cron), and on demand: seals all records written since each organisation's last digest."""
    runtime = ctx["runtime"]
    return await sealing.seal_all(runtime.db, runtime.signer, runtime=runtime, streams=STREAMS)


async def index_audit_search(ctx: dict[str, Any], org_id: str) -> int:
    """Queued after ingest (one per organisation and quarter second): makes the new records searchable."""
    runtime = ctx["runtime"]
    return await search.drain_pending(runtime.db, runtime.redis, org_id)


async def sweep_audit_search(ctx: dict[str, Any]) -> int:
    """Every minute: indexes records whose indexing job was lost."""
    return await search.sweep(ctx["runtime"].db)


async def create_audit_partitions(ctx: dict[str, Any]) -> int:
    """Daily (cron): the monthly partitions of audit records and search rows up to three months ahead."""
    return len(await partitions.ensure_ahead(ctx["runtime"].db))


async def expire_audit_records(ctx: dict[str, Any]) -> dict[str, Any]:
    """Daily (cron): each organisation's records past its retention go, under a signed retention cut."""
    runtime = ctx["runtime"]
    await sealing.seal_all(runtime.db, runtime.signer, runtime=runtime)  # what expires is sealed first
    return await retention.run(runtime.db, runtime.settings, runtime.signer)


async def run_erasure(ctx: dict[str, Any], org_id: str, erasure_id: str) -> int:
    """Queued by `eraseRecords` when more records match than it erases at once (and by the sweeper): erases the
    rest in batches, one transaction each."""
    return await erasure.continue_erasure(ctx["runtime"], org_id, erasure_id)


async def sweep_erasures(ctx: dict[str, Any]) -> int:
    """Every minute: queues running erasures again (a lost job, a dead worker)."""
    return await erasure.sweep(ctx["runtime"])
