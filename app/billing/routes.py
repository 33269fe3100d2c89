"""REST endpoints of billing, where HTTP itself matters: the Stripe webhook and the public price list."""

from __future__ import annotations

import contextlib
from typing import Any

import structlog
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.billing import service
from app.errors import AppError, BadUserInput
from app.rest.responses import JSONResponse, error_response
from app.unit_of_work import system_unit_of_work
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


async def prices(request: Request) -> Response:
    """Public: the plans, their limits and Stripe price ids (for a pricing page)."""
    settings = request.app.state.runtime.settings
    price_ids = plans.price_ids(settings)
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


routes = [
    Route("/api/v1/billing/webhook", stripe_webhook, methods=["POST"]),
    Route("/api/v1/billing/prices", prices, methods=["GET"]),
]
