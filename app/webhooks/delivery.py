"""Running deliveries: claim a batch, send it concurrently over the shared client, record it set-based.

Called by the worker's jobs (`workers/webhooks.py`): right after an event commits (`deliver_webhooks`, with
the new delivery ids), at a retry's due time, and every minute by the sweeper (`drain_webhook_deliveries`),
which also finds what a flushed Redis or a crashed worker left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from sqlmodel import col, select

from app.db import SYSTEM, AsyncSession, Database, utcnow
from app.errors import unavailable
from app.settings import Settings
from app.unit_of_work import transaction
from app.webhooks import outbox, secretbox
from app.webhooks.models import WebhookEndpoint
from app.webhooks.outbox import TEST_EVENT, Claimed, Outcome
from app.webhooks.sender import AttemptResult, Message, WebhookClient, send

log = structlog.get_logger(__name__)

RECORD_EVERY = 0.25  # seconds: how often a batch in flight records the outcomes that came in


@dataclass
class BatchReport:
    claimed: int = 0
    delivered: int = 0
    failed: int = 0
    dead_lettered: int = 0
    retry_at: list[tuple[str, datetime]] = field(default_factory=list)  # (delivery id, next attempt)


async def deliver_due(
    db: Database,
    client: WebhookClient,
    *,
    settings: Settings,
    secret_key: str,
    ids: Sequence[str] | None = None,
    now: datetime | None = None,
    limit: int | None = None,
) -> BatchReport:
    """One batch: claims up to `limit` due deliveries (among `ids` when given), sends them concurrently and
    records the outcomes. `now` is the clock (tests move it instead of sleeping)."""
    now = now or utcnow()
    report = BatchReport()
    # this runner's transactions: the claim (a lease, committed before anything is sent), then each window's outcomes
    async with transaction(db, SYSTEM) as session:
        token, claimed = await outbox.claim(
            session, now=now, limit=limit or settings.webhook_batch_size, settings=settings, ids=ids
        )
        endpoints = await _endpoints(session, {c.endpoint_id for c in claimed if c.endpoint_id})
    report.claimed = len(claimed)
    if not claimed:
        return report
    messages: list[tuple[Claimed, Message | None, str | None]] = []
    for delivery in claimed:
        messages.append(_message(delivery, endpoints.get(delivery.endpoint_id or ""), settings, secret_key, now))

    async def attempt(delivery: Claimed, message: Message | None, refusal: str | None) -> Outcome:
        if message is None:
            return Outcome(delivery, AttemptResult(now, False, None, None, refusal, None))
        return Outcome(delivery, await send(client, message, settings=settings, now=now))

    async def send_and_record() -> list[Outcome]:
        # outcomes are recorded as they come in (every RECORD_EVERY seconds), not once the whole batch has
        # answered: a worker lost mid-batch then sends again only what had not answered yet
        pending = {asyncio.ensure_future(attempt(*m)) for m in messages}
        applied: list[Outcome] = []
        while pending:
            done, pending = await asyncio.wait(pending, timeout=RECORD_EVERY)
            if done:
                applied += await _record(db, token, [t.result() for t in done], settings=settings, now=now)
        return applied

    # Once requests are out, their outcomes must be recorded: a job cancelled in between (arq's timeout, a
    # worker shutting down) would leave the rows SENDING until the lease expires, and then send them again.
    # So cancellation waits for this batch (bounded by the request timeouts) and is re-raised afterwards.
    batch = asyncio.ensure_future(send_and_record())
    try:
        applied = await asyncio.shield(batch)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await batch
        raise
    for outcome in applied:
        if outcome.status == "DELIVERED":
            report.delivered += 1
        elif outcome.status == "FAILED":
            report.failed += 1
            assert outcome.next_attempt_at is not None
            report.retry_at.append((outcome.delivery.id, outcome.next_attempt_at))
        else:
            report.dead_lettered += 1
    if report.failed or report.dead_lettered:
        log.info(
            "webhook attempts failed",
            claimed=report.claimed,
            failed=report.failed,
            dead_lettered=report.dead_lettered,
        )
    return report


async def _record(
    db: Database, token: str, outcomes: list[Outcome], *, settings: Settings, now: datetime
) -> list[Outcome]:
    """Records a batch's outcomes, retrying while PostgreSQL is unreachable (within the claim's lease, after
    which another worker would send them again): what was sent is not forgotten over a short outage."""
    deadline = asyncio.get_running_loop().time() + outbox.lease_seconds(settings) / 2
    pause = 0.5
    while True:
        try:
            async with transaction(db, SYSTEM) as session:
                applied = await outbox.record(session, token, outcomes, settings=settings, now=now)
            return applied
        except Exception as exc:
            if unavailable(exc) is None or asyncio.get_running_loop().time() + pause > deadline:
                raise
            log.warning("cannot record webhook outcomes yet; retrying", error=type(exc).__name__)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)


async def _endpoints(session: AsyncSession, ids: set[str]) -> dict[str, WebhookEndpoint]:
    """The claimed deliveries' endpoints, in one query."""
    if not ids:
        return {}
    rows = (await session.exec(select(WebhookEndpoint).where(col(WebhookEndpoint.id).in_(ids)))).all()
    return {e.id: e for e in rows}


def endpoint_secrets(endpoint: WebhookEndpoint, secret_key: str, now: datetime) -> list[str]:
    """The current secret, and the previous one while its grace period lasts."""
    out = [secretbox.open_sealed(endpoint.secret_encrypted, secret_key, context=endpoint.id)]
    if (
        endpoint.previous_secret_encrypted
        and endpoint.previous_secret_expires_at is not None
        and endpoint.previous_secret_expires_at > now
    ):
        out.append(secretbox.open_sealed(endpoint.previous_secret_encrypted, secret_key, context=endpoint.id))
    return out


def _message(
    delivery: Claimed, endpoint: WebhookEndpoint | None, settings: Settings, secret_key: str, now: datetime
) -> tuple[Claimed, Message | None, str | None]:
    if delivery.attempt > outbox.max_attempts(settings):  # its last attempt was lost with a worker
        return delivery, None, "not sent: no attempts left"
    if delivery.endpoint_id is None:  # a test sent to a bare URL: unsigned (there is no secret yet)
        return delivery, Message(delivery.url or "", delivery.event_id, delivery.body.encode(), []), None
    if endpoint is None:
        return delivery, None, "not sent: the endpoint was deleted"
    if not endpoint.enabled and delivery.event_type != TEST_EVENT:
        return delivery, None, "not sent: the endpoint is disabled"
    try:
        secrets = endpoint_secrets(endpoint, secret_key, now)
    except Exception:  # a changed AGENTRAIL_SECRET_KEY: the stored secret cannot be read
        log.error("webhook secret cannot be decrypted; rotate it", endpoint_id=endpoint.id)
        return delivery, None, "not sent: the signing secret cannot be read; rotate it"
    return delivery, Message(endpoint.url, delivery.event_id, delivery.body.encode(), secrets), None
