"""Webhook jobs: send new deliveries at once, retries when due, and sweep every minute for the rest."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from app.webhooks import delivery, sender
from app.webhooks.service import enqueue_deliveries

# retries due within this of each other share one deferred job, which runs at the latest of them: a retry is at
# most this late (plus the worker's poll delay), never early, and a burst of failures is a few jobs, not one each
RETRY_GROUP_SECONDS = 0.1

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
    # a deferred job per retry time (retries due within RETRY_GROUP_SECONDS share one), so that each retry runs
    # when it is due, not when the batch's latest one is; the sweeper is the safety net
    for due, ids in retry_groups(report.retry_at):
        await enqueue_deliveries(runtime.queue, ids, defer_until=due)
    return report


def retry_groups(retry_at: list[tuple[str, datetime]]) -> list[tuple[datetime, list[str]]]:
    """Retries grouped by due time: each group spans at most RETRY_GROUP_SECONDS and is due at its latest."""
    groups: list[tuple[datetime, list[str]]] = []
    first: datetime | None = None
    for delivery_id, due in sorted(retry_at, key=lambda item: item[1]):
        if first is None or due - first > timedelta(seconds=RETRY_GROUP_SECONDS):
            first = due
            groups.append((due, []))
        groups[-1][1].append(delivery_id)
        groups[-1] = (due, groups[-1][1])
    return groups


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
