"""GraphQL types and operations of the billing domain. Thin: parse, authorise, call the service, map."""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import Enum
from typing import Annotated

import strawberry

from app.audit.schema import AuditRetention
from app.billing import service
from app.info import Info, RequestInfo
from app.settings import Settings
from app.usage import plans


@strawberry.enum(description="A billing plan.")
class BillingPlan(Enum):
    FREE = strawberry.enum_value("free", description="The free plan: the smallest limits, no payment.")
    PRO = strawberry.enum_value("pro", description="The Pro plan (paid through Stripe).")
    BUSINESS = strawberry.enum_value(
        "business", description="The Business plan (paid through Stripe): the largest limits."
    )


@strawberry.enum(description="The Stripe subscription's status (`past_due` keeps the paid plan while Stripe retries).")
class SubscriptionStatus(Enum):
    ACTIVE = strawberry.enum_value("active", description="Paid and current.")
    TRIALING = strawberry.enum_value("trialing", description="In its trial period.")
    PAST_DUE = strawberry.enum_value(
        "past_due", description="A payment failed; Stripe retries and the paid plan is kept meanwhile."
    )
    UNPAID = strawberry.enum_value("unpaid", description="Stripe gave up retrying; the plan falls back to free.")
    CANCELED = strawberry.enum_value("canceled", description="Cancelled; the plan falls back to free.")
    INCOMPLETE = strawberry.enum_value("incomplete", description="The first payment has not succeeded yet.")
    INCOMPLETE_EXPIRED = strawberry.enum_value(
        "incomplete_expired", description="The first payment never succeeded; the subscription lapsed."
    )
    PAUSED = strawberry.enum_value("paused", description="Paused in Stripe: no payments are collected.")


@strawberry.type(description="What a plan allows. Null means unlimited.")
class PlanLimits:
    records_per_month: int | None = strawberry.field(description="Audit records per calendar month (UTC).")
    retention_days: int = strawberry.field(description="How long audit records are kept.")
    api_keys: int | None = strawberry.field(description="Active (not revoked) API keys.")
    webhook_endpoints: int | None = strawberry.field(description="Webhook endpoints.")
    requests_per_second: float = strawberry.field(description="Requests per second per API key.")
    burst: int = strawberry.field(description="Requests an API key may send at once before the rate applies.")

    @classmethod
    def of(cls, limits: plans.PlanLimits, settings: Settings) -> PlanLimits:
        return cls(
            records_per_month=limits.records_per_month,
            retention_days=limits.retention_days,
            api_keys=limits.api_keys,
            webhook_endpoints=limits.webhook_endpoints,
            requests_per_second=limits.requests_per_second,
            burst=limits.burst(settings),
        )


@strawberry.type(description="Records written this billing period against the plan's monthly quota.")
class BillingUsage:
    records_this_period: int = strawberry.field(description="Records written since `periodStart`.")
    limit: int | None = strawberry.field(description="The monthly quota; null when unlimited or not enforced.")
    remaining: int | None = strawberry.field(description="Records that may still be written; null when unlimited.")
    period_start: datetime = strawberry.field(description="Start of the period (first of the month, UTC).")
    period_end: datetime = strawberry.field(description="End of the period, when usage resets.")


@strawberry.type(description="The Stripe price ids a checkout can use.")
class BillingPrices:
    pro: str | None = strawberry.field(description="Price id of the Pro plan; null when billing is not configured.")
    business: str | None = strawberry.field(description="Price id of the Business plan; null when not configured.")


@strawberry.type(description="A plan on offer, with its limits and price.")
class PlanOffer:
    plan: BillingPlan = strawberry.field(description="The plan.")
    title: str = strawberry.field(description="Display name.")
    price_id: str | None = strawberry.field(description="Stripe price id for `createCheckoutSession`; null if free.")
    limits: PlanLimits = strawberry.field(description="What it allows.")


@strawberry.type(description="The organisation's plan, subscription and usage.")
class Billing:
    configured: bool = strawberry.field(description="False when this server has no Stripe configuration.")
    limits_enforced: bool = strawberry.field(description="Whether plan limits (quota, keys, rate) are enforced.")
    plan: BillingPlan = strawberry.field(description="The plan in effect now.")
    status: SubscriptionStatus | None = strawberry.field(description="Subscription status; null if never subscribed.")
    current_period_end: datetime | None = strawberry.field(description="When the paid period ends or renews.")
    cancel_at_period_end: bool = strawberry.field(description="True when the subscription ends at the period end.")
    payment_failed: bool = strawberry.field(description="True when the latest invoice payment failed.")
    usage: BillingUsage = strawberry.field(description="Records this period against the quota.")
    limits: PlanLimits = strawberry.field(description="The current plan's limits.")
    prices: BillingPrices = strawberry.field(description="Price ids to pass to `createCheckoutSession`.")
    plans: list[PlanOffer] = strawberry.field(description="Every plan with its limits and price.")
    retention: AuditRetention = strawberry.field(
        description="How long audit records are kept now (the plan's, an override, or a downgrade's grace) and "
        "the oldest record kept."
    )


@strawberry.type(description="A Stripe Checkout session: send the user to `url`.")
class CheckoutSession:
    session_id: str = strawberry.field(description="Stripe Checkout session id (`cs_…`).")
    url: str = strawberry.field(description="The hosted payment page.")


@strawberry.type(description="A Stripe billing portal session: send the user to `url`.")
class PortalSession:
    url: str = strawberry.field(description="The hosted billing portal (plan changes, cancellation, invoices).")


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _status(value: str | None) -> SubscriptionStatus | None:
    if value is None:
        return None
    try:
        return SubscriptionStatus(value)
    except ValueError:
        return SubscriptionStatus.INCOMPLETE


def plan_offers(settings: Settings) -> list[PlanOffer]:
    prices = plans.price_ids(settings)
    return [
        PlanOffer(
            plan=BillingPlan(p.name.value),
            title=p.title,
            price_id=prices.get(p.name),
            limits=PlanLimits.of(plans.limits_for(p.name, settings), settings),
        )
        for p in sorted(plans.PLANS.values(), key=lambda p: p.rank)
    ]


@strawberry.type
class BillingQuery:
    @strawberry.field(description="The organisation's plan, subscription, usage and prices. Owners and admins.")
    async def billing(self, info: Info) -> Billing:
        principal = await info.context.principal()
        settings = info.context.runtime.settings
        view = await service.overview(await info.context.db(), principal, settings=settings)
        usage = view.usage
        return Billing(
            configured=view.configured,
            limits_enforced=view.limits_enforced,
            plan=BillingPlan(view.plan.value),
            status=_status(view.status),
            current_period_end=view.current_period_end,
            cancel_at_period_end=view.cancel_at_period_end,
            payment_failed=view.payment_failed,
            usage=BillingUsage(
                records_this_period=usage.records_this_period,
                limit=usage.limit,
                remaining=None if usage.limit is None else max(0, usage.limit - usage.records_this_period),
                period_start=_midnight(usage.period_start),
                period_end=_midnight(usage.period_end),
            ),
            limits=PlanLimits.of(view.limits, settings),
            prices=BillingPrices(pro=view.prices[plans.PlanName.PRO], business=view.prices[plans.PlanName.BUSINESS]),
            plans=plan_offers(settings),
            retention=await AuditRetention.of(await info.context.db(), settings),
        )


@strawberry.type
class BillingMutation:
    @strawberry.mutation(
        description="Start a Stripe Checkout for a plan; returns the page to send the user to. Owners and admins. "
        "The plan changes when Stripe confirms the subscription (webhook)."
    )
    async def create_checkout_session(
        self,
        info: RequestInfo,
        price_id: Annotated[str, strawberry.argument(description="A price id from `billing { prices }`.")],
    ) -> CheckoutSession:
        principal = await info.context.principal()
        result = await service.create_checkout_session(
            await info.context.db(),
            principal,
            price_id=price_id,
            settings=info.context.runtime.settings,
            source_ip=info.context.source_ip,
            keep=info.context.commit,
        )
        return CheckoutSession(session_id=result.session_id, url=result.url)

    @strawberry.mutation(
        description="Open the Stripe billing portal (change plan, cancel, payment methods, invoices). "
        "Owners and admins."
    )
    async def create_portal_session(self, info: RequestInfo) -> PortalSession:
        principal = await info.context.principal()
        url = await service.create_portal_session(
            await info.context.db(),
            principal,
            settings=info.context.runtime.settings,
            source_ip=info.context.source_ip,
            keep=info.context.commit,
        )
        return PortalSession(url=url)
