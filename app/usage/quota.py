"""Enforcing plan limits inside the caller's transaction: the monthly record quota and resource counts.

The record quota is a row per organisation and month (`usage_counters`), incremented by one statement in
the ingest transaction, after the records are inserted and just before the commit:

    INSERT … ON CONFLICT (org_id, period_start) DO UPDATE SET records = records + n
    WHERE records + n <= limit RETURNING records

No row back means the batch would cross the limit: QUOTA_EXCEEDED, and the transaction (records included)
rolls back, so a batch is refused whole. Why PostgreSQL and not a Redis counter: the count commits or rolls
back with the records themselves, so it is exact (idempotent replays that insert nothing count nothing; a
failed transaction leaks no reservation) and survives a Redis flush. Concurrent batches are serialised by the
row lock only from this last statement to the commit; the one that waits re-checks the condition against the
committed count (READ COMMITTED re-evaluation), so two batches racing for the last slots never exceed it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime

from sqlmodel import select

from app.db import AsyncSession, lock_organisation, scoped_text
from app.errors import QuotaExceeded
from app.settings import Settings
from app.usage import plans
from app.usage.middleware import current_settings
from app.usage.models import BillingAccount, UsageCounter

LIMIT_LOCK_NAMESPACE = 0x42494C4C  # "BILL": serialises counted resources (API keys, webhook endpoints) per org

_CONSUME = scoped_text(
    """
    WITH account AS (
        SELECT coalesce((SELECT plan FROM billing_accounts WHERE org_id = :org), :default_plan) AS plan
    ), lim AS (
        SELECT t.quota AS value
        FROM account JOIN unnest(CAST(:plans AS text[]), CAST(:quotas AS bigint[])) AS t(plan, quota)
            ON t.plan = account.plan
    )
    INSERT INTO usage_counters (org_id, period_start, records, updated_at)
    SELECT :org, :period_start, :n, now() FROM lim WHERE lim.value IS NULL OR :n <= lim.value
    ON CONFLICT (org_id, period_start) DO UPDATE
        SET records = usage_counters.records + EXCLUDED.records, updated_at = EXCLUDED.updated_at
        WHERE EXISTS (
            SELECT 1 FROM lim WHERE lim.value IS NULL OR usage_counters.records + EXCLUDED.records <= lim.value
        )
    RETURNING records
    """
)


def period_of(moment: datetime | None = None) -> tuple[date, date]:
    """The calendar month (UTC) containing `moment`: [start, end)."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    start = date(moment.year, moment.month, 1)
    end = date(moment.year + (moment.month == 12), moment.month % 12 + 1, 1)
    return start, end


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


async def current_plan(session: AsyncSession, org_id: str) -> str:
    plan = (await session.exec(select(BillingAccount.plan).where(BillingAccount.org_id == org_id))).first()
    return plans.plan_name(plan).value


async def records_used(session: AsyncSession, org_id: str, period_start: date) -> int:
    used = (
        await session.exec(
            select(UsageCounter.records).where(UsageCounter.org_id == org_id, UsageCounter.period_start == period_start)
        )
    ).first()
    return int(used or 0)


async def consume_records(session: AsyncSession, org_id: str, count: int, *, settings: Settings | None = None) -> None:
    """Counts `count` newly written records against this month's quota, in the caller's transaction.

    Call it last before the commit (the counter row stays locked until then). QUOTA_EXCEEDED when the
    records would cross the plan's limit; the caller's transaction must then roll back (nothing is written).
    """
    if count <= 0:
        return
    settings = settings or current_settings()
    enforced = plans.limits_enforced(settings)
    names = [p.value for p in plans.PLANS]
    quotas = [plans.limits_for(p, settings).records_per_month if enforced else None for p in plans.PLANS]
    start, end = period_of()
    params = {
        "default_plan": plans.DEFAULT_PLAN.value,
        "plans": names,
        "quotas": quotas,
        "period_start": start,
        "n": count,
    }
    if (await session.execute(_CONSUME, params)).first() is not None:
        return
    plan = await current_plan(session, org_id)
    limit = plans.limits_for(plan, settings).records_per_month
    used = await records_used(session, org_id, start)
    title = plans.PLANS[plans.plan_name(plan)].title
    raise QuotaExceeded(
        f"monthly record quota exceeded: the {title} plan allows {limit:,} records per month; "
        f"{used:,} used, this request adds {count:,}. Nothing was written. "
        f"To continue, {plans.upgrade_hint(plan, settings, 'records_per_month')}; "
        f"the quota resets on {end.isoformat()} (UTC).",
        limit=limit,
        used=used,
        requested=count,
        plan=plan,
        resetsAt=_midnight(end).isoformat().replace("+00:00", "Z"),
    )


async def limits_of(session: AsyncSession, org_id: str, *, settings: Settings | None = None) -> plans.PlanLimits:
    """The organisation's current limits (its plan's, with this deployment's overrides)."""
    return plans.limits_for(await current_plan(session, org_id), settings or current_settings())


_RESOURCE_WORDS = {
    "api_keys": ("active API keys", "revoke one"),
    "webhook_endpoints": ("webhook endpoints", "delete one"),
}


async def require_capacity(
    session: AsyncSession,
    org_id: str,
    resource: str,
    *,
    count: Callable[[], Awaitable[int]],
    adding: int = 1,
    settings: Settings | None = None,
) -> None:
    """QUOTA_EXCEEDED when adding `adding` more of `resource` ("api_keys", "webhook_endpoints") would exceed the
    plan's limit. `count` returns how many exist now; it runs under a per-organisation lock held until the
    caller's transaction ends, so concurrent creations cannot both pass. Call it before inserting the new row.
    """
    if resource not in _RESOURCE_WORDS:
        raise ValueError(f"not a counted resource: {resource}")
    settings = settings or current_settings()
    if not plans.limits_enforced(settings):
        return
    plan = await current_plan(session, org_id)
    limit = getattr(plans.limits_for(plan, settings), resource)
    if limit is None:
        return
    await lock_organisation(session, LIMIT_LOCK_NAMESPACE, part=f":{resource}")
    used = await count()
    if used + adding <= limit:
        return
    words, remedy = _RESOURCE_WORDS[resource]
    title = plans.PLANS[plans.plan_name(plan)].title
    raise QuotaExceeded(
        f"the {title} plan allows {limit:,} {words} and {used:,} exist; "
        f"{remedy}, or {plans.upgrade_hint(plan, settings, resource)}",
        limit=limit,
        used=used,
        plan=plan,
        resource=resource,
    )
