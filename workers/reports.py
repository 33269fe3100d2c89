"""Report jobs: building a report, and the sweeper that re-queues builds whose worker died."""

from __future__ import annotations

from typing import Any

from app.reports import service


async def build_report(ctx: dict[str, Any], org_id: str, report_id: str) -> str | None:
    """Queued by `requestReport` (and by the sweeper): builds the report and stores its file."""
    return await service.build(ctx["runtime"], org_id, report_id)


async def sweep_reports(ctx: dict[str, Any]) -> int:
    """Every minute: re-queues reports stuck RUNNING past the timeout, and PENDING ones the queue lost."""
    return await service.sweep(ctx["runtime"])
