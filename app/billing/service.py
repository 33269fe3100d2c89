"""Operations of the billing domain: the billing overview, Checkout and Portal sessions, Stripe webhooks.

Subscription state comes only from signed webhooks. Each event id is stored once (a replay is acknowledged
and skipped), and each is applied only when it is not older than what was already applied: the event's own
`created` time is compared with the newest applied one, so a late `customer.subscription.updated` never
undoes a newer state. Within the same second, the event whose subscription is further along its life cycle
wins; a canceled subscription never comes back; and an event about another, dead subscription does not
replace a live one.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, cast

import orjson
import stripe
import structlog
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlmodel import col, select

from app.activity.service import record_activity
from app.billing.models import StripeEvent
from app.billing.stripe_api import stripe_client, verify_event
from app.db import AsyncSession, utcnow
from app.errors import BadUserInput, Conflict, Forbidden, NotFound
from app.orgs import service as orgs
from app.principal import Principal
from app.settings import Settings
from app.usage import plans
from app.usage.models import BillingAccount
from app.usage.quota import current_plan, period_of, records_used

log = structlog.get_logger(__name__)

NOT_CONFIGURED = "billing is not configured on this server"


def require_configured(settings: Settings) -> None:
    missing = plans.missing_settings(settings)
    if missing:
        log.warning("billing used but not configured", missing=missing)
        raise Forbidden(f"{NOT_CONFIGURED} (missing: {', '.join(missing)})", reason="BILLING_NOT_CONFIGURED")


def _public_url(settings: Settings) -> str:
    return (settings.public_url or f"http://{settings.host}:{settings.port}").rstrip("/")


# --- reading -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Usage:
    records_this_period: int
    limit: int | None
    period_start: date
    period_end: date


@dataclass(frozen=True)
class Overview:
    configured: bool
    limits_enforced: bool
    plan: plans.PlanName
    status: str | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    payment_failed: bool
    usage: Usage
    limits: plans.PlanLimits
    prices: dict[plans.PlanName, str | None]


async def _account(session: AsyncSession, org_id: str) -> BillingAccount | None:
    return (await session.exec(select(BillingAccount).where(BillingAccount.org_id == org_id))).first()


async def overview(session: AsyncSession, principal: Principal, *, settings: Settings) -> Overview:
    account = await _account(session, principal.org_id)
    plan = plans.plan_name(account.plan if account else None)
    limits = plans.limits_for(plan, settings)
    start, end = period_of()
    enforced = plans.limits_enforced(settings)
    return Overview(
        configured=plans.billing_configured(settings),
        limits_enforced=enforced,
        plan=plan,
        status=account.status if account else None,
        current_period_end=account.current_period_end if account else None,
        cancel_at_period_end=bool(account and account.cancel_at_period_end),
        payment_failed=bool(account and account.payment_failed),
        usage=Usage(
            records_this_period=await records_used(session, principal.org_id, start),
            limit=limits.records_per_month if enforced else None,
            period_start=start,
            period_end=end,
        ),
        limits=limits,
        prices=plans.price_ids(settings),
    )


# --- Checkout and Portal -------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckoutSession:
    session_id: str
    url: str


async def _locked_account(session: AsyncSession, org_id: str) -> BillingAccount:
    """The organisation's billing row, created if missing, locked until the transaction ends."""
    now = utcnow()
    await session.execute(
        pg_insert(BillingAccount)
        .values(org_id=org_id, plan=plans.DEFAULT_PLAN.value, created_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=["org_id"])
    )
    query = (
        select(BillingAccount)
        .where(BillingAccount.org_id == org_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.exec(query)).one()


async def _ensure_customer_id(
    session: AsyncSession, principal: Principal, client: Any, keep: Callable[[], Awaitable[object]]
) -> str:
    """The organisation's Stripe customer id. Creates the customer on first use and stores its id, kept at once
    by `keep` (the owner's commit, handed in: the operation goes on in a second transaction), so a later failure
    does not lose it. Two managers racing are serialised by the row lock; the idempotency key makes a retry of
    the same person's attempt return the same customer."""
    account = await _locked_account(session, principal.org_id)
    if account.stripe_customer_id:
        return account.stripe_customer_id
    org = await orgs.get_organization(session, principal.org_id)
    user = await orgs.get_user(session, principal.user_id or "")
    customer = await client.v1.customers.create_async(
        {"name": org.name, "email": user.email, "metadata": {"org_id": org.id}},
        {"idempotency_key": f"agentrail-customer-{org.id}-{user.id}"},
    )
    account.stripe_customer_id = customer.id
    account.updated_at = utcnow()
    record_activity(
        session,
        principal,
        "billing.customer_created",
        target_type="organization",
        target_id=org.id,
        metadata={"customerId": customer.id},
    )
    await keep()
    return str(customer.id)


async def create_checkout_session(
    session: AsyncSession,
    principal: Principal,
    *,
    price_id: str,
    settings: Settings,
    source_ip: str | None,
    keep: Callable[[], Awaitable[object]],
) -> CheckoutSession:
    """A Stripe Checkout session subscribing the organisation to the plan of `price_id`."""
    require_configured(settings)
    plan = plans.plan_for_price(price_id.strip(), settings)
    if plan is None:
        offered = ", ".join(f"{p.value}: {pid}" for p, pid in plans.price_ids(settings).items())
        raise BadUserInput(f"priceId is not one of this server's prices ({offered})", field="priceId")
    account = await _account(session, principal.org_id)
    if account and account.status in plans.LIVE_STATUSES and account.stripe_subscription_id:
        raise Conflict(
            f"the organisation already has a {account.status} {account.plan} subscription; "
            "change or cancel it in the billing portal (createPortalSession)"
        )
    base = _public_url(settings)
    async with stripe_client(settings) as client:
        customer_id = await _ensure_customer_id(session, principal, client, keep)
        created = await client.v1.checkout.sessions.create_async(
            {
                "mode": "subscription",
                "customer": customer_id,
                "client_reference_id": principal.org_id,
                "line_items": [{"price": price_id.strip(), "quantity": 1}],
                "metadata": {"org_id": principal.org_id, "plan": plan.value},
                "subscription_data": {"metadata": {"org_id": principal.org_id, "plan": plan.value}},
                "success_url": f"{base}/billing?checkout=success&session_id={{CHECKOUT_SESSION_ID}}",
                "cancel_url": f"{base}/billing?checkout=cancelled",
            },
            {"idempotency_key": f"agentrail-checkout-{principal.org_id}-{uuid.uuid4().hex}"},
        )
    record_activity(
        session,
        principal,
        "billing.checkout_started",
        target_type="organization",
        target_id=principal.org_id,
        metadata={"plan": plan.value, "priceId": price_id.strip(), "checkoutSessionId": created.id},
        source_ip=source_ip,
    )
    await session.flush()
    # a hosted Checkout session (mode "subscription", no ui_mode) always has its URL
    return CheckoutSession(session_id=created.id, url=cast(str, created.url))


async def create_portal_session(
    session: AsyncSession,
    principal: Principal,
    *,
    settings: Settings,
    source_ip: str | None,
    keep: Callable[[], Awaitable[object]],
) -> str:
    """A Stripe billing portal session (change plan, cancel, payment methods, invoices); returns its URL."""
    require_configured(settings)
    async with stripe_client(settings) as client:
        customer_id = await _ensure_customer_id(session, principal, client, keep)
        portal = await client.v1.billing_portal.sessions.create_async(
            {"customer": customer_id, "return_url": f"{_public_url(settings)}/billing"},
            {"idempotency_key": f"agentrail-portal-{principal.org_id}-{uuid.uuid4().hex}"},
        )
    record_activity(
        session,
        principal,
        "billing.portal_opened",
        target_type="organization",
        target_id=principal.org_id,
        source_ip=source_ip,
    )
    await session.flush()
    return str(portal.url)


# --- webhooks ------------------------------------------------------------------------------------
class BadSignature(Exception):
    """The webhook is not from Stripe (or is too old, or not JSON). Nothing was written."""


@dataclass(frozen=True)
class EventOutcome:
    event_id: str
    duplicate: bool = False
    outcome: str = "ignored"  # applied | stale | ignored | unknown_org
    org_id: str | None = None
    plan_changed: bool = False


def parse_webhook(payload: bytes, signature: str | None, settings: Settings) -> dict[str, Any]:
    """Verifies `Stripe-Signature` (HMAC-SHA256, tolerance from settings) and returns the event."""
    require_configured(settings)
    try:
        verify_event(payload, signature, settings)
        event = orjson.loads(payload)
    except (stripe.SignatureVerificationError, ValueError) as exc:
        raise BadSignature(str(exc)) from None
    if not isinstance(event, dict) or not event.get("id") or not event.get("type"):
        raise BadSignature("not a Stripe event")
    return event


async def process_event(session: AsyncSession, event: dict[str, Any], *, settings: Settings) -> EventOutcome:
    """Applies one verified event, once. `session` is a system session; commits."""
    event_id = str(event["id"])
    event_type = str(event["type"])
    created = _timestamp(event.get("created")) or utcnow()
    stored = await session.execute(
        pg_insert(StripeEvent)
        .values(id=event_id, type=event_type[:100], created=created, received_at=utcnow())
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(col(StripeEvent.id))
    )
    if stored.first() is None:
        return EventOutcome(event_id=event_id, duplicate=True, outcome="duplicate")
    obj = ((event.get("data") or {}).get("object")) or {}
    handler = _HANDLERS.get(event_type)
    outcome = EventOutcome(event_id=event_id)
    if handler is not None and isinstance(obj, dict):
        outcome = await handler(session, event_id, event_type, created, obj, settings)
    row = await session.get(StripeEvent, event_id)
    assert row is not None
    row.outcome = outcome.outcome
    row.org_id = outcome.org_id
    await session.flush()
    log.info("stripe event processed", event_id=event_id, type=event_type, outcome=outcome.outcome, org=outcome.org_id)
    return outcome


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, int | float) and value > 0:
        return datetime.fromtimestamp(value, UTC)
    return None


def _id(value: Any) -> str | None:
    """An expandable field: an id, or the expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return str(value) if value else None


def _metadata_org(*objects: Any) -> str | None:
    for obj in objects:
        if isinstance(obj, dict):
            org = (obj.get("metadata") or {}).get("org_id")
            if org:
                return str(org)
    return None


async def _resolve_org(session: AsyncSession, *, customer: str | None, hint: str | None) -> str | None:
    """Our own customer → organisation mapping first; then the org id we put in the metadata."""
    if customer:
        found = (
            await session.exec(select(BillingAccount.org_id).where(BillingAccount.stripe_customer_id == customer))
        ).first()
        if found:
            if hint and hint != found:
                log.warning("stripe metadata names another organisation than the customer", customer=customer)
            return found
    if hint:
        try:
            await orgs.get_organization(session, hint)
        except NotFound:
            return None
        return hint
    return None


_STATUS_STAGE = {
    "incomplete": 0,
    "trialing": 1,
    "active": 2,
    "past_due": 3,
    "paused": 3,
    "unpaid": 4,
    "canceled": 5,
    "incomplete_expired": 5,
}


def _subscription_plan(sub: dict[str, Any], settings: Settings) -> plans.PlanName | None:
    """The plan of the subscription's prices: our configured price ids, else the price's lookup key or
    `metadata.plan` (so prices replaced in Stripe keep mapping); the biggest plan if several."""
    found: list[plans.PlanName] = []
    for item in (sub.get("items") or {}).get("data") or []:
        price = item.get("price") or {}
        price_id = _id(price)
        plan = plans.plan_for_price(price_id, settings)
        if plan is None and isinstance(price, dict):
            for candidate in (price.get("lookup_key"), (price.get("metadata") or {}).get("plan")):
                if candidate in {p.value for p in plans.PAID_PLANS}:
                    plan = plans.PlanName(candidate)
                    break
        if plan is None:
            log.warning("subscription price maps to no plan", price=price_id)
            continue
        found.append(plan)
    return max(found, key=lambda p: plans.PLANS[p].rank) if found else None


def _period_end(sub: dict[str, Any]) -> datetime | None:
    # API versions before 2025-03-31 have it on the subscription; newer ones on each item
    ends = [sub.get("current_period_end")]
    ends += [item.get("current_period_end") for item in (sub.get("items") or {}).get("data") or []]
    times = [t for t in map(_timestamp, ends) if t is not None]
    return max(times) if times else None


def _price_id(sub: dict[str, Any]) -> str | None:
    items = (sub.get("items") or {}).get("data") or []
    return _id(items[0].get("price")) if items else None


async def _on_subscription(
    session: AsyncSession,
    event_id: str,
    event_type: str,
    created: datetime,
    sub: dict[str, Any],
    settings: Settings,
) -> EventOutcome:
    sub_id = _id(sub.get("id"))
    customer = _id(sub.get("customer"))
    org_id = await _resolve_org(session, customer=customer, hint=_metadata_org(sub))
    if org_id is None or sub_id is None:
        log.warning("subscription event for no known organisation", event_id=event_id, customer=customer)
        return EventOutcome(event_id=event_id, outcome="unknown_org")
    account = await _locked_account(session, org_id)
    status = str(sub.get("status") or ("canceled" if event_type.endswith(".deleted") else "incomplete"))
    same = account.stripe_subscription_id in (None, sub_id)
    stale = None
    if account.subscription_event_at is not None and created < account.subscription_event_at:
        stale = "a newer event was already applied"
    elif same and account.status in plans.TERMINAL_STATUSES and account.stripe_subscription_id == sub_id:
        stale = "the subscription already ended"
    elif (
        same
        and account.subscription_event_at == created
        and _STATUS_STAGE.get(status, 0) < _STATUS_STAGE.get(account.status or "", 0)
    ):
        stale = "a same-second event further along was already applied"
    elif not same and account.status in plans.LIVE_STATUSES and status not in plans.LIVE_STATUSES:
        stale = "another subscription is live"

    previous_plan = account.plan
    if stale is None:
        paid = _subscription_plan(sub, settings) if status in plans.LIVE_STATUSES else None
        account.plan = (paid or plans.DEFAULT_PLAN).value
        account.stripe_subscription_id = sub_id
        account.stripe_price_id = _price_id(sub)
        account.status = status
        account.current_period_end = _period_end(sub)
        account.cancel_at_period_end = bool(sub.get("cancel_at_period_end"))
        account.subscription_event_at = created
        if customer and not account.stripe_customer_id:
            account.stripe_customer_id = customer
        account.updated_at = utcnow()
    record_activity(
        session,
        None,
        f"billing.{event_type.removeprefix('customer.')}",
        org_id=org_id,
        target_type="subscription",
        target_id=sub_id,
        metadata={
            "eventId": event_id,
            "applied": stale is None,
            **({"skippedBecause": stale} if stale else {}),
            "status": status,
            "plan": account.plan,
            "previousPlan": previous_plan,
            "cancelAtPeriodEnd": bool(sub.get("cancel_at_period_end")),
        },
    )
    return EventOutcome(
        event_id=event_id,
        outcome="applied" if stale is None else "stale",
        org_id=org_id,
        plan_changed=account.plan != previous_plan,
    )


async def _on_checkout_completed(
    session: AsyncSession,
    event_id: str,
    event_type: str,
    created: datetime,
    checkout: dict[str, Any],
    settings: Settings,
) -> EventOutcome:
    if checkout.get("mode") not in (None, "subscription"):
        return EventOutcome(event_id=event_id)
    customer = _id(checkout.get("customer"))
    hint = checkout.get("client_reference_id") or _metadata_org(checkout)
    org_id = await _resolve_org(session, customer=customer, hint=str(hint) if hint else None)
    if org_id is None:
        log.warning("checkout completed for no known organisation", event_id=event_id, customer=customer)
        return EventOutcome(event_id=event_id, outcome="unknown_org")
    account = await _locked_account(session, org_id)
    subscription = _id(checkout.get("subscription"))
    # the subscription's state (and so the plan) arrives with customer.subscription.*, before or after this
    if customer and not account.stripe_customer_id:
        account.stripe_customer_id = customer
        account.updated_at = utcnow()
    record_activity(
        session,
        None,
        "billing.checkout_completed",
        org_id=org_id,
        target_type="checkout_session",
        target_id=_id(checkout.get("id")),
        metadata={
            "eventId": event_id,
            "subscriptionId": subscription,
            "plan": (checkout.get("metadata") or {}).get("plan"),
        },
    )
    return EventOutcome(event_id=event_id, outcome="applied", org_id=org_id)


def _invoice_subscription(invoice: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    details = ((invoice.get("parent") or {}).get("subscription_details")) or invoice.get("subscription_details")
    sub = _id(invoice.get("subscription")) or (_id(details.get("subscription")) if isinstance(details, dict) else None)
    return sub, details if isinstance(details, dict) else None


async def _on_invoice(
    session: AsyncSession,
    event_id: str,
    event_type: str,
    created: datetime,
    invoice: dict[str, Any],
    settings: Settings,
) -> EventOutcome:
    customer = _id(invoice.get("customer"))
    subscription, details = _invoice_subscription(invoice)
    org_id = await _resolve_org(session, customer=customer, hint=_metadata_org(details, invoice))
    if org_id is None:
        log.warning("invoice event for no known organisation", event_id=event_id, customer=customer)
        return EventOutcome(event_id=event_id, outcome="unknown_org")
    account = await _locked_account(session, org_id)
    failed = event_type == "invoice.payment_failed"
    applied = account.invoice_event_at is None or created >= account.invoice_event_at
    if applied:
        account.payment_failed = failed
        account.invoice_event_at = created
        account.updated_at = utcnow()
    record_activity(
        session,
        None,
        "billing.invoice_payment_failed" if failed else "billing.invoice_paid",
        org_id=org_id,
        target_type="invoice",
        target_id=_id(invoice.get("id")),
        metadata={
            "eventId": event_id,
            "applied": applied,
            "subscriptionId": subscription,
            "amountDue": invoice.get("amount_due"),
            "amountPaid": invoice.get("amount_paid"),
            "currency": invoice.get("currency"),
            "hostedInvoiceUrl": invoice.get("hosted_invoice_url"),
        },
    )
    return EventOutcome(event_id=event_id, outcome="applied" if applied else "stale", org_id=org_id)


_HANDLERS = {
    "checkout.session.completed": _on_checkout_completed,
    "customer.subscription.created": _on_subscription,
    "customer.subscription.updated": _on_subscription,
    "customer.subscription.deleted": _on_subscription,
    "invoice.paid": _on_invoice,
    "invoice.payment_failed": _on_invoice,
}
HANDLED_EVENTS = tuple(_HANDLERS)


__all__ = [
    "HANDLED_EVENTS",
    "BadSignature",
    "CheckoutSession",
    "EventOutcome",
    "Overview",
    "Usage",
    "create_checkout_session",
    "create_portal_session",
    "current_plan",
    "overview",
    "parse_webhook",
    "process_event",
    "require_configured",
]
