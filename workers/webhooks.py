"""Webhook jobs: send new deliveries at once, retries when due, and sweep every minute for the rest."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from app.webhooks import delivery, sender
from app.webhooks.service import enqueue_deliveries

RETRY_BUCKET_SECONDS = 5

CLIENT = "webhook_client"
SWEEP_SECONDS = 50.0  # a sweep stops claiming new batches after this long (the next one starts each minute)


async def startup(ctx: dict[str, Any]) -> None:
    """One pooled HTTP client per worker process, shared by every webhook job."""
    ctx[CLIENT] = sender.build_client(ctx["runtime"].settings)


async def shutdown(ctx: dict[str, Any]) -> None:
    client = ctx.pop(CLIENT, None)
    if client is not None:
        await client.aclose()


async def _run(ctx: dict[str, Any], ids: list[str] | None) -> delivery.BatchReport:
    runtime = ctx["runtime"]
    report = await delivery.deliver_due(
        runtime.db, ctx[CLIENT], settings=runtime.settings, secret_key=runtime.secret_key, ids=ids
    )
    # one deferred job per retry time (rounded up to RETRY_BUCKET_SECONDS), so that each retry runs when it is
    # due, not when the batch's latest one is; the sweeper is the safety net
    buckets: dict[datetime, list[str]] = defaultdict(list)
    for delivery_id, due in report.retry_at:
        late = -due.timestamp() % RETRY_BUCKET_SECONDS
        buckets[due + timedelta(seconds=late)].append(delivery_id)
    for due, ids in buckets.items():
        await enqueue_deliveries(runtime.queue, ids, defer_until=due)
    return report


async def deliver_webhooks(ctx: dict[str, Any], delivery_ids: list[str]) -> int:
    """Queued after an event commits (and for retries): sends those of `delivery_ids` that are due."""
    sent = 0
    batch = ctx["runtime"].settings.webhook_batch_size
    for start in range(0, len(delivery_ids), batch):
        sent += (await _run(ctx, delivery_ids[start : start + batch])).claimed
    return sent


async def drain_webhook_deliveries(ctx: dict[str, Any]) -> int:
    """Every minute: every due delivery, whatever the queue forgot (a Redis flush, a crashed worker's
    expired lease, a retry whose job was lost), batch after batch."""
    started = time.monotonic()
    sent = 0
    batch = ctx["runtime"].settings.webhook_batch_size
    while time.monotonic() - started < SWEEP_SECONDS:
        claimed = (await _run(ctx, None)).claimed
        sent += claimed
        if claimed < batch:
            break
    return sent
