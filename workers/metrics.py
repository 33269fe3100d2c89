"""Metrics jobs: hourly rollups of audit records."""

from __future__ import annotations

from typing import Any

from app.metrics import service


async def rollup_metrics(ctx: dict[str, Any]) -> int:
    """Every minute (cron): brings every organisation's rollups up to the last completed hour,
    recomputing the hours that received records since the last run. Returns the hours recomputed."""
    results = await service.rollup_all(ctx["runtime"].db)
    return sum(r.hours for r in results)


async def rollup_org_metrics(ctx: dict[str, Any], org_id: str) -> int:
    """On demand, for one organisation (e.g. after a bulk import). Returns the hours recomputed."""
    return (await service.rollup_organization(ctx["runtime"].db, org_id)).hours
