"""REST endpoints of billing, where HTTP itself matters: the Stripe webhook and the public price list."""

from __future__ import annotations

import contextlib
from typing import Any

import structlog
from pydantic import Field
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app import unit_of_work as uow
from app.billing import service
from app.errors import AppError, BadUserInput
from app.rest import params
from app.rest.openapi import Answer, Body, body_of, documented
from app.rest.params import query_of
from app.rest.responses import JSONResponse, answers, error_response, principal_of, row_json, source_ip
from app.unit_of_work import system_unit_of_work, unit_of_work
from app.usage import plans
from app.usage.ratelimit import plan_cache_key

log = structlog.get_logger(__name__)


def _limits_json(limits: plans.PlanLimits, settings: Any) -> dict[str, Any]:
    return {
        "recordsPerMonth": limits.records_per_month,
        "retentionDays": limits.retention_days,
        "apiKeys": limits.api_keys,
        "webhookEndpoints": limits.webhook_endpoints,
        "requestsPerSecond": limits.requests_per_second,
        "burst": limits.burst(settings),
    }


class Prices(Answer):
    pro: str | None
    business: str | None


class PlanOut(Answer):
    plan: str
    title: str
    price_id: str | None
    limits: dict[str, Any]


class PricesDetail(Answer):
    """`?detail=true`: the plans, their limits and price ids."""

    configured: bool
    prices: Prices
    plans: list[PlanOut]


class CheckoutIn(Body):
    price_id: str = Field(max_length=255)


class CheckoutOut(Answer):
    session_id: str
    url: str


class PortalOut(Answer):
    url: str


@documented(
    "Public: the Stripe price ids configured for each paid plan", responses={200: Prices | PricesDetail}, tag="billing"
)
@params.accepts(params.boolean("detail"))
async def prices(request: Request) -> Response:
    """Exactly `{"pro": "price_…", "business": "price_…"}` as documented; `?detail=true`: the plans, their limits
    and price ids (for a pricing page)."""
    settings = request.app.state.runtime.settings
    price_ids = plans.price_ids(settings)
    if not query_of(request)["detail"]:
        return JSONResponse({name.value: price for name, price in price_ids.items()})
    return JSONResponse(
        {
            "configured": plans.billing_configured(settings),
            "prices": {name.value: price for name, price in price_ids.items()},
            "plans": [
                {
                    "plan": p.name.value,
                    "title": p.title,
                    "priceId": price_ids.get(p.name),
                    "limits": _limits_json(plans.limits_for(p.name, settings), settings),
                }
                for p in sorted(plans.PLANS.values(), key=lambda p: p.rank)
            ],
        }
    )


@documented("Stripe webhook receiver (Stripe-Signature required)")
async def stripe_webhook(request: Request) -> Response:
    """Stripe events. 400 (nothing written) unless `Stripe-Signature` verifies; 200 for every verified event,
    including replays (processed once) and types we do not handle, so Stripe stops retrying them."""
    runtime = request.app.state.runtime
    payload = await request.body()
    try:
        event = service.parse_webhook(payload, request.headers.get("stripe-signature"), runtime.settings)
    except service.BadSignature as exc:
        log.warning("stripe webhook rejected", reason=str(exc))
        return error_response(BadUserInput(f"invalid Stripe-Signature: {exc}"))
    except AppError as exc:
        return error_response(exc)
    async with system_unit_of_work(runtime) as session:
        outcome = await service.process_event(session, event, settings=runtime.settings)
    if outcome.org_id and not outcome.duplicate:
        with contextlib.suppress(RedisError):
            await runtime.redis.delete(plan_cache_key(outcome.org_id))
    return JSONResponse({"received": True, "duplicate": outcome.duplicate, "outcome": outcome.outcome})


@documented(
    "Create a Stripe checkout session",
    body=CheckoutIn,
    responses={200: CheckoutOut},
    graphql="Mutation.createCheckoutSession",
    tag="billing",
)
@answers
async def checkout_session(request: Request) -> Response:
    principal = principal_of(request)
    body = await body_of(request, CheckoutIn)
    runtime = request.app.state.runtime
    async with unit_of_work(runtime, principal.org_id) as session:
        result = await service.create_checkout_session(
            session,
            principal,
            price_id=body.price_id,
            settings=runtime.settings,
            source_ip=source_ip(request),
            keep=lambda: uow.commit(session, runtime),
        )
    return JSONResponse({"sessionId": result.session_id, "url": result.url})


@documented(
    "Get current subscription status & plan", responses={200: dict[str, Any]}, graphql="Query.billing", tag="billing"
)
@answers
async def subscription(request: Request) -> Response:
    principal = principal_of(request)
    runtime = request.app.state.runtime
    async with unit_of_work(runtime, principal.org_id) as session:
        view = await service.overview(session, principal, settings=runtime.settings)
    out = row_json(view)
    out["plan"] = view.plan.value
    out["prices"] = {name.value: price for name, price in view.prices.items()}
    out["limits"] = _limits_json(view.limits, runtime.settings)
    return JSONResponse(out)


@documented(
    "Create a Stripe customer portal session",
    responses={200: PortalOut},
    graphql="Mutation.createPortalSession",
    tag="billing",
)
@answers
async def portal_session(request: Request) -> Response:
    principal = principal_of(request)
    runtime = request.app.state.runtime
    async with unit_of_work(runtime, principal.org_id) as session:
        url = await service.create_portal_session(
            session,
            principal,
            settings=runtime.settings,
            source_ip=source_ip(request),
            keep=lambda: uow.commit(session, runtime),
        )
    return JSONResponse({"url": url})


routes = [
    Route("/api/v1/billing/checkout-session", checkout_session, methods=["POST"]),
    Route("/api/v1/billing/subscription", subscription, methods=["GET"]),
    Route("/api/v1/billing/portal-session", portal_session, methods=["POST"]),
    Route("/api/v1/billing/webhook", stripe_webhook, methods=["POST"]),
    Route("/api/v1/billing/prices", prices, methods=["GET"]),
]
