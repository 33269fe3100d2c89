"""The plans and their limits. This is the one place that defines them.

Prices live in Stripe; their ids come from settings (`AGENTRAIL_STRIPE_PRICE_PRO`, `…_BUSINESS`). Any limit
can be overridden per deployment with `AGENTRAIL_PLAN_LIMITS` (JSON), e.g. `{"free": {"records_per_month":
50000}}`. Limits are enforced when billing is configured, or when `AGENTRAIL_ENFORCE_LIMITS=true`: a
self-hosted server without Stripe has no plan to upgrade to, so its organisations are unmetered (usage is
still counted and shown).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from app.settings import Settings


class PlanName(StrEnum):
    FREE = "free"
    PRO = "pro"
    BUSINESS = "business"


@dataclass(frozen=True)
class PlanLimits:
    records_per_month: int | None  # None: unlimited
    retention_days: int
    api_keys: int | None  # active (not revoked) keys
    webhook_endpoints: int | None
    requests_per_second: float  # per API key

    def burst(self, settings: Settings) -> int:
        return burst_for(self.requests_per_second, settings)


@dataclass(frozen=True)
class Plan:
    name: PlanName
    title: str
    rank: int  # higher is bigger; upgrades go up
    limits: PlanLimits


PLANS: dict[PlanName, Plan] = {
    PlanName.FREE: Plan(
        PlanName.FREE,
        "Free",
        0,
        PlanLimits(records_per_month=10_000, retention_days=7, api_keys=2, webhook_endpoints=1, requests_per_second=10),
    ),
    PlanName.PRO: Plan(
        PlanName.PRO,
        "Pro",
        1,
        PlanLimits(
            records_per_month=1_000_000, retention_days=90, api_keys=25, webhook_endpoints=10, requests_per_second=100
        ),
    ),
    PlanName.BUSINESS: Plan(
        PlanName.BUSINESS,
        "Business",
        2,
        PlanLimits(
            records_per_month=20_000_000,
            retention_days=365,
            api_keys=200,
            webhook_endpoints=50,
            requests_per_second=500,
        ),
    ),
}
DEFAULT_PLAN = PlanName.FREE
PAID_PLANS = (PlanName.PRO, PlanName.BUSINESS)
LIMIT_NAMES = tuple(f.name for f in dataclasses.fields(PlanLimits))

# Stripe subscription statuses that keep the paid plan. `past_due` keeps it while Stripe retries the payment;
# `unpaid`, `canceled`, `incomplete`, `incomplete_expired` and `paused` fall back to the free plan.
LIVE_STATUSES = frozenset({"active", "trialing", "past_due"})
TERMINAL_STATUSES = frozenset({"canceled", "incomplete_expired"})


def plan_name(value: str | None) -> PlanName:
    try:
        return PlanName(value or DEFAULT_PLAN)
    except ValueError:
        return DEFAULT_PLAN


def limits_for(plan: str | PlanName | None, settings: Settings) -> PlanLimits:
    """The plan's limits with this deployment's overrides applied."""
    name = plan_name(plan)
    limits = PLANS[name].limits
    overrides: dict[str, Any] = {
        k: v for k, v in (settings.plan_limits.get(name.value) or {}).items() if k in LIMIT_NAMES
    }
    return dataclasses.replace(limits, **overrides) if overrides else limits


def burst_for(requests_per_second: float, settings: Settings) -> int:
    return max(1, math.ceil(requests_per_second * settings.rate_limit_burst_seconds))


def missing_settings(settings: Settings) -> list[str]:
    """The settings billing still needs; empty when it is configured."""
    required = {
        "AGENTRAIL_STRIPE_SECRET_KEY": settings.stripe_secret_key,
        "AGENTRAIL_STRIPE_WEBHOOK_SECRET": settings.stripe_webhook_secret,
        "AGENTRAIL_STRIPE_PRICE_PRO": settings.stripe_price_pro,
        "AGENTRAIL_STRIPE_PRICE_BUSINESS": settings.stripe_price_business,
    }
    return [name for name, value in required.items() if not value]


def billing_configured(settings: Settings) -> bool:
    return not missing_settings(settings)


def limits_enforced(settings: Settings) -> bool:
    if settings.enforce_limits is not None:
        return settings.enforce_limits
    return billing_configured(settings)


def price_ids(settings: Settings) -> dict[PlanName, str | None]:
    """The Stripe price of each paid plan (None when not configured)."""
    return {PlanName.PRO: settings.stripe_price_pro, PlanName.BUSINESS: settings.stripe_price_business}


def plan_for_price(price_id: str | None, settings: Settings) -> PlanName | None:
    if not price_id:
        return None
    for name, configured in price_ids(settings).items():
        if configured and configured == price_id:
            return name
    return None


def upgrades_from(plan: str | PlanName | None) -> list[Plan]:
    current = PLANS[plan_name(plan)]
    return sorted((p for p in PLANS.values() if p.rank > current.rank), key=lambda p: p.rank)


def upgrade_hint(plan: str | PlanName | None, settings: Settings, limit: str) -> str:
    """`upgrade to Pro (1,000,000) or Business (20,000,000) in Billing` (or why that is not possible)."""
    options = []
    for candidate in upgrades_from(plan):
        value = getattr(limits_for(candidate.name, settings), limit)
        options.append(f"{candidate.title} ({'unlimited' if value is None else f'{value:,}'})")
    if not options:
        return "contact support to raise it"
    if not billing_configured(settings):
        return "ask the operator of this server to raise it"
    return "upgrade to " + " or ".join(options) + " in Billing (createCheckoutSession)"
