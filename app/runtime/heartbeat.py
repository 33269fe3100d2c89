"""The worker's heartbeat: written by every worker while it polls the queue, read by `/readyz` on any API node.

A key with a time to live: present means some worker has polled the queue within `worker_stale_seconds`.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

HEARTBEAT_KEY = "agentrail:worker:heartbeat"


async def beat(redis: Redis, *, stale_seconds: float) -> None:
    await redis.set(HEARTBEAT_KEY, repr(time.time()), px=max(1, int(stale_seconds * 1000)))


async def last_beat_age(redis: Redis) -> float | None:
    """Seconds since a worker last beat, or None when none has within the stale window."""
    value = await redis.get(HEARTBEAT_KEY)
    if value is None:
        return None
    try:
        return max(0.0, time.time() - float(value))
    except ValueError:
        return None
