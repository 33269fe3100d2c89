"""The delivery state machine in PostgreSQL: claiming due deliveries, recording outcomes, retry schedule.

    PENDING ─claim─▶ SENDING ─2xx─▶ DELIVERED
                       │ └─fail, retries left─▶ FAILED ─(next_attempt_at)─claim─▶ SENDING …
                       └─fail, none left─▶ DEAD_LETTERED          (redeliver: ─▶ PENDING, a new cycle)

A claim takes due rows with FOR UPDATE SKIP LOCKED, so concurrent workers never take the same row, and
marks them SENDING with a lease and a fresh claim token. A worker that dies mid-attempt leaves its rows
SENDING; once the lease expires they are claimed again (the lost attempt is recorded as such). Only the
holder of the current token may record an outcome, so a late worker cannot overwrite a newer claim. The lease
outlives the request timeout, so a live worker always finishes (or times out) before its lease can expire.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import col

from app.activity.service import record_activity
from app.db import AsyncSession, iso, new_id
from app.settings import Settings
from app.webhooks.models import DEAD_LETTERED, DELIVERED, FAILED, WebhookAttempt, WebhookEndpoint
from app.webhooks.sender import AttemptResult

TEST_EVENT = "test"

_CLAIM = sa.text(
    """
    WITH due AS (
        SELECT id, status FROM webhook_deliveries
        WHERE ((status IN ('PENDING', 'FAILED') AND next_attempt_at <= :now)
               OR (status = 'SENDING' AND lease_expires_at <= :now))
          AND (CAST(:ids AS text[]) IS NULL OR id = ANY(CAST(:ids AS text[])))
        ORDER BY next_attempt_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE webhook_deliveries AS d
    SET status = 'SENDING', lease_expires_at = :lease_until, claim_token = :token,
        attempt_count = d.attempt_count + 1, updated_at = :now
    FROM due
    WHERE d.id = due.id
    RETURNING d.id, d.org_id, d.endpoint_id, d.url, d.event_id, d.event_type, d.body, d.attempt_count,
              due.status AS previous_status
    """
)

_RECORD = sa.text(
    """
    UPDATE webhook_deliveries AS d
    SET status = r.status, next_attempt_at = r.next_attempt_at, lease_expires_at = NULL, claim_token = NULL,
        last_attempt_at = r.attempted_at, last_status_code = r.status_code, last_error = r.error,
        delivered_at = CASE WHEN r.status = 'DELIVERED' THEN r.attempted_at ELSE d.delivered_at END,
        updated_at = r.attempted_at
    FROM unnest(CAST(:ids AS text[]), CAST(:statuses AS text[]), CAST(:next_at AS timestamptz[]),
                CAST(:attempted_at AS timestamptz[]), CAST(:status_codes AS int[]), CAST(:errors AS text[]))
         AS r(id, status, next_attempt_at, attempted_at, status_code, error)
    WHERE d.id = r.id AND d.status = 'SENDING' AND d.claim_token = :token
    RETURNING d.id
    """
)


@dataclass(slots=True)
class Claimed:
    id: str
    org_id: str
    endpoint_id: str | None
    url: str | None
    event_id: str
    event_type: str
    body: str
    attempt: int  # number of this attempt in the cycle (1 = first)
    retaken: bool  # the previous claim's lease expired: that attempt was lost


@dataclass(slots=True)
class Outcome:
    delivery: Claimed
    result: AttemptResult
    status: str = ""
    next_attempt_at: datetime | None = None


def max_attempts(settings: Settings) -> int:
    return 1 + len(settings.webhook_retry_delays)


def lease_seconds(settings: Settings) -> float:
    """Longer than any attempt can take (the timeout applies per phase: connect, write, read)."""
    return 4 * settings.webhook_timeout_seconds + 30


def retry_delay(settings: Settings, attempt: int) -> float | None:
    """Seconds until the retry after failed attempt `attempt` (1-based), with jitter; None: no retry left."""
    delays = settings.webhook_retry_delays
    if attempt > len(delays):
        return None
    base = delays[attempt - 1]
    return base * (1 + random.uniform(0, settings.webhook_retry_jitter))  # noqa: S311  jitter, not a secret


async def claim(
    session: AsyncSession, *, now: datetime, limit: int, settings: Settings, ids: Sequence[str] | None = None
) -> tuple[str, list[Claimed]]:
    """Claims up to `limit` due deliveries (optionally only among `ids`) in the caller's (system) transaction,
    which the runner commits before sending."""
    token = new_id("clm")
    rows = await session.execute(
        _CLAIM,
        {
            "now": now,
            "lease_until": now + timedelta(seconds=lease_seconds(settings)),
            "token": token,
            "limit": limit,
            "ids": list(ids) if ids is not None else None,
        },
    )
    claimed = [
        Claimed(
            id=r.id,
            org_id=r.org_id,
            endpoint_id=r.endpoint_id,
            url=r.url,
            event_id=r.event_id,
            event_type=r.event_type,
            body=r.body,
            attempt=r.attempt_count,
            retaken=r.previous_status == "SENDING",
        )
        for r in rows.all()
    ]
    return token, claimed


def decide(outcome: Outcome, settings: Settings) -> None:
    if outcome.result.succeeded:
        outcome.status = DELIVERED
        return
    delay = retry_delay(settings, outcome.delivery.attempt)
    if delay is None:
        outcome.status = DEAD_LETTERED
    else:
        outcome.status = FAILED
        outcome.next_attempt_at = outcome.result.attempted_at + timedelta(seconds=delay)


async def record(
    session: AsyncSession,
    token: str,
    outcomes: Sequence[Outcome],
    *,
    settings: Settings,
    now: datetime,
) -> list[Outcome]:
    """Writes the outcomes of one claim set-based, in the caller's transaction: the deliveries' new states
    (only while this claim still holds them), every attempt made (plus, for a delivery retaken after its lease
    expired, the attempt its crashed worker lost), the endpoints' health, and disables endpoints that have been
    failing for too long. Returns the outcomes applied."""
    for outcome in outcomes:
        decide(outcome, settings)
    applied: set[str] = set()
    if outcomes:
        result = await session.execute(
            _RECORD,
            {
                "token": token,
                "ids": [o.delivery.id for o in outcomes],
                "statuses": [o.status for o in outcomes],
                "next_at": [o.next_attempt_at for o in outcomes],
                "attempted_at": [o.result.attempted_at for o in outcomes],
                "status_codes": [o.result.status_code for o in outcomes],
                "errors": [o.result.error for o in outcomes],
            },
        )
        applied = {r.id for r in result.all()}
    attempts: list[dict[str, Any]] = [
        {
            "id": new_id("wha"),
            "org_id": claimed.org_id,
            "delivery_id": claimed.id,
            "attempted_at": now,
            "succeeded": False,
            "status_code": None,
            "latency_ms": None,
            "error": "no outcome: the worker was lost during the attempt (lease expired)",
            "response_body": None,
        }
        for claimed in (o.delivery for o in outcomes if o.delivery.retaken)
    ]
    attempts += [
        {
            "id": new_id("wha"),
            "org_id": o.delivery.org_id,
            "delivery_id": o.delivery.id,
            "attempted_at": o.result.attempted_at,
            "succeeded": o.result.succeeded,
            "status_code": o.result.status_code,
            "latency_ms": o.result.latency_ms,
            "error": o.result.error,
            "response_body": o.result.response_body,
        }
        for o in outcomes
    ]
    if attempts:
        await session.execute(sa.insert(WebhookAttempt), attempts)
    await _track_health(session, [o for o in outcomes if o.delivery.id in applied], settings=settings, now=now)
    return [o for o in outcomes if o.delivery.id in applied]


async def _track_health(
    session: AsyncSession, outcomes: Sequence[Outcome], *, settings: Settings, now: datetime
) -> None:
    """A success clears `failing_since`; a failure sets it if unset; an endpoint failing since longer than
    `webhook_disable_after_days` is disabled, with an activity event. Test events, and deliveries not sent at
    all (endpoint disabled meanwhile), do not count."""
    counted = [
        o
        for o in outcomes
        if o.delivery.endpoint_id and o.delivery.event_type != TEST_EVENT and o.result.latency_ms is not None
    ]
    healthy = sorted({o.delivery.endpoint_id for o in counted if o.result.succeeded})  # type: ignore[type-var]
    failing = sorted({o.delivery.endpoint_id for o in counted if not o.result.succeeded} - set(healthy))  # type: ignore[type-var]
    ids = ARRAY(sa.String())
    if healthy:
        await session.execute(
            sa.update(WebhookEndpoint)
            .where(
                col(WebhookEndpoint.id) == sa.any_(sa.literal(healthy, ids)),
                col(WebhookEndpoint.failing_since).is_not(None),
            )
            .values(failing_since=None)
            .execution_options(synchronize_session=False)
        )
    if not failing:
        return
    await session.execute(
        sa.update(WebhookEndpoint)
        .where(
            col(WebhookEndpoint.id) == sa.any_(sa.literal(failing, ids)), col(WebhookEndpoint.failing_since).is_(None)
        )
        .values(failing_since=now)
        .execution_options(synchronize_session=False)
    )
    cutoff = now - timedelta(days=settings.webhook_disable_after_days)
    reason = f"failing continuously for {settings.webhook_disable_after_days:g} days"
    disabled = await session.execute(
        sa.update(WebhookEndpoint)
        .where(
            col(WebhookEndpoint.id) == sa.any_(sa.literal(failing, ids)),
            col(WebhookEndpoint.enabled).is_(True),
            col(WebhookEndpoint.failing_since) <= cutoff,
        )
        .values(enabled=False, disabled_reason=reason, updated_at=now)
        .returning(
            col(WebhookEndpoint.id),
            col(WebhookEndpoint.org_id),
            col(WebhookEndpoint.url),
            col(WebhookEndpoint.failing_since),
        )
        .execution_options(synchronize_session=False)
    )
    for endpoint_id, org_id, url, since in disabled.all():
        record_activity(
            session,
            None,
            "webhook_endpoint.disabled",
            org_id=org_id,
            target_type="webhook_endpoint",
            target_id=endpoint_id,
            target_name=url,
            metadata={"reason": reason, "failingSince": iso(since), "automatic": True},
        )
