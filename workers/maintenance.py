"""Housekeeping jobs."""

from __future__ import annotations

import time
from typing import Any

HEARTBEAT_KEY = "agentrail:worker:heartbeat"


async def record_heartbeat(ctx: dict[str, Any]) -> None:
    """Lets operators (and /readyz) see that a worker is alive and draining the queue."""
    await ctx["runtime"].redis.set(HEARTBEAT_KEY, str(time.time()), ex=300)


async def remove_expired_files(ctx: dict[str, Any]) -> int:
    """Deletes stored exports and reports past their expiry (their download links have expired too)."""
    return await ctx["runtime"].files.delete_expired()
