"""Export jobs: writing an export's file, re-queueing jobs a dead worker left behind, expiring old exports."""

from __future__ import annotations

from typing import Any

from app.exports import runner, service


async def run_export(ctx: dict[str, Any], org_id: str, job_id: str) -> str:
    """Queued by `startExport` (and by the sweeper): writes the export's file."""
    return await runner.run_export(ctx["runtime"], org_id, job_id)


async def sweep_export_jobs(ctx: dict[str, Any]) -> int:
    """Every minute: re-queues export jobs that are PENDING with a lost queue entry or RUNNING without a
    heartbeat (their worker died)."""
    return await service.sweep(ctx["runtime"])


async def expire_export_jobs(ctx: dict[str, Any]) -> int:
    """Every minute: READY exports past their expiry become EXPIRED (remove_expired_files deletes the files)."""
    return await service.expire(ctx["runtime"])
